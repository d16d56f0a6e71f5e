//! Reading some rows of a large chunk without its whole item: a few small
//! ranged reads find where the chunk's data lies inside its `torch.save`
//! archive (the archive's end records and central directory, its pickle,
//! the local header of `data/0`), then only the rows are read. Anything
//! unusual (a zstd item, a deflated entry, a chunk stored as a view that
//! is not itself in row-major order) answers `None`, and the caller reads
//! the whole item.

use std::path::Path;

use super::{bad, Chunk};
use crate::format::pytorch::pickle::{unpickle, Obj};
use crate::format::pytorch::write::contiguous_strides;
use crate::format::pytorch::zip;
use crate::storage::Storage;
use crate::{DType, Error, Result};

/// Items smaller than this are read whole: a few ranged reads cost more.
pub(super) const WORTH_IT: u64 = 1 << 20;

/// How much of an item's end is read for its central directory (a
/// `torch.save` archive's is about 1 KB; a larger one is read whole).
const TAIL: u64 = 16 << 10;

/// The fixed part of a local header, which says where its data starts.
const HEADER: u64 = 30;

/// Where the first element of `chunk` lies in its file, when its item is
/// a stored archive whose tensor is the chunk in row-major order.
pub(super) fn locate(
    storage: &dyn Storage,
    dir: &Path,
    dtype: DType,
    chunk: &Chunk,
) -> Result<Option<u64>> {
    let item = &chunk.item;
    if item.zstd || item.length < WORTH_IT {
        return Ok(None);
    }
    let path = dir.join(&item.file).join(format!("@{}", item.offset));
    let read = |from: u64, len: u64| -> Result<Vec<u8>> {
        let end = from.saturating_add(len).min(item.length);
        let at = |o: u64| item.offset.checked_add(o);
        let (Some(a), Some(b)) = (at(from), at(end)) else {
            return Err(bad(&path, "an item's end overflows"));
        };
        storage
            .read_range(&item.file, a..b)
            .map_err(|e| Error::io(&path, e))
    };
    let tail_start = item.length.saturating_sub(TAIL);
    let Ok(entries) = zip::directory(&read(tail_start, TAIL)?, tail_start, &path) else {
        return Ok(None);
    };
    // Stored entries only, whose sizes agree, found by exact name under
    // the pickle's folder.
    let stored = |e: &&zip::Central| e.method == 0 && e.compressed == e.size;
    let Some(pickle) = entries
        .iter()
        .filter(stored)
        .find(|e| e.name.ends_with("/data.pkl"))
    else {
        return Ok(None);
    };
    let prefix = &pickle.name[..pickle.name.len() - "/data.pkl".len()];
    let named = |name: String| entries.iter().filter(stored).find(|e| e.name == name);
    // The pickle: its local header, then as many bytes as it holds.
    let Some(pickle_bytes) = contents(&read, pickle, &path)? else {
        return Ok(None);
    };
    let Ok(u) = unpickle(&pickle_bytes, pickle_bytes.len(), &path, "data.pkl") else {
        return Ok(None);
    };
    let Obj::Tensor(t) = &u.arena[u.root] else {
        return Ok(None);
    };
    // A big-endian archive is read whole, where its bytes are swapped.
    if let Some(order) = named(format!("{prefix}/byteorder")) {
        if contents(&read, order, &path)?.as_deref() != Some(b"little") {
            return Ok(None);
        }
    }
    let Some(data) = named(format!("{prefix}/data/{}", t.storage.key)) else {
        return Ok(None);
    };
    let element = t.storage.dtype.map_or(1, |d| d.size() as u64);
    let shape: Vec<u64> = chunk.sizes.iter().map(|&s| s as u64).collect();
    let row_major = t.stride == contiguous_strides(&shape);
    let whole_storage = t.storage.numel.checked_mul(element) == Some(data.size);
    if t.dtype != dtype || t.shape != shape || !row_major || !whole_storage {
        return Ok(None);
    }
    let head = read(data.local, HEADER)?;
    let Ok(start) = zip::data_start(&head, data.local, &path) else {
        return Ok(None);
    };
    let first = t.offset.saturating_mul(dtype.size() as u64);
    let need = shape
        .iter()
        .fold(dtype.size() as u64, |n, &s| n.saturating_mul(s));
    if first.saturating_add(need) > data.size || start.saturating_add(data.size) > item.length {
        return Ok(None);
    }
    Ok(item.offset.checked_add(start + first))
}

/// A small stored entry's bytes (at most [`TAIL`]), read after its local
/// header; `None` when the header is not one.
fn contents(
    read: &dyn Fn(u64, u64) -> Result<Vec<u8>>,
    entry: &zip::Central,
    path: &Path,
) -> Result<Option<Vec<u8>>> {
    let head = read(entry.local, HEADER)?;
    let Ok(start) = zip::data_start(&head, entry.local, path) else {
        return Ok(None);
    };
    Ok(Some(read(start, entry.size.min(TAIL))?))
}
