//! Multi-rank checkpoints: each of W ranks saves its part (whole tensors
//! it owns, or row ranges of tensors split across ranks) on its own; the
//! checkpoint commits when a coordinator (any rank) finds all W parts and
//! writes the index. Loading with any number of ranks reads exactly the
//! byte ranges each needs (ranged reads on object storage).
//!
//! ```text
//! DIR/                        (a local directory or s3://bucket/prefix)
//!   part-00002.bin            rank 2's slices, back to back
//!   part-00002.json           what they are: written after the .bin, so
//!                             its presence says the part is whole
//!   ckpt.index.json           the commit: {"format": "ckpt-distributed",
//!                             "version": 1, "world": W, "tensors": [{"name",
//!                             "dtype", "shape", "pieces": [{"rank", "rows":
//!                             [a, b], "offset", "length", "hash"}]}]}
//! ```
//!
//! Rows are ranges of dimension 0 (a 0-d tensor is one whole piece). The
//! index, read through [`crate::read`] (`ckpt inspect`, `ckpt convert`),
//! is the whole checkpoint as one state dict.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value as Json};

use crate::storage::Storage;
use crate::{byte_len, DType, Error, Result, StateDict, TensorData};

/// The commit file's name.
pub const INDEX: &str = "ckpt.index.json";
/// The `format` of a multi-rank checkpoint's index.
pub(crate) const FORMAT: &str = "ckpt-distributed";

/// One slice a rank saves: rows `rows` of the tensor `name`, whose whole
/// shape is `shape`.
#[derive(Debug, Clone)]
pub struct Part {
    /// The tensor's name in the whole checkpoint.
    pub name: String,
    /// The whole tensor's shape.
    pub shape: Vec<usize>,
    /// The rows (of dimension 0) this slice holds; `0..shape[0]` for a
    /// whole tensor (`0..1` for a 0-d one).
    pub rows: Range<usize>,
    /// The slice: shape `[rows.len(), shape[1..]...]`.
    pub data: TensorData,
}

