//! Converting a checkpoint from any format ckpt reads to any it writes,
//! optionally casting floats or renaming keys on the way: what `ckpt
//! convert` and the Python package's `ckpt.convert` do. A DCP folder to
//! one safetensors file, with nothing to change on the way, is streamed
//! tensor by tensor ([`crate::layout::dcp::consolidate`]).

use std::path::Path;

use crate::layout::dcp;
use crate::{DType, Error, Format, LoadOptions, Package, Progress, Result, SaveOptions, StateDict};

/// How to convert. The default writes the format the output's extension
/// names, with the tensors unchanged.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConvertOptions {
    /// Write this format whatever the output is called.
    pub format: Option<Format>,
    /// With [`Format::Dcp`]: the Hugging Face flavour torch's
    /// `HuggingFaceStorageWriter` writes (tensors only).
    pub hf_flavour: bool,
    /// Cast every float tensor to this dtype; quantized tensors are
    /// dequantized first, exactly as torch's `dequantize()`.
    pub dtype: Option<DType>,
    /// Remove this prefix from every string key that has it (`module.`).
    pub strip_prefix: Option<String>,
    /// Write Hugging Face shards of at most this many bytes, plus an index.
    pub max_shard_size: Option<u64>,
    /// Called with (bytes written, total).
    pub progress: Option<Progress>,
    /// For a whole pickled model whose first layer does not tell it: the
    /// per-sample input shape of the model package it becomes.
    pub input_shape: Option<Vec<usize>>,
}

/// What a conversion did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Converted {
    /// The format the input was read as.
    pub from: Format,
    /// What was written, in words (`safetensors`, `sharded`).
    pub to: String,
    /// Tensors written.
    pub tensors: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Why a whole pickled model was written as weights only, when it was.
    pub note: Option<String>,
}

/// Converts `input` (any file, folder or `s3://` URL ckpt reads) to
/// `output`, atomically.
pub fn convert(input: &Path, output: &Path, options: &ConvertOptions) -> Result<Converted> {
    let format = options.format;
    if format == Some(Format::Dcp) && options.max_shard_size.is_some() {
        return Err(Error::Folder {
            path: output.to_owned(),
            problem: "a maximum shard size (--max-shard-size) does not apply to DCP folders".into(),
        });
    }
    let mut save = SaveOptions {
        progress: options.progress.clone(),
        ..Default::default()
    };
    if let Some(done) = consolidate(input, output, options, &save)? {
        return Ok(done);
    }
    let loaded = crate::read(input, &LoadOptions::default())?;
    let (packaged, note) = packaged(input, output, &loaded, options);
    let mut value = match &packaged {
        Some(package) => package.to_value(),
        None => loaded.value,
    };
    if let Some(prefix) = &options.strip_prefix {
        value = value.strip_key_prefix(prefix)?;
    }
    if let Some(dtype) = options.dtype {
        value = crate::compress::quantize::dequantize_value(&value)?;
        value = value.try_map_tensors(&mut |t| t.cast(dtype))?;
    }
    // The file's own metadata travels; ckpt's reserved keys are rewritten
    // by the writer itself. A sharded input's index metadata does not.
    if loaded.format != Format::ShardedIndex {
        for (k, v) in &loaded.metadata {
            if !k.starts_with(crate::format::safetensors::RESERVED_PREFIX) {
                save = save.metadata(k.as_str(), v.as_str());
            }
        }
    }
    if let Some(max) = options.max_shard_size {
        save = save.max_shard_size(max);
    }
    if let Some(format) = format {
        save = save.format(format);
    }
    let hf_flavour = options.hf_flavour && format == Some(Format::Dcp);
    match hf_flavour {
        true => dcp::hf::write(output, &value, &save)?,
        false => crate::save_with(output, &value, &save)?,
    }
    let tensors = StateDict::flatten(&value)?;
    let mut to = match (options.max_shard_size, format) {
        (Some(_), _) => "sharded".to_owned(),
        (None, _) if hf_flavour => "DCP, Hugging Face flavour".to_owned(),
        (None, Some(format)) => format.to_string(),
        (None, None) => Format::from_path(output)?.to_string(),
    };
    if packaged.is_some() {
        to.push_str(" model package");
    }
    Ok(Converted {
        from: loaded.format,
        to,
        tensors: tensors.len(),
        bytes: tensors.total_bytes(),
        note,
    })
}

/// A whole pickled model (`torch.save(model)`) written to one safetensors
/// or `.pth` file with nothing changed on the way becomes a model package
/// when its spec derives; otherwise why not.
fn packaged(
    input: &Path,
    output: &Path,
    loaded: &crate::Loaded,
    options: &ConvertOptions,
) -> (Option<Package>, Option<String>) {
    let Some(module) = &loaded.module else {
        return (None, None);
    };
    let to = options.format.or_else(|| Format::from_path(output).ok());
    let plain = options.dtype.is_none()
        && options.strip_prefix.is_none()
        && options.max_shard_size.is_none()
        && matches!(to, Some(Format::Safetensors | Format::PyTorch));
    if !plain {
        return (None, None);
    }
    let shape = options.input_shape.as_deref();
    match Package::from_module(module, &loaded.value, input, shape) {
        Ok(package) => (Some(package), None),
        Err(e) => (None, Some(format!("written as weights only: {e}"))),
    }
}

/// A DCP folder to one safetensors file, streamed, when nothing asks to
/// change the tensors on the way.
fn consolidate(
    input: &Path,
    output: &Path,
    options: &ConvertOptions,
    save: &SaveOptions,
) -> Result<Option<Converted>> {
    let to = options.format.or_else(|| Format::from_path(output).ok());
    let plain = options.dtype.is_none() && options.strip_prefix.is_none();
    if !plain || options.max_shard_size.is_some() || to != Some(Format::Safetensors) {
        return Ok(None);
    }
    if !dcp::is_folder(input) {
        return Ok(None);
    }
    let done = dcp::consolidate(input, output, save)?;
    Ok(Some(Converted {
        from: Format::Dcp,
        to: "safetensors".into(),
        tensors: done.tensors,
        bytes: done.bytes,
        note: None,
    }))
}
