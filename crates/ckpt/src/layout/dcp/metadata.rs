//! `.metadata`: the pickle of torch's `Metadata`, read through the
//! restricted unpickler (DCP's dataclasses as inert objects, nothing run)
//! and written with the same classes, so `torch.distributed.checkpoint`
//! reads it back.

use std::collections::HashMap;
use std::path::Path;

use crate::format::pytorch::pickle::{unpickle, Id, Obj, Unpickled};
use crate::format::pytorch::write::Pickler;
use crate::{DType, Error, Key, Result};

use super::{bad, Chunk, Entry, Item, Items, Stored, MAX_CHUNKS, METADATA, MODULE};

/// Typed reads of the pickle's objects.
struct Objects<'a> {
    u: &'a Unpickled,
    path: &'a Path,
}

impl Objects<'_> {
    fn get(&self, id: Id) -> &Obj {
        &self.u.arena[id]
    }

    fn err(&self, what: &str) -> Error {
        bad(self.path, format!("not a DCP index: {what}"))
    }

    /// The `BUILD` state of an instance of `MODULE.class`, as key-value
    /// pairs (none for a class built without state).
    fn instance(&self, id: Id, module: &str, class: &str) -> Result<Vec<(Id, Id)>> {
        match self.get(id) {
            Obj::Object {
                class: c, state, ..
            } if c.0 == module && c.1 == class => match state {
                None => Ok(Vec::new()),
                Some(s) => self.dict(*s, class),
            },
            _ => Err(self.err(&format!("expected a {class}"))),
        }
    }

    fn class_of(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Obj::Object { class, .. } if class.0 == MODULE => Some(&class.1),
            _ => None,
        }
    }

    fn dict(&self, id: Id, what: &str) -> Result<Vec<(Id, Id)>> {
        match self.get(id) {
            Obj::Dict(pairs) => Ok(pairs.clone()),
            _ => Err(self.err(&format!("{what} is not a dict"))),
        }
    }

    /// The value of the string key `name` in `pairs`.
    fn field(&self, pairs: &[(Id, Id)], name: &str) -> Option<Id> {
        pairs
            .iter()
            .find(|(k, _)| matches!(self.get(*k), Obj::Str(s) if s == name))
            .map(|&(_, v)| v)
    }

    fn need(&self, pairs: &[(Id, Id)], name: &str) -> Result<Id> {
        self.field(pairs, name)
            .ok_or_else(|| self.err(&format!("no {name}")))
    }

    fn str(&self, id: Id, what: &str) -> Result<String> {
        match self.get(id) {
            Obj::Str(s) => Ok(s.clone()),
            _ => Err(self.err(&format!("{what} is not a string"))),
        }
    }

    fn u64(&self, id: Id, what: &str) -> Result<u64> {
        match self.get(id) {
            Obj::Int(i) => u64::try_from(*i).map_err(|_| self.err(&format!("{what} is negative"))),
            _ => Err(self.err(&format!("{what} is not an integer"))),
        }
    }

    /// A `torch.Size` (read as a tuple) or a tuple of integers.
    fn dims(&self, id: Id, what: &str) -> Result<Vec<usize>> {
        match self.get(id) {
            Obj::Tuple(items) | Obj::List(items) => items
                .iter()
                .map(|&i| {
                    let n = self.u64(i, what)?;
                    usize::try_from(n).map_err(|_| self.err(&format!("{what} is too large")))
                })
                .collect(),
            _ => Err(self.err(&format!("{what} is not a size"))),
        }
    }
}

