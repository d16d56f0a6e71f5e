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

mod manifest;
mod retention;
mod snapshot;

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use indexmap::IndexMap;

pub use manifest::StepInfo;
pub use retention::{KeepBest, KeepEvery, MetricMode, MissingMetric, Reason, Retention};

use crate::format::Format;
use crate::layout::incremental;
use crate::storage::hash::{content_hash, content_hash_reporting, HashingWriter, StreamHasher};
use crate::storage::{ReplaceError, Storage};
use crate::tensor::Buffer;
use crate::{Error, Result, SaveOptions, TrainingCheckpoint};
use manifest::{step_dir, Manifest, ManifestError, Meta};
use snapshot::SnapshotBuffer;

const MANIFEST: &str = "manifest.json";
const HISTORY: &str = "history.jsonl";
/// The manifest's temporary name before the one atomic replace took over
/// (ckpt 0.1 runs may hold it after a crash): removed as a leftover.
const MANIFEST_TMP: &str = ".manifest.json.tmp";
use crate::storage::TMP_PREFIX;

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

/// A checkpoint restored by [`CheckpointManager::restore_latest`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Restored {
    /// The step it came from.
    pub step: u64,
    /// The checkpoint.
    pub checkpoint: TrainingCheckpoint,
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

/// A run directory, open for writing: one per directory at a time (a lock
/// held for the manager's life refuses a second).
pub struct CheckpointManager {
    shared: Arc<Shared>,
    pending: Option<(u64, JoinHandle<Result<SaveReport>>)>,
    snapshots: SnapshotBuffer,
    opened: OpenReport,
    _lock: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for CheckpointManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointManager")
            .field("dir", &self.shared.storage.root())
            .field("steps", &self.shared.manifest().steps.len())
            .finish()
    }
}

impl Shared {
    fn manifest(&self) -> MutexGuard<'_, Manifest> {
        self.manifest.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn chunks(&self) -> MutexGuard<'_, Option<BTreeMap<u64, Vec<String>>>> {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deletes the blobs no committed step names (after a commit or a
    /// `gc`); nothing when the references are not all known.
    fn collect_blobs(&self, present: &[String]) -> Result<()> {
        let referenced: HashSet<String> = match &*self.chunks() {
            Some(map) => map.values().flatten().cloned().collect(),
            None => return Ok(()),
        };
        for hash in present.iter().filter(|h| !referenced.contains(*h)) {
            let name = incremental::blob_name(hash);
            self.io(&name, self.storage.remove(&name))?;
        }
        Ok(())
    }

