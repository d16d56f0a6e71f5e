//! Multi-rank checkpoints, written as PyTorch Distributed Checkpoint (DCP)
//! folders: each of W ranks saves its part (whole tensors it owns, or row
//! ranges of tensors split across ranks) on its own; the checkpoint commits
//! when a coordinator (any rank) finds all W parts and writes `.metadata`.
//! `torch.distributed.checkpoint.load` reads the folder into a model
//! sharded any way, and loading here with any number of ranks reads only
//! the items each needs (ranged reads on object storage).
//!
//! ```text
//! DIR/                        (a local directory or s3://bucket/prefix)
//!   __2_0.distcp              rank 2's slices, each a torch.save archive
//!   __2_0.ckpt.json           what they are: written after the .distcp,
//!                             so its presence says the part is whole
//!   ckpt.integrity.json       each item's content hash (torch ignores it)
//!   .metadata                 the commit: torch's Metadata pickle
//! ```
//!
//! Rows are ranges of dimension 0 (a 0-d tensor is one whole piece).
//! Folders a DCP-writing PyTorch job saved open the same way, their chunks
//! cut along any dimension; folders in ckpt's earlier layout
//! (`ckpt.index.json` + `part-*.bin`) still read. The folder, read through
//! [`crate::read`] (`ckpt inspect`, `ckpt convert`), is the whole
//! checkpoint.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value as Json;

use super::dcp::write::{Piece, What};
use super::dcp::{self, place_chunk};
use crate::storage::Storage;
use crate::{byte_len, DType, Error, Key, Result, StateDict, TensorData};

/// The commit file of folders in ckpt's earlier layout, still read.
pub const INDEX: &str = "ckpt.index.json";
/// The `format` of an earlier multi-rank checkpoint's index.
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

    /// The slice as a DCP chunk: where it sits in the whole tensor.
    fn piece(&self) -> Piece<'_> {
        let mut offsets = vec![0; self.shape.len()];
        if let Some(first) = offsets.first_mut() {
            *first = self.rows.start;
        }
        Piece {
            fqn: self.name.clone(),
            path: vec![Key::Str(self.name.clone())],
            what: What::Chunk {
                size: self.shape.clone(),
                offsets,
                data: &self.data,
            },
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

/// Saves rank `rank`'s part of a `world`-rank checkpoint in `dir`: its
/// `.distcp` file, then the description that marks the part whole.
pub fn save_part(dir: &Path, rank: usize, world: usize, parts: &[Part]) -> Result<()> {
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
    }
    let pieces: Vec<Piece<'_>> = parts.iter().map(Part::piece).collect();
    dcp::write::write_rank(&*storage(dir)?, dir, rank, world, &pieces)
}

/// Commits the checkpoint in `dir` when all `world` parts are there:
/// checks that the pieces of every tensor cover it exactly once, then
/// writes `.metadata`. Any rank may run it; until it succeeds, no reader
/// sees the checkpoint.
pub fn commit(dir: &Path, world: usize) -> Result<()> {
    dcp::write::commit(&*storage(dir)?, dir, world)
}

/// Where a piece's bytes are.
#[derive(Debug, Clone)]
enum Source {
    /// Raw rows in an earlier layout's `part-*.bin`, and their hash.
    Raw {
        file: String,
        offset: u64,
        hash: String,
    },
    /// A DCP item: a `torch.save` archive of the chunk.
    Saved(dcp::Chunk),
}

/// One piece of a tensor: where it sits in the whole, and its bytes.
#[derive(Debug, Clone)]
struct Slice {
    offsets: Vec<usize>,
    sizes: Vec<usize>,
    source: Source,
}

/// A tensor of the whole checkpoint and its pieces.
#[derive(Debug, Clone)]
struct Entry {
    dtype: DType,
    shape: Vec<usize>,
    pieces: Vec<Slice>,
}

/// A piece of an earlier layout's index: rows of one rank's `part-*.bin`.
struct Rows {
    rank: usize,
    rows: Range<usize>,
    offset: u64,
    length: u64,
    hash: String,
}