/// The entries of a `.metadata` pickle, in `state_dict_metadata`'s order
/// (the order `dcp_to_torch_save` gives).
pub(super) fn parse(bytes: &[u8], path: &Path) -> Result<Vec<Entry>> {
    let u = unpickle(bytes, bytes.len(), path, METADATA)?;
    let o = Objects { u: &u, path };
    let top = o.instance(u.root, MODULE, "Metadata")?;
    let items = storage_items(&o, o.need(&top, "storage_data")?)?;
    let paths = match o.field(&top, "planner_data") {
        Some(id) if !matches!(o.get(id), Obj::None) => planner_paths(&o, id)?,
        _ => HashMap::new(),
    };
    let mut entries = Vec::new();
    for (k, v) in o.dict(o.need(&top, "state_dict_metadata")?, "state_dict_metadata")? {
        let fqn = o.str(k, "a state_dict_metadata key")?;
        let path = paths
            .get(&fqn)
            .cloned()
            .unwrap_or_else(|| vec![Key::Str(fqn.clone())]);
        let find = |offsets: Option<&[usize]>| {
            items
                .get(&(fqn.clone(), offsets.map(<[usize]>::to_vec)))
                .cloned()
                .ok_or_else(|| bad(o.path, format!("{fqn}: no storage_data entry")))
        };
        let stored = match o.class_of(v) {
            Some("BytesStorageMetadata") => Stored::Bytes(find(None)?),
            Some("TensorStorageMetadata") => tensor_meta(&o, v, &fqn, &find)?,
            _ => return Err(o.err(&format!("{fqn}: unknown storage metadata"))),
        };
        entries.push(Entry { fqn, path, stored });
    }
    Ok(entries)
}

/// A `TensorStorageMetadata`: dtype, global size and chunks with their items.
fn tensor_meta(
    o: &Objects<'_>,
    id: Id,
    fqn: &str,
    find: &dyn Fn(Option<&[usize]>) -> Result<Item>,
) -> Result<Stored> {
    let state = o.instance(id, MODULE, "TensorStorageMetadata")?;
    let properties = o.need(&state, "properties")?;
    let dtype = match o.get(properties) {
        Obj::Object { state: Some(s), .. } => match o.get(*s) {
            Obj::Tuple(fields) => fields.first().map(|&d| o.get(d)),
            Obj::Dict(pairs) => o.field(pairs, "dtype").map(|d| o.get(d)),
            _ => None,
        },
        _ => None,
    };
    let Some(Obj::Dtype(dtype)) = dtype else {
        return Err(o.err(&format!("{fqn}: no dtype in its properties")));
    };
    let size = o.dims(o.need(&state, "size")?, "a tensor size")?;
    let Obj::List(list) = o.get(o.need(&state, "chunks")?) else {
        return Err(o.err(&format!("{fqn}: chunks is not a list")));
    };
    if list.len() > MAX_CHUNKS {
        return Err(o.err(&format!("{fqn}: more than {MAX_CHUNKS} chunks")));
    }
    let mut chunks = Vec::with_capacity(list.len());
    for &c in list {
        let cs = o.instance(c, MODULE, "ChunkStorageMetadata")?;
        let offsets = o.dims(o.need(&cs, "offsets")?, "chunk offsets")?;
        let sizes = o.dims(o.need(&cs, "sizes")?, "chunk sizes")?;
        let item = find(Some(&offsets))?;
        chunks.push(Chunk {
            offsets,
            sizes,
            item,
        });
    }
    Ok(Stored::Tensor {
        dtype: *dtype,
        size,
        chunks,
    })
}

/// `storage_data`: (fqn, chunk offsets or none) → where the item is.
fn storage_items(o: &Objects<'_>, id: Id) -> Result<Items> {
    let mut items = HashMap::new();
    for (k, v) in o.dict(id, "storage_data")? {
        let index = o.instance(k, MODULE, "MetadataIndex")?;
        let fqn = o.str(o.need(&index, "fqn")?, "an index fqn")?;
        let offsets = match o.field(&index, "offset") {
            Some(id) if !matches!(o.get(id), Obj::None) => Some(o.dims(id, "an index offset")?),
            _ => None,
        };
        let info = o.instance(v, STORAGE_INFO.0, STORAGE_INFO.1)?;
        let zstd = match o.field(&info, "transform_descriptors") {
            None => false,
            Some(t) => transforms(o, t, &fqn)?,
        };
        let item = Item {
            file: o.str(o.need(&info, "relative_path")?, "a relative path")?,
            offset: o.u64(o.need(&info, "offset")?, "an item offset")?,
            length: o.u64(o.need(&info, "length")?, "an item length")?,
            hash: None,
            zstd,
        };
        let plain = Path::new(&item.file)
            .file_name()
            .is_some_and(|f| f == item.file.as_str())
            && item.file != ".."
            && item.file != ".";
        if !plain {
            return Err(o.err(&format!("{fqn}: {} is not a file in the folder", item.file)));
        }
        items.insert((fqn, offsets), item);
    }
    Ok(items)
}

