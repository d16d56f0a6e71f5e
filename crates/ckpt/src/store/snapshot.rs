//! Snapshots for background saves: every tensor of a checkpoint copied
//! into one buffer that is reused from save to save, so a snapshot costs
//! one `memcpy` into memory that is already paged in.

use std::sync::{Arc, Mutex};

use crate::tensor::Buffer;
use crate::{Result, TensorData, Value};

/// The reused buffer. It is free again once the background save that
/// holds the previous snapshot has finished and dropped it.
#[derive(Default)]
pub(crate) struct SnapshotBuffer {
    buffer: Option<Arc<Buffer>>,
}

impl SnapshotBuffer {
    /// The bytes held (reported as the memory background saving costs).
    pub(crate) fn capacity(&self) -> usize {
        match self.buffer.as_deref() {
            Some(Buffer::Heap(v)) => v.capacity(),
            _ => 0,
        }
    }

    /// Copies every tensor of `value` into the buffer and returns the tree
    /// with its tensors as ranges of it.
    pub(crate) fn snapshot_value(&mut self, value: &Value) -> Result<Value> {
        let mut total = 0usize;
        value.for_each_tensor(&mut |t| total += t.bytes().len());
        // Reuse the previous buffer, whole, when nothing else holds it and
        // it is large enough: its pages are already in memory. A new one is
        // zeroed lazily by the system.
        let mut bytes = match self.buffer.take().map(Arc::try_unwrap) {
            Some(Ok(Buffer::Heap(v))) if v.len() >= total => v,
            _ => vec![0u8; total],
        };
        let ranges = copy_in_parallel(value, &mut bytes[..total]);
        let buffer = Arc::new(Buffer::Heap(bytes));
        let mut next = ranges.into_iter();
        let copied = value.try_map_tensors(&mut |t| {
            let range = next.next().expect("one range per tensor");
            TensorData::shared(t.dtype(), t.shape().to_vec(), Arc::clone(&buffer), range)
        })?;
        self.buffer = Some(buffer);
        Ok(copied)
    }
}

/// The largest piece one thread copies at a time, so one large tensor is
/// copied by every core.
const PIECE: usize = 4 << 20;

/// Copies every tensor of `value` into `bytes`, one after another, on
/// every core; returns each tensor's range.
fn copy_in_parallel(value: &Value, bytes: &mut [u8]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut pieces: Vec<(Mutex<&mut [u8]>, &[u8])> = Vec::new();
    let mut rest = bytes;
    let mut at = 0;
    value.for_each_tensor(&mut |t| {
        let source = t.bytes();
        ranges.push(at..at + source.len());
        at += source.len();
        for piece in source.chunks(PIECE) {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(piece.len());
            pieces.push((Mutex::new(head), piece));
            rest = tail;
        }
    });
    crate::parallel::map(&pieces, |(to, from)| {
        to.lock()
            .unwrap_or_else(|p| p.into_inner())
            .copy_from_slice(from);
    });
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StateDict, TrainingCheckpoint};

    #[test]
    fn snapshots_copy_once_and_reuse_the_buffer() {
        let mut model = StateDict::new();
        model.insert(
            "a".into(),
            TensorData::from_f32(&[1000], &[1.5; 1000]).unwrap(),
        );
        model.insert(
            "b".into(),
            TensorData::from_f32(&[3], &[1.0, 2.0, 3.0]).unwrap(),
        );
        let mut c = TrainingCheckpoint::new(model);
        c.rng_state = Some(TensorData::new(crate::DType::U8, vec![2], vec![7, 9]).unwrap());
        let mut buf = SnapshotBuffer::default();
        let snap = buf.snapshot_value(&c.to_value()).unwrap();
        assert_eq!(snap, c.to_value());
        let first = buf.buffer.as_ref().map(|b| b.as_slice().as_ptr()).unwrap();
        drop(snap);
        let again = buf.snapshot_value(&c.to_value()).unwrap();
        assert_eq!(again, c.to_value());
        assert_eq!(
            buf.buffer.as_ref().map(|b| b.as_slice().as_ptr()).unwrap(),
            first,
            "not reused"
        );
        assert!(buf.capacity() >= 4014);
        // While a snapshot is still held (a save in flight), a new buffer is used.
        let third = buf.snapshot_value(&c.to_value()).unwrap();
        assert_ne!(
            buf.buffer.as_ref().map(|b| b.as_slice().as_ptr()).unwrap(),
            TrainingCheckpoint::from_value(&again).unwrap().model["a"]
                .bytes()
                .as_ptr()
        );
        drop(third);
    }
}
