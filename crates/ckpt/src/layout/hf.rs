//! Hugging Face sharded checkpoints: an index (`model.safetensors.index.json`
//! or `pytorch_model.bin.index.json`) naming, for every tensor, the shard
//! file beside it that holds it.
//!
//! ```json
//! {"metadata": {"total_size": 1234}, "weight_map": {"fc.weight": "model-00001-of-00002.safetensors", ...}}
//! ```
//!
//! Reading loads every shard (each through the normal reader, so mapped and
//! validated) and returns one flat state dict in the index's order. Shard
//! names must be plain file names: an index cannot reach outside its
//! folder. Every tensor the index names must be in its shard, and every
//! tensor of a shard must be in the index, so nothing is dropped silently.
//!
//! Writing splits a flat state dict into shards of at most a given size (a
//! larger tensor gets a shard of its own), writes each shard atomically,
//! and writes the index last: until the index is replaced, readers see the
//! previous checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::{json, Map, Value as Json};

use crate::format::pytorch::PickleReport;
use crate::format::{Format, LoadOptions, Loaded, SaveOptions};
use crate::{Dict, Error, Key, Result, StateDict, Value};

/// The shard size `save` uses for an index path without one (as
/// `transformers` does).
pub const DEFAULT_MAX_SHARD_SIZE: u64 = 5_000_000_000;

fn bad(path: &Path, entry: &str, problem: &'static str) -> Error {
    Error::HeaderEntry {
        path: path.to_owned(),
        entry: entry.to_owned(),
        problem,
    }
}

/// Reads every shard the index `json` (the file at `path`) names.
pub(crate) fn read(json: &Json, path: &Path, options: &LoadOptions) -> Result<Loaded> {
    let map = json
        .get("weight_map")
        .and_then(Json::as_object)
        .ok_or_else(|| bad(path, "weight_map", "the index has no weight_map object"))?;
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut shards: IndexMap<&str, StateDict> = IndexMap::new();
    let mut pickle: Option<PickleReport> = None;
    for (name, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| bad(path, name, "a shard name is not a string"))?;
        let plain = Path::new(shard).file_name().is_some_and(|f| f == shard)
            && shard != ".."
            && shard != ".";
        if !plain {
            return Err(bad(
                path,
                name,
                "a shard name is not a plain file name in the index's folder",
            ));
        }
        if matches!(
            Format::from_path(Path::new(shard)),
            Ok(Format::ShardedIndex)
        ) {
            return Err(bad(path, name, "a shard is itself an index"));
        }
        if !shards.contains_key(shard) {
            let loaded = read_shard(&folder.join(shard), options).map_err(|e| match e {
                Error::UnrecognisedFormat { .. } => bad(path, name, "a shard is not a weight file"),
                other => other,
            })?;
            if let Some(report) = loaded.pickle {
                pickle.get_or_insert_with(Default::default).merge(report);
            }
            shards.insert(shard, StateDict::flatten(&loaded.value)?);
        }
    }
    let mut dict = Dict::with_capacity(map.len());
    let mut used: HashMap<&str, usize> = HashMap::new();
    for (name, shard) in map {
        let shard = shard.as_str().unwrap_or_default();
        let tensor = shards[shard].get(name).ok_or_else(|| {
            bad(
                path,
                name,
                "the index names a tensor its shard does not hold",
            )
        })?;
        dict.insert(Key::Str(name.clone()), Value::Tensor(tensor.clone()));
        *used.entry(shard).or_default() += 1;
    }
    for (shard, tensors) in &shards {
        if used.get(shard).copied().unwrap_or(0) != tensors.len() {
            return Err(bad(
                &folder.join(shard),
                shard,
                "the shard holds tensors the index does not list",
            ));
        }
    }
    let mut metadata = IndexMap::new();
    if let Some(meta) = json.get("metadata").and_then(Json::as_object) {
        for (k, v) in meta {
            metadata.insert(
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            );
        }
    }
    Ok(Loaded {
        format: Format::ShardedIndex,
        value: Value::Dict(dict),
        metadata,
        pickle,
        module: None,
    })
}

/// The shard files the index `json` (at `path`) names, for `verify`'s
/// checksums (the names were validated when it was read).
pub(crate) fn shard_files(json: &Json, path: &Path) -> Vec<PathBuf> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = json["weight_map"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(Json::as_str)
                .map(|s| folder.join(s))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.dedup();
    files
}

