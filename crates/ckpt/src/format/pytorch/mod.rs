//! PyTorch `torch.save` files: the zip container, the restricted pickle
//! reader, and a writer whose files `torch.load(weights_only=True)` accepts.
//!
//! Byte-level facts: `shared/reference/pytorch-file-format.md`.

mod pickle;
mod write;
pub mod zip;

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;

pub(crate) use write::Plan;

use crate::tensor::Buffer;
use crate::{DType, Error, Format, Loaded, Result, TensorData};
use pickle::{Converter, TensorRef};
use zip::{Contents, ZipArchive};

/// The legacy storage classes (`torch.FloatStorage`) and their dtypes; the
/// other dtypes use `torch.storage.UntypedStorage` and `_rebuild_tensor_v3`.
const STORAGE_CLASSES: [(DType, &str); 10] = [
    (DType::F64, "DoubleStorage"),
    (DType::F32, "FloatStorage"),
    (DType::F16, "HalfStorage"),
    (DType::BF16, "BFloat16Storage"),
    (DType::I64, "LongStorage"),
    (DType::I32, "IntStorage"),
    (DType::I16, "ShortStorage"),
    (DType::I8, "CharStorage"),
    (DType::U8, "ByteStorage"),
    (DType::Bool, "BoolStorage"),
];

/// The legacy storage class of a dtype, when it has one.
fn storage_class(dtype: DType) -> Option<&'static str> {
    STORAGE_CLASSES
        .iter()
        .find(|(d, _)| *d == dtype)
        .map(|(_, c)| *c)
}

/// The dtype of a legacy storage class name.
fn storage_dtype(class: &str) -> Option<DType> {
    STORAGE_CLASSES
        .iter()
        .find(|(_, c)| *c == class)
        .map(|(d, _)| *d)
}

/// Materialised strided views may allocate at most this much beyond the
/// file's own size in total (expanded tensors are views of small storages).
const EXPANSION_ALLOWANCE: u64 = 256 << 20;

/// Reads a whole `torch.save` zip file held in `buffer`.
pub(crate) fn read(buffer: Arc<Buffer>, path: &Path) -> Result<Loaded> {
    let bytes = buffer.as_slice();
    if !bytes.starts_with(b"PK\x03\x04") {
        return Err(Error::Unsupported {
            path: path.to_owned(),
            format: Format::PyTorch,
            operation: "read legacy (pre-1.6)",
        });
    }
    let zip = ZipArchive::parse(bytes, path)?;
    let prefix = zip.prefix(path)?.to_owned();
    if zip.get(&format!("{prefix}/constants.pkl")).is_some() {
        return Err(Error::Unsupported {
            path: path.to_owned(),
            format: Format::PyTorch,
            operation: "read TorchScript archives as",
        });
    }
    let pickle_name = format!("{prefix}/data.pkl");
    let pickle_entry = zip.get(&pickle_name).ok_or_else(|| Error::BadZip {
        path: path.to_owned(),
        offset: 0,
        problem: "the archive has no data.pkl",
    })?;
    let pickle_bytes = entry_bytes(&buffer, pickle_entry, path)?;
    let unpickled = pickle::unpickle(pickle_bytes.as_slice(), path, "data.pkl")?;

    let big_endian = match zip.get(&format!("{prefix}/byteorder")) {
        Some(entry) => entry_bytes(&buffer, entry, path)?.as_slice() == b"big",
        None => false,
    };
    let mut storages: HashMap<String, Shared> = HashMap::new();
    let mut allowance = (bytes.len() as u64).saturating_add(EXPANSION_ALLOWANCE);
    let value = Converter::new(&unpickled, path, "data.pkl", |t: &TensorRef| {
        let storage = match storages.get(&t.storage.key) {
            Some(s) => s.clone(),
            None => {
                let s = storage(&buffer, &zip, &prefix, t, path)?;
                storages.insert(t.storage.key.clone(), s.clone());
                s
            }
        };
        materialise(t, &storage, big_endian, &mut allowance, path)
    })
    .root()?;
    Ok(Loaded {
        format: Format::PyTorch,
        value,
        metadata: IndexMap::new(),
    })
}

/// A storage's bytes: a range of a shared buffer.
#[derive(Clone)]
struct Shared {
    buffer: Arc<Buffer>,
    range: Range<usize>,
}

impl Shared {
    fn as_slice(&self) -> &[u8] {
        &self.buffer.as_slice()[self.range.clone()]
    }
}

fn entry_bytes(buffer: &Arc<Buffer>, entry: &zip::ZipEntry, path: &Path) -> Result<Shared> {
    Ok(match entry.contents(buffer.as_slice(), path)? {
        Contents::Stored(range) => Shared {
            buffer: buffer.clone(),
            range,
        },
        Contents::Inflated(bytes) => {
            let range = 0..bytes.len();
            Shared {
                buffer: Arc::new(Buffer::Heap(bytes)),
                range,
            }
        }
    })
}

