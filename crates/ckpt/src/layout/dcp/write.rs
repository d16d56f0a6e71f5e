//! Writing DCP folders that `torch.distributed.checkpoint.load` reads.
//!
//! Each rank writes its items back to back into `__<rank>_0.distcp` (each
//! a whole `torch.save` archive, as torch writes them), then
//! `__<rank>_0.ckpt.json`, what they are, whose presence says the rank's
//! file is whole. The commit, run by any one rank once all are there,
//! gathers the descriptions, checks that every tensor's chunks tile it,
//! writes `ckpt.integrity.json` (each item's content hash, a file torch
//! never opens) and then `.metadata`, atomically, last: until it is there
//! no reader sees the checkpoint.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value as Json};

use crate::format::pytorch::write::Plan;
use crate::format::WritePlan;
use crate::storage::hash::{HashingWriter, StreamHasher};
use crate::storage::Storage;
use crate::{DType, Error, Key, Result, TensorData, Value};

use super::assemble::check_cover;
use super::{metadata, Chunk, Entry, Item, Stored, MAX_CHUNKS, METADATA};

/// The file of content hashes beside `.metadata`, which torch ignores.
pub const INTEGRITY: &str = "ckpt.integrity.json";

/// The `format` of [`INTEGRITY`].
const INTEGRITY_FORMAT: &str = "ckpt-dcp-integrity";

/// One thing a rank saves, under its flattened key (`fqn`) and its path
/// in the tree.
pub(crate) struct Piece<'a> {
    pub(crate) fqn: String,
    pub(crate) path: Vec<Key>,
    pub(crate) what: What<'a>,
}

/// A tensor chunk, placed in its whole tensor, or a non-tensor value.
pub(crate) enum What<'a> {
    Chunk {
        size: Vec<usize>,
        offsets: Vec<usize>,
        data: &'a TensorData,
    },
    Value(&'a Value),
}

/// A refusal to write, naming the folder or file.
fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadStore {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The data file of `rank`.
pub(crate) fn data_file(rank: usize) -> String {
    format!("__{rank}_0.distcp")
}

/// The description of `rank`'s file.
fn description(rank: usize) -> String {
    format!("__{rank}_0.ckpt.json")
}

/// `value` (a dict at the top) as torch's `DefaultSavePlanner` flattens
/// it: dicts descended (keys as strings), a list descended only when it
/// holds a tensor, a dict or such a list, everything else one item;
/// flattened keys are the path joined with `.`.
pub(crate) fn flatten<'a>(value: &'a Value, at: &Path) -> Result<Vec<Piece<'a>>> {
    let Value::Dict(top) = value else {
        return Err(bad(at, "a DCP checkpoint holds a dict at the top"));
    };
    let mut pieces = Vec::new();
    for (k, v) in top {
        visit(vec![Key::Str(k.to_string())], v, &mut pieces);
    }
    let mut seen = HashMap::new();
    for p in &pieces {
        if let Some(other) = seen.insert(p.fqn.as_str(), &p.path) {
            return Err(bad(
                at,
                format!(
                    "{}: two values flatten to this key ({other:?} and {:?})",
                    p.fqn, p.path
                ),
            ));
        }
    }
    Ok(pieces)
}

fn visit<'a>(path: Vec<Key>, value: &'a Value, out: &mut Vec<Piece<'a>>) {
    let mut child = |key: Key, v: &'a Value| {
        let mut p = path.clone();
        p.push(key);
        visit(p, v, out);
    };
    match value {
        Value::Dict(d) => d
            .iter()
            .for_each(|(k, v)| child(Key::Str(k.to_string()), v)),
        Value::List(items) if !terminal(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| child(Key::Int(i as i64), v)),
        _ => {
            let fqn = path
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(".");
            let what = match value {
                Value::Tensor(t) => What::Chunk {
                    size: t.shape().to_vec(),
                    offsets: vec![0; t.shape().len()],
                    data: t,
                },
                _ => What::Value(value),
            };
            out.push(Piece { fqn, path, what });
        }
    }
}

