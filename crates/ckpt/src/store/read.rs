//! Loading a committed step: its `meta.json` checked against the
//! manifest, the checkpoint file against `meta.json` (hashed while read,
//! or over the map in parallel), then decoded; an incremental step is
//! assembled from its chunks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::manifest::{Meta, StepInfo};
use super::Shared;
use crate::format::Format;
use crate::layout::incremental;
use crate::storage::hash::{content_hash, content_hash_reporting, StreamHasher};
use crate::storage::Open;
use crate::tensor::Buffer;
use crate::{Error, Result, TrainingCheckpoint, Value};

impl Shared {
    /// The committed step `step`, or an error naming the run.
    pub(super) fn step(&self, step: u64) -> Result<StepInfo> {
        let found = self
            .manifest()
            .steps
            .iter()
            .find(|s| s.step == step)
            .cloned();
        found.ok_or_else(|| Error::NoSuchStep {
            dir: self.storage.root().to_owned(),
            step,
        })
    }

    /// Loads a committed step as a [`TrainingCheckpoint`].
    pub(super) fn load(&self, info: &StepInfo) -> Result<TrainingCheckpoint> {
        let (value, path) = self.load_value(info)?;
        TrainingCheckpoint::from_value(&value).map_err(|e| match e {
            Error::BadCheckpoint { key, reason } => Error::BadCheckpoint {
                key: format!("{}: {key}", path.display()),
                reason,
            },
            other => other,
        })
    }

    /// Loads a committed step's tree, checking its hashes when the options
    /// say so; with the checkpoint file's path.
    pub(super) fn load_value(&self, info: &StepInfo) -> Result<(Value, PathBuf)> {
        let meta = self.read_meta(info)?;
        let name = format!("{}/{}", info.dir(), meta.info.file);
        let path = self.path(&name);
        let (buffer, hash) = self.read_file(&name)?;
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
                self.io(&name, self.storage.read(&name))
            };
            let root = self.storage.root();
            incremental::assemble(&index, read, self.options.verify, root, &path)?
        } else {
            let format = Format::from_path(&path)?;
            crate::layout::read_buffer(format, buffer, &path, &Default::default())?.value
        };
        Ok((value, path))
    }

    /// A step's `meta.json`, checked against the hash the manifest holds.
    fn read_meta(&self, info: &StepInfo) -> Result<Meta> {
        let meta_name = format!("{}/meta.json", info.dir());
        let meta_bytes = self.io(&meta_name, self.storage.read(&meta_name))?;
        let found = content_hash(&meta_bytes);
        if found != info.meta_hash {
            return Err(Error::HashMismatch {
                path: self.path(&meta_name),
                expected: info.meta_hash.clone(),
                found,
            });
        }
        Meta::parse(&meta_bytes).map_err(|reason| Error::BadStore {
            path: self.path(&meta_name),
            reason: reason.to_string(),
        })
    }

    /// A step's checkpoint file: mapped, or read whole (and hashed as it
    /// is read, when the options verify).
    fn read_file(&self, name: &str) -> Result<(Arc<Buffer>, Option<String>)> {
        Ok(match self.storage.local_path(name) {
            Some(local) if self.options.mmap => {
                let how = match self.options.writable {
                    true => Open::PrivateMap,
                    false => Open::Map,
                };
                (crate::storage::open(&local, how)?, None)
            }
            // Owned: hash each piece right after reading it, while it is
            // still in the cache, instead of a second pass over memory.
            Some(local) => {
                let (bytes, hash) =
                    read_hashed(&local, self.options.verify).map_err(|e| Error::io(&local, e))?;
                (Arc::new(Buffer::Heap(bytes)), hash)
            }
            None => (
                Arc::new(Buffer::Heap(self.io(name, self.storage.read(name))?)),
                None,
            ),
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
