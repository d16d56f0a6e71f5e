//! `ckpt convert IN OUT [--dtype DTYPE] [--strip-prefix P]`.

use std::io::Write;

use anyhow::{Context, Result};
use ckpt::layout::dcp::Consolidated;
use ckpt::{LoadOptions, StateDict};

use crate::args::{ConvertArgs, WriteFormat};
use crate::shared::output::human_bytes;
use crate::shared::progress;

/// Converts the input to the output, whose extension picks the format
/// unless `--format` says.
pub fn run(args: &ConvertArgs, out: &mut dyn Write) -> Result<()> {
    let (input, output) = (&args.input, &args.output);
    let (dtype, max_shard_size) = (args.dtype, args.max_shard_size);
    let format = args.format.map(|f| f.format());
    if format == Some(ckpt::Format::Dcp) && max_shard_size.is_some() {
        anyhow::bail!("--max-shard-size does not apply to DCP folders (--format dcp, dcp-hf)");
    }
    if let Some(summary) = consolidate(args, format)? {
        return report(args, ckpt::Format::Dcp, "safetensors", summary, out);
    }
    let loaded = ckpt::read(input, &LoadOptions::default())?;
    let mut value = loaded.value;
    if let Some(prefix) = &args.strip_prefix {
        value = value.strip_key_prefix(prefix).context("--strip-prefix")?;
    }
    if let Some(dtype) = dtype {
        // Quantized tensors (torch's, and ckpt's int8 layout) become the
        // floats they stand for, exactly as torch's dequantize() gives them.
        value = ckpt::compress::quantize::dequantize_value(&value)?;
        value = value.try_map_tensors(&mut |t| t.cast(dtype))?;
    }
    // The file's own metadata travels; ckpt's reserved keys are rewritten
    // by the writer itself. A sharded input's index metadata does not.
    let mut options = ckpt::SaveOptions::default();
    if loaded.format != ckpt::Format::ShardedIndex {
        for (k, v) in &loaded.metadata {
            if !k.starts_with(ckpt::format::safetensors::RESERVED_PREFIX) {
                options = options.metadata(k.as_str(), v.as_str());
            }
        }
    }
    if let Some(max) = max_shard_size {
        options = options.max_shard_size(max);
    }
    if let Some(format) = format {
        options = options.format(format);
    }
    if progress::shown() {
        options = options.on_progress(progress::bytes("writing"));
    }
    let hf_flavour = matches!(args.format, Some(WriteFormat::DcpHf));
    match hf_flavour {
        true => ckpt::layout::dcp::hf::write(output, &value, &options)?,
        false => ckpt::save_with(output, &value, &options)?,
    }
    let tensors = StateDict::flatten(&value)?;
    let written = match (max_shard_size, format) {
        (Some(_), _) => "sharded".to_owned(),
        (None, _) if hf_flavour => "DCP, Hugging Face flavour".to_owned(),
        (None, Some(format)) => format.to_string(),
        (None, None) => ckpt::Format::from_path(output)?.to_string(),
    };
    let summary = Consolidated {
        tensors: tensors.len(),
        bytes: tensors.total_bytes(),
    };
    report(args, loaded.format, &written, summary, out)
}

/// A DCP folder to one safetensors file, streamed tensor by tensor, when
/// nothing asks to change the tensors on the way.
fn consolidate(args: &ConvertArgs, format: Option<ckpt::Format>) -> Result<Option<Consolidated>> {
    let to = format.or_else(|| ckpt::Format::from_path(&args.output).ok());
    let plain = args.dtype.is_none() && args.strip_prefix.is_none();
    if !plain || args.max_shard_size.is_some() || to != Some(ckpt::Format::Safetensors) {
        return Ok(None);
    }
    if !ckpt::layout::dcp::is_folder(&args.input) {
        return Ok(None);
    }
    let mut options = ckpt::SaveOptions::default();
    if progress::shown() {
        options = options.on_progress(progress::bytes("writing"));
    }
    Ok(Some(ckpt::layout::dcp::consolidate(
        &args.input,
        &args.output,
        &options,
    )?))
}

/// The line that says what was converted.
fn report(
    args: &ConvertArgs,
    from: ckpt::Format,
    to: &str,
    summary: Consolidated,
    out: &mut dyn Write,
) -> Result<()> {
    writeln!(
        out,
        "{} ({from}) -> {} ({to}): {} tensors, {}",
        args.input.display(),
        args.output.display(),
        summary.tensors,
        human_bytes(summary.bytes),
    )?;
    Ok(())
}
