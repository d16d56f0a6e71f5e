//! PyTorch Distributed Checkpoint (DCP) folders, as
//! `torch.distributed.checkpoint.save` writes them: `.metadata` (a pickle
//! of `Metadata`) and `__<rank>_<n>.distcp` files, each item a whole
//! `torch.save` archive at `[offset, offset + length)`. Read as one
//! checkpoint tree: a sharded tensor's chunks placed into the whole tensor,
//! non-tensor values read through the safe pickle reader, nesting rebuilt
//! from `planner_data`. The facts are in `tests/fixtures/dcp/NOTES.md`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::format::pytorch::pickle::{unpickle, Id, Obj, Unpickled};
use crate::format::{Format, LoadOptions, Loaded};
use crate::storage::Storage;
use crate::tensor::Buffer;
use crate::{byte_len, DType, Dict, Error, Key, Result, TensorData, Value};

/// The index file of a DCP folder.
pub(crate) const METADATA: &str = ".metadata";

/// The module DCP's index classes live in.
const MODULE: &str = "torch.distributed.checkpoint.metadata";

/// The most chunks ckpt assembles into one tensor (their overlap check is
/// quadratic).
const MAX_CHUNKS: usize = 4096;

/// Where an item's bytes are.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    file: String,
    offset: u64,
    length: u64,
}

/// `storage_data`: an item by its key and, for a tensor chunk, the
/// chunk's offsets.
type Items = HashMap<(String, Option<Vec<usize>>), Item>;

/// One piece of a tensor: where it sits in the whole, and its item.
#[derive(Debug, Clone, PartialEq)]
struct Chunk {
    offsets: Vec<usize>,
    sizes: Vec<usize>,
    item: Item,
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
    path: Vec<Key>,
    stored: Stored,
}

/// Reads the DCP folder `dir` (whose `.metadata` is `metadata`) through
/// `storage` as one checkpoint tree.
pub(crate) fn read(dir: &Path, storage: &dyn Storage, options: &LoadOptions) -> Result<Loaded> {
    let meta_path = dir.join(METADATA);
    let bytes = storage
        .read(METADATA)
        .map_err(|e| Error::io(&meta_path, e))?;
    let entries = parse(&bytes, &meta_path)?;
    let mut files = Files {
        dir,
        storage,
        mmap: options.mmap,
        open: HashMap::new(),
        counted: HashSet::new(),
        held: 0,
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
    })
}