    /// Writes the chunks of `chunked` that no committed step holds;
    /// returns the bytes written.
    fn write_blobs(&self, chunked: &incremental::Chunked) -> Result<u64> {
        let known: HashSet<String> = self
            .chunks()
            .iter()
            .flat_map(|m| m.values().flatten().cloned())
            .collect();
        let mut written = 0;
        let mut done = HashSet::new();
        for (hash, t, range) in &chunked.chunks {
            if known.contains(hash) || !done.insert(hash.clone()) {
                continue;
            }
            let name = incremental::blob_name(hash);
            let bytes = &t.bytes()[range.clone()];
            self.io(
                &name,
                self.storage.write(&name, &mut |w| w.write_all(bytes)),
            )?;
            self.sync(&name)?;
            written += bytes.len() as u64;
        }
        if written > 0 {
            self.sync(incremental::BLOBS)?;
        }
        Ok(written)
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

    /// The commit protocol (module docs).
    /// `remember`: the checkpoint's tensors are the caller's own (a
    /// synchronous save), whose chunk hashes may be kept by address.
    fn commit(
        &self,
        step: u64,
        checkpoint: &TrainingCheckpoint,
        metrics: IndexMap<String, f64>,
        remember: bool,
    ) -> Result<SaveReport> {
        let start = Instant::now();
        self.options.retention.check(step, &metrics)?;
        if self.manifest().steps.iter().any(|s| s.step == step) {
            return Err(Error::StepExists {
                dir: self.storage.root().to_owned(),
                step,
            });
        }
        let value = checkpoint.to_value();
        let chunked = match self.options.incremental {
            true => {
                let mut cache = self.hash_cache.lock().unwrap_or_else(|p| p.into_inner());
                let (chunked, next) = incremental::chunk(&value, &cache)?;
                // Snapshots of background saves reuse their buffer: only a
                // caller's own tensors may be remembered by address.
                *cache = if remember { next } else { Default::default() };
                Some(chunked)
            }
            false => None,
        };
        let file = match &chunked {
            Some(_) => incremental::INDEX_FILE.to_owned(),
            None => format!("checkpoint.{}", self.options.format.extension()),
        };
        // Object storage cannot rename: a step's objects go in place, and
        // the manifest written last is still the commit.
        let renames = self.storage.renames();
        let dir = step_dir(step);
        let tmp = if renames {
            crate::storage::temp_name(&dir)
        } else {
            dir.clone()
        };
        let written = (|| {
            let blob_bytes = match &chunked {
                Some(c) => self.write_blobs(c)?,
                None => 0,
            };
            self.io(&tmp, self.storage.create_dir(&tmp))?;
            let name = format!("{tmp}/{file}");
            let plan = match &chunked {
                Some(_) => None,
                None => Some(crate::save::plan(
                    self.options.format,
                    &value,
                    &self.path(&format!("{dir}/{file}")),
                    &self.options.save,
                )?),
            };
            let mut hasher = Some(StreamHasher::new());
            self.io(
                &name,
                self.storage.write(&name, &mut |out| {
                    let mut hashing = HashingWriter {
                        out,
                        hasher: StreamHasher::new(),
                    };
                    match (&plan, &chunked) {
                        (Some(plan), _) => {
                            crate::save::write_plan(&**plan, &mut hashing, &self.options.save)?
                        }
                        (None, Some(c)) => std::io::Write::write_all(&mut hashing, &c.index)?,
                        (None, None) => unreachable!("a plan or an index"),
                    }
                    hasher = Some(hashing.hasher);
                    Ok(())
                }),
            )?;
            let (file_hash, file_bytes) = hasher.take().expect("set by the write").finish();
            let (bytes, written) = match &chunked {
                Some(c) => (c.logical, Some(blob_bytes + file_bytes)),
                None => (file_bytes, None),
            };
            self.sync(&name)?;
            let info = StepInfo {
                step,
                epoch: checkpoint.epoch,
                metrics,
                time: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                bytes,
                written,
                file,
                meta_hash: String::new(),
            };
            let meta = Meta {
                info,
                file_hash,
                tensors: checkpoint.model.len(),
            }
            .to_bytes();
            let meta_name = format!("{tmp}/meta.json");
            self.write_small(&meta_name, &meta)?;
            self.sync(&meta_name)?;
            if renames {
                self.sync(&tmp)?;
                self.io(&tmp, self.storage.rename(&tmp, &dir))?;
                self.sync("")?;
            }
            Meta::parse(&meta).map_err(|reason| Error::BadStore {
                path: self.path(&meta_name),
                reason: reason.to_string(),
            })
        })();
        let meta = match written {
            Ok(meta) => meta,
            Err(e) => {
                let _ = self.storage.remove(&tmp);
                return Err(e);
            }
        };

        // The commit: a new manifest without the steps retention drops.
        let mut next = self.manifest().clone();
        next.retention = Some(self.options.retention.clone());
        next.steps.push(meta.info.clone());
        let reasons = self.options.retention.reasons(&next.steps);
        let (kept, dropped): (Vec<_>, Vec<_>) = next
            .steps
            .into_iter()
            .zip(reasons)
            .partition(|(_, r)| !r.is_empty());
        next.steps = kept.into_iter().map(|(s, _)| s).collect();
        let mut not_durable = None;
        match self.write_manifest(&next) {
            Ok(()) => {}
            Err(ManifestWrite::NotCommitted(e)) => {
                let _ = self.storage.remove(&dir);
                return Err(e);
            }
            Err(ManifestWrite::NotDurable(e)) => not_durable = Some(e),
        }
        *self.manifest() = next;
        let seconds = start.elapsed().as_secs_f64();
        if let (Some(c), Some(map)) = (&chunked, &mut *self.chunks()) {
            map.insert(step, c.hashes());
            for (s, _) in &dropped {
                map.remove(&s.step);
            }
        }

        // After the commit: the metric history (best effort: it feeds
        // plots, not loads; a torn last line is skipped when read), then
        // deletion, whose leftovers are removed on the next open.
        let _ = self
            .storage
            .append(HISTORY, &manifest::history_line(&meta.info));
        let deleted: Vec<u64> = dropped.iter().map(|(s, _)| s.step).collect();
        for (s, _) in &dropped {
            let _ = self.storage.remove(&s.dir());
        }
        if !dropped.is_empty() {
            // Best effort, like the step deletions: leftovers go on open.
            if let Ok(present) = self.storage.list_in(incremental::BLOBS) {
                let _ = self.collect_blobs(&present);
            }
        }
        if let Some(e) = not_durable {
            return Err(Error::CommitNotDurable {
                step,
                source: Box::new(e),
            });
        }
        Ok(SaveReport {
            step,
            bytes: meta.info.bytes,
            written: meta.info.written.unwrap_or(meta.info.bytes),
            deleted,
            seconds,
        })
    }

    /// Replaces the manifest atomically. An error says whether the new
    /// one is already in place (the commit happened).
    fn write_manifest(&self, manifest: &Manifest) -> std::result::Result<(), ManifestWrite> {
        let bytes = manifest.to_bytes();
        let durable = self.options.durable;
        let write = &mut |w: &mut dyn std::io::Write| w.write_all(&bytes);
        crate::storage::replace(&*self.storage, MANIFEST, durable, write).map_err(|e| match e {
            ReplaceError::NotReplaced(e) => ManifestWrite::NotCommitted(self.io_error(MANIFEST, e)),
            ReplaceError::NotDurable(e) => ManifestWrite::NotDurable(self.io_error("", e)),
        })
    }

    fn load(&self, info: &StepInfo) -> Result<TrainingCheckpoint> {
        let dir = info.dir();
        let meta_name = format!("{dir}/meta.json");
        let meta_bytes = self.io(&meta_name, self.storage.read(&meta_name))?;
        let found = content_hash(&meta_bytes);
        if found != info.meta_hash {
            return Err(Error::HashMismatch {
                path: self.path(&meta_name),
                expected: info.meta_hash.clone(),
                found,
            });
        }
        let meta = Meta::parse(&meta_bytes).map_err(|reason| Error::BadStore {
            path: self.path(&meta_name),
            reason: reason.to_string(),
        })?;
        let name = format!("{dir}/{}", meta.info.file);
        let path = self.path(&name);
        let (buffer, hash) = match self.storage.local_path(&name) {
            Some(local) if self.options.mmap => (crate::storage::open(&local, true)?, None),
            // Owned: hash each piece right after reading it, while it is
            // still in the cache, instead of a second pass over memory.
            Some(local) => {
                let (bytes, hash) =
                    read_hashed(&local, self.options.verify).map_err(|e| Error::io(&local, e))?;
                (Arc::new(Buffer::Heap(bytes)), hash)
            }
            None => (
                Arc::new(Buffer::Heap(self.io(&name, self.storage.read(&name))?)),
                None,
            ),
        };
        if self.options.verify {
            let report = self
                .options
                .load_progress
                .as_ref()
                .map(|p| &*p.0 as &(dyn Fn(u64, u64) + Sync));
            let found = hash.unwrap_or_else(|| content_hash_reporting(buffer.as_slice(), report));
            if found != meta.file_hash {
                return Err(Error::HashMismatch {
                    path,
                    expected: meta.file_hash,
                    found,
                });
            }
        }
        let value = if meta.info.file == incremental::INDEX_FILE {
            let index = incremental::parse(buffer.as_slice(), &path)?;
            let read = |hash: &str| {
                let name = incremental::blob_name(hash);
                match self.storage.local_path(&name) {
                    Some(local) => {
                        let mut bytes = Vec::new();
                        crate::storage::open_file(&local)
                            .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut bytes))
                            .map_err(|e| Error::io(&local, e))?;
                        Ok(bytes)
                    }
                    None => self.io(&name, self.storage.read(&name)),
                }
            };
            incremental::assemble(
                &index,
                read,
                self.options.verify,
                self.storage.root(),
                &path,
            )?
        } else {
            let format = Format::from_path(&path)?;
            crate::load::read_buffer(format, buffer, &path, &crate::LoadOptions::default())?.value
        };
        TrainingCheckpoint::from_value(&value).map_err(|e| match e {
            Error::BadCheckpoint { key, reason } => Error::BadCheckpoint {
                key: format!("{}: {key}", path.display()),
                reason,
            },
            other => other,
        })
    }
}