/// torch's `_is_terminal` for a list: no tensor, no dict, no list that is
/// not itself terminal.
fn terminal(items: &[Value]) -> bool {
    items.iter().all(|v| match v {
        Value::Tensor(_) | Value::Dict(_) => false,
        Value::List(l) => terminal(l),
        _ => true,
    })
}

/// Saves `value` (a dict) as a one-rank DCP folder at `dir`, which must
/// not hold a checkpoint already.
pub(crate) fn save(dir: &Path, value: &Value) -> Result<()> {
    let storage = crate::storage::Location::parse(dir).storage()?;
    let pieces = flatten(value, dir)?;
    write_rank(&*storage, dir, 0, 1, &pieces)?;
    commit(&*storage, dir, 1)
}

/// Writes rank `rank`'s pieces of a `world`-rank checkpoint: the data
/// file, synced, then its description.
pub(crate) fn write_rank(
    storage: &dyn Storage,
    dir: &Path,
    rank: usize,
    world: usize,
    pieces: &[Piece<'_>],
) -> Result<()> {
    if rank >= world {
        return Err(bad(
            dir,
            format!("rank {rank} is not below the world size {world}"),
        ));
    }
    storage.create_root().map_err(|e| Error::io(dir, e))?;
    // Rewriting a committed folder's data would break it in place.
    match storage.read_range(METADATA, 0..1) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(dir.join(METADATA), e)),
        Ok(_) => {
            return Err(bad(
                dir,
                "already holds a committed DCP checkpoint (.metadata); \
                 save into a new folder",
            ))
        }
    }
    let plans = pieces
        .iter()
        .map(|p| {
            let value = match &p.what {
                What::Chunk { data, .. } => Value::Tensor((*data).clone()),
                What::Value(v) => (*v).clone(),
            };
            Plan::new(&value, Path::new("archive"))
        })
        .collect::<Result<Vec<_>>>()?;
    // A rank saving again: its old description goes first, so that no
    // commit takes the data file while it is rewritten.
    let name = description(rank);
    match storage.remove(&name) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(dir.join(&name), e))
        }
        _ => storage.sync("").map_err(|e| Error::io(dir, e))?,
    }
    let file = data_file(rank);
    let mut written: Vec<(u64, u64, String)> = Vec::new();
    storage
        .write(&file, &mut |out| {
            written.clear();
            let mut at = 0;
            for plan in &plans {
                let mut w = HashingWriter {
                    out: &mut *out,
                    hasher: StreamHasher::new(),
                };
                plan.write_to(&mut w)?;
                let (hash, length) = w.hasher.finish();
                written.push((at, length, hash));
                at += length;
            }
            Ok(())
        })
        .map_err(|e| Error::io(dir.join(&file), e))?;
    storage
        .sync(&file)
        .map_err(|e| Error::io(dir.join(&file), e))?;
    let items: Vec<Json> = pieces
        .iter()
        .zip(&written)
        .map(|(p, (offset, length, hash))| describe(p, *offset, *length, hash))
        .collect();
    let text = json!({"rank": rank, "world": world, "file": file, "items": items}).to_string();
    storage
        .write(&name, &mut |out| out.write_all(text.as_bytes()))
        .and_then(|()| storage.sync(&name))
        .and_then(|()| storage.sync(""))
        .map_err(|e| Error::io(dir.join(&name), e))
}

/// One item of a rank's description.
fn describe(p: &Piece<'_>, offset: u64, length: u64, hash: &str) -> Json {
    let path: Vec<Json> = p
        .path
        .iter()
        .map(|k| match k {
            Key::Str(s) => json!(s),
            Key::Int(i) => json!(i),
        })
        .collect();
    let mut item = json!({"fqn": p.fqn, "path": path, "offset": offset,
                          "length": length, "hash": hash});
    if let What::Chunk {
        size,
        offsets,
        data,
    } = &p.what
    {
        item["dtype"] = json!(data.dtype().safetensors_name());
        item["size"] = json!(size);
        item["offsets"] = json!(offsets);
        item["sizes"] = json!(data.shape());
    }
    item
}

