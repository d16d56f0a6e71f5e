//! The Hugging Face flavour of DCP: the per-rank safetensors shards torch's
//! `HuggingFaceStorageWriter(save_distributed=True)` writes
//! (`shard-<rank+1>-model-<i>-of-<n>.safetensors`), each holding its
//! rank's local chunk of every tensor under the plain key, with the
//! chunk's global offsets in `__metadata__["DCP_SHARDING_INFO"]`. Read as
//! one state dict, consolidating as torch's reader does: a tensor's whole
//! shape is the furthest any chunk reaches. Written as its one-process
//! form: `model-00001-of-00001.safetensors` (every offset zero) and
//! `model.safetensors.index.json`, which torch's `HuggingFaceStorageReader`
//! and any Hugging Face loader read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::assemble::{check_cover, place_chunk};
use super::{bad, Chunk, Item, SLACK};
use crate::format::{Format, LoadOptions, Loaded, SaveOptions};
use crate::{byte_len, DType, Dict, Error, Key, Result, TensorData, Value};

/// The metadata key that holds each tensor's saved offsets.
const SHARDING_INFO: &str = "DCP_SHARDING_INFO";

/// The shard files of a folder torch's Hugging Face DCP writer filled, in
/// name order; none when it holds other files' kinds of weights.
pub(crate) fn shard_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("shard-") && n.contains("-of-") && n.ends_with(".safetensors")
            })
        })
        .collect();
    files.sort();
    files
}

/// The file the one-process form holds its tensors in.
const MODEL: &str = "model-00001-of-00001.safetensors";

/// The index beside it, written last.
const INDEX: &str = "model.safetensors.index.json";

/// Writes `value`'s tensors (a dict at the top; nested dicts and lists of
/// tensors flatten to torch's dotted keys) as the Hugging Face flavour's
/// one-process folder `dir`. Other values have no place in it and are
/// refused by key.
pub fn write(dir: &Path, value: &Value, options: &SaveOptions) -> Result<()> {
    let mut flat = Dict::new();
    let mut info = serde_json::Map::new();
    let mut total = 0u64;
    for piece in super::write::flatten(value, dir)? {
        let super::write::What::Chunk { data, .. } = piece.what else {
            return Err(bad(
                dir,
                format!(
                    "{}: the Hugging Face DCP flavour holds tensors only",
                    piece.fqn
                ),
            ));
        };
        info.insert(
            piece.fqn.clone(),
            serde_json::json!({"saved_offsets": vec![0; data.shape().len()]}),
        );
        total += data.bytes().len() as u64;
        flat.insert(Key::Str(piece.fqn), Value::Tensor(data.clone()));
    }
    let weight_map: serde_json::Map<String, Json> = info
        .keys()
        .map(|k| (k.clone(), Json::from(MODEL)))
        .collect();
    let mut model_options = options
        .clone()
        .metadata("DCP_VERSION", "1.0")
        .metadata("format", "pt")
        .metadata(SHARDING_INFO, Json::Object(info).to_string());
    model_options.format = Some(Format::Safetensors);
    let storage = crate::storage::Location::parse(dir).storage()?;
    storage.create_root().map_err(|e| Error::io(dir, e))?;
    crate::format::write_file(
        Format::Safetensors,
        &dir.join(MODEL),
        &Value::Dict(flat),
        &model_options,
    )?;
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    let text = serde_json::to_string_pretty(&index).unwrap_or_default();
    crate::storage::write_atomic(&dir.join(INDEX), options.durable, |out| {
        out.write_all(text.as_bytes())
    })
}

/// One tensor being consolidated: its dtype and its chunks with their data.
struct Pieces {
    dtype: DType,
    chunks: Vec<(Chunk, TensorData)>,
}

