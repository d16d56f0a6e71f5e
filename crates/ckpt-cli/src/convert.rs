//! `ckpt convert IN OUT [--dtype DTYPE] [--strip-prefix P]`.

use std::io::Write;
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

/// Converts `input` to `output`, whose extension picks the format.
pub fn run(
    input: &Path,
    output: &Path,
    dtype: Option<DType>,
    strip_prefix: Option<&str>,
    out: &mut dyn Write,
) -> Result<()> {
    let loaded = ckpt::read(input, &LoadOptions::default())?;
    let mut value = loaded.value;
    if let Some(prefix) = strip_prefix {
        value = value.strip_key_prefix(prefix).context("--strip-prefix")?;
    }
    if let Some(dtype) = dtype {
        value = value.try_map_tensors(&mut |t| t.cast(dtype))?;
    }
    // The file's own metadata travels; ckpt's reserved keys are rewritten
    // by the writer itself.
    let options = loaded
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with(ckpt::format::safetensors::RESERVED_PREFIX))
        .fold(ckpt::SaveOptions::default(), |o, (k, v)| {
            o.metadata(k.as_str(), v.as_str())
        });
    ckpt::save_with(output, &value, &options)?;
    let tensors = StateDict::flatten(&value)?;
    let size = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    writeln!(
        out,
        "{} ({}) -> {} ({}): {} tensors, {} on disk",
        input.display(),
        loaded.format,
        output.display(),
        ckpt::Format::from_path(output)?,
        tensors.len(),
        human_bytes(size),
    )?;
    Ok(())
}