/// Reads a whole file, hashing it on the way when `hash` is set.
fn read_hashed(path: &Path, hash: bool) -> std::io::Result<(Vec<u8>, Option<String>)> {
    use std::io::Read;
    let mut file = crate::storage::open_file(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(0);
    let mut bytes = vec![0u8; len];
    let mut hasher = hash.then(StreamHasher::new);
    for piece in bytes.chunks_mut(1 << 20) {
        file.read_exact(piece)?;
        if let Some(h) = &mut hasher {
            h.update(piece);
        }
    }
    // A file that grew after we sized the buffer is not what was committed.
    if file.read(&mut [0u8; 1])? != 0 {
        return Err(std::io::Error::other("the file grew while being read"));
    }
    Ok((bytes, hasher.map(|h| h.finish().0)))
}

impl CheckpointManager {
    /// Opens (creating if needed) the run directory `dir` on the local
    /// filesystem.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<CheckpointManager> {
        CheckpointManager::open_with(
            crate::storage::Location::parse(dir.as_ref()).storage()?,
            options,
        )
    }

    /// Opens a run on any [`Storage`]: takes the writer lock (refusing a
    /// directory another live process writes to), reads the manifest
    /// (rebuilding it from the steps' `meta.json` if it is damaged), and
    /// removes leftovers of interrupted saves.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        options: StoreOptions,
    ) -> Result<CheckpointManager> {
        if !matches!(
            options.format,
            Format::Safetensors | Format::PyTorch | Format::Compressed
        ) {
            return Err(Error::UnsupportedStoreFormat {
                dir: storage.root().to_owned(),
                format: options.format,
            });
        }
        let root = storage.root().to_owned();
        storage.create_root().map_err(|e| Error::io(&root, e))?;
        // A child process this one forks shares the lock's file until it
        // execs, so a lock just released can look held for a moment: try
        // for a little while before calling the directory busy.
        let deadline = Instant::now() + std::time::Duration::from_millis(250);
        let lock = loop {
            match storage
                .lock()
                .map_err(|e| Error::io(root.join(".lock"), e))?
            {
                Some(lock) => break lock,
                None if Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                None => return Err(Error::StoreLocked { dir: root.clone() }),
            }
        };
        let shared = Arc::new(Shared {
            storage,
            options,
            manifest: Mutex::new(Manifest::default()),
            chunks: Mutex::new(Some(BTreeMap::new())),
            hash_cache: Mutex::default(),
        });
        let mut opened = OpenReport::default();
        let manifest = match shared.storage.read(MANIFEST) {
            Ok(bytes) => match Manifest::parse(&bytes) {
                Ok(m) => m,
                Err(newer @ ManifestError::Newer { .. }) => {
                    return Err(Error::BadStore {
                        path: shared.path(MANIFEST),
                        reason: newer.to_string(),
                    })
                }
                Err(ManifestError::Damaged(reason)) => {
                    let rebuilt = rebuild(&shared)?;
                    opened.rebuilt = Some(reason);
                    shared
                        .write_manifest(&rebuilt)
                        .map_err(ManifestWrite::into_error)?;
                    rebuilt
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
            Err(e) => return Err(Error::io(shared.path(MANIFEST), e)),
        };
        let committed: Vec<String> = manifest.steps.iter().map(StepInfo::dir).collect();
        for name in shared.io("", shared.storage.list())? {
            let leftover = name.starts_with(TMP_PREFIX)
                || name == MANIFEST_TMP
                || (name.starts_with("step-") && !committed.contains(&name));
            if leftover {
                shared.io(&name, shared.storage.remove(&name))?;
                opened.removed.push(name);
            }
        }
        // The chunks committed incremental steps name; blobs no step names
        // are a save's or a deletion's leftovers. An unreadable index
        // (damaged, or the network) turns blob deletion off for this run.
        let mut chunks = BTreeMap::new();
        let mut known = true;
        for s in manifest
            .steps
            .iter()
            .filter(|s| s.file == incremental::INDEX_FILE)
        {
            let name = format!("{}/{}", s.dir(), s.file);
            match shared
                .storage
                .read(&name)
                .map(|b| incremental::parse(&b, &shared.path(&name)))
            {
                Ok(Ok(index)) => {
                    chunks.insert(s.step, index.hashes().map(str::to_owned).collect());
                }
                _ => known = false,
            }
        }
        *shared.chunks() = known.then_some(chunks);
        if shared.options.incremental {
            match shared.storage.create_dir(incremental::BLOBS) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::io(shared.path(incremental::BLOBS), e))
                }
                _ => {}
            }
        }
        let present = shared.io(
            incremental::BLOBS,
            shared.storage.list_in(incremental::BLOBS),
        )?;
        let referenced: HashSet<String> = shared
            .chunks()
            .iter()
            .flat_map(|m| m.values().flatten().cloned())
            .collect();
        if known {
            for hash in present.iter().filter(|h| !referenced.contains(*h)) {
                let name = incremental::blob_name(hash);
                shared.io(&name, shared.storage.remove(&name))?;
                opened.removed.push(name);
            }
        }
        *shared.manifest() = manifest;
        Ok(CheckpointManager {
            shared,
            pending: None,
            snapshots: SnapshotBuffer::default(),
            opened,
            _lock: lock,
        })
    }

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
        self.wait()?;
        self.shared.commit(step, checkpoint, to_map(metrics), true)
    }

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
        let snapshot = self.snapshots.snapshot(checkpoint)?;
        self.spawn(step, snapshot, metrics)
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
        self.spawn(step, checkpoint, metrics)
    }

    fn in_flight(&self) -> bool {
        self.pending.as_ref().is_some_and(|(_, h)| !h.is_finished())
    }

    fn spawn(
        &mut self,
        step: u64,
        checkpoint: TrainingCheckpoint,
        metrics: &[(&str, f64)],
    ) -> Result<AsyncSave> {
        let shared = Arc::clone(&self.shared);
        let metrics = to_map(metrics);
        let handle = std::thread::Builder::new()
            .name(format!("ckpt-save-{step}"))
            .spawn(move || shared.commit(step, &checkpoint, metrics, false))
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
        let info = self
            .steps()
            .into_iter()
            .find(|s| s.step == step)
            .ok_or_else(|| Error::NoSuchStep {
                dir: self.dir().to_owned(),
                step,
            })?;
        self.shared.load(&info)
    }

    /// Loads the newest committed step that loads; newer ones that fail
    /// (damaged, missing files) are listed in [`Restored::skipped`], never
    /// passed over silently. `Ok(None)` for a run with no steps.
    pub fn restore_latest(&self) -> Result<Option<Restored>> {
        let mut skipped = Vec::new();
        for info in self.steps().iter().rev() {
            match self.shared.load(info) {
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
        let present = self.shared.io(
            incremental::BLOBS,
            self.shared.storage.list_in(incremental::BLOBS),
        )?;
        self.shared.collect_blobs(&present)?;
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
            crate::storage::Location::parse(dir.as_ref()).storage()?,
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
        let info = self
            .steps()
            .into_iter()
            .find(|s| s.step == step)
            .ok_or_else(|| Error::NoSuchStep {
                dir: self.dir().to_owned(),
                step,
            })?;
        self.shared.load(&info)
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
            let problem = self.shared.load(info).err().map(|e| e.to_string());
            check.steps.push((info.step, problem));
            done += info.bytes;
            progress(done, total);
        }
        let committed: Vec<String> = steps.iter().map(StepInfo::dir).collect();
        for name in self.shared.io("", self.shared.storage.list())? {
            if name.starts_with(TMP_PREFIX)
                || name == MANIFEST_TMP
                || (name.starts_with("step-") && !committed.contains(&name))
            {
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

/// A manifest rebuilt from the steps' own `meta.json` files (each checked
/// against its checksum), for a damaged `manifest.json`.
fn rebuild(shared: &Shared) -> Result<Manifest> {
    let mut steps = Vec::new();
    for name in shared.io("", shared.storage.list())? {
        if !name.starts_with("step-") {
            continue;
        }
        let meta_name = format!("{name}/meta.json");
        if let Ok(bytes) = shared.storage.read(&meta_name) {
            if let Ok(meta) = Meta::parse(&bytes) {
                if meta.info.dir() == name {
                    steps.push(meta.info);
                }
            }
        }
    }
    steps.sort_by_key(|s| s.step);
    Ok(Manifest {
        steps,
        retention: Some(shared.options.retention.clone()),
    })
}
