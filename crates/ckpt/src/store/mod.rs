//! The checkpoint store: a run directory that training writes checkpoints
//! into, crash-safe, with retention rules, integrity checks and saving in
//! the background.
//!
//! ```text
//! runs/exp1/
//!   manifest.json            the committed steps (writing it is the commit)
//!   step-00000010/
//!     checkpoint.safetensors (or checkpoint.pth)
//!     meta.json              step, epoch, metrics, time, size, content hash
//!   history.jsonl            every commit's step, epoch, metrics and time,
//!                            kept when retention deletes the step
//!   .tmp-<id>/               a save in progress; removed on open
//!   .lock                    held by the one process writing
//! ```
//!
//! A save writes everything into `.tmp-<id>/`, syncs the files and the
//! directory, renames it to `step-N/`, syncs the run directory, and then
//! replaces `manifest.json` atomically (write beside, sync, rename, sync).
//! Readers trust only steps the manifest lists, so a crash at any instant
//! leaves the previous committed checkpoint loadable; leftovers are removed
//! the next time the directory is opened. Retention deletes only after the
//! new manifest is in place.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use ckpt::store::{CheckpointManager, StoreOptions};
//! use ckpt::{StateDict, TensorData, TrainingCheckpoint};
//! let mut store = CheckpointManager::open(dir.path(), StoreOptions::default()).unwrap();
//! for step in [10, 20, 30, 40] {
//!     let mut model = StateDict::new();
//!     model.insert("w".into(), TensorData::from_f32(&[1], &[step as f32]).unwrap());
//!     let mut c = TrainingCheckpoint::new(model);
//!     c.step = step as i64;
//!     store.save(step, &c, &[("loss", 1.0 / step as f64)]).unwrap();
//! }
//! assert_eq!(store.steps().iter().map(|s| s.step).collect::<Vec<_>>(), [20, 30, 40]); // keep last 3
//! let restored = store.restore_latest().unwrap().unwrap();
//! assert_eq!((restored.step, restored.checkpoint.step), (40, 40));
//! ```

mod background;
mod blobs;
mod commit;
mod manager;
mod manifest;
mod options;
mod read;
mod reader;
mod recover;
mod retention;
mod snapshot;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use indexmap::IndexMap;

pub use manager::CheckpointManager;
pub use manifest::StepInfo;
pub use options::{AsyncPolicy, AsyncSave, OpenReport, Restored, SaveReport, StoreOptions};
pub use reader::{RunCheck, RunReader};
pub use retention::{KeepBest, KeepEvery, MetricMode, MissingMetric, Reason, Retention};

use crate::layout::incremental;
use crate::storage::{Storage, TMP_PREFIX};
use crate::{Error, Result};
use manifest::Manifest;

const MANIFEST: &str = "manifest.json";
const HISTORY: &str = "history.jsonl";
/// The manifest's temporary name before the one atomic replace took over
/// (runs of earlier ckpt versions may hold it after a crash): a leftover.
const MANIFEST_TMP: &str = ".manifest.json.tmp";

/// What a manager's save thread and its loads share: the run's storage,
/// options and committed state.
struct Shared {
    storage: Arc<dyn Storage>,
    options: StoreOptions,
    manifest: Mutex<Manifest>,
    /// The chunks each committed incremental step's index names; `None`
    /// when an index could not be read at open (then no blob is deleted).
    chunks: Mutex<Option<BTreeMap<u64, Vec<String>>>>,
    /// The last synchronous save's tensors and their chunk hashes: passed
    /// again unchanged, they are not hashed again.
    hash_cache: Mutex<incremental::HashCache>,
}

impl Shared {
    fn manifest(&self) -> MutexGuard<'_, Manifest> {
        self.manifest.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn chunks(&self) -> MutexGuard<'_, Option<BTreeMap<u64, Vec<String>>>> {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.storage.root().join(name)
    }

    fn io<T>(&self, name: &str, r: std::io::Result<T>) -> Result<T> {
        r.map_err(|e| self.io_error(name, e))
    }

    fn io_error(&self, name: &str, e: std::io::Error) -> Error {
        Error::io(self.path(name), e)
    }

    fn sync(&self, name: &str) -> Result<()> {
        if self.options.durable {
            self.io(name, self.storage.sync(name))?;
        }
        Ok(())
    }

    /// Writes a small file whole.
    fn write_small(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.io(name, self.storage.write(name, &mut |w| w.write_all(bytes)))
    }
}

/// Whether `name` in a run's root is what an interrupted save or deletion
/// left: a temporary, or a step folder the manifest does not list.
fn is_leftover(name: &str, manifest: &Manifest) -> bool {
    name.starts_with(TMP_PREFIX)
        || name == MANIFEST_TMP
        || (name.starts_with("step-") && !manifest.steps.iter().any(|s| s.dir() == name))
}

/// Why replacing the manifest failed, and whether the commit happened.
enum ManifestWrite {
    /// Nothing changed: the old manifest is in place.
    NotCommitted(Error),
    /// The new manifest is in place, but making it durable failed.
    NotDurable(Error),
}

impl ManifestWrite {
    fn into_error(self) -> Error {
        match self {
            ManifestWrite::NotCommitted(e) | ManifestWrite::NotDurable(e) => e,
        }
    }
}

fn to_map(metrics: &[(&str, f64)]) -> IndexMap<String, f64> {
    metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}
