//! `ckpt convert IN OUT [--dtype DTYPE] [--strip-prefix P]`.

use std::io::Write;

use anyhow::Result;

use crate::args::{ConvertArgs, WriteFormat};
use crate::shared::output::human_bytes;
use crate::shared::progress;

/// Converts the input to the output, whose extension picks the format
/// unless `--format` says.
pub fn run(args: &ConvertArgs, out: &mut dyn Write) -> Result<()> {
    let mut options = ckpt::ConvertOptions::default();
    options.format = args.format.map(|f| f.format());
    options.hf_flavour = matches!(args.format, Some(WriteFormat::DcpHf));
    options.dtype = args.dtype;
    options.strip_prefix = args.strip_prefix.clone();
    options.max_shard_size = args.max_shard_size;
    if options.format == Some(ckpt::Format::Dcp) && options.max_shard_size.is_some() {
        anyhow::bail!("--max-shard-size does not apply to DCP folders (--format dcp, dcp-hf)");
    }
    if progress::shown() {
        options.progress = Some(ckpt::Progress::new(progress::bytes("writing")));
    }
    let done = ckpt::convert(&args.input, &args.output, &options)?;
    writeln!(
        out,
        "{} ({}) -> {} ({}): {} tensors, {}",
        args.input.display(),
        done.from,
        args.output.display(),
        done.to,
        done.tensors,
        human_bytes(done.bytes),
    )?;
    Ok(())
}
