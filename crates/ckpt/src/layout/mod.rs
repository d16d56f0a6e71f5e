//! Multi-file layouts, over [`Storage`](crate::storage::Storage): what a
//! `*.index.json` stands for, and folders read as one model.
//!
//! Three kinds of index share the name and are told apart here, once, by
//! their contents (`Index::parse`):
//!
//! - a Hugging Face index (`model.safetensors.index.json`,
//!   `pytorch_model.bin.index.json`): a `weight_map` naming each tensor's
//!   shard beside it ([`hf`]);
//! - `ckpt.index.json` (`"format": "ckpt-distributed"`): a multi-rank
//!   checkpoint, every rank's slices of every tensor ([`distributed`]);
//! - `checkpoint.index.json` (`"format": "ckpt-incremental"`): an
//!   incremental step of a run, its tensors as content-addressed chunks in
//!   the run's `blobs/` (`incremental`).
//!
//! Each reads as one state dict (an incremental step as its whole
//! checkpoint) through the same [`read`](crate::read) as any file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value as Json;

use crate::format::{self, Format, LoadOptions, Loaded};
use crate::storage::Location;
use crate::tensor::Buffer;
use crate::{Error, Result};

pub mod dcp;
pub mod distributed;
pub(crate) mod folder;
pub mod hf;
pub(crate) mod incremental;

/// An index file, parsed once into the kind it is.
pub(crate) enum Index {
    /// A Hugging Face index: `weight_map` and `metadata`.
    HuggingFace(Json),
    /// A multi-rank checkpoint's `ckpt.index.json`.
    Distributed(Json),
    /// An incremental step's `checkpoint.index.json`.
    Incremental(incremental::Index),
}

impl Index {
    /// The index in `bytes` (the file at `path`), by its `format` field:
    /// `ckpt-distributed`, `ckpt-incremental`, or none (Hugging Face).
    pub(crate) fn parse(bytes: &[u8], path: &Path) -> Result<Index> {
        let json: Json = crate::json::parse(bytes).map_err(|source| Error::HeaderJson {
            path: path.to_owned(),
            source,
        })?;
        Ok(match json.get("format").and_then(Json::as_str) {
            Some(distributed::FORMAT) => Index::Distributed(json),
            Some(incremental::FORMAT) => Index::Incremental(incremental::from_json(&json, path)?),
            _ => Index::HuggingFace(json),
        })
    }

    /// The files beside the index whose own checksums `verify` checks:
    /// a Hugging Face index's shards (the other kinds are hash-checked as
    /// they are read).
    pub(crate) fn checked_files(&self, path: &Path) -> Vec<PathBuf> {
        match self {
            Index::HuggingFace(json) => hf::shard_files(json, path),
            Index::Distributed(_) | Index::Incremental(_) => Vec::new(),
        }
    }
}

/// Reads what `path` names: a model folder, an index and the files it
/// names, or one file, each recognised by its contents.
pub(crate) fn read_path(path: &Path, options: &LoadOptions) -> Result<Loaded> {
    let location = Location::parse(path);
    if location.is_local_dir() {
        return folder::read(path, options);
    }
    // A DCP folder on object storage: a prefix holding `.metadata`.
    if location.is_remote() && dcp::is_folder(path) {
        return dcp::read(path, &*location.storage()?, options);
    }
    let buffer = crate::storage::open(path, options.open_as())?;
    let format = Format::detect(buffer.as_slice(), path)?;
    dispatch(format, buffer, path, options)
}

/// Reads `buffer` as `format`, once its first bytes confirm it; an index's
/// files are found beside `path`.
pub(crate) fn read_buffer(
    format: Format,
    buffer: Arc<Buffer>,
    path: &Path,
    options: &LoadOptions,
) -> Result<Loaded> {
    let bytes = buffer.as_slice();
    format.confirm(&bytes[..bytes.len().min(16)], path)?;
    dispatch(format, buffer, path, options)
}

/// An index to its layout, any other format to its reader.
fn dispatch(
    format: Format,
    buffer: Arc<Buffer>,
    path: &Path,
    options: &LoadOptions,
) -> Result<Loaded> {
    match format {
        Format::ShardedIndex => read(buffer.as_slice(), path, options),
        _ => format::read(format, buffer, path),
    }
}

/// Reads the index in `bytes` (the file at `path`) as one state dict, or
/// an incremental step as its checkpoint.
fn read(bytes: &[u8], path: &Path, options: &LoadOptions) -> Result<Loaded> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let value = match Index::parse(bytes, path)? {
        Index::HuggingFace(json) => return hf::read(&json, path, options),
        Index::Distributed(json) => {
            let storage = Location::parse(folder).storage()?;
            distributed::Distributed::from_json(&json, folder, storage)?
                .load()?
                .into()
        }
        Index::Incremental(index) => {
            // A step folder's parent is the run, whose blobs/ it names.
            let root = match folder.to_str() {
                Some("") | Some(".") => Path::new(".."),
                _ => match folder.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                },
            };
            let storage = Location::parse(root).storage()?;
            let read = |hash: &str| {
                let name = incremental::blob_name(hash);
                storage
                    .read(&name)
                    .map_err(|e| Error::io(root.join(&name), e))
            };
            incremental::assemble(&index, read, true, root, path)?
        }
    };
    Ok(Loaded {
        format: Format::ShardedIndex,
        value,
        metadata: Default::default(),
        pickle: None,
        module: None,
    })
}
