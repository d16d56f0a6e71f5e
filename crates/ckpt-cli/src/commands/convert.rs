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
    options.package = args.package;
    options.input_shape = args.input_shape.as_ref().map(|s| s.0.clone());
    if progress::shown() {
        options.progress = Some(ckpt::Progress::new(progress::bytes("writing")));
    }
    let done = ckpt::convert(&args.input, &args.output, &options).map_err(|e| match e {
        ckpt::Error::DuplicateName { .. } if args.strip_prefix.is_some() => {
            anyhow::Error::new(e).context("--strip-prefix")
        }
        e => e.into(),
    })?;
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