/// The index path and the shard paths for a sharded save requested at
/// `path`: either the index itself (`model.safetensors.index.json`) or a
/// plain file name (`model.safetensors`), whose index goes beside it.
fn layout(path: &Path, shards: usize) -> Result<(PathBuf, Vec<PathBuf>)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let base = name.strip_suffix(".index.json").unwrap_or(name);
    if matches!(
        Format::from_path(Path::new(base)),
        Err(_) | Ok(Format::ShardedIndex)
    ) {
        return Err(Error::UnknownExtension {
            path: path.to_owned(),
        });
    }
    let (stem, ext) = base.rsplit_once('.').unwrap_or((base, ""));
    let index = path.with_file_name(format!("{base}.index.json"));
    let files = (1..=shards)
        .map(|i| path.with_file_name(format!("{stem}-{i:05}-of-{shards:05}.{ext}")))
        .collect();
    Ok((index, files))
}

/// Writes `value`'s tensors (flattened by the naming rule) as shards of at
/// most `max_shard_size` bytes plus an index, the index last.
pub(crate) fn write(
    path: &Path,
    value: &Value,
    max_shard_size: u64,
    options: &SaveOptions,
) -> Result<()> {
    let tensors = StateDict::flatten(value)?;
    let mut groups: Vec<StateDict> = vec![StateDict::new()];
    let mut size = 0u64;
    for (name, t) in tensors.iter() {
        let len = t.bytes().len() as u64;
        let current = groups.last_mut().expect("at least one group");
        if !current.is_empty() && size + len > max_shard_size {
            groups.push(StateDict::new());
            size = 0;
        }
        groups
            .last_mut()
            .expect("just pushed")
            .insert(name.clone(), t.clone());
        size += len;
    }
    let (index, files) = layout(path, groups.len())?;
    let shard_options = SaveOptions {
        max_shard_size: None,
        ..options.clone()
    };
    let mut weight_map = Map::new();
    for (group, file) in groups.iter().zip(&files) {
        // The format asked for, or the shard's extension (which is the
        // index's base name's).
        let format = match shard_options.format {
            Some(format) if format != Format::ShardedIndex => format,
            _ => Format::from_path(file)?,
        };
        crate::format::write_file(format, file, &group.clone().into(), &shard_options)?;
        let shard = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        for name in group.keys() {
            weight_map.insert(name.clone(), json!(shard));
        }
    }
    let mut metadata = Map::new();
    metadata.insert("total_size".into(), json!(tensors.total_bytes()));
    for (k, v) in &options.metadata {
        metadata.insert(k.clone(), json!(v));
    }
    let text =
        serde_json::to_string_pretty(&json!({"metadata": metadata, "weight_map": weight_map}))
            .map_err(|source| Error::HeaderJson {
                path: index.clone(),
                source,
            })?;
    crate::storage::write_atomic(&index, options.durable, |out| {
        out.write_all(text.as_bytes())
    })
}

/// A shard, read as the single file its contents show: never a folder and
/// never another index (a shard that names itself would recurse forever).
fn read_shard(path: &Path, options: &LoadOptions) -> Result<Loaded> {
    if crate::storage::Location::parse(path).is_local_dir() {
        return Err(Error::Folder {
            path: path.to_owned(),
            problem: "is a folder, named as a shard by an index".to_owned(),
        });
    }
    let buffer = crate::storage::open(path, options.open_as())?;
    let format = Format::detect(buffer.as_slice(), path)?;
    if format == Format::ShardedIndex {
        return Err(Error::Folder {
            path: path.to_owned(),
            problem: "is itself an index, named as a shard by an index".to_owned(),
        });
    }
    crate::format::read(format, buffer, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_follow_transformers() {
        let (index, files) = layout(Path::new("/d/model.safetensors"), 2).unwrap();
        assert_eq!(index, Path::new("/d/model.safetensors.index.json"));
        assert_eq!(files[1], Path::new("/d/model-00002-of-00002.safetensors"));
        let (index, files) = layout(Path::new("/d/pytorch_model.bin.index.json"), 1).unwrap();
        assert_eq!(index, Path::new("/d/pytorch_model.bin.index.json"));
        assert_eq!(files[0], Path::new("/d/pytorch_model-00001-of-00001.bin"));
    }
}