/// A bad `.metadata`: names the file and what is wrong.
fn bad(path: &Path, problem: impl Into<String>) -> Error {
    Error::Folder {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

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
fn parse(bytes: &[u8], path: &Path) -> Result<Vec<Entry>> {
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
        entries.push(Entry { path, stored });
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
        let info = o.instance(v, "torch.distributed.checkpoint.filesystem", "_StorageInfo")?;
        if let Some(t) = o.field(&info, "transform_descriptors") {
            if !matches!(o.get(t), Obj::None) && !matches!(o.get(t), Obj::List(l) if l.is_empty()) {
                return Err(bad(
                    o.path,
                    format!("{fqn}: a transformed item (zstd): ckpt does not read those yet"),
                ));
            }
        }
        let item = Item {
            file: o.str(o.need(&info, "relative_path")?, "a relative path")?,
            offset: o.u64(o.need(&info, "offset")?, "an item offset")?,
            length: o.u64(o.need(&info, "length")?, "an item length")?,
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

/// Slack over the items' bytes that whole tensors may take.
const SLACK: u64 = 16 << 20;

/// The `.distcp` files of a folder, each opened once, and the memory
/// budget: whole tensors take at most the bytes of the distinct items
/// that hold them (+ [`SLACK`]), so a table that names one item many
/// times, or claims a tensor larger than its chunks, allocates nothing.
struct Files<'a> {
    dir: &'a Path,
    storage: &'a dyn Storage,
    mmap: bool,
    open: HashMap<String, Arc<Buffer>>,
    /// The items counted into `held`.
    counted: HashSet<(String, u64)>,
    held: u64,
    allocated: u64,
}

impl Files<'_> {
    /// The bytes of `item`, checked to lie within its file.
    fn bytes(&mut self, item: &Item) -> Result<&[u8]> {
        let path = self.dir.join(&item.file);
        if !self.open.contains_key(&item.file) {
            let buffer = match self.storage.local_path(&item.file) {
                Some(local) => crate::storage::open(&local, self.mmap)?,
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
        let path = self.dir.join(&item.file);
        let bytes = self.bytes(item)?.to_vec();
        let entry = path.join(format!("@{}", item.offset));
        crate::format::read(Format::PyTorch, Arc::new(Buffer::Heap(bytes)), &entry).map(|l| l.value)
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
            if self
                .counted
                .insert((chunk.item.file.clone(), chunk.item.offset))
            {
                self.held += chunk.item.length;
            }
        }
        self.allocated = self.allocated.saturating_add(total);
        if self.allocated > self.held + SLACK {
            return Err(bad(
                &meta,
                format!("{name}: the tensors claim more bytes than the items holding them"),
            ));
        }
        let mut bytes = vec![0u8; total as usize];
        for chunk in chunks {
            let value = self.load(&chunk.item)?;
            let Value::Tensor(t) = value else {
                return Err(bad(
                    &self.dir.join(&chunk.item.file),
                    format!("{name}: a chunk is not a tensor"),
                ));
            };
            if t.dtype() != dtype || t.shape() != chunk.sizes.as_slice() {
                return Err(bad(
                    &self.dir.join(&chunk.item.file),
                    format!(
                        "{name}: a chunk is {} {:?}, the index says {dtype} {:?}",
                        t.dtype(),
                        t.shape(),
                        chunk.sizes
                    ),
                ));
            }
            place_chunk(&mut bytes, size, dtype.size(), chunk, t.bytes());
        }
        TensorData::new(dtype, size.to_vec(), bytes)
    }
}

/// Checks that the chunks lie inside `size`, do not overlap, and cover it.
fn check_cover(size: &[usize], chunks: &[Chunk]) -> std::result::Result<(), String> {
    let mut covered: u128 = 0;
    for c in chunks {
        if c.offsets.len() != size.len() || c.sizes.len() != size.len() {
            return Err("a chunk's rank differs from the tensor's".into());
        }
        for ((o, s), d) in c.offsets.iter().zip(&c.sizes).zip(size) {
            if o.checked_add(*s).is_none_or(|end| end > *d) {
                return Err(format!(
                    "a chunk at {:?} of {:?} lies outside {size:?}",
                    c.offsets, c.sizes
                ));
            }
        }
        covered += c.sizes.iter().map(|&s| s as u128).product::<u128>();
    }
    let whole: u128 = size.iter().map(|&s| s as u128).product();
    for (i, a) in chunks.iter().enumerate() {
        for b in &chunks[i + 1..] {
            let meet = a
                .offsets
                .iter()
                .zip(&a.sizes)
                .zip(b.offsets.iter().zip(&b.sizes))
                .all(|((ao, asz), (bo, bsz))| ao.max(bo) < &(ao + asz).min(bo + bsz));
            if meet {
                return Err(format!(
                    "chunks at {:?} and {:?} overlap",
                    a.offsets, b.offsets
                ));
            }
        }
    }
    if covered != whole {
        return Err(format!("its chunks hold {covered} elements of {whole}"));
    }
    Ok(())
}

/// Copies a contiguous chunk into the whole tensor's bytes, one run of
/// its last dimension at a time.
fn place_chunk(whole: &mut [u8], size: &[usize], item: usize, chunk: &Chunk, src: &[u8]) {
    let rank = size.len();
    if rank == 0 {
        whole.copy_from_slice(src);
        return;
    }
    let run = chunk.sizes[rank - 1] * item;
    if run == 0 {
        return;
    }
    // Strides of the whole tensor, in elements.
    let mut strides = vec![1usize; rank];
    for d in (0..rank - 1).rev() {
        strides[d] = strides[d + 1] * size[d + 1];
    }
    let rows = chunk.sizes[..rank - 1].iter().product::<usize>();
    let mut index = vec![0usize; rank - 1];
    for r in 0..rows {
        let start: usize = (0..rank - 1)
            .map(|d| (chunk.offsets[d] + index[d]) * strides[d])
            .sum::<usize>()
            + chunk.offsets[rank - 1];
        whole[start * item..start * item + run].copy_from_slice(&src[r * run..(r + 1) * run]);
        for d in (0..rank - 1).rev() {
            index[d] += 1;
            if index[d] < chunk.sizes[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

/// Puts `value` at `path` in the tree: a string is a dict key, an integer a
/// list index (the list padded with `None`, as torch does).
/// A list index is at most `longest` (a list has no more elements than the
/// index has entries).
fn place(root: &mut Value, path: &[Key], value: Value, longest: usize, meta: &Path) -> Result<()> {
    let clash = || {
        bad(
            meta,
            format!(
                "{}: the tree's paths clash",
                path.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(".")
            ),
        )
    };
    let (last, parents) = path.split_last().ok_or_else(clash)?;
    let mut node = root;
    for (i, key) in parents.iter().enumerate() {
        let next_is_index = matches!(path[i + 1], Key::Int(_));
        let empty = || match next_is_index {
            true => Value::List(Vec::new()),
            false => Value::Dict(Dict::new()),
        };
        node = slot(node, key, longest, empty).ok_or_else(clash)?;
    }
    *slot(node, last, longest, || Value::None).ok_or_else(clash)? = value;
    Ok(())
}

/// The child of `node` at `key`, made with `make` when missing.
fn slot<'a>(
    node: &'a mut Value,
    key: &Key,
    longest: usize,
    make: impl FnOnce() -> Value,
) -> Option<&'a mut Value> {
    match (node, key) {
        (Value::Dict(d), Key::Str(_)) => Some(d.entry(key.clone()).or_insert_with(make)),
        (Value::List(l), Key::Int(i)) => {
            let i = usize::try_from(*i).ok()?;
            if i >= longest {
                return None;
            }
            if l.len() <= i {
                l.resize(i + 1, Value::None);
            }
            if matches!(l[i], Value::None) {
                l[i] = make();
            }
            Some(&mut l[i])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(offsets: &[usize], sizes: &[usize]) -> Chunk {
        Chunk {
            offsets: offsets.to_vec(),
            sizes: sizes.to_vec(),
            item: Item {
                file: "__0_0.distcp".into(),
                offset: 0,
                length: 0,
            },
        }
    }

    #[test]
    fn chunk_tables_that_lie_are_refused() {
        let size = [4, 3];
        assert!(check_cover(&size, &[chunk(&[0, 0], &[2, 3]), chunk(&[2, 0], &[2, 3])]).is_ok());
        // An empty chunk at the end of a dimension is what torch writes.
        assert!(check_cover(&size, &[chunk(&[0, 0], &[4, 3]), chunk(&[4, 0], &[0, 3])]).is_ok());
        for (chunks, problem) in [
            (vec![chunk(&[0, 0], &[2, 3])], "hold 6 elements of 12"),
            (
                vec![chunk(&[0, 0], &[3, 3]), chunk(&[2, 0], &[2, 3])],
                "overlap",
            ),
            (
                vec![chunk(&[3, 0], &[2, 3]), chunk(&[0, 0], &[2, 3])],
                "outside",
            ),
            (vec![chunk(&[0], &[12])], "rank"),
            (vec![chunk(&[usize::MAX, 0], &[2, 3])], "outside"),
        ] {
            let err = check_cover(&size, &chunks).unwrap_err();
            assert!(err.contains(problem), "{err}");
        }
    }

    #[test]
    fn chunks_land_at_their_offsets() {
        // A [3, 4] tensor of bytes from two column chunks.
        let mut whole = vec![0u8; 12];
        place_chunk(
            &mut whole,
            &[3, 4],
            1,
            &chunk(&[0, 0], &[3, 3]),
            &[1, 2, 3, 5, 6, 7, 9, 10, 11],
        );
        place_chunk(
            &mut whole,
            &[3, 4],
            1,
            &chunk(&[0, 3], &[3, 1]),
            &[4, 8, 12],
        );
        assert_eq!(whole, (1..=12).collect::<Vec<u8>>());
    }

    #[test]
    fn paths_rebuild_nesting_and_refuse_clashes() {
        let meta = Path::new(".metadata");
        let mut root = Value::Dict(Dict::new());
        let key = |s: &str| Key::Str(s.into());
        place(
            &mut root,
            &[key("opt"), key("groups"), Key::Int(1), key("lr")],
            Value::Float(0.5),
            4,
            meta,
        )
        .unwrap();
        let Value::Dict(d) = &root else { panic!() };
        let Value::Dict(opt) = &d[&key("opt")] else {
            panic!()
        };
        let Value::List(groups) = &opt[&key("groups")] else {
            panic!()
        };
        assert_eq!(groups.len(), 2);
        assert!(matches!(groups[0], Value::None));
        place(
            &mut root,
            &[key("opt"), key("groups"), key("x")],
            Value::Int(1),
            4,
            meta,
        )
        .unwrap_err();
        // No list longer than the index has entries.
        place(&mut root, &[key("a"), Key::Int(4)], Value::Int(1), 4, meta).unwrap_err();
    }
}