/// Whether an item's `transform_descriptors` say zstd (`stream.zstd/1`,
/// the one transform torch ships); none or an empty list say no
/// transform, anything else is refused by name.
fn transforms(o: &Objects<'_>, id: Id, fqn: &str) -> Result<bool> {
    let list = match o.get(id) {
        Obj::None => return Ok(false),
        Obj::List(l) | Obj::Tuple(l) => l,
        _ => return Err(o.err(&format!("{fqn}: its transforms are not a list"))),
    };
    let names = list
        .iter()
        .map(|&d| o.str(d, "a transform"))
        .collect::<Result<Vec<_>>>()?;
    let zstd = |n: &str| {
        n.strip_prefix("stream.zstd/")
            .is_some_and(|v| v.split('.').next() == Some("1"))
    };
    match names.as_slice() {
        [] => Ok(false),
        [one] if zstd(one) => Ok(true),
        _ => Err(bad(
            o.path,
            format!("{fqn}: items stored through {names:?}: ckpt reads only stream.zstd/1"),
        )),
    }
}

/// `planner_data`: each flattened key's path in the tree (dict keys as
/// strings, list indices as integers).
fn planner_paths(o: &Objects<'_>, id: Id) -> Result<HashMap<String, Vec<Key>>> {
    let mut paths = HashMap::new();
    for (k, v) in o.dict(id, "planner_data")? {
        let fqn = o.str(k, "a planner_data key")?;
        let (Obj::Tuple(parts) | Obj::List(parts)) = o.get(v) else {
            return Err(o.err(&format!("{fqn}: its path is not a tuple")));
        };
        let path = parts
            .iter()
            .map(|&p| match o.get(p) {
                Obj::Str(s) => Ok(Key::Str(s.clone())),
                Obj::Int(i) => Ok(Key::Int(*i)),
                _ => Err(o.err(&format!("{fqn}: a path part is neither a key nor an index"))),
            })
            .collect::<Result<Vec<_>>>()?;
        if path.is_empty() {
            return Err(o.err(&format!("{fqn}: an empty path")));
        }
        paths.insert(fqn, path);
    }
    Ok(paths)
}

/// The class that says where an item is.
const STORAGE_INFO: (&str, &str) = ("torch.distributed.checkpoint.filesystem", "_StorageInfo");

