//! `ckpt convert IN OUT [--dtype DTYPE] [--strip-prefix P]`.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};
use ckpt::{DType, LoadOptions, StateDict};

use crate::output::human_bytes;

/// Parses a dtype name as torch spells it (`float16`) or by a common alias
/// (`f16`, `half`, `bf16`, `float`, `double`).
pub fn parse_dtype(name: &str) -> Result<DType, String> {
    let canonical = match name {
        "f64" | "double" => "float64",
        "f32" | "float" => "float32",
        "f16" | "half" => "float16",
        "bf16" => "bfloat16",
        other => other,
    };
    DType::from_torch(canonical)
        .filter(|d| d.is_float())
        .ok_or_else(|| {
            format!("{name:?} is not a float dtype (float64, float32, float16, bfloat16)")
        })
}

/// Parses a size: bytes, or a number with a decimal (`KB`, `MB`, `GB`, as
/// `transformers` uses) or binary (`KiB`, `MiB`, `GiB`) unit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit (use B, KB, MB, GB, KiB, MiB or GiB)"
            ))
        }
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    let bytes = number * scale as f64;
    if !(1.0..u64::MAX as f64).contains(&bytes) {
        return Err(format!("{text:?} is not a positive size"));
    }
    Ok(bytes as u64)
}

/// What `convert` changes on the way.
pub struct Changes<'a> {
    /// Cast float tensors to this dtype.
    pub dtype: Option<DType>,
    /// Strip this prefix from string keys.
    pub strip_prefix: Option<&'a str>,
    /// Write Hugging Face shards of at most this many bytes.
    pub max_shard_size: Option<u64>,
    /// Write this format whatever the output's extension.
    pub format: Option<ckpt::Format>,
}

/// Converts `input` to `output`, whose extension picks the format.
pub fn run(input: &Path, output: &Path, changes: &Changes, out: &mut dyn Write) -> Result<()> {
    let Changes {
        dtype,
        strip_prefix,
        max_shard_size,
        format,
    } = *changes;
    let loaded = ckpt::read(input, &LoadOptions::default())?;
    let mut value = loaded.value;
    if let Some(prefix) = strip_prefix {
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
    if std::io::stderr().is_terminal() {
        options = options.on_progress(crate::output::progress_bar);
    }
    ckpt::save_with(output, &value, &options)?;
    let tensors = StateDict::flatten(&value)?;
    writeln!(
        out,
        "{} ({}) -> {} ({}): {} tensors, {}",
        input.display(),
        loaded.format,
        output.display(),
        match (max_shard_size, format) {
            (Some(_), _) => "sharded".to_owned(),
            (None, Some(format)) => format.to_string(),
            (None, None) => ckpt::Format::from_path(output)?.to_string(),
        },
        tensors.len(),
        human_bytes(tensors.total_bytes()),
    )?;
    Ok(())
}