/// Commits the checkpoint in `dir` once all `world` ranks' files are
/// whole: merges their items (a value or chunk more than one rank saved
/// is kept once), checks that every tensor's chunks tile it, writes the
/// content hashes, then `.metadata`. Any rank may run it.
pub(crate) fn commit(storage: &dyn Storage, dir: &Path, world: usize) -> Result<()> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut hashes = Vec::new();
    let mut missing = Vec::new();
    for rank in 0..world {
        let name = description(rank);
        let bytes = match storage.read(&name) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(rank);
                continue;
            }
            Err(e) => return Err(Error::io(dir.join(&name), e)),
        };
        let path = dir.join(&name);
        let text: Json =
            crate::json::parse(&bytes).map_err(|e| bad(&path, format!("not JSON ({e})")))?;
        if text["rank"].as_u64() != Some(rank as u64)
            || text["world"].as_u64() != Some(world as u64)
        {
            return Err(bad(&path, format!("not rank {rank} of {world}")));
        }
        let file = data_file(rank);
        for item in text["items"].as_array().into_iter().flatten() {
            let (entry, hash) = read_item(item, &file, &path)?;
            hashes.push(json!({"file": file, "offset": entry_item(&entry).offset,
                               "length": entry_item(&entry).length, "hash": hash}));
            merge(&mut entries, &mut index, entry, &path)?;
        }
    }
    if !missing.is_empty() {
        return Err(bad(
            dir,
            format!("not committed: the files of ranks {missing:?} of {world} are not whole"),
        ));
    }
    for e in &mut entries {
        if let Stored::Tensor { size, chunks, .. } = &mut e.stored {
            drop_empty(chunks);
            if chunks.len() > MAX_CHUNKS {
                return Err(bad(
                    dir,
                    format!("{}: more than {MAX_CHUNKS} chunks", e.fqn),
                ));
            }
            check_cover(size, chunks).map_err(|p| bad(dir, format!("{}: {p}", e.fqn)))?;
        }
    }
    let integrity = json!({"format": INTEGRITY_FORMAT, "version": 1, "items": hashes}).to_string();
    replace(storage, dir, INTEGRITY, integrity.as_bytes())?;
    replace(storage, dir, METADATA, &metadata::write(&entries))
}

/// `name` in `dir` becomes `bytes`, whole or not at all, through `storage`.
fn replace(storage: &dyn Storage, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    crate::storage::replace(storage, name, true, &mut |out| out.write_all(bytes))
        .map_err(|e| Error::io(dir.join(name), e.into_io()))
}

/// Drops empty chunks whose offsets another chunk has (a rank that held
/// no rows of a tensor): DCP keys items by offsets.
fn drop_empty(chunks: &mut Vec<Chunk>) {
    let empty = |c: &Chunk| c.sizes.contains(&0);
    chunks.sort_by_key(empty);
    let mut seen = std::collections::HashSet::new();
    chunks.retain(|c| seen.insert(c.offsets.clone()) || !empty(c));
}

/// The first item of an entry just read (it holds exactly one).
fn entry_item(e: &Entry) -> &Item {
    match &e.stored {
        Stored::Bytes(item) => item,
        Stored::Tensor { chunks, .. } => &chunks[0].item,
    }
}

