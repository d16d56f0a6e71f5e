//! Opening a run for writing: the writer lock, the manifest (rebuilt from
//! the steps' own `meta.json` when damaged), and the leftovers of
//! interrupted saves and deletions, removed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::manifest::{Manifest, ManifestError, Meta};
use super::snapshot::SnapshotBuffer;
use super::{
    is_leftover, CheckpointManager, ManifestWrite, OpenReport, Shared, StoreOptions, MANIFEST,
};
use crate::format::Format;
use crate::layout::incremental;
use crate::storage::{Location, Storage};
use crate::{Error, Result};

/// The writer lock: dropping it releases it.
type Lock = Box<dyn std::any::Any + Send + Sync>;

impl CheckpointManager {
    /// Opens (creating if needed) the run directory `dir` on the local
    /// filesystem (or, with the `s3` feature, `s3://bucket/prefix`).
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<CheckpointManager> {
        CheckpointManager::open_with(Location::parse(dir.as_ref()).storage()?, options)
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
        let lock = take_lock(&*storage)?;
        let shared = Arc::new(Shared {
            storage,
            options,
            manifest: Mutex::new(Manifest::default()),
            chunks: Mutex::new(Some(BTreeMap::new())),
            hash_cache: Mutex::default(),
        });
        let mut opened = OpenReport::default();
        let manifest = shared.read_or_rebuild(&mut opened)?;
        opened.removed = shared.remove_leftovers(&manifest)?;
        shared.read_chunk_lists(&manifest);
        if shared.options.incremental {
            match shared.storage.create_dir(incremental::BLOBS) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::io(shared.path(incremental::BLOBS), e))
                }
                _ => {}
            }
        }
        opened.removed.extend(shared.sweep_blobs()?);
        *shared.manifest() = manifest;
        Ok(CheckpointManager {
            shared,
            pending: None,
            snapshots: SnapshotBuffer::default(),
            opened,
            _lock: lock,
        })
    }
}

/// Takes the writer lock. A child process this one forks shares the
/// lock's file until it execs, so a lock just released can look held for
/// a moment: try for a little while before calling the directory busy.
fn take_lock(storage: &dyn Storage) -> Result<Lock> {
    let root = storage.root();
    let deadline = Instant::now() + Duration::from_millis(250);
    loop {
        match storage
            .lock()
            .map_err(|e| Error::io(root.join(".lock"), e))?
        {
            Some(lock) => return Ok(lock),
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            None => {
                return Err(Error::StoreLocked {
                    dir: root.to_owned(),
                })
            }
        }
    }
}

impl Shared {
    /// The committed manifest: none yet for a new run, refused when a newer
    /// ckpt wrote it, rebuilt (and written back) when damaged.
    fn read_or_rebuild(&self, opened: &mut OpenReport) -> Result<Manifest> {
        let bytes = match self.storage.read(MANIFEST) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
            Err(e) => return Err(Error::io(self.path(MANIFEST), e)),
        };
        match Manifest::parse(&bytes) {
            Ok(m) => Ok(m),
            Err(newer @ ManifestError::Newer { .. }) => Err(Error::BadStore {
                path: self.path(MANIFEST),
                reason: newer.to_string(),
            }),
            Err(ManifestError::Damaged(reason)) => {
                let rebuilt = self.rebuild()?;
                opened.rebuilt = Some(reason);
                self.write_manifest(&rebuilt)
                    .map_err(ManifestWrite::into_error)?;
                Ok(rebuilt)
            }
        }
    }

    /// A manifest rebuilt from the steps' own `meta.json` files (each
    /// checked against its checksum), for a damaged `manifest.json`.
    fn rebuild(&self) -> Result<Manifest> {
        let mut steps = Vec::new();
        for name in self.io("", self.storage.list())? {
            if !name.starts_with("step-") {
                continue;
            }
            let meta_name = format!("{name}/meta.json");
            if let Ok(bytes) = self.storage.read(&meta_name) {
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
            retention: Some(self.options.retention.clone()),
        })
    }

    /// Removes what interrupted saves and deletions left, and names it.
    fn remove_leftovers(&self, manifest: &Manifest) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for name in self.io("", self.storage.list())? {
            if is_leftover(&name, manifest) {
                self.io(&name, self.storage.remove(&name))?;
                removed.push(name);
            }
        }
        Ok(removed)
    }
}
