//! PyTorch Distributed Checkpoint (DCP) folders, as
//! `torch.distributed.checkpoint.save` writes them: `.metadata` (a pickle
//! of `Metadata`) and `__<rank>_<n>.distcp` files, each item a whole
//! `torch.save` archive at `[offset, offset + length)`. Read as one
//! checkpoint tree: a sharded tensor's chunks placed into the whole tensor,
//! non-tensor values read through the safe pickle reader, nesting rebuilt
//! from `planner_data`; written by [`write`] (one rank's folder, or the
//! ranks of [`crate::layout::distributed`]) so that torch reads it back.
//! The facts are in `tests/fixtures/dcp/NOTES.md`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::format::{Format, LoadOptions, Loaded};
use crate::storage::Storage;
use crate::tensor::Buffer;
use crate::{byte_len, DType, Dict, Error, Key, Result, TensorData, Value};

mod assemble;
mod consolidate;
pub mod hf;
mod metadata;
mod ranged;
pub(crate) mod write;

pub use consolidate::{consolidate, Consolidated};
pub use write::INTEGRITY;

pub(crate) use assemble::place_chunk;
use assemble::{check_cover, place};
use metadata::parse;

/// The index file of a DCP folder.
pub const METADATA: &str = ".metadata";

/// The module DCP's index classes live in.
const MODULE: &str = "torch.distributed.checkpoint.metadata";

/// The most chunks ckpt assembles into one tensor (their overlap check is
/// quadratic).
const MAX_CHUNKS: usize = 4096;

/// Where an item's bytes are, and their content hash when ckpt wrote
/// them (from [`write::INTEGRITY`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub(crate) file: String,
    pub(crate) offset: u64,
    pub(crate) length: u64,
    pub(crate) hash: Option<String>,
    /// Stored through DCP's zstd stream transform (`stream.zstd/1`).
    pub(crate) zstd: bool,
}

/// `storage_data`: an item by its key and, for a tensor chunk, the
/// chunk's offsets.
type Items = HashMap<(String, Option<Vec<usize>>), Item>;

/// One piece of a tensor: where it sits in the whole, and its item.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chunk {
    pub(crate) offsets: Vec<usize>,
    pub(crate) sizes: Vec<usize>,
    pub(crate) item: Item,
}

/// What a flattened key holds.
#[derive(Debug, Clone, PartialEq)]
enum Stored {
    Tensor {
        dtype: DType,
        size: Vec<usize>,
        chunks: Vec<Chunk>,
    },
    Bytes(Item),
}

/// One flattened key of the checkpoint, where it goes in the tree, and
/// what holds it.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    fqn: String,
    path: Vec<Key>,
    stored: Stored,
}

/// Reads the DCP folder `dir` through `storage` (whose root is the
/// folder) as one checkpoint tree; [`crate::read`] of the folder's path
/// comes here.
pub fn read(dir: &Path, storage: &dyn Storage, options: &LoadOptions) -> Result<Loaded> {
    let meta_path = dir.join(METADATA);
    let entries = entries(storage, dir)?;
    let mut files = Files {
        dir,
        storage,
        options,
        open: HashMap::new(),
        counted: HashSet::new(),
        held: 0,
        credited: HashSet::new(),
        in_files: 0,
        allocated: 0,
    };
    let mut root = Value::Dict(Dict::new());
    let longest = entries.len();
    for entry in entries {
        let value = match &entry.stored {
            Stored::Bytes(item) => files.load(item)?,
            Stored::Tensor {
                dtype,
                size,
                chunks,
            } => Value::Tensor(files.tensor(&entry.path, *dtype, size, chunks)?),
        };
        place(&mut root, &entry.path, value, longest, &meta_path)?;
    }
    Ok(Loaded {
        format: Format::Dcp,
        value: root,
        metadata: Default::default(),
        pickle: None,
        module: None,
    })
}

/// Whether `path` is a DCP folder: a local folder or an `s3://` prefix
/// holding `.metadata` (a prefix that cannot be listed is not).
pub fn is_folder(path: &Path) -> bool {
    let location = crate::storage::Location::parse(path);
    if location.is_local_dir() {
        return path.join(METADATA).is_file();
    }
    location.is_remote()
        && Format::from_path(path).is_err()
        && location
            .storage()
            .and_then(|s| s.list().map_err(|e| Error::io(path, e)))
            .is_ok_and(|names| names.iter().any(|n| n == METADATA))
}

