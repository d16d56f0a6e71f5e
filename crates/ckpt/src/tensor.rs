//! Tensors as bytes: [`TensorData`].

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::{DType, Error, Result};

/// Where a tensor's bytes live: a heap buffer, a memory-mapped file or
/// another library's memory, shared by every tensor that was read from it.
pub(crate) enum Buffer {
    /// Bytes on the heap.
    Heap(Vec<u8>),
    /// A read-only map of a whole file.
    Map(memmap2::Mmap),
    /// A copy-on-write map of a whole file ([`crate::LoadOptions::writable`]).
    PrivateMap(memmap2::MmapMut),
    /// Bytes owned outside ckpt (a Python tensor's memory), borrowed for
    /// as long as the owner lives.
    Borrowed(Box<dyn AsRef<[u8]> + Send + Sync>),
}

impl Buffer {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Buffer::Heap(vec) => vec,
            Buffer::Map(map) => map,
            Buffer::PrivateMap(map) => map,
            Buffer::Borrowed(owner) => (**owner).as_ref(),
        }
    }
}

/// A tensor as ckpt sees it: a dtype, a shape, and contiguous little-endian
/// bytes in row-major order.
///
/// The bytes are either owned or a range of a buffer shared with other
/// tensors (typically a memory-mapped file), so cloning a `TensorData` is
/// cheap and loading a large file costs nothing until the bytes are read.
///
/// ```
/// use ckpt::{DType, TensorData};
/// let t = TensorData::from_f32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
/// assert_eq!(t.dtype(), DType::F32);
/// assert_eq!(t.numel(), 4);
/// assert_eq!(t.bytes().len(), 16);
/// // The byte length must agree with dtype × shape.
/// assert!(TensorData::new(DType::F32, vec![3], vec![0u8; 8]).is_err());
/// // No reader can index a dimension past i64::MAX, even of an empty tensor.
/// assert!(TensorData::new(DType::F32, vec![0, 1 << 63], vec![]).is_err());
/// ```
#[derive(Clone)]
pub struct TensorData {
    dtype: DType,
    shape: Vec<usize>,
    buffer: Arc<Buffer>,
    range: Range<usize>,
}

/// The number of bytes a tensor of `dtype` and `shape` holds, or `None` when
/// that does not fit in a `u64` or a dimension is past `i64::MAX`.
pub fn byte_len(dtype: DType, shape: &[usize]) -> Option<u64> {
    // torch, NumPy and safetensors' readers index with i64: a dimension
    // past i64::MAX (even of an empty tensor) is one nobody can load.
    if shape.iter().any(|&d| d as u64 > i64::MAX as u64) {
        return None;
    }
    shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &dim| acc.checked_mul(dim as u64))
}

