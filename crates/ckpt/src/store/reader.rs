//! [`RunReader`]: a run opened read-only. It never writes and never takes
//! the lock (a reader needs no write permission, and a writer opening at
//! the same moment never sees it), so `ckpt ls`, `verify` and `plot` read
//! a run while training saves into it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::manifest::{self, Manifest, StepInfo};
use super::{is_leftover, Retention, Shared, StoreOptions, HISTORY, MANIFEST};
use crate::storage::{Location, Storage};
use crate::{Error, Result, TrainingCheckpoint};

/// A run directory opened read-only: no lock and no clean-up, so it can be
/// read (listed, verified, loaded from) while a writer is saving into it.
pub struct RunReader {
    shared: Shared,
    retention: Option<Retention>,
}

/// What [`RunReader::check`] found.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RunCheck {
    /// Each committed step and its problem, if any (hashes, structure).
    pub steps: Vec<(u64, Option<String>)>,
    /// Names that are not committed steps: interrupted saves or deletions
    /// (or, while `writer_active`, a save in progress).
    pub leftovers: Vec<String>,
    /// A process holds the writer lock.
    pub writer_active: bool,
}

impl RunCheck {
    /// True when every step loads and nothing is torn.
    pub fn is_ok(&self) -> bool {
        self.steps.iter().all(|(_, p)| p.is_none())
            && (self.writer_active || self.leftovers.is_empty())
    }
}

impl RunReader {
    /// Opens the run directory `dir` (or `s3://bucket/prefix`) for
    /// reading.
    pub fn open(dir: impl AsRef<Path>) -> Result<RunReader> {
        RunReader::open_with(
            Location::parse(dir.as_ref()).storage()?,
            StoreOptions::default(),
        )
    }

    /// Opens a run on any [`Storage`] for reading; `options.verify` says
    /// whether loads check hashes.
    pub fn open_with(storage: Arc<dyn Storage>, options: StoreOptions) -> Result<RunReader> {
        let shared = Shared {
            storage,
            options,
            manifest: Mutex::new(Manifest::default()),
            chunks: Mutex::new(None),
            hash_cache: Mutex::default(),
        };
        let bytes = match shared.storage.read(MANIFEST) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::BadStore {
                    path: shared.path(MANIFEST),
                    reason: "not a ckpt run directory (no manifest.json; a run has one after its first save)".into(),
                })
            }
            Err(e) => return Err(Error::io(shared.path(MANIFEST), e)),
        };
        let manifest = Manifest::parse(&bytes).map_err(|reason| Error::BadStore {
            path: shared.path(MANIFEST),
            reason: reason.to_string(),
        })?;
        let retention = manifest.retention.clone();
        *shared.manifest() = manifest;
        Ok(RunReader { shared, retention })
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        self.shared.storage.root()
    }

    /// The committed steps, oldest first.
    pub fn steps(&self) -> Vec<StepInfo> {
        self.shared.manifest().steps.clone()
    }

    /// Where a committed step's checkpoint file is (`None` for a step the
    /// run does not hold): a path or `s3://` URL any reader takes.
    pub fn checkpoint_path(&self, step: u64) -> Option<PathBuf> {
        let info = self.steps().into_iter().find(|s| s.step == step)?;
        Some(self.dir().join(manifest::step_dir(step)).join(info.file))
    }

    /// The retention rules the writer recorded at its last commit.
    pub fn retention(&self) -> Option<&Retention> {
        self.retention.as_ref()
    }

    /// Every commit's step, epoch, metrics and time, including steps that
    /// retention has since deleted, oldest first (one entry per step, the
    /// latest commit of it). Falls back to the committed steps when the
    /// run has no history file.
    pub fn history(&self) -> Result<Vec<StepInfo>> {
        match self.shared.storage.read(HISTORY) {
            Ok(bytes) => Ok(manifest::parse_history(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(self.steps()),
            Err(e) => Err(Error::io(self.shared.path(HISTORY), e)),
        }
    }

    /// Loads a committed step (hashes checked unless the options said not).
    pub fn load(&self, step: u64) -> Result<TrainingCheckpoint> {
        self.shared.load(&self.shared.step(step)?)
    }

    /// Checks every committed step (reads every byte, compares hashes,
    /// parses the checkpoint) and looks for torn saves. `progress` is
    /// called with (bytes checked, total bytes) after each step.
    pub fn check(&self, mut progress: impl FnMut(u64, u64)) -> Result<RunCheck> {
        let steps = self.steps();
        let total: u64 = steps.iter().map(|s| s.bytes).sum();
        let mut done = 0;
        let mut check = RunCheck::default();
        for info in &steps {
            let problem = self.shared.load_value(info).err().map(|e| e.to_string());
            check.steps.push((info.step, problem));
            done += info.bytes;
            progress(done, total);
        }
        let manifest = self.shared.manifest().clone();
        for name in self.shared.io("", self.shared.storage.list())? {
            if is_leftover(&name, &manifest) {
                check.leftovers.push(name);
            }
        }
        check.writer_active = self
            .shared
            .storage
            .writer_active()
            .map_err(|e| Error::io(self.shared.path(".lock"), e))?;
        Ok(check)
    }
}