/// Adds a rank's item to the entries: a new key, another chunk of a
/// tensor, or a copy of what another rank saved (dropped).
fn merge(
    entries: &mut Vec<Entry>,
    index: &mut HashMap<String, usize>,
    entry: Entry,
    at: &Path,
) -> Result<()> {
    let Some(&i) = index.get(&entry.fqn) else {
        index.insert(entry.fqn.clone(), entries.len());
        entries.push(entry);
        return Ok(());
    };
    let old = &mut entries[i];
    let clash = |what: &str| bad(at, format!("{}: ranks disagree on its {what}", entry.fqn));
    if old.path != entry.path {
        return Err(clash("path in the tree"));
    }
    match (&mut old.stored, entry.stored) {
        (Stored::Bytes(_), Stored::Bytes(_)) => Ok(()),
        (
            Stored::Tensor {
                dtype,
                size,
                chunks,
            },
            Stored::Tensor {
                dtype: d,
                size: s,
                chunks: new,
            },
        ) => {
            if *dtype != d || *size != s {
                return Err(clash("dtype or shape"));
            }
            for c in new {
                // A replicated chunk more than one rank saved (kept from
                // the first, as torch's planner keeps one writer's).
                let copy = |o: &Chunk| (&o.offsets, &o.sizes) == (&c.offsets, &c.sizes);
                if !chunks.iter().any(copy) {
                    chunks.push(c);
                }
            }
            Ok(())
        }
        _ => Err(clash("kind (tensor or value)")),
    }
}

/// One item of a rank's description, as an entry holding it, and its hash.
fn read_item(item: &Json, file: &str, at: &Path) -> Result<(Entry, String)> {
    let fqn = item["fqn"]
        .as_str()
        .ok_or_else(|| bad(at, "an item without a key"))?
        .to_owned();
    let wrong = |what: &str| bad(at, format!("{fqn}: bad {what}"));
    let path = item["path"]
        .as_array()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| wrong("path"))?
        .iter()
        .map(|k| match k {
            Json::String(s) => Ok(Key::Str(s.clone())),
            k => k.as_i64().map(Key::Int).ok_or_else(|| wrong("path")),
        })
        .collect::<Result<Vec<_>>>()?;
    let num = |k: &str| item[k].as_u64().ok_or_else(|| wrong(k));
    let hash = item["hash"]
        .as_str()
        .ok_or_else(|| wrong("hash"))?
        .to_owned();
    let stored_item = Item {
        file: file.to_owned(),
        offset: num("offset")?,
        length: num("length")?,
        hash: Some(hash.clone()),
        zstd: false,
    };
    let dims = |k: &str| -> Result<Vec<usize>> {
        item[k]
            .as_array()
            .ok_or_else(|| wrong(k))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize).ok_or_else(|| wrong(k)))
            .collect()
    };
    let stored = match item["dtype"].as_str() {
        None => Stored::Bytes(stored_item),
        Some(name) => Stored::Tensor {
            dtype: DType::from_safetensors(name).ok_or_else(|| wrong("dtype"))?,
            size: dims("size")?,
            chunks: vec![Chunk {
                offsets: dims("offsets")?,
                sizes: dims("sizes")?,
                item: stored_item,
            }],
        },
    };
    Ok((Entry { fqn, path, stored }, hash))
}

/// Content hashes by (file, offset, length).
pub(crate) type Hashes = HashMap<(String, u64, u64), String>;

/// The content hashes in `dir`'s `ckpt.integrity.json`, by (file, offset,
/// length); none when the folder has none (torch wrote it).
pub(crate) fn read_integrity(storage: &dyn Storage, dir: &Path) -> Result<Option<Hashes>> {
    let path = dir.join(INTEGRITY);
    let bytes = match storage.read(INTEGRITY) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let text: Json =
        crate::json::parse(&bytes).map_err(|e| bad(&path, format!("not JSON ({e})")))?;
    if text["format"].as_str() != Some(INTEGRITY_FORMAT) {
        return Err(bad(&path, format!("not a {INTEGRITY_FORMAT} file")));
    }
    let mut hashes = HashMap::new();
    for item in text["items"].as_array().into_iter().flatten() {
        let (Some(file), Some(offset), Some(length), Some(hash)) = (
            item["file"].as_str(),
            item["offset"].as_u64(),
            item["length"].as_u64(),
            item["hash"].as_str(),
        ) else {
            return Err(bad(&path, "an item without file, offset, length and hash"));
        };
        hashes.insert((file.to_owned(), offset, length), hash.to_owned());
    }
    Ok(Some(hashes))
}
