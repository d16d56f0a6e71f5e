//! Consolidating a DCP folder into one safetensors file tensor by tensor:
//! the header is planned from `.metadata` alone (the same names and tree
//! the in-memory writer gives), then each whole tensor is assembled from
//! its chunks with ranged reads, written and dropped. Peak memory is about
//! the largest tensor (twice it while a tensor of several chunks is put
//! together), not the checkpoint.

use std::collections::HashSet;
use std::io;
use std::path::Path;
use std::sync::Arc;

use super::assemble::{check_cover, place, place_chunk};
use super::{bad, entries, read_chunk, read_value, stands_for, Chunk, Stored, METADATA, SLACK};
use crate::format::safetensors::{self, Described};
use crate::format::SaveOptions;
use crate::storage::{Location, Storage};
use crate::tensor::Buffer;
use crate::{byte_len, DType, Dict, Result, TensorData, Value};

/// What was written: the tensors and their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consolidated {
    /// Tensors in the file.
    pub tensors: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// Where a tensor of the file comes from.
enum Source<'a> {
    /// A sharded tensor of the folder, assembled when its turn comes.
    Chunks {
        dtype: DType,
        size: &'a [usize],
        chunks: &'a [Chunk],
    },
    /// A tensor inside a non-tensor value (already read: values are small).
    Held(TensorData),
}

/// Writes the DCP folder `dir` (local or `s3://`) as the safetensors file
/// `out`, atomically, one tensor in memory at a time; `options` gives the
/// file's metadata, durability and progress.
pub fn consolidate(dir: &Path, out: &Path, options: &SaveOptions) -> Result<Consolidated> {
    let storage = Location::parse(dir).storage()?;
    let meta_path = dir.join(METADATA);
    let entries = entries(&*storage, dir)?;
    // The tree with each sharded tensor standing in as a 0-d view of one
    // marker buffer at its entry's index: flattened, it names every tensor
    // as the assembled tree would.
    let marks = Arc::new(Buffer::Heap(vec![0u8; entries.len()]));
    let mut root = Value::Dict(Dict::new());
    // As when the tree is read whole: tensors take no more bytes than the
    // distinct items holding them (+ slack), however often one is named.
    let (mut counted, mut held, mut claimed) = (HashSet::new(), 0u64, 0u64);
    for (i, e) in entries.iter().enumerate() {
        let value = match &e.stored {
            Stored::Bytes(item) => read_value(&*storage, dir, item)?,
            Stored::Tensor {
                dtype,
                size,
                chunks,
            } => {
                let name = &e.fqn;
                check_cover(size, chunks).map_err(|p| bad(&meta_path, format!("{name}: {p}")))?;
                let total = byte_len(*dtype, size)
                    .ok_or_else(|| bad(&meta_path, format!("{name}: too large")))?;
                for c in chunks.iter() {
                    if counted.insert((c.item.file.as_str(), c.item.offset)) {
                        let claim = byte_len(*dtype, &c.sizes).unwrap_or(u64::MAX);
                        held = held.saturating_add(stands_for(&c.item, claim));
                    }
                }
                claimed = claimed.saturating_add(total);
                if claimed > held.saturating_add(SLACK) {
                    let problem = "the tensors claim more bytes than the items holding them";
                    return Err(bad(&meta_path, format!("{name}: {problem}")));
                }
                Value::Tensor(TensorData::shared(
                    DType::U8,
                    vec![],
                    marks.clone(),
                    i..i + 1,
                )?)
            }
        };
        place(&mut root, &e.path, value, entries.len(), &meta_path)?;
    }
    let (tree, named) = safetensors::flatten(&root)?;
    let mut described: Vec<Described<'_>> = Vec::with_capacity(named.len());
    let mut sources = Vec::with_capacity(named.len());
    for (name, t) in named.iter() {
        match t.offset_in(&marks).map(|i| &entries[i].stored) {
            Some(Stored::Tensor {
                dtype,
                size,
                chunks,
            }) => {
                described.push((name.as_str(), *dtype, size.as_slice()));
                sources.push(Source::Chunks {
                    dtype: *dtype,
                    size,
                    chunks,
                });
            }
            _ => {
                described.push((name.as_str(), t.dtype(), t.shape()));
                sources.push(Source::Held(t.clone()));
            }
        }
    }
    let (header, order) = safetensors::header(tree, &described, &options.metadata)?;
    let total: u64 = described
        .iter()
        .map(|&(_, d, s)| byte_len(d, s).unwrap_or(0))
        .sum();
    let report = |done| {
        if let Some(p) = &options.progress {
            (p.0)(done, total);
        }
    };
    crate::storage::write_atomic(out, options.durable, |w| {
        w.write_all(&header)?;
        let mut done = 0;
        for i in order {
            let tensor = match &sources[i] {
                Source::Held(t) => t.clone(),
                Source::Chunks {
                    dtype,
                    size,
                    chunks,
                } => assemble(&*storage, dir, *dtype, size, chunks).map_err(io::Error::other)?,
            };
            w.write_all(tensor.bytes())?;
            done += tensor.bytes().len() as u64;
            report(done);
        }
        Ok(())
    })?;
    Ok(Consolidated {
        tensors: described.len(),
        bytes: total,
    })
}

/// One whole tensor from its chunks (checked to tile it): a chunk that is
/// the whole tensor as it was read; otherwise the chunks are read first
/// and only the bytes that arrived are allocated.
fn assemble(
    storage: &dyn Storage,
    dir: &Path,
    dtype: DType,
    size: &[usize],
    chunks: &[Chunk],
) -> Result<TensorData> {
    if let [only] = chunks {
        if only.sizes == size {
            return read_chunk(storage, dir, dtype, only);
        }
    }
    let mut read = Vec::with_capacity(chunks.len());
    let mut held = 0u64;
    for chunk in chunks.iter().filter(|c| !c.sizes.contains(&0)) {
        let t = read_chunk(storage, dir, dtype, chunk)?;
        held += t.bytes().len() as u64;
        read.push((chunk, t));
    }
    let total = byte_len(dtype, size).filter(|&n| n <= held);
    let total = total.ok_or_else(|| bad(dir, "a tensor's chunks do not fill it"))?;
    let mut bytes = vec![0u8; total as usize];
    for (chunk, t) in &read {
        let at = (chunk.offsets.as_slice(), chunk.sizes.as_slice());
        place_chunk(&mut bytes, size, dtype.size(), at, t.bytes());
    }
    TensorData::new(dtype, size.to_vec(), bytes)
}