impl TensorData {
    /// Makes a tensor that owns `bytes`, checking that their length is the
    /// shape's element count times the dtype size.
    pub fn new(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<TensorData> {
        check_len(dtype, &shape, bytes.len())?;
        let range = 0..bytes.len();
        Ok(TensorData {
            dtype,
            shape,
            buffer: Arc::new(Buffer::Heap(bytes)),
            range,
        })
    }

    /// Makes a tensor over memory `owner` holds (another library's tensor),
    /// without copying it: the bytes are read from the owner, which lives
    /// as long as the tensor or any clone of it. The length is checked as
    /// in [`TensorData::new`].
    pub fn borrowed(
        dtype: DType,
        shape: Vec<usize>,
        owner: impl AsRef<[u8]> + Send + Sync + 'static,
    ) -> Result<TensorData> {
        let buffer = Arc::new(Buffer::Borrowed(Box::new(owner)));
        let len = buffer.as_slice().len();
        TensorData::shared(dtype, shape, buffer, 0..len)
    }

    /// Makes an f32 tensor from values (a convenience for tests and examples).
    pub fn from_f32(shape: &[usize], values: &[f32]) -> Result<TensorData> {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        TensorData::new(DType::F32, shape.to_vec(), bytes)
    }

    /// Makes a tensor over `range` of a shared buffer. The caller has checked
    /// the range against the buffer; the length is checked here.
    pub(crate) fn shared(
        dtype: DType,
        shape: Vec<usize>,
        buffer: Arc<Buffer>,
        range: Range<usize>,
    ) -> Result<TensorData> {
        debug_assert!(range.end <= buffer.as_slice().len());
        check_len(dtype, &shape, range.len())?;
        Ok(TensorData {
            dtype,
            shape,
            buffer,
            range,
        })
    }

    /// Where this tensor starts in `buffer`, when it is a view of it.
    pub(crate) fn offset_in(&self, buffer: &Arc<Buffer>) -> Option<usize> {
        Arc::ptr_eq(&self.buffer, buffer).then_some(self.range.start)
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape; empty for a 0-dim (scalar) tensor.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of elements (1 for a 0-dim tensor, 0 when any dim is 0).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The contiguous little-endian bytes. For a mapped tensor, reading them
    /// pages the file in.
    pub fn bytes(&self) -> &[u8] {
        &self.buffer.as_slice()[self.range.clone()]
    }

    /// True when the bytes are a range of a memory-mapped file rather than
    /// heap memory.
    pub fn is_mapped(&self) -> bool {
        matches!(*self.buffer, Buffer::Map(_) | Buffer::PrivateMap(_))
    }

    /// True when the bytes are ckpt's own private memory (the heap, or a
    /// copy-on-write map) that whoever holds this tensor may write through
    /// a raw pointer (a torch tensor over them) without touching any file
    /// or anyone else's memory; false for read-only maps and borrowed
    /// memory.
    pub fn is_writable(&self) -> bool {
        matches!(*self.buffer, Buffer::Heap(_) | Buffer::PrivateMap(_))
    }

    /// True when the bytes are another library's memory
    /// ([`TensorData::borrowed`]), which it may change in place.
    pub(crate) fn is_borrowed(&self) -> bool {
        matches!(*self.buffer, Buffer::Borrowed(_))
    }

    /// A copy whose bytes are owned by this tensor alone.
    pub fn to_owned_bytes(&self) -> TensorData {
        TensorData::new(self.dtype, self.shape.clone(), self.bytes().to_vec())
            .expect("a valid tensor copies to a valid tensor")
    }
}

fn check_len(dtype: DType, shape: &[usize], actual: usize) -> Result<()> {
    let expected = byte_len(dtype, shape);
    if expected == Some(actual as u64) {
        Ok(())
    } else {
        Err(Error::TensorSize {
            dtype,
            shape: shape.to_vec(),
            expected,
            actual: actual as u64,
        })
    }
}

impl PartialEq for TensorData {
    /// Equal when dtype, shape and every byte agree (so NaNs with the same
    /// bits are equal, and `0.0 != -0.0`).
    fn eq(&self, other: &Self) -> bool {
        self.dtype == other.dtype && self.shape == other.shape && self.bytes() == other.bytes()
    }
}

impl Eq for TensorData {}

impl fmt::Debug for TensorData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorData")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &self.range.len())
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_dim_tensor_holds_one_element() {
        let t = TensorData::new(DType::I64, vec![], 7i64.to_le_bytes().to_vec()).unwrap();
        assert_eq!(t.numel(), 1);
        assert_eq!(t.shape(), &[] as &[usize]);
    }

    #[test]
    fn empty_tensor_holds_no_bytes() {
        let t = TensorData::new(DType::F32, vec![0, 5], vec![]).unwrap();
        assert_eq!(t.numel(), 0);
        assert!(t.bytes().is_empty());
    }

    #[test]
    fn wrong_byte_length_is_an_error() {
        let err = TensorData::new(DType::F16, vec![2, 3], vec![0; 11]).unwrap_err();
        assert!(matches!(
            err,
            Error::TensorSize {
                expected: Some(12),
                actual: 11,
                ..
            }
        ));
    }

    #[test]
    fn overflowing_shape_is_an_error_not_a_panic() {
        let err = TensorData::new(DType::F64, vec![usize::MAX, 2], vec![]).unwrap_err();
        assert!(matches!(err, Error::TensorSize { expected: None, .. }));
    }

    #[test]
    fn equality_is_bitwise() {
        let nan = TensorData::from_f32(&[1], &[f32::NAN]).unwrap();
        assert_eq!(nan, nan.clone());
        let zero = TensorData::from_f32(&[1], &[0.0]).unwrap();
        let neg_zero = TensorData::from_f32(&[1], &[-0.0]).unwrap();
        assert_ne!(zero, neg_zero);
    }
}
