//! The checkpoint store's test helpers: checkpoints that say which step
//! they are, opening runs in either mode, and storage that fails on cue.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ckpt::storage::{LocalStorage, Storage};
use ckpt::store::{CheckpointManager, StoreOptions};
use ckpt::{StateDict, TensorData, TrainingCheckpoint};

/// A checkpoint whose every value says which step it is.
pub fn checkpoint(step: u64, floats: usize) -> TrainingCheckpoint {
    let mut model = StateDict::new();
    model.insert(
        "w".into(),
        TensorData::from_f32(&[floats], &vec![step as f32; floats]).unwrap(),
    );
    model.insert(
        "b".into(),
        TensorData::from_f32(&[3], &[step as f32, 1.0, 2.0]).unwrap(),
    );
    let mut c = TrainingCheckpoint::new(model);
    c.step = step as i64;
    c.epoch = (step / 10) as i64;
    c.loss = Some(1.0 / (step as f64 + 1.0));
    c
}

/// Checks that `c` is exactly what [`checkpoint`] made for `step`.
pub fn assert_is_step(c: &TrainingCheckpoint, step: u64) {
    assert_eq!(c.step, step as i64);
    let w: Vec<f64> = c.model["w"].values_f64().collect();
    assert!(
        w.iter().all(|&v| v == step as f64),
        "step {step}: tensor holds another step's values"
    );
    assert_eq!(c.model["b"].values_f64().next(), Some(step as f64));
}

/// The options for a run in `dir`: incremental when the directory's name
/// says so (child processes inherit the mode with the path).
pub fn options_for(dir: &Path) -> StoreOptions {
    StoreOptions::default().incremental(dir.to_string_lossy().contains("incremental"))
}

/// The run in `dir`, opened with [`options_for`].
pub fn open(dir: &Path) -> CheckpointManager {
    CheckpointManager::open(dir, options_for(dir)).unwrap_or_else(|e| panic!("{e}"))
}

/// A temporary run directory in each mode.
pub fn run_dirs() -> [tempfile::TempDir; 2] {
    ["plain", "incremental"].map(|mode| tempfile::Builder::new().prefix(mode).tempdir().unwrap())
}

/// Which storage operation fails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// The n-th `write` call returns an error.
    Write(u64),
    /// The n-th `sync` fails.
    Sync(u64),
    /// The n-th `rename` fails.
    Rename(u64),
    /// Writes fail with "no space" after this many bytes in all.
    DiskFull(u64),
    /// The process aborts at the n-th operation of any kind (a crash).
    AbortAt(u64),
}

/// Local storage that fails (or aborts the process) at one operation.
struct Faulty {
    inner: LocalStorage,
    fault: Fault,
    writes: AtomicU64,
    syncs: AtomicU64,
    renames: AtomicU64,
    ops: AtomicU64,
    bytes: Arc<AtomicU64>,
}

impl Faulty {
    fn new(dir: &Path, fault: Fault) -> Faulty {
        Faulty {
            inner: LocalStorage::new(dir),
            fault,
            writes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            renames: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    fn op(&self) {
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        if self.fault == Fault::AbortAt(n) {
            std::process::abort();
        }
    }
}

/// The error an injected fault returns.
fn injected() -> io::Error {
    io::Error::other("injected failure")
}

/// A writer that fails with "no space" past `limit` bytes in all.
struct Limited<'a> {
    out: &'a mut dyn Write,
    bytes: Arc<AtomicU64>,
    limit: u64,
}

impl Write for Limited<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.fetch_add(buf.len() as u64, Ordering::SeqCst) + buf.len() as u64 > self.limit
        {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Storage for Faulty {
    fn root(&self) -> &Path {
        self.inner.root()
    }
    fn create_root(&self) -> io::Result<()> {
        self.inner.create_root()
    }
    fn lock(&self) -> io::Result<Option<Box<dyn std::any::Any + Send + Sync>>> {
        self.inner.lock()
    }
    fn writer_active(&self) -> io::Result<bool> {
        self.inner.writer_active()
    }
    fn create_dir(&self, name: &str) -> io::Result<()> {
        self.op();
        self.inner.create_dir(name)
    }
    fn write(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        self.op();
        if self.fault == Fault::Write(self.writes.fetch_add(1, Ordering::SeqCst)) {
            return Err(injected());
        }
        match self.fault {
            Fault::DiskFull(limit) => self.inner.write(name, &mut |out| {
                write(&mut Limited {
                    out,
                    bytes: Arc::clone(&self.bytes),
                    limit,
                })
            }),
            _ => self.inner.write(name, write),
        }
    }
    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.op();
        self.inner.append(name, bytes)
    }
    fn sync(&self, name: &str) -> io::Result<()> {
        self.op();
        if self.fault == Fault::Sync(self.syncs.fetch_add(1, Ordering::SeqCst)) {
            return Err(injected());
        }
        self.inner.sync(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.op();
        if self.fault == Fault::Rename(self.renames.fetch_add(1, Ordering::SeqCst)) {
            return Err(injected());
        }
        self.inner.rename(from, to)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.op();
        self.inner.remove(name)
    }
    fn list_in(&self, dir: &str) -> io::Result<Vec<String>> {
        self.inner.list_in(dir)
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.inner.read(name)
    }
    fn local_path(&self, name: &str) -> Option<PathBuf> {
        self.inner.local_path(name)
    }
}

/// The run in `dir`, opened over storage that fails at `fault`.
pub fn open_faulty(dir: &Path, fault: Fault) -> CheckpointManager {
    CheckpointManager::open_with(Arc::new(Faulty::new(dir, fault)), options_for(dir)).unwrap()
}