/// A whole tensor of a DCP folder: its key, dtype, size and the chunks
/// that tile it.
pub(crate) struct Tensor {
    pub(crate) fqn: String,
    pub(crate) dtype: DType,
    pub(crate) size: Vec<usize>,
    pub(crate) chunks: Vec<Chunk>,
}

/// The tensors of the DCP folder `dir` (through `storage`), each checked
/// to be tiled by its chunks, without reading any data file.
pub(crate) fn tensors(storage: &dyn Storage, dir: &Path) -> Result<Vec<Tensor>> {
    let meta_path = dir.join(METADATA);
    let entries = entries(storage, dir)?;
    let mut tensors = Vec::new();
    for e in entries {
        if let Stored::Tensor {
            dtype,
            size,
            chunks,
        } = e.stored
        {
            check_cover(&size, &chunks).map_err(|p| bad(&meta_path, format!("{}: {p}", e.fqn)))?;
            tensors.push(Tensor {
                fqn: e.fqn,
                dtype,
                size,
                chunks,
            });
        }
    }
    Ok(tensors)
}

/// Reads one chunk of a tensor of `dtype` with a ranged read: its item,
/// checked against its hash when known, as the `torch.save` archive it is.
pub(crate) fn read_chunk(
    storage: &dyn Storage,
    dir: &Path,
    dtype: DType,
    chunk: &Chunk,
) -> Result<TensorData> {
    let bytes = item_bytes(storage, dir, &chunk.item)?;
    chunk_tensor(&bytes, &chunk.item, dtype, &chunk.sizes, dir)
}

/// Rows `rows` (counted within the chunk) of a chunk's data. Some rows of
/// a large chunk are read alone where its item allows (their hash is not
/// checked: it covers the whole item); otherwise the whole item is read,
/// checked and cut.
pub(crate) fn read_chunk_rows(
    storage: &dyn Storage,
    dir: &Path,
    dtype: DType,
    chunk: &Chunk,
    rows: std::ops::Range<usize>,
) -> Result<Vec<u8>> {
    let row = byte_len(dtype, chunk.sizes.get(1..).unwrap_or(&[])).unwrap_or(0);
    let (a, b) = (rows.start as u64 * row, rows.end as u64 * row);
    if rows.len() < chunk.sizes.first().copied().unwrap_or(1) {
        if let Some(at) = ranged::locate(storage, dir, dtype, chunk)? {
            let path = dir.join(&chunk.item.file);
            let got = storage
                .read_range(&chunk.item.file, at + a..at + b)
                .map_err(|e| Error::io(&path, e))?;
            if got.len() as u64 != b - a {
                return Err(bad(&path, "a chunk's rows lie past the file's end"));
            }
            return Ok(got);
        }
    }
    let t = read_chunk(storage, dir, dtype, chunk)?;
    Ok(t.bytes()[a as usize..b as usize].to_vec())
}

/// Reads a non-tensor value's item with a ranged read.
pub(crate) fn read_value(storage: &dyn Storage, dir: &Path, item: &Item) -> Result<Value> {
    let bytes = item_bytes(storage, dir, item)?;
    item_value(&bytes, item, value_need(item), dir)
}

/// What a value's archive may decode to: 1024 bytes per stored byte, as
/// deflate.
fn value_need(item: &Item) -> u64 {
    item.length.saturating_mul(1024)
}

/// An item's stored bytes, read with one ranged read and checked to be
/// all there.
fn item_bytes(storage: &dyn Storage, dir: &Path, item: &Item) -> Result<Vec<u8>> {
    let path = dir.join(&item.file);
    let end = item
        .offset
        .checked_add(item.length)
        .ok_or_else(|| bad(&path, "an item's end overflows"))?;
    let bytes = storage
        .read_range(&item.file, item.offset..end)
        .map_err(|e| Error::io(&path, e))?;
    if bytes.len() as u64 != item.length {
        return Err(bad(
            &path,
            format!(
                "an item at [{}, +{}) lies past the file's end",
                item.offset, item.length
            ),
        ));
    }
    Ok(bytes)
}

/// The most a zstd frame expands: one 128 KiB run-length block per 4
/// bytes.
const ZSTD_MAX_RATIO: u64 = 32 << 10;

/// Bytes an archive holds beyond its tensor's data (names, pickle,
/// alignment) that an item may decode to.
const ARCHIVE_SLACK: u64 = 1 << 20;