/// One entry of an earlier layout's index (`ckpt.index.json`).
fn parse_entry(e: &Json, path: &Path) -> Result<(String, DType, Vec<usize>, Rows)> {
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
    let piece = Rows {
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

/// Checks that an earlier index's pieces, in row order, cover the rows
/// exactly once: pieces out of order or overlapping would be read
/// differently by different readers.
fn check_rows(name: &str, total: usize, pieces: &[Rows], at: &Path) -> Result<()> {
    let mut next = 0;
    for p in pieces {
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
    if next != total {
        return Err(bad(at, format!("{name}: rows {next}..{total} are missing")));
    }
    Ok(())
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
    /// Opens the committed checkpoint in `dir`: a DCP folder (`.metadata`)
    /// or one in ckpt's earlier layout (`ckpt.index.json`).
    pub fn open(dir: &Path) -> Result<Distributed> {
        Distributed::open_in(dir, storage(dir)?)
    }

    /// [`open`](Distributed::open) through `store`, whose root is `dir`
    /// (any [`Storage`], such as one in memory).
    pub fn open_in(dir: &Path, store: Arc<dyn Storage>) -> Result<Distributed> {
        match store.read(dcp::METADATA) {
            Ok(_) => return Distributed::from_dcp(dir, store),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(dir.join(dcp::METADATA), e))
            }
            Err(_) => {}
        }
        let bytes = store.read(INDEX).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => bad(dir, "no committed checkpoint (no .metadata)"),
            _ => Error::io(dir.join(INDEX), e),
        })?;
        let json: Json = crate::json::parse(&bytes)
            .map_err(|e| bad(&dir.join(INDEX), format!("not JSON ({e})")))?;
        Distributed::from_json(&json, dir, store)
    }

    /// A DCP folder's tensors; its world size counted from the ranks that
    /// named its data files (`__<rank>_<n>.distcp`).
    fn from_dcp(dir: &Path, store: Arc<dyn Storage>) -> Result<Distributed> {
        let mut order = Vec::new();
        let mut tensors = BTreeMap::new();
        let mut world = 1;
        for t in dcp::tensors(&*store, dir)? {
            let pieces =
                t.chunks
                    .into_iter()
                    .map(|c| {
                        let rank = c.item.file.strip_prefix("__").and_then(|f| {
                            f.split('_').next().and_then(|r| r.parse::<usize>().ok())
                        });
                        world = world.max(rank.map_or(1, |r| r.saturating_add(1)));
                        Slice {
                            offsets: c.offsets.clone(),
                            sizes: c.sizes.clone(),
                            source: Source::Saved(c),
                        }
                    })
                    .collect();
            order.push(t.fqn.clone());
            let entry = Entry {
                dtype: t.dtype,
                shape: t.size,
                pieces,
            };
            tensors.insert(t.fqn, entry);
        }
        Ok(Distributed {
            dir: dir.to_owned(),
            store,
            world,
            order,
            tensors,
        })
    }

    /// The checkpoint an earlier layout's parsed index `json` (in `dir`)
    /// describes.
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
            check_rows(name, shape.first().copied().unwrap_or(1), &pieces, &path)?;
            let entry = Entry {
                pieces: pieces
                    .into_iter()
                    .map(|p| legacy_slice(p, &shape))
                    .collect(),
                dtype,
                shape,
            };
            order.push(name.to_owned());
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

    /// Rows `rows` of tensor `name`, reading only the pieces that hold
    /// them (of an earlier layout's raw rows, exactly their bytes); whole
    /// pieces are checked against their hashes.
    pub fn read_rows(&self, name: &str, rows: Range<usize>) -> Result<TensorData> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| bad(&self.dir, format!("no tensor {name}")))?;
        let total = e.shape.first().copied().unwrap_or(1);
        if rows.end > total || rows.start > rows.end {
            return Err(bad(&self.dir, format!("{name}: rows {rows:?} of {total}")));
        }
        let mut shape = e.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = rows.len();
        }
        // Pieces are read before the result is allocated: an index's
        // claims are never allocated, only bytes that arrived.
        let mut got = Vec::new();
        let mut held = 0u64;
        for p in &e.pieces {
            let (a, b) = match p.offsets.first() {
                Some(&o) => (rows.start.max(o), rows.end.min(o + p.sizes[0])),
                None => (0, 1),
            };
            if a >= b || p.sizes.contains(&0) {
                continue;
            }
            let bytes = self.slice_rows(name, e.dtype, p, a..b)?;
            held += bytes.len() as u64;
            let mut offsets = p.offsets.clone();
            let mut sizes = p.sizes.clone();
            if let (Some(o), Some(s)) = (offsets.first_mut(), sizes.first_mut()) {
                (*o, *s) = (a - rows.start, b - a);
            }
            got.push((offsets, sizes, bytes));
        }
        let len = byte_len(e.dtype, &shape).filter(|&n| n <= held);
        let len =
            len.ok_or_else(|| bad(&self.dir, format!("{name}: its pieces do not fill it")))?;
        let mut bytes = vec![0u8; len as usize];
        for (offsets, sizes, src) in &got {
            place_chunk(&mut bytes, &shape, e.dtype.size(), (offsets, sizes), src);
        }
        TensorData::new(e.dtype, shape, bytes)
    }

    /// Rows `rows` (of the whole tensor) of piece `p`, as bytes.
    fn slice_rows(
        &self,
        name: &str,
        dtype: DType,
        p: &Slice,
        rows: Range<usize>,
    ) -> Result<Vec<u8>> {
        let first = p.offsets.first().copied().unwrap_or(0);
        let row = row_bytes(dtype, &p.sizes);
        let local = (rows.start - first) as u64 * row..(rows.end - first) as u64 * row;
        let whole = local.end - local.start == byte_len(dtype, &p.sizes).unwrap_or(0);
        match &p.source {
            Source::Saved(chunk) => {
                let rows = rows.start - first..rows.end - first;
                dcp::read_chunk_rows(&*self.store, &self.dir, dtype, chunk, rows)
            }
            Source::Raw { file, offset, hash } => {
                let path = self.dir.join(file);
                let at = |o: u64| {
                    offset
                        .checked_add(o)
                        .ok_or_else(|| bad(&path, format!("{name}: offsets overflow")))
                };
                let range = at(local.start)?..at(local.end)?;
                let got = self
                    .store
                    .read_range(file, range.clone())
                    .map_err(|e| Error::io(&path, e))?;
                if got.len() as u64 != range.end - range.start {
                    return Err(bad(&path, format!("{name}: short read")));
                }
                let found = super::incremental::chunk_hash(&got);
                if whole && &found != hash {
                    return Err(Error::HashMismatch {
                        path,
                        expected: hash.clone(),
                        found,
                    });
                }
                Ok(got)
            }
        }
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

/// An earlier layout's rows as a piece placed in the whole tensor.
fn legacy_slice(p: Rows, shape: &[usize]) -> Slice {
    let mut offsets = vec![0; shape.len()];
    let mut sizes = shape.to_vec();
    if let (Some(o), Some(s)) = (offsets.first_mut(), sizes.first_mut()) {
        (*o, *s) = (p.rows.start, p.rows.len());
    }
    Slice {
        offsets,
        sizes,
        source: Source::Raw {
            file: part_name(p.rank, "bin"),
            offset: p.offset,
            hash: p.hash,
        },
    }
}