fn storage(
    buffer: &Arc<Buffer>,
    zip: &ZipArchive,
    prefix: &str,
    t: &TensorRef,
    path: &Path,
) -> Result<Shared> {
    let key = &t.storage.key;
    let bad = |problem| Error::BadStorage {
        path: path.to_owned(),
        key: key.clone(),
        problem,
    };
    let entry = zip
        .get(&format!("{prefix}/data/{key}"))
        .ok_or_else(|| bad("the archive has no data for it"))?;
    let element = t.storage.dtype.map_or(1, |d| d.size() as u64);
    let expected = t
        .storage
        .numel
        .checked_mul(element)
        .ok_or_else(|| bad("its length overflows"))?;
    if entry.size != expected {
        return Err(bad("its data is not the length the pickle declares"));
    }
    entry_bytes(buffer, entry, path)
}

/// Builds the tensor a view describes: a borrowed range when the view is
/// contiguous and little-endian, otherwise a gathered copy.
fn materialise(
    t: &TensorRef,
    storage: &Shared,
    big_endian: bool,
    allowance: &mut u64,
    path: &Path,
) -> Result<TensorData> {
    let bad = |problem| Error::BadStorage {
        path: path.to_owned(),
        key: t.storage.key.clone(),
        problem,
    };
    let element = t.dtype.size() as u64;
    let shape: Vec<usize> = t
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad("a dimension does not fit in memory")))
        .collect::<Result<_>>()?;
    let numel = t
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad("the view's size overflows"))?;
    if numel == 0 {
        return TensorData::new(t.dtype, shape, Vec::new());
    }
    // The last element the view reaches must lie inside the storage.
    let last = t
        .shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |acc, (&d, &s)| {
            acc.checked_add((d - 1).checked_mul(s)?)
        })
        .ok_or_else(|| bad("the view's extent overflows"))?;
    let end = last
        .checked_add(1)
        .and_then(|n| n.checked_mul(element))
        .ok_or_else(|| bad("the view's extent overflows"))?;
    let bytes = storage.as_slice();
    if end > bytes.len() as u64 {
        return Err(bad("a tensor view reaches past the end of its storage"));
    }
    let nbytes = numel * element; // ≤ end ≤ storage length when contiguous
    if is_contiguous(&t.shape, &t.stride) && !big_endian {
        let start = storage.range.start + (t.offset * element) as usize;
        return TensorData::shared(
            t.dtype,
            shape,
            storage.buffer.clone(),
            start..start + nbytes as usize,
        );
    }
    *allowance = allowance.checked_sub(nbytes).ok_or_else(|| {
        bad("materialising its strided views would allocate far more than the file holds")
    })?;
    let mut out = Vec::with_capacity(nbytes as usize);
    gather(bytes, t, element as usize, &mut out);
    if big_endian && element > 1 {
        for chunk in out.chunks_exact_mut(element as usize) {
            chunk.reverse();
        }
    }
    TensorData::new(t.dtype, shape, out)
}

/// True when the strides are those of a row-major array of this shape
/// (dimensions of size 1 may have any stride).
fn is_contiguous(shape: &[u64], stride: &[u64]) -> bool {
    let mut expected = 1u64;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(d);
    }
    true
}

/// Copies the view's elements in row-major order. Bounds were checked by
/// the caller: every index is at most the view's last element.
fn gather(bytes: &[u8], t: &TensorRef, element: usize, out: &mut Vec<u8>) {
    let dims = t.shape.len();
    if dims == 0 {
        let at = t.offset as usize * element;
        out.extend_from_slice(&bytes[at..at + element]);
        return;
    }
    let inner = t.shape[dims - 1] as usize;
    let inner_stride = t.stride[dims - 1] as usize;
    let mut index = vec![0u64; dims - 1];
    loop {
        let base = t.offset
            + index
                .iter()
                .zip(&t.stride)
                .map(|(&i, &s)| i * s)
                .sum::<u64>();
        let base = base as usize;
        if inner_stride == 1 {
            out.extend_from_slice(&bytes[base * element..(base + inner) * element]);
        } else {
            for i in 0..inner {
                let at = (base + i * inner_stride) * element;
                out.extend_from_slice(&bytes[at..at + element]);
            }
        }
        // Advance the odometer over the outer dimensions.
        let mut d = dims - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            index[d] += 1;
            if index[d] < t.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguity_ignores_unit_dimensions() {
        assert!(is_contiguous(&[2, 3], &[3, 1]));
        assert!(is_contiguous(&[1, 3], &[99, 1]));
        assert!(is_contiguous(&[], &[]));
        assert!(!is_contiguous(&[2, 3], &[1, 2]));
        assert!(!is_contiguous(&[4], &[0]));
    }
}