/// The bytes an item stands for in the memory budget: its length, or
/// for a zstd item what it may decode to (at most `claim`).
fn stands_for(item: &Item, claim: u64) -> u64 {
    match item.zstd {
        false => item.length,
        true => claim.min(item.length.saturating_mul(ZSTD_MAX_RATIO)),
    }
}

/// An item's stored bytes as the archive they hold: zstd-decoded, at
/// most `need` + [`ARCHIVE_SLACK`] bytes and never more than the frame
/// can expand to, when stored through the transform.
fn decoded<'b>(bytes: &'b [u8], item: &Item, need: u64, dir: &Path) -> Result<Cow<'b, [u8]>> {
    if !item.zstd {
        return Ok(Cow::Borrowed(bytes));
    }
    let path = dir.join(&item.file).join(format!("@{}", item.offset));
    let limit = need
        .min((bytes.len() as u64).saturating_mul(ZSTD_MAX_RATIO))
        .saturating_add(ARCHIVE_SLACK);
    let mut source = bytes;
    let decoder = ruzstd::decoding::StreamingDecoder::new(&mut source)
        .map_err(|e| bad(&path, format!("not a zstd stream ({e})")))?;
    let mut out = Vec::new();
    decoder
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(&path, format!("a broken zstd stream ({e})")))?;
    if out.len() as u64 > limit {
        return Err(bad(
            &path,
            format!("its zstd stream decodes past {limit} bytes"),
        ));
    }
    Ok(Cow::Owned(out))
}

/// A chunk's item bytes as its tensor, checked against the hash and
/// against the dtype and shape the index gives.
fn chunk_tensor(
    bytes: &[u8],
    item: &Item,
    dtype: DType,
    sizes: &[usize],
    dir: &Path,
) -> Result<TensorData> {
    let path = dir.join(&item.file);
    let need = byte_len(dtype, sizes).unwrap_or(u64::MAX);
    let Value::Tensor(t) = item_value(bytes, item, need, dir)? else {
        return Err(bad(
            &path,
            format!("the item at {} is not a tensor", item.offset),
        ));
    };
    if t.dtype() != dtype || t.shape() != sizes {
        return Err(bad(
            &path,
            format!(
                "the item at {} is {} {:?}, the index says {dtype} {sizes:?}",
                item.offset,
                t.dtype(),
                t.shape()
            ),
        ));
    }
    Ok(t)
}

/// An item's bytes read as the `torch.save` archive it is, after its hash
/// (when known) is checked; a zstd item decoded to at most about `need`
/// bytes.
fn item_value(bytes: &[u8], item: &Item, need: u64, dir: &Path) -> Result<Value> {
    let path = dir.join(&item.file);
    if let Some(expected) = &item.hash {
        let found = crate::storage::hash::content_hash(bytes);
        if &found != expected {
            return Err(Error::HashMismatch {
                path: path.join(format!("@{}", item.offset)),
                expected: expected.clone(),
                found,
            });
        }
    }
    let entry = path.join(format!("@{}", item.offset));
    let archive = decoded(bytes, item, need, dir)?.into_owned();
    crate::format::read(Format::PyTorch, Arc::new(Buffer::Heap(archive)), &entry).map(|l| l.value)
}

/// The entries of the folder's `.metadata`, each item with the content
/// hash `ckpt.integrity.json` records for it (when ckpt wrote the folder).
fn entries(storage: &dyn Storage, dir: &Path) -> Result<Vec<Entry>> {
    let meta_path = dir.join(METADATA);
    let bytes = storage
        .read(METADATA)
        .map_err(|e| Error::io(&meta_path, e))?;
    let mut entries = parse(&bytes, &meta_path)?;
    attach_hashes(&mut entries, storage, dir)?;
    Ok(entries)
}

/// Gives each item the content hash `ckpt.integrity.json` records for it,
/// when the folder has one (ckpt wrote it).
fn attach_hashes(entries: &mut [Entry], storage: &dyn Storage, dir: &Path) -> Result<()> {
    let Some(hashes) = write::read_integrity(storage, dir)? else {
        return Ok(());
    };
    for e in entries {
        let items: Vec<&mut Item> = match &mut e.stored {
            Stored::Bytes(item) => vec![item],
            Stored::Tensor { chunks, .. } => chunks.iter_mut().map(|c| &mut c.item).collect(),
        };
        for item in items {
            item.hash = hashes
                .get(&(item.file.clone(), item.offset, item.length))
                .cloned();
        }
    }
    Ok(())
}