/// The `.metadata` pickle of `entries`, as torch's `Metadata`: what
/// `torch.distributed.checkpoint.load` reads (with `pickle.load`) and
/// [`parse`] reads back.
pub(super) fn write(entries: &[Entry]) -> Vec<u8> {
    let mut p = Pickler::new();
    new_object(&mut p, MODULE, "Metadata");
    p.op(b"}(");
    p.str("state_dict_metadata");
    dict(&mut p, entries, |p, e| {
        p.str(&e.fqn);
        match &e.stored {
            Stored::Bytes(_) => new_object(p, MODULE, "BytesStorageMetadata"),
            Stored::Tensor {
                dtype,
                size,
                chunks,
            } => tensor_storage(p, *dtype, size, chunks),
        }
    });
    p.str("planner_data");
    dict(&mut p, entries, |p, e| {
        p.str(&e.fqn);
        p.op(b"(");
        for key in &e.path {
            match key {
                Key::Str(s) => p.str(s),
                Key::Int(i) => p.int(*i),
            }
        }
        p.op(b"t");
    });
    p.str("storage_data");
    let items: Vec<StorageKey<'_>> = entries
        .iter()
        .flat_map(|e| -> Vec<_> {
            match &e.stored {
                Stored::Bytes(item) => vec![(e.fqn.as_str(), None, item)],
                Stored::Tensor { chunks, .. } => chunks
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (e.fqn.as_str(), Some((i, c)), &c.item))
                    .collect(),
            }
        })
        .collect();
    dict(&mut p, &items, |p, &(fqn, chunk, item)| {
        metadata_index(p, fqn, chunk);
        new_object(p, STORAGE_INFO.0, STORAGE_INFO.1);
        p.op(b"}(");
        p.str("relative_path");
        p.str(&item.file);
        p.str("offset");
        p.int(item.offset as i64);
        p.str("length");
        p.int(item.length as i64);
        p.op(b"ub");
    });
    p.str("storage_meta");
    p.op(b"N");
    p.str("version");
    p.str("1.0.0");
    p.op(b"ub");
    p.finish()
}

/// A `storage_data` entry: the key, the chunk (with its position) when a
/// tensor's, and the item.
type StorageKey<'a> = (&'a str, Option<(usize, &'a Chunk)>, &'a Item);

/// `cls.__new__(cls)`: `GLOBAL`, an empty tuple, `NEWOBJ`.
fn new_object(p: &mut Pickler, module: &str, class: &str) {
    p.global(module, class);
    p.op(&[b')', 0x81]);
}

/// A dict of `items`, each key and value written by `pair`, in batches of
/// 1000 as Python writes them.
fn dict<T>(p: &mut Pickler, items: &[T], mut pair: impl FnMut(&mut Pickler, &T)) {
    p.op(b"}");
    for batch in items.chunks(1000) {
        p.op(b"(");
        batch.iter().for_each(|item| pair(p, item));
        p.op(b"u");
    }
}

/// `torch.Size(dims)`.
fn size(p: &mut Pickler, dims: &[usize]) {
    p.global("torch", "Size");
    let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
    p.dims(&dims);
    p.op(&[0x85, b'R']);
}

/// A `TensorStorageMetadata`: properties (dtype, strided, contiguous, no
/// strides recorded), global size, chunks.
fn tensor_storage(p: &mut Pickler, dtype: DType, whole: &[usize], chunks: &[Chunk]) {
    new_object(p, MODULE, "TensorStorageMetadata");
    p.op(b"}(");
    p.str("properties");
    new_object(p, MODULE, "TensorProperties");
    p.op(b"(");
    p.global("torch", dtype.torch_name());
    p.global("torch.serialization", "_get_layout");
    p.str("torch.strided");
    p.op(&[0x85, b'R', 0x89]);
    p.global(MODULE, "_MEM_FORMAT_ENCODING");
    p.int(0);
    p.op(&[0x85, b'R', 0x89, b'N', b't', b'b']);
    p.str("size");
    size(p, whole);
    p.str("chunks");
    p.op(b"](");
    for c in chunks {
        new_object(p, MODULE, "ChunkStorageMetadata");
        p.op(b"}(");
        p.str("offsets");
        size(p, &c.offsets);
        p.str("sizes");
        size(p, &c.sizes);
        p.op(b"ub");
    }
    p.op(b"eub");
}

/// A `MetadataIndex`: the key, and for a tensor chunk its offsets and
/// position in the chunk list.
fn metadata_index(p: &mut Pickler, fqn: &str, chunk: Option<(usize, &Chunk)>) {
    new_object(p, MODULE, "MetadataIndex");
    p.op(b"}(");
    p.str("fqn");
    p.str(fqn);
    p.str("offset");
    match chunk {
        Some((_, c)) => size(p, &c.offsets),
        None => p.op(b"N"),
    }
    p.str("index");
    match chunk {
        Some((i, _)) => p.int(i as i64),
        None => p.op(b"N"),
    }
    p.op(b"ub");
}
