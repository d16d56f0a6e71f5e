//! Incremental checkpoints: tensors split into chunks stored once by
//! content (`blobs/<XXH3-128>`), so a checkpoint writes only the chunks
//! that changed since the checkpoints the run keeps.
//!
//! A step's file is then `checkpoint.index.json`:
//!
//! ```text
//! {"format": "ckpt-incremental", "version": 1, "chunk": 4194304,
//!  "tree": "<the ckpt tree JSON, or null for a plain state dict>",
//!  "tensors": [{"name", "dtype", "shape", "chunks": ["<32 hex digits>", ...]}]}
//! ```
//!
//! Every chunk is `chunk` bytes but a tensor's last; the index's own hash
//! is in `meta.json` and names every chunk's hash, so one root hash still
//! covers the step. A blob is deleted only when no kept step's index names
//! it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use indexmap::IndexMap;
use serde_json::{json, Value as Json};

use crate::format::safetensors::{flatten, rebuild, TREE_KEY};
use crate::{byte_len, DType, Error, Result, TensorData, Value};

/// The `format` of an incremental step's index.
pub(crate) const FORMAT: &str = "ckpt-incremental";
/// The step file of an incremental checkpoint.
pub(crate) const INDEX_FILE: &str = "checkpoint.index.json";
/// Where the chunks live, under the run's root.
pub(crate) const BLOBS: &str = "blobs";
/// The chunk size: a tensor's bytes are hashed and stored in pieces of
/// this many bytes, so a few changed rows rewrite a few chunks.
pub(crate) const CHUNK: usize = 4 << 20;