/// A bad `.metadata`: names the file and what is wrong.
fn bad(path: &Path, problem: impl Into<String>) -> Error {
    Error::Folder {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// Slack over the items' bytes that whole tensors may take.
const SLACK: u64 = 16 << 20;

/// The `.distcp` files of a folder, each opened once, and the memory
/// budget: whole tensors take at most the bytes of the distinct items
/// that hold them (+ [`SLACK`]), so a table that names one item many
/// times, or claims a tensor larger than its chunks, allocates nothing.
struct Files<'a> {
    dir: &'a Path,
    storage: &'a dyn Storage,
    options: &'a LoadOptions,
    open: HashMap<String, Arc<Buffer>>,
    /// The items counted into `held`.
    counted: HashSet<(String, u64)>,
    held: u64,
    /// The files counted into `in_files`: what their bytes may stand for
    /// (items that overlap in a file never count its bytes twice).
    credited: HashSet<String>,
    in_files: u64,
    allocated: u64,
}

impl Files<'_> {
    /// The bytes of `item`, checked to lie within its file.
    fn bytes(&mut self, item: &Item) -> Result<&[u8]> {
        let path = self.dir.join(&item.file);
        if !self.open.contains_key(&item.file) {
            let buffer = match self.storage.local_path(&item.file) {
                Some(local) => crate::storage::open(&local, self.options.open_as())?,
                None => Arc::new(Buffer::Heap(
                    self.storage
                        .read(&item.file)
                        .map_err(|e| Error::io(&path, e))?,
                )),
            };
            self.open.insert(item.file.clone(), buffer);
        }
        let all = self.open[&item.file].as_slice();
        let end = item.offset.checked_add(item.length);
        match end {
            Some(end) if end <= all.len() as u64 => Ok(&all[item.offset as usize..end as usize]),
            _ => Err(bad(
                &path,
                format!(
                    "an item at [{}, +{}) lies past the file's {} bytes",
                    item.offset,
                    item.length,
                    all.len()
                ),
            )),
        }
    }

    /// An item read as the `torch.save` archive it is: a tensor chunk, or
    /// a non-tensor value.
    fn load(&mut self, item: &Item) -> Result<Value> {
        let dir = self.dir;
        item_value(self.bytes(item)?, item, value_need(item), dir)
    }

    /// The whole tensor its chunks make, each chunk placed at its offsets.
    fn tensor(
        &mut self,
        key: &[Key],
        dtype: DType,
        size: &[usize],
        chunks: &[Chunk],
    ) -> Result<TensorData> {
        let name = key
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(".");
        let meta = self.dir.join(METADATA);
        check_cover(size, chunks).map_err(|p| bad(&meta, format!("{name}: {p}")))?;
        // Every chunk's item holds at least its bytes: the tensors are no
        // larger than the distinct items that hold them.
        let total =
            byte_len(dtype, size).ok_or_else(|| bad(&meta, format!("{name}: too large")))?;
        for chunk in chunks {
            self.bytes(&chunk.item)?;
            let item = &chunk.item;
            if self.credited.insert(item.file.clone()) {
                let len = self.open[&item.file].as_slice().len() as u64;
                let ratio = if item.zstd { ZSTD_MAX_RATIO } else { 1 };
                self.in_files = self.in_files.saturating_add(len.saturating_mul(ratio));
            }
            if self.counted.insert((item.file.clone(), item.offset)) {
                let claim = byte_len(dtype, &chunk.sizes).unwrap_or(u64::MAX);
                self.held = self.held.saturating_add(stands_for(item, claim));
            }
        }
        self.allocated = self.allocated.saturating_add(total);
        if self.allocated > self.held.min(self.in_files).saturating_add(SLACK) {
            return Err(bad(
                &meta,
                format!("{name}: the tensors claim more bytes than the items holding them"),
            ));
        }
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(total as usize)
            .map_err(|_| bad(&meta, format!("{name}: cannot allocate {total} bytes")))?;
        bytes.resize(total as usize, 0u8);
        for chunk in chunks {
            let dir = self.dir;
            let t = chunk_tensor(
                self.bytes(&chunk.item)?,
                &chunk.item,
                dtype,
                &chunk.sizes,
                dir,
            )?;
            place_chunk(
                &mut bytes,
                size,
                dtype.size(),
                (&chunk.offsets, &chunk.sizes),
                t.bytes(),
            );
        }
        TensorData::new(dtype, size.to_vec(), bytes)
    }
}
