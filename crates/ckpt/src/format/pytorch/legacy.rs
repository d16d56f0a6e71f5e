//! The legacy `torch.save` format (before 1.6, or
//! `_use_new_zipfile_serialization=False`): separate pickles, then the
//! storages' raw bytes, each after an 8-byte element count.
//!
//! ```text
//! magic pickle | protocol pickle (1001) | sys_info pickle | object pickle |
//! key-list pickle | for each key in that list: i64 LE count, count × element size bytes
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::pickle::{self, Obj, StorageRef};
use super::{build, check_storage_len, Shared};
use crate::tensor::Buffer;
use crate::{Error, Loaded, Result};

/// The first pickle: PROTO 2, LONG1 0x1950A86A20F9469CFC6C, STOP.
pub(crate) const MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E,
];

const ENTRY: &str = "the legacy pickle";

fn bad(path: &Path, offset: usize, problem: &'static str) -> Error {
    Error::Pickle {
        path: path.to_owned(),
        entry: ENTRY.to_owned(),
        offset: offset as u64,
        problem,
    }
}

/// Reads a legacy file held in `buffer` (which starts with [`MAGIC`]).
pub(crate) fn read(buffer: Arc<Buffer>, path: &Path) -> Result<Loaded> {
    let bytes = buffer.as_slice();
    let mut pos = MAGIC.len();
    let next = |pos: &mut usize| -> Result<pickle::Unpickled> {
        let u = pickle::unpickle(&bytes[*pos..], bytes.len() - *pos, path, ENTRY)?;
        *pos += u.end;
        Ok(u)
    };
    let protocol = next(&mut pos)?;
    if !matches!(protocol.arena[protocol.root], Obj::Int(1001)) {
        return Err(bad(path, pos, "the protocol version is not 1001"));
    }
    next(&mut pos)?; // sys_info: sizes of C types, ignored as torch does
    let object = next(&mut pos)?;
    let keys = next(&mut pos)?;
    let key_list: Vec<String> = match &keys.arena[keys.root] {
        Obj::List(items) => items
            .iter()
            .map(|&i| match &keys.arena[i] {
                Obj::Str(s) => Ok(s.clone()),
                _ => Err(bad(path, pos, "a storage key is not a string")),
            })
            .collect::<Result<_>>()?,
        _ => return Err(bad(path, pos, "the storage key list is not a list")),
    };

    // Every storage the object names, by key, for its element size.
    let named: HashMap<&str, &StorageRef> = object
        .arena
        .iter()
        .filter_map(|o| match o {
            Obj::Storage(s) => Some((s.key.as_str(), &**s)),
            _ => None,
        })
        .collect();
    let mut located: HashMap<String, Shared> = HashMap::new();
    for key in &key_list {
        let storage = named.get(key.as_str()).ok_or_else(|| {
            bad(
                path,
                pos,
                "the key list names a storage the object does not use",
            )
        })?;
        let count_bytes = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| bad(path, pos, "the file ends before a storage's element count"))?;
        let count = u64::from_le_bytes(count_bytes.try_into().unwrap_or_default());
        let element = storage.dtype.map_or(1, |d| d.size() as u64);
        let len = count
            .checked_mul(element)
            .filter(|&len| len <= (bytes.len() - pos - 8) as u64)
            .ok_or_else(|| bad(path, pos, "a storage runs past the end of the file"))?;
        check_storage_len(storage, len, path)?;
        let start = pos + 8;
        pos = start + len as usize;
        located.insert(
            key.clone(),
            Shared {
                buffer: buffer.clone(),
                range: start..pos,
            },
        );
    }
    let storage = |s: &StorageRef| {
        located
            .get(&s.key)
            .cloned()
            .ok_or_else(|| Error::BadStorage {
                path: path.to_owned(),
                key: s.key.clone(),
                problem: "the file has no data for it",
            })
    };
    build(
        &object,
        storage,
        false,
        bytes.len() as u64,
        path,
        ENTRY,
        crate::Format::PyTorch,
    )
}
