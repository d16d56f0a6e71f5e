//! How a run is written and read, and what its operations report.

use crate::{Format, SaveOptions, TrainingCheckpoint};

use super::Retention;

/// What to do when `save_async` is called while a save is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AsyncPolicy {
    /// Wait for it to finish, then start (the default).
    #[default]
    Wait,
    /// Skip this save and return [`AsyncSave::Skipped`].
    Skip,
}

/// How a run directory is written and read.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Which steps to keep.
    pub retention: Retention,
    /// The checkpoint file format: [`Format::Safetensors`] (the default),
    /// [`Format::PyTorch`] or [`Format::Compressed`].
    pub format: Format,
    /// Sync files and directories to disk before a save returns (the
    /// default); without it a power cut (not a crash) can lose recent
    /// saves.
    pub durable: bool,
    /// Check content hashes on load (the default).
    pub verify: bool,
    /// Load checkpoints memory-mapped (the default; the hash check then
    /// reads the map in parallel) or into one heap buffer, hashed piece by
    /// piece as it is read.
    pub mmap: bool,
    /// Map checkpoints copy-on-write, so their tensors' memory may be
    /// written without touching the files ([`crate::LoadOptions::writable`]).
    pub writable: bool,
    /// What `save_async` does when a save is in flight.
    pub async_policy: AsyncPolicy,
    /// Progress callback and file metadata for the checkpoint files.
    pub save: SaveOptions,
    /// Called with (bytes checked, total) while a load verifies a mapped
    /// checkpoint's hash.
    pub load_progress: Option<crate::Progress>,
    /// Store tensors by content in 4 MiB chunks (`blobs/`), writing only
    /// the chunks no kept step already holds; `format` is then unused (the
    /// step holds `checkpoint.index.json`).
    pub incremental: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retention: Retention::default(),
            format: Format::Safetensors,
            durable: true,
            verify: true,
            mmap: true,
            writable: false,
            async_policy: AsyncPolicy::Wait,
            save: SaveOptions::default(),
            load_progress: None,
            incremental: false,
        }
    }
}

impl StoreOptions {
    /// Sets [`StoreOptions::retention`].
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Sets [`StoreOptions::format`].
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Sets [`StoreOptions::durable`].
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Sets [`StoreOptions::verify`].
    pub fn verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// Sets [`StoreOptions::mmap`].
    pub fn mmap(mut self, mmap: bool) -> Self {
        self.mmap = mmap;
        self
    }

    /// Sets [`StoreOptions::writable`].
    pub fn writable(mut self, writable: bool) -> Self {
        self.writable = writable;
        self
    }

    /// Sets [`StoreOptions::async_policy`].
    pub fn async_policy(mut self, policy: AsyncPolicy) -> Self {
        self.async_policy = policy;
        self
    }

    /// Sets [`StoreOptions::load_progress`].
    pub fn on_load_progress(mut self, report: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        self.load_progress = Some(crate::Progress::new(report));
        self
    }

    /// Sets [`StoreOptions::incremental`].
    pub fn incremental(mut self, incremental: bool) -> Self {
        self.incremental = incremental;
        self
    }

    /// Sets [`StoreOptions::save`].
    pub fn save_options(mut self, save: SaveOptions) -> Self {
        self.save = save;
        self
    }
}

/// What a save did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SaveReport {
    /// The committed step.
    pub step: u64,
    /// The checkpoint file's size (incremental: the tensors' bytes).
    pub bytes: u64,
    /// The bytes this save wrote (incremental: new chunks and the index;
    /// otherwise the file).
    pub written: u64,
    /// Steps retention deleted after the commit.
    pub deleted: Vec<u64>,
    /// Seconds from the call (or the background start) to the commit
    /// (before retention's deletions).
    pub seconds: f64,
}

/// What `save_async` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncSave {
    /// The save runs in the background.
    Started,
    /// A save was in flight and the policy is [`AsyncPolicy::Skip`].
    Skipped,
}

/// A checkpoint restored by [`CheckpointManager::restore_latest`](super::CheckpointManager::restore_latest).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Restored<C = TrainingCheckpoint> {
    /// The step it came from.
    pub step: u64,
    /// The checkpoint ([`TrainingCheckpoint`], or the tree as saved).
    pub checkpoint: C,
    /// Newer steps that failed to load, and why: never skipped silently.
    pub skipped: Vec<(u64, String)>,
}

/// What opening a run directory cleaned up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// Leftovers of interrupted saves or deletions that were removed.
    pub removed: Vec<String>,
    /// Set when `manifest.json` was damaged and rebuilt from the steps'
    /// `meta.json` files: what was wrong with it.
    pub rebuilt: Option<String>,
}
