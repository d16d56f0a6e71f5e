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
    /// Write a whole pickled model (`torch.save(model)` of an
    /// `nn.Sequential`) as a model package: its derived spec, its weights
    /// (under `model_state_dict/`) and metadata, to one `.safetensors` or
    /// `.pth` file, with nothing changed on the way.
    pub package: bool,
    /// With `package`, when the model's first layer does not tell it: the
    /// per-sample input shape.
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
    let packaged = packaged(input, output, &loaded, options)?;
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
    })
}

/// With `package`: the whole pickled model at `input` as a model package,
/// or why it cannot be one.
fn packaged(
    input: &Path,
    output: &Path,
    loaded: &crate::Loaded,
    options: &ConvertOptions,
) -> Result<Option<Package>> {
    let refuse = |problem: String| Error::Folder {
        path: output.to_owned(),
        problem,
    };
    if !options.package {
        if options.input_shape.is_some() {
            return Err(refuse(
                "an input shape is for writing a model package".into(),
            ));
        }
        return Ok(None);
    }
    let Some(module) = &loaded.module else {
        return Err(refuse(format!(
            "a model package needs a whole pickled model (torch.save(model)); {} is not one",
            input.display()
        )));
    };
    let to = options.format.or_else(|| Format::from_path(output).ok());
    let plain = options.dtype.is_none()
        && options.strip_prefix.is_none()
        && options.max_shard_size.is_none()
        && matches!(to, Some(Format::Safetensors | Format::PyTorch));
    if !plain {
        return Err(refuse(
            "a model package is written as the model is, to one .safetensors or .pth file \
             (no dtype, prefix or shards)"
                .into(),
        ));
    }
    let shape = options.input_shape.as_deref();
    Package::from_module(module, &loaded.value, input, shape).map(Some)
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
    let plain = options.dtype.is_none() && options.strip_prefix.is_none() && !options.package;
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
    }))
}