impl Part {
    /// A whole tensor owned by one rank.
    pub fn whole(name: &str, data: TensorData) -> Part {
        let rows = 0..data.shape().first().copied().unwrap_or(1);
        Part {
            name: name.to_owned(),
            shape: data.shape().to_vec(),
            rows,
            data,
        }
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadStore {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn part_name(rank: usize, ext: &str) -> String {
    format!("part-{rank:05}.{ext}")
}

fn storage(dir: &Path) -> Result<Arc<dyn Storage>> {
    crate::storage::Location::parse(dir).storage()
}

/// Bytes of one row of a tensor of `shape` (1 row for a 0-d tensor).
fn row_bytes(dtype: DType, shape: &[usize]) -> u64 {
    byte_len(dtype, shape.get(1..).unwrap_or(&[])).unwrap_or(0)
}

/// Saves rank `rank`'s part of a `world`-rank checkpoint in `dir`: the
/// slices, then the description that marks the part whole.
pub fn save_part(dir: &Path, rank: usize, world: usize, parts: &[Part]) -> Result<()> {
    if rank >= world {
        return Err(bad(
            dir,
            format!("rank {rank} is not below the world size {world}"),
        ));
    }
    let store = storage(dir)?;
    store.create_root().map_err(|e| Error::io(dir, e))?;
    let mut entries = Vec::new();
    let mut offset = 0u64;
    for p in parts {
        let rows = p.shape.first().copied().unwrap_or(1);
        let mut slice_shape = vec![p.rows.len()];
        slice_shape.extend(p.shape.get(1..).unwrap_or(&[]));
        if p.shape.is_empty() {
            slice_shape = vec![];
        }
        if p.rows.end > rows || p.rows.start > p.rows.end || p.data.shape() != slice_shape {
            return Err(bad(
                dir,
                format!(
                    "{}: rows {:?} of shape {:?} do not fit a slice of shape {:?}",
                    p.name,
                    p.rows,
                    p.shape,
                    p.data.shape()
                ),
            ));
        }
        let length = p.data.bytes().len() as u64;
        entries.push(json!({
            "name": p.name,
            "dtype": p.data.dtype().safetensors_name(),
            "shape": p.shape,
            "rows": [p.rows.start, p.rows.end],
            "offset": offset,
            "length": length,
            "hash": super::incremental::chunk_hash(p.data.bytes()),
        }));
        offset += length;
    }
    let bin = part_name(rank, "bin");
    store
        .write(&bin, &mut |out| {
            for p in parts {
                out.write_all(p.data.bytes())?;
            }
            Ok(())
        })
        .map_err(|e| Error::io(dir.join(&bin), e))?;
    store.sync(&bin).map_err(|e| Error::io(dir.join(&bin), e))?;
    let meta =
        json!({"rank": rank, "world": world, "bytes": offset, "entries": entries}).to_string();
    let name = part_name(rank, "json");
    store
        .write(&name, &mut |out| out.write_all(meta.as_bytes()))
        .map_err(|e| Error::io(dir.join(&name), e))?;
    store
        .sync(&name)
        .map_err(|e| Error::io(dir.join(&name), e))?;
    store.sync("").map_err(|e| Error::io(dir, e))
}

/// One piece of a tensor: which rank's file, which rows, where.
#[derive(Debug, Clone)]
struct Piece {
    rank: usize,
    rows: Range<usize>,
    offset: u64,
    length: u64,
    hash: String,
}

/// A tensor of the whole checkpoint and its pieces, in row order.
#[derive(Debug, Clone)]
struct Entry {
    dtype: DType,
    shape: Vec<usize>,
    pieces: Vec<Piece>,
}

fn parse_entry(e: &Json, path: &Path) -> Result<(String, DType, Vec<usize>, Piece)> {
    let field = |k: &str| {
        e.get(k)
            .ok_or_else(|| bad(path, format!("an entry has no {k}")))
    };
    let name = field("name")?
        .as_str()
        .ok_or_else(|| bad(path, "name"))?
        .to_owned();
    let dtype = field("dtype")?
        .as_str()
        .and_then(DType::from_safetensors)
        .ok_or_else(|| bad(path, format!("{name}: unknown dtype")))?;
    let nums = |v: &Json| -> Option<Vec<usize>> {
        v.as_array()?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect()
    };
    let shape = nums(field("shape")?).ok_or_else(|| bad(path, format!("{name}: bad shape")))?;
    let rows = nums(field("rows")?)
        .filter(|r| r.len() == 2 && r[0] <= r[1])
        .ok_or_else(|| bad(path, format!("{name}: bad rows")))?;
    let num = |k: &str| {
        field(k)?
            .as_u64()
            .ok_or_else(|| bad(path, format!("{name}: bad {k}")))
    };
    let piece = Piece {
        rank: e.get("rank").and_then(Json::as_u64).unwrap_or(0) as usize,
        rows: rows[0]..rows[1],
        offset: num("offset")?,
        length: num("length")?,
        hash: field("hash")?.as_str().unwrap_or_default().to_owned(),
    };
    let expected = row_bytes(dtype, &shape).saturating_mul(piece.rows.len() as u64);
    let total_rows = shape.first().copied().unwrap_or(1);
    if byte_len(dtype, &shape).is_none() || piece.length != expected || piece.rows.end > total_rows
    {
        return Err(bad(
            path,
            format!("{name}: rows {:?} do not fit shape {shape:?}", piece.rows),
        ));
    }
    Ok((name, dtype, shape, piece))
}

/// Checks that `e`'s pieces, in row order, cover its rows exactly once:
/// at commit (after sorting) and again when an index is read, where pieces
/// out of order or overlapping would be read differently by different
/// readers.
fn check_pieces(name: &str, e: &Entry, at: &Path) -> Result<()> {
    let rows = e.shape.first().copied().unwrap_or(1);
    let mut next = 0;
    for p in &e.pieces {
        if p.rows.start != next {
            return Err(bad(
                at,
                format!(
                    "{name}: rows {next}..{} are missing, saved twice or out of order",
                    p.rows.start.max(next)
                ),
            ));
        }
        next = p.rows.end;
    }
    if next != rows {
        return Err(bad(at, format!("{name}: rows {next}..{rows} are missing")));
    }
    Ok(())
}

/// Commits the checkpoint in `dir` when all `world` parts are there:
/// checks that the pieces of every tensor cover its rows exactly once,
/// then writes the index. Any rank may run it; until it succeeds, no
/// reader sees the checkpoint.
pub fn commit(dir: &Path, world: usize) -> Result<()> {
    let store = storage(dir)?;
    let mut missing = Vec::new();
    let mut tensors: BTreeMap<String, Entry> = BTreeMap::new();
    let mut order = Vec::new();
    for rank in 0..world {
        let name = part_name(rank, "json");
        let bytes = match store.read(&name) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(rank);
                continue;
            }
            Err(e) => return Err(Error::io(dir.join(&name), e)),
        };
        let path = dir.join(&name);
        let meta: Json =
            crate::json::parse(&bytes).map_err(|e| bad(&path, format!("not JSON ({e})")))?;
        if meta.get("world").and_then(Json::as_u64) != Some(world as u64)
            || meta.get("rank").and_then(Json::as_u64) != Some(rank as u64)
        {
            return Err(bad(&path, format!("not rank {rank} of {world}")));
        }
        for e in meta
            .get("entries")
            .and_then(Json::as_array)
            .ok_or_else(|| bad(&path, "no entries"))?
        {
            let (tensor, dtype, shape, mut piece) = parse_entry(e, &path)?;
            piece.rank = rank;
            let entry = tensors.entry(tensor.clone()).or_insert_with(|| {
                order.push(tensor.clone());
                Entry {
                    dtype,
                    shape: shape.clone(),
                    pieces: Vec::new(),
                }
            });
            if entry.dtype != dtype || entry.shape != shape {
                return Err(bad(
                    &path,
                    format!("{tensor}: ranks disagree on its dtype or shape"),
                ));
            }
            entry.pieces.push(piece);
        }
    }
    if !missing.is_empty() {
        return Err(bad(
            dir,
            format!("not committed: parts of ranks {missing:?} of {world} are missing"),
        ));
    }
    let mut list = Vec::new();
    for name in &order {
        let e = tensors.get_mut(name).expect("inserted");
        e.pieces.sort_by_key(|p| p.rows.start);
        check_pieces(name, e, dir)?;
        let pieces: Vec<Json> = e
            .pieces
            .iter()
            .map(|p| {
                json!({"rank": p.rank, "rows": [p.rows.start, p.rows.end], "offset": p.offset,
                       "length": p.length, "hash": p.hash})
            })
            .collect();
        list.push(json!({"name": name, "dtype": e.dtype.safetensors_name(), "shape": e.shape, "pieces": pieces}));
    }
    let index =
        json!({"format": FORMAT, "version": 1, "world": world, "tensors": list}).to_string();
    crate::storage::write_atomic(&dir.join(INDEX), true, |out| {
        out.write_all(index.as_bytes())
    })
}

/// A committed multi-rank checkpoint, open for reading.
pub struct Distributed {
    dir: PathBuf,
    store: Arc<dyn Storage>,
    world: usize,
    order: Vec<String>,
    tensors: BTreeMap<String, Entry>,
}

impl Distributed {
    /// Opens the committed checkpoint in `dir`.
    pub fn open(dir: &Path) -> Result<Distributed> {
        let store = storage(dir)?;
        let bytes = store.read(INDEX).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                bad(dir, "no committed checkpoint (no ckpt.index.json)")
            }
            _ => Error::io(dir.join(INDEX), e),
        })?;
        Distributed::from_index(&bytes, dir, store)
    }

    fn from_index(bytes: &[u8], dir: &Path, store: Arc<dyn Storage>) -> Result<Distributed> {
        let json: Json = crate::json::parse(bytes)
            .map_err(|e| bad(&dir.join(INDEX), format!("not JSON ({e})")))?;
        Distributed::from_json(&json, dir, store)
    }

    /// The checkpoint the parsed index `json` (in `dir`) describes.
    pub(crate) fn from_json(
        json: &Json,
        dir: &Path,
        store: Arc<dyn Storage>,
    ) -> Result<Distributed> {
        let path = dir.join(INDEX);
        if json.get("format").and_then(Json::as_str) != Some(FORMAT) {
            return Err(bad(&path, "not a ckpt-distributed index"));
        }
        let world = json.get("world").and_then(Json::as_u64).unwrap_or(0) as usize;
        let mut order = Vec::new();
        let mut tensors = BTreeMap::new();
        for t in json
            .get("tensors")
            .and_then(Json::as_array)
            .ok_or_else(|| bad(&path, "no tensors"))?
        {
            let mut pieces = Vec::new();
            let (mut dtype, mut shape) = (DType::U8, Vec::new());
            for p in t
                .get("pieces")
                .and_then(Json::as_array)
                .ok_or_else(|| bad(&path, "no pieces"))?
            {
                if !p.is_object() {
                    return Err(bad(&path, "a piece is not an object"));
                }
                let mut e = p.clone();
                for k in ["name", "dtype", "shape"] {
                    e[k] = t[k].clone();
                }
                let (_, d, s, piece) = parse_entry(&e, &path)?;
                if piece.rank >= world {
                    return Err(bad(
                        &path,
                        format!("a piece of rank {} in a world of {world}", piece.rank),
                    ));
                }
                (dtype, shape) = (d, s);
                pieces.push(piece);
            }
            let name = t
                .get("name")
                .and_then(Json::as_str)
                .ok_or_else(|| bad(&path, "name"))?;
            order.push(name.to_owned());
            let entry = Entry {
                dtype,
                shape,
                pieces,
            };
            check_pieces(name, &entry, &path)?;
            if tensors.insert(name.to_owned(), entry).is_some() {
                return Err(bad(&path, format!("{name}: named twice")));
            }
        }
        Ok(Distributed {
            dir: dir.to_owned(),
            store,
            world,
            order,
            tensors,
        })
    }

    /// The world size it was saved with.
    pub fn world(&self) -> usize {
        self.world
    }

    /// The tensors' names, dtypes and whole shapes.
    pub fn tensors(&self) -> Vec<(String, DType, Vec<usize>)> {
        self.order
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    self.tensors[n].dtype,
                    self.tensors[n].shape.clone(),
                )
            })
            .collect()
    }

    /// Rows `rows` of tensor `name`, reading exactly their bytes from the
    /// parts that hold them (a whole piece read is checked against its
    /// hash).
    pub fn read_rows(&self, name: &str, rows: Range<usize>) -> Result<TensorData> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| bad(&self.dir, format!("no tensor {name}")))?;
        let total = e.shape.first().copied().unwrap_or(1);
        if rows.end > total || rows.start > rows.end {
            return Err(bad(&self.dir, format!("{name}: rows {rows:?} of {total}")));
        }
        let row = row_bytes(e.dtype, &e.shape);
        // Grown as bytes arrive: an index's claims are not allocated.
        let mut bytes = Vec::new();
        for p in &e.pieces {
            let (a, b) = (rows.start.max(p.rows.start), rows.end.min(p.rows.end));
            if a >= b {
                continue;
            }
            let at = |r: usize| {
                ((r - p.rows.start) as u64)
                    .checked_mul(row)
                    .and_then(|o| o.checked_add(p.offset))
                    .ok_or_else(|| bad(&self.dir, format!("{name}: offsets overflow")))
            };
            let (start, end) = (at(a)?, at(b)?);
            let file = part_name(p.rank, "bin");
            let got = self
                .store
                .read_range(&file, start..end)
                .map_err(|e| Error::io(self.dir.join(&file), e))?;
            if got.len() as u64 != end - start {
                return Err(bad(&self.dir.join(&file), format!("{name}: short read")));
            }
            if (a, b) == (p.rows.start, p.rows.end)
                && super::incremental::chunk_hash(&got) != p.hash
            {
                return Err(Error::HashMismatch {
                    path: self.dir.join(&file),
                    expected: p.hash.clone(),
                    found: super::incremental::chunk_hash(&got),
                });
            }
            bytes.extend_from_slice(&got);
        }
        let mut shape = e.shape.clone();
        if !shape.is_empty() {
            shape[0] = rows.len();
        }
        TensorData::new(e.dtype, shape, bytes)
    }

    /// What rank `rank` of `world` holds when every tensor's rows are
    /// split evenly (rank r: rows `r·n/world .. (r+1)·n/world`; 0-d
    /// tensors whole on every rank).
    pub fn load_shard(&self, rank: usize, world: usize) -> Result<StateDict> {
        let mut sd = StateDict::new();
        for name in &self.order {
            let e = &self.tensors[name];
            let rows = match e.shape.first() {
                Some(&n) => rank * n / world..(rank + 1) * n / world,
                None => 0..1,
            };
            sd.insert(name.clone(), self.read_rows(name, rows)?);
        }
        Ok(sd)
    }

    /// The whole checkpoint as one state dict.
    pub fn load(&self) -> Result<StateDict> {
        self.load_shard(0, 1)
    }
}