/// A blob's name: the XXH3-128 of its bytes in hex.
pub(crate) fn chunk_hash(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

/// The blob path of a chunk.
pub(crate) fn blob_name(hash: &str) -> String {
    format!("{BLOBS}/{hash}")
}

/// A checkpoint cut into chunks: the index to write and every chunk (a
/// tensor and a byte range of it) by hash, in order.
pub(crate) struct Chunked {
    pub index: Vec<u8>,
    pub chunks: Vec<(String, TensorData, std::ops::Range<usize>)>,
    /// The tensors' bytes.
    pub logical: u64,
}

impl Chunked {
    /// The distinct chunk hashes.
    pub fn hashes(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.chunks
            .iter()
            .filter(|(h, _, _)| seen.insert(h.clone()))
            .map(|(h, _, _)| h.clone())
            .collect()
    }
}

/// Chunk hashes of tensors from earlier saves, by the address and length
/// of their bytes; each entry holds a clone of its tensor, so the bytes
/// (immutable while any clone lives) cannot change under the key. Tensors
/// over borrowed memory (another library's, which it may change in place
/// at the same address) are never cached.
pub(crate) type HashCache = HashMap<(usize, usize), (TensorData, Vec<String>)>;

fn cache_key(t: &TensorData) -> (usize, usize) {
    (t.bytes().as_ptr() as usize, t.bytes().len())
}

/// Cuts `value`'s tensors into chunks and hashes them (on every core),
/// reusing `cache`'s hashes for tensors it holds; returns the cache of this
/// checkpoint's tensors.
pub(crate) fn chunk(value: &Value, cache: &HashCache) -> Result<(Chunked, HashCache)> {
    let (tree, tensors) = flatten(value)?;
    let mut pieces = Vec::new();
    for (name, t) in tensors.iter() {
        if !t.is_borrowed() && cache.contains_key(&cache_key(t)) {
            continue;
        }
        let len = t.bytes().len();
        let mut start = 0;
        while start < len {
            let end = (start + CHUNK).min(len);
            pieces.push((name.clone(), t.clone(), start..end));
            start = end;
        }
    }
    let hashes = crate::parallel::map(&pieces, |(_, t, range)| {
        chunk_hash(&t.bytes()[range.clone()])
    });
    let mut fresh: IndexMap<&str, Vec<String>> = IndexMap::new();
    for ((name, _, _), hash) in pieces.iter().zip(hashes) {
        fresh.entry(name.as_str()).or_default().push(hash);
    }
    let mut next = HashCache::with_capacity(tensors.len());
    let mut list = Vec::with_capacity(tensors.len());
    let mut chunks = Vec::new();
    for (name, t) in tensors.iter() {
        let key = cache_key(t);
        let hashes = match (fresh.swap_remove(name.as_str()), cache.get(&key)) {
            (Some(h), _) => h,
            (None, Some((_, h))) => h.clone(),
            (None, None) => Vec::new(), // an empty tensor has no chunks
        };
        for (i, hash) in hashes.iter().enumerate() {
            let start = i * CHUNK;
            let end = (start + CHUNK).min(t.bytes().len());
            chunks.push((hash.clone(), t.clone(), start..end));
        }
        list.push(json!({
            "name": name,
            "dtype": t.dtype().safetensors_name(),
            "shape": t.shape(),
            "chunks": hashes,
        }));
        if !t.is_borrowed() {
            next.insert(key, (t.clone(), hashes));
        }
    }
    let index = json!({
        "format": FORMAT,
        "version": 1,
        "chunk": CHUNK,
        "tree": tree,
        "tensors": list,
    })
    .to_string()
    .into_bytes();
    let chunked = Chunked {
        index,
        chunks,
        logical: tensors.total_bytes(),
    };
    Ok((chunked, next))
}

/// One tensor of a parsed index.
pub(crate) struct Entry {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    chunks: Vec<String>,
}

/// A parsed index: the tree, the tensors, the chunk size.
pub(crate) struct Index {
    tree: Option<String>,
    chunk: usize,
    pub entries: Vec<Entry>,
}

impl Index {
    /// Every chunk hash the index names.
    pub fn hashes(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .flat_map(|e| e.chunks.iter().map(String::as_str))
    }
}

/// Parses and checks an index (`path` names it in errors).
pub(crate) fn parse(bytes: &[u8], path: &Path) -> Result<Index> {
    let json: Json = crate::json::parse(bytes).map_err(|e| Error::BadStore {
        path: path.to_owned(),
        reason: format!("index is not JSON ({e})"),
    })?;
    from_json(&json, path)
}

/// Checks a parsed index (`path` names it in errors).
pub(crate) fn from_json(json: &Json, path: &Path) -> Result<Index> {
    let bad = |reason: String| Error::BadStore {
        path: path.to_owned(),
        reason,
    };
    if json.get("format").and_then(Json::as_str) != Some(FORMAT)
        || json.get("version").and_then(Json::as_u64) != Some(1)
    {
        return Err(bad("not a version 1 ckpt incremental index".into()));
    }
    let chunk = json
        .get("chunk")
        .and_then(Json::as_u64)
        .filter(|&c| c > 0)
        .and_then(|c| usize::try_from(c).ok())
        .ok_or_else(|| bad("chunk size is missing".into()))?;
    let tree = match json.get("tree") {
        Some(Json::String(s)) => Some(s.clone()),
        Some(Json::Null) | None => None,
        _ => return Err(bad("tree is not a string".into())),
    };
    let mut entries = Vec::new();
    for t in json
        .get("tensors")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("tensors is not a list".into()))?
    {
        let name = t
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| bad("a tensor has no name".into()))?
            .to_owned();
        let dtype = t
            .get("dtype")
            .and_then(Json::as_str)
            .and_then(DType::from_safetensors)
            .ok_or_else(|| bad(format!("{name}: unknown dtype")))?;
        let shape = t
            .get("shape")
            .and_then(Json::as_array)
            .and_then(|s| {
                s.iter()
                    .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| bad(format!("{name}: bad shape")))?;
        let chunks = t
            .get("chunks")
            .and_then(Json::as_array)
            .and_then(|c| {
                c.iter()
                    .map(|h| {
                        h.as_str()
                            .filter(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                            .map(str::to_owned)
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| bad(format!("{name}: chunks must be 32-digit hashes")))?;
        let len = byte_len(dtype, &shape).ok_or_else(|| bad(format!("{name}: shape overflows")))?;
        if len.div_ceil(chunk as u64) != chunks.len() as u64 {
            return Err(bad(format!(
                "{name}: {} chunks for {len} bytes in chunks of {chunk}",
                chunks.len()
            )));
        }
        entries.push(Entry {
            name,
            dtype,
            shape,
            chunks,
        });
    }
    Ok(Index {
        tree,
        chunk,
        entries,
    })
}

/// The checkpoint an index stands for (at `path`, in a run at `root`),
/// its chunks read by `read` and their hashes checked when `verify`.
pub(crate) fn assemble(
    index: &Index,
    read: impl Fn(&str) -> Result<Vec<u8>>,
    verify: bool,
    root: &Path,
    path: &Path,
) -> Result<Value> {
    let mut tensors = IndexMap::with_capacity(index.entries.len());
    for e in &index.entries {
        let len = byte_len(e.dtype, &e.shape).expect("checked by parse") as usize;
        // The shape is only a claim until the chunks are read: reserve no
        // more than one chunk (at most 64 MiB) up front and grow as real
        // bytes arrive, so an index claiming terabytes allocates nothing.
        let mut bytes = Vec::with_capacity(len.min(index.chunk).min(64 << 20));
        for (i, hash) in e.chunks.iter().enumerate() {
            let chunk = read(hash)?;
            let expected = (len - i * index.chunk).min(index.chunk);
            if chunk.len() != expected || (verify && chunk_hash(&chunk) != *hash) {
                return Err(Error::HashMismatch {
                    path: root.join(blob_name(hash)),
                    expected: hash.clone(),
                    found: if chunk.len() == expected {
                        chunk_hash(&chunk)
                    } else {
                        format!("{} bytes where {expected} belong", chunk.len())
                    },
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        tensors.insert(
            e.name.clone(),
            TensorData::new(e.dtype, e.shape.clone(), bytes)?,
        );
    }
    let mut metadata = IndexMap::new();
    if let Some(tree) = &index.tree {
        metadata.insert(TREE_KEY.to_owned(), tree.clone());
    }
    rebuild(tensors, &mut metadata, path)
}
