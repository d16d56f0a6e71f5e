//! Saving in the background: a snapshot (or an owned copy) of the
//! checkpoint committed on a thread of its own while training goes on; at
//! most one in flight.

use std::sync::Arc;

use super::{to_map, AsyncPolicy, AsyncSave, CheckpointManager, SaveReport};
use crate::{Error, Result, TrainingCheckpoint, Value};

impl CheckpointManager {
    /// Takes a snapshot of `checkpoint` (one copy of its tensors into a
    /// buffer reused from save to save) and saves it in the background;
    /// returns as soon as the copy is made, so training can go on changing
    /// the model. At most one save is in flight: with
    /// [`AsyncPolicy::Wait`] this call first waits for the previous one,
    /// with [`AsyncPolicy::Skip`] it returns [`AsyncSave::Skipped`]. A
    /// failed background save is reported by the next call of
    /// `save_async`, `save` or [`CheckpointManager::wait`].
    pub fn save_async(
        &mut self,
        step: u64,
        checkpoint: &TrainingCheckpoint,
        metrics: &[(&str, f64)],
    ) -> Result<AsyncSave> {
        if self.in_flight() && self.shared.options.async_policy == AsyncPolicy::Skip {
            return Ok(AsyncSave::Skipped);
        }
        self.wait()?;
        let snapshot = self.snapshots.snapshot_value(&checkpoint.to_value())?;
        self.spawn(step, snapshot, checkpoint.epoch, metrics)
    }

    /// [`CheckpointManager::save_async`] of any checkpoint tree, with the
    /// epoch to record beside it: the tensors are copied into the reused
    /// snapshot buffer before this returns.
    pub fn save_value_async(
        &mut self,
        step: u64,
        value: &Value,
        epoch: i64,
        metrics: &[(&str, f64)],
    ) -> Result<AsyncSave> {
        if self.in_flight() && self.shared.options.async_policy == AsyncPolicy::Skip {
            return Ok(AsyncSave::Skipped);
        }
        self.wait()?;
        let snapshot = self.snapshots.snapshot_value(value)?;
        self.spawn(step, snapshot, epoch, metrics)
    }

    /// [`CheckpointManager::save_async`] without the snapshot copy, for a
    /// checkpoint that is already a copy nothing will change (what
    /// `ckpt-candle`'s `capture` returns): its tensors are immutable shared
    /// bytes.
    pub fn save_async_owned(
        &mut self,
        step: u64,
        checkpoint: TrainingCheckpoint,
        metrics: &[(&str, f64)],
    ) -> Result<AsyncSave> {
        if self.in_flight() && self.shared.options.async_policy == AsyncPolicy::Skip {
            return Ok(AsyncSave::Skipped);
        }
        self.wait()?;
        let epoch = checkpoint.epoch;
        self.spawn(step, checkpoint.to_value(), epoch, metrics)
    }

    fn in_flight(&self) -> bool {
        self.pending.as_ref().is_some_and(|(_, h)| !h.is_finished())
    }

    fn spawn(
        &mut self,
        step: u64,
        value: Value,
        epoch: i64,
        metrics: &[(&str, f64)],
    ) -> Result<AsyncSave> {
        let shared = Arc::clone(&self.shared);
        let metrics = to_map(metrics);
        let handle = std::thread::Builder::new()
            .name(format!("ckpt-save-{step}"))
            .spawn(move || shared.commit(step, &value, epoch, metrics, false))
            .map_err(|e| Error::io(self.dir(), e))?;
        self.pending = Some((step, handle));
        Ok(AsyncSave::Started)
    }

    /// The bytes the snapshot buffer of background saves holds.
    pub fn snapshot_bytes(&self) -> usize {
        self.snapshots.capacity()
    }

    /// Waits for the background save, if any, and returns its report (or
    /// its error).
    pub fn wait(&mut self) -> Result<Option<SaveReport>> {
        let Some((step, handle)) = self.pending.take() else {
            return Ok(None);
        };
        match handle.join() {
            Ok(Ok(report)) => Ok(Some(report)),
            Ok(Err(e)) => Err(Error::BackgroundSave {
                step,
                source: Box::new(e),
            }),
            Err(_) => Err(Error::BackgroundSave {
                step,
                source: Box::new(Error::io(
                    self.dir(),
                    std::io::Error::other("the save thread panicked"),
                )),
            }),
        }
    }
}