/// Reads the shards `files` (of the folder `dir`) as one state dict.
pub(crate) fn read(dir: &Path, files: &[PathBuf], options: &LoadOptions) -> Result<Loaded> {
    let mut order = Vec::new();
    let mut tensors: HashMap<String, Pieces> = HashMap::new();
    for file in files {
        let buffer = crate::storage::open(file, options.open_as())?;
        let loaded = crate::format::read(Format::Safetensors, buffer, file)?;
        let info = loaded
            .metadata
            .get(SHARDING_INFO)
            .and_then(|s| crate::json::parse(s.as_bytes()).ok())
            .ok_or_else(|| bad(file, format!("no readable {SHARDING_INFO} in its metadata")))?;
        let Value::Dict(dict) = loaded.value else {
            return Err(bad(file, "holds no tensors"));
        };
        for (key, value) in dict {
            let (Key::Str(fqn), Value::Tensor(t)) = (key, value) else {
                return Err(bad(file, "holds a value that is not a tensor"));
            };
            let offsets = saved_offsets(&info, &fqn, t.shape().len())
                .ok_or_else(|| bad(file, format!("{fqn}: no saved offsets of its rank")))?;
            let chunk = Chunk {
                offsets,
                sizes: t.shape().to_vec(),
                item: Item {
                    file: file.display().to_string(),
                    offset: 0,
                    length: t.bytes().len() as u64,
                    hash: None,
                    zstd: false,
                },
            };
            let entry = tensors.entry(fqn.clone()).or_insert_with(|| {
                order.push(fqn.clone());
                Pieces {
                    dtype: t.dtype(),
                    chunks: Vec::new(),
                }
            });
            if entry.dtype != t.dtype() {
                return Err(bad(file, format!("{fqn}: shards disagree on its dtype")));
            }
            // A replicated tensor every rank saved is kept once; another
            // chunk at the same place is a contradiction.
            match entry
                .chunks
                .iter()
                .find(|(c, _)| c.offsets == chunk.offsets)
            {
                None => entry.chunks.push((chunk, t)),
                Some((c, old)) if c.sizes == chunk.sizes && old.bytes() == t.bytes() => {}
                Some(_) => {
                    return Err(bad(
                        file,
                        format!("{fqn}: shards disagree at {:?}", chunk.offsets),
                    ))
                }
            }
        }
    }
    let mut root = Dict::new();
    for fqn in order {
        let pieces = tensors.remove(&fqn).expect("listed");
        root.insert(
            Key::Str(fqn.clone()),
            Value::Tensor(whole(dir, &fqn, pieces)?),
        );
    }
    Ok(Loaded {
        format: Format::Dcp,
        value: Value::Dict(root),
        metadata: Default::default(),
        pickle: None,
        module: None,
    })
}

/// `info[fqn]["saved_offsets"]`, one per dimension.
fn saved_offsets(info: &Json, fqn: &str, rank: usize) -> Option<Vec<usize>> {
    let list = info.get(fqn)?.get("saved_offsets")?.as_array()?;
    let offsets: Option<Vec<usize>> = list
        .iter()
        .map(|o| o.as_u64().and_then(|o| usize::try_from(o).ok()))
        .collect();
    offsets.filter(|o| o.len() == rank)
}

/// The whole tensor the chunks make: as large as the furthest chunk
/// reaches, tiled exactly, never larger than the chunks' bytes + slack.
fn whole(dir: &Path, fqn: &str, pieces: Pieces) -> Result<TensorData> {
    let chunks: Vec<Chunk> = pieces.chunks.iter().map(|(c, _)| c.clone()).collect();
    let rank = chunks.first().map_or(0, |c| c.sizes.len());
    if chunks.iter().any(|c| c.sizes.len() != rank) {
        return Err(bad(dir, format!("{fqn}: shards disagree on its rank")));
    }
    let mut size = vec![0usize; rank];
    for c in &chunks {
        for (d, (o, s)) in c.offsets.iter().zip(&c.sizes).enumerate() {
            size[d] = size[d].max(o.saturating_add(*s));
        }
    }
    check_cover(&size, &chunks).map_err(|p| bad(dir, format!("{fqn}: {p}")))?;
    let held: u64 = chunks.iter().map(|c| c.item.length).sum();
    let total = byte_len(pieces.dtype, &size)
        .filter(|&n| n <= held + SLACK)
        .ok_or_else(|| bad(dir, format!("{fqn}: its chunks claim more than they hold")))?;
    let mut bytes = vec![0u8; total as usize];
    for (c, t) in &pieces.chunks {
        let at = (c.offsets.as_slice(), c.sizes.as_slice());
        place_chunk(&mut bytes, &size, pieces.dtype.size(), at, t.bytes());
    }
    TensorData::new(pieces.dtype, size, bytes)
}
