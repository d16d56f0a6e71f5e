//! Folders that hold one model, read as one file would be: a Hugging Face
//! model folder (`config.json` beside `model.safetensors`,
//! `pytorch_model.bin`, or a sharded index and its shards), a DCP folder
//! (`.metadata`, or the per-rank shards of torch's Hugging Face DCP
//! writer), or any folder with exactly one weight file.
//!
//! The weights are chosen as `transformers` chooses them
//! (`modeling_utils`): `model.safetensors`, then its index, then
//! `pytorch_model.bin`, then its index; otherwise the folder's only weight
//! file.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::format::{Format, LoadOptions, Loaded};
use crate::{Error, Result};

/// The names `transformers` looks for, in its order of preference.
const PREFERRED: [&str; 4] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
];

/// Reads the model a folder holds.
pub(crate) fn read(dir: &Path, options: &LoadOptions) -> Result<Loaded> {
    if dir.join(super::dcp::METADATA).is_file() {
        let storage = crate::storage::LocalStorage::new(dir);
        return super::dcp::read(dir, &storage, options);
    }
    let shards = super::dcp::hf::shard_files(dir);
    if !shards.is_empty() && !PREFERRED.iter().any(|n| dir.join(n).is_file()) {
        return super::dcp::hf::read(dir, &shards, options);
    }
    let weights = choose(dir)?;
    let mut loaded = super::read_path(&weights, options)?;
    let name = weights
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    loaded.metadata.insert("folder.weights".to_owned(), name);
    if let Some(config) = config(dir) {
        for key in [
            "model_type",
            "architectures",
            "torch_dtype",
            "transformers_version",
        ] {
            if let Some(v) = config.get(key) {
                let text = match v {
                    Json::String(s) => s.clone(),
                    Json::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => other.to_string(),
                };
                loaded.metadata.insert(format!("config.{key}"), text);
            }
        }
    }
    Ok(loaded)
}

fn folder_error(dir: &Path, problem: String) -> Error {
    Error::Folder {
        path: dir.to_owned(),
        problem,
    }
}

/// The weight file a folder's model is read from.
pub(crate) fn choose(dir: &Path) -> Result<PathBuf> {
    if dir.join("manifest.json").is_file() {
        return Err(folder_error(
            dir,
            "is a ckpt run directory: list its steps with `ckpt ls`, or name a step's checkpoint file".to_owned(),
        ));
    }
    if let Some(name) = PREFERRED.iter().find(|n| dir.join(n).is_file()) {
        return Ok(dir.join(name));
    }
    let mut candidates = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let is_weights = matches!(
            Format::from_path(&path),
            Ok(f) if f != Format::Pickle
        );
        // Shards are read through their index, never alone.
        let is_shard = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains("-of-"));
        if is_weights && !is_shard && path.is_file() {
            candidates.push(path);
        }
        if candidates.len() > 64 {
            break;
        }
    }
    candidates.sort();
    let indexes: Vec<&PathBuf> = candidates
        .iter()
        .filter(|p| Format::from_path(p).ok() == Some(Format::ShardedIndex))
        .collect();
    match (candidates.as_slice(), indexes.as_slice()) {
        ([one], _) => Ok(one.clone()),
        (_, [index]) => Ok((*index).clone()),
        ([], _) => Err(folder_error(
            dir,
            format!(
                "holds no weight file (looked for {} and files ending {})",
                PREFERRED.join(", "),
                Format::EXTENSIONS
            ),
        )),
        (many, _) => Err(folder_error(
            dir,
            format!(
                "holds several weight files ({}): name the one to read",
                many.iter()
                    .filter_map(|p| p.file_name())
                    .map(|n| n.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The folder's `config.json`, when it has a readable one (at most 1 MiB).
fn config(dir: &Path) -> Option<serde_json::Map<String, Json>> {
    let path = dir.join("config.json");
    let mut file = crate::storage::open_file(&path).ok()?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, 1 << 20), &mut bytes).ok()?;
    match crate::json::parse(&bytes).ok()? {
        Json::Object(map) => Some(map),
        _ => None,
    }
}
