//! [`CheckpointManager`]: a run open for writing; its steps, loads,
//! restores and garbage collection (opening is in `recover.rs`, saving in
//! `commit.rs` and `background.rs`).

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::manifest::StepInfo;
use super::snapshot::SnapshotBuffer;
use super::{
    to_map, ManifestWrite, OpenReport, Reason, Restored, Retention, SaveReport, Shared,
    StoreOptions,
};
use crate::{Error, Result, TrainingCheckpoint, Value};

/// A run directory, open for writing: one per directory at a time (a lock
/// held for the manager's life refuses a second).
pub struct CheckpointManager {
    pub(super) shared: Arc<Shared>,
    pub(super) pending: Option<(u64, JoinHandle<Result<SaveReport>>)>,
    pub(super) snapshots: SnapshotBuffer,
    pub(super) opened: OpenReport,
    pub(super) _lock: Box<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for CheckpointManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointManager")
            .field("dir", &self.shared.storage.root())
            .field("steps", &self.shared.manifest().steps.len())
            .finish()
    }
}

impl CheckpointManager {
    /// The run directory.
    pub fn dir(&self) -> &Path {
        self.shared.storage.root()
    }

    /// What opening cleaned up.
    pub fn opened(&self) -> &OpenReport {
        &self.opened
    }

    /// The options the run was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.shared.options
    }

    /// Saves `checkpoint` as `step` and commits it; then applies retention.
    /// `metrics` are recorded in the manifest (for `best()`, retention and
    /// `ckpt ls`). A save still running in the background finishes first,
    /// and its failure, if any, is returned here.
    pub fn save(
        &mut self,
        step: u64,
        checkpoint: &TrainingCheckpoint,
        metrics: &[(&str, f64)],
    ) -> Result<SaveReport> {
        let value = checkpoint.to_value();
        self.save_value(step, &value, checkpoint.epoch, metrics)
    }

    /// [`CheckpointManager::save`] of any checkpoint tree (what Python's
    /// `torch.save` takes: `{"model": ..., "optimizer": ...}`), with the
    /// epoch to record beside it.
    pub fn save_value(
        &mut self,
        step: u64,
        value: &Value,
        epoch: i64,
        metrics: &[(&str, f64)],
    ) -> Result<SaveReport> {
        self.wait()?;
        self.shared
            .commit(step, value, epoch, to_map(metrics), true)
    }

    /// The committed steps, oldest first.
    pub fn steps(&self) -> Vec<StepInfo> {
        self.shared.manifest().steps.clone()
    }

    /// The newest committed step.
    pub fn latest(&self) -> Option<StepInfo> {
        self.shared.manifest().steps.last().cloned()
    }

    /// The best committed step by the retention's best-K metric.
    pub fn best(&self) -> Option<StepInfo> {
        let manifest = self.shared.manifest();
        self.shared.options.retention.best(&manifest.steps).cloned()
    }

    /// Why each committed step is kept under the current rules.
    pub fn reasons(&self) -> Vec<(u64, Vec<Reason>)> {
        let steps = self.steps();
        let reasons = self.shared.options.retention.reasons(&steps);
        steps.iter().map(|s| s.step).zip(reasons).collect()
    }

    /// Loads a committed step, checking its content hashes unless the
    /// options say not to.
    pub fn load(&self, step: u64) -> Result<TrainingCheckpoint> {
        self.shared.load(&self.shared.step(step)?)
    }

    /// Loads a committed step's tree as it was saved, whatever its shape.
    pub fn load_value(&self, step: u64) -> Result<Value> {
        Ok(self.shared.load_value(&self.shared.step(step)?)?.0)
    }

    /// Loads the newest committed step that loads; newer ones that fail
    /// (damaged, missing files) are listed in [`Restored::skipped`], never
    /// passed over silently. `Ok(None)` for a run with no steps.
    pub fn restore_latest(&self) -> Result<Option<Restored>> {
        self.restore_with(|info| self.shared.load(info))
    }

    /// [`CheckpointManager::restore_latest`] giving the tree as it was
    /// saved, whatever its shape.
    pub fn restore_latest_value(&self) -> Result<Option<Restored<Value>>> {
        self.restore_with(|info| Ok(self.shared.load_value(info)?.0))
    }

    fn restore_with<C>(
        &self,
        load: impl Fn(&StepInfo) -> Result<C>,
    ) -> Result<Option<Restored<C>>> {
        let mut skipped = Vec::new();
        for info in self.steps().iter().rev() {
            match load(info) {
                Ok(checkpoint) => {
                    return Ok(Some(Restored {
                        step: info.step,
                        checkpoint,
                        skipped,
                    }))
                }
                Err(e) => skipped.push((info.step, e.to_string())),
            }
        }
        if skipped.is_empty() {
            return Ok(None);
        }
        let problems = skipped
            .iter()
            .map(|(s, e)| format!("step {s}: {e}"))
            .collect::<Vec<_>>()
            .join("; ");
        Err(Error::NoIntactCheckpoint {
            dir: self.dir().to_owned(),
            problems,
        })
    }

    /// Applies `retention` to the committed steps now and returns the steps
    /// it deletes (with `dry_run`, would delete). The newest step is always
    /// kept.
    pub fn gc(&mut self, retention: &Retention, dry_run: bool) -> Result<Vec<u64>> {
        self.wait()?;
        let mut next = self.shared.manifest().clone();
        let reasons = retention.reasons(&next.steps);
        let dropped: Vec<StepInfo> = next
            .steps
            .iter()
            .zip(&reasons)
            .filter(|(_, r)| r.is_empty())
            .map(|(s, _)| s.clone())
            .collect();
        if dry_run || dropped.is_empty() {
            return Ok(dropped.iter().map(|s| s.step).collect());
        }
        next.steps
            .retain(|s| !dropped.iter().any(|d| d.step == s.step));
        // A failed sync after the manifest's rename still leaves the new
        // manifest in place; the deletions follow it.
        if let Err(ManifestWrite::NotCommitted(e)) = self.shared.write_manifest(&next) {
            return Err(e);
        }
        *self.shared.manifest() = next;
        for s in &dropped {
            self.shared
                .io(&s.dir(), self.shared.storage.remove(&s.dir()))?;
            if let Some(map) = &mut *self.shared.chunks() {
                map.remove(&s.step);
            }
        }
        self.shared.sweep_blobs()?;
        Ok(dropped.iter().map(|s| s.step).collect())
    }
}

impl Drop for CheckpointManager {
    /// Finishes a background save. Its error cannot be returned from here:
    /// call [`CheckpointManager::wait`] to see it.
    fn drop(&mut self) {
        if let Some((_, handle)) = self.pending.take() {
            let _ = handle.join();
        }
    }
}
