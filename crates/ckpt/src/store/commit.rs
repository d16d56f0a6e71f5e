//! The commit protocol (see the module docs), in three named phases:
//! **stage** writes a step's files where no reader looks (a temporary
//! folder renamed to `step-N/`, or the step's own prefix on object
//! storage), **publish** replaces the manifest (the commit), and
//! **after-commit** records the history and applies retention. A
//! [`Staged`] guard removes the step's files when dropped before the
//! manifest names them, so a failed save leaves nothing behind.

use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use indexmap::IndexMap;

use super::manifest::{self, step_dir, Manifest, Meta, StepInfo};
use super::{ManifestWrite, SaveReport, Shared, HISTORY, MANIFEST};
use crate::layout::incremental::{self, Chunked};
use crate::storage::hash::{HashingWriter, StreamHasher};
use crate::storage::ReplaceError;
use crate::{Error, Result, Value};

/// A step's files, written but not yet committed: removed when dropped,
/// unless [`Staged::keep`] was called.
struct Staged<'a> {
    shared: &'a Shared,
    /// Where the files are now: the temporary folder, then the step's.
    name: String,
    committed: bool,
}

impl Staged<'_> {
    /// The manifest names the step now: keep its files.
    fn keep(mut self) {
        self.committed = true;
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = self.shared.storage.remove(&self.name);
        }
    }
}

/// The step's checkpoint file: a format's write plan, or an incremental
/// index whose chunks are written as blobs.
enum Body<'a> {
    Plan(Box<dyn crate::format::WritePlan + 'a>),
    Index(&'a Chunked),
}

impl Shared {
    /// Saves `value` (any checkpoint tree; `epoch` is recorded beside it)
    /// as `step` and commits it, then applies retention. `remember`: the
    /// tensors are the caller's own (a synchronous save), whose chunk
    /// hashes may be kept by address.
    pub(super) fn commit(
        &self,
        step: u64,
        value: &Value,
        epoch: i64,
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
        let chunked = self.chunk(value, remember)?;
        let (staged, meta) = self.stage(step, epoch, value, chunked.as_ref(), metrics)?;
        let (dropped, not_durable) = self.publish(staged, &meta, chunked.as_ref())?;
        let seconds = start.elapsed().as_secs_f64();
        let deleted = self.after_commit(&meta.info, &dropped);
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

    /// The checkpoint cut into chunks, for an incremental run.
    fn chunk(&self, value: &Value, remember: bool) -> Result<Option<Chunked>> {
        if !self.options.incremental {
            return Ok(None);
        }
        let mut cache = self.hash_cache.lock().unwrap_or_else(|p| p.into_inner());
        let (chunked, next) = incremental::chunk(value, &cache)?;
        // Snapshots of background saves reuse their buffer: only a
        // caller's own tensors may be remembered by address.
        *cache = if remember { next } else { Default::default() };
        Ok(Some(chunked))
    }

    /// Stage: the blobs, the checkpoint file and `meta.json`, synced, in a
    /// folder readers do not look at until the manifest names it.
    fn stage(
        &self,
        step: u64,
        epoch: i64,
        value: &Value,
        chunked: Option<&Chunked>,
        metrics: IndexMap<String, f64>,
    ) -> Result<(Staged<'_>, Meta)> {
        let file = match chunked {
            Some(_) => incremental::INDEX_FILE.to_owned(),
            None => format!("checkpoint.{}", self.options.format.extension()),
        };
        // Object storage cannot rename: a step's objects go in place, and
        // the manifest written last is still the commit.
        let dir = step_dir(step);
        let renames = self.storage.renames();
        let mut staged = Staged {
            shared: self,
            name: match renames {
                true => crate::storage::temp_name(&dir),
                false => dir.clone(),
            },
            committed: false,
        };
        let blob_bytes = match chunked {
            Some(c) => self.write_blobs(c)?,
            None => 0,
        };
        let tmp = staged.name.clone();
        self.io(&tmp, self.storage.create_dir(&tmp))?;
        let body = match chunked {
            Some(c) => Body::Index(c),
            None => Body::Plan(crate::format::plan(
                self.options.format,
                value,
                &self.path(&format!("{dir}/{file}")),
                &self.options.save,
            )?),
        };
        let (file_hash, file_bytes) = self.write_hashed(&format!("{tmp}/{file}"), &body)?;
        let (bytes, written) = match chunked {
            Some(c) => (c.logical, Some(blob_bytes + file_bytes)),
            None => (file_bytes, None),
        };
        let info = StepInfo {
            step,
            epoch,
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
            tensors: {
                let mut n = 0;
                value.for_each_tensor(&mut |_| n += 1);
                n
            },
        }
        .to_bytes();
        let meta_name = format!("{tmp}/meta.json");
        self.write_small(&meta_name, &meta)?;
        self.sync(&meta_name)?;
        if renames {
            self.sync(&tmp)?;
            self.io(&tmp, self.storage.rename(&tmp, &dir))?;
            staged.name = dir;
            self.sync("")?;
        }
        let meta = Meta::parse(&meta).map_err(|reason| Error::BadStore {
            path: self.path(&meta_name),
            reason: reason.to_string(),
        })?;
        Ok((staged, meta))
    }

    /// Writes the checkpoint file `name`, synced; returns its content hash
    /// and length, computed while writing.
    fn write_hashed(&self, name: &str, body: &Body<'_>) -> Result<(String, u64)> {
        let mut hasher = None;
        self.io(
            name,
            self.storage.write(name, &mut |out| {
                let mut hashing = HashingWriter {
                    out,
                    hasher: StreamHasher::new(),
                };
                match body {
                    Body::Plan(plan) => {
                        crate::format::write_plan(&**plan, &mut hashing, &self.options.save)?
                    }
                    Body::Index(c) => hashing.write_all(&c.index)?,
                }
                hasher = Some(hashing.hasher);
                Ok(())
            }),
        )?;
        self.sync(name)?;
        let hasher = hasher.ok_or_else(|| {
            self.io_error(name, std::io::Error::other("the storage wrote nothing"))
        })?;
        Ok(hasher.finish())
    }

    /// Publish: a new manifest with the step and without the steps
    /// retention drops. Returns the dropped steps, and the error of a
    /// commit that happened but may not be durable.
    fn publish(
        &self,
        staged: Staged<'_>,
        meta: &Meta,
        chunked: Option<&Chunked>,
    ) -> Result<(Vec<StepInfo>, Option<Error>)> {
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
        let dropped: Vec<StepInfo> = dropped.into_iter().map(|(s, _)| s).collect();
        let not_durable = match self.write_manifest(&next) {
            Ok(()) => None,
            // The guard removes the step's files as it drops.
            Err(ManifestWrite::NotCommitted(e)) => return Err(e),
            Err(ManifestWrite::NotDurable(e)) => Some(e),
        };
        staged.keep();
        *self.manifest() = next;
        if let (Some(c), Some(map)) = (chunked, &mut *self.chunks()) {
            map.insert(meta.info.step, c.hashes());
            for s in &dropped {
                map.remove(&s.step);
            }
        }
        Ok((dropped, not_durable))
    }

    /// After the commit: the metric history (best effort: it feeds plots,
    /// not loads; a torn last line is skipped when read), then retention's
    /// deletions, whose leftovers are removed on the next open. Returns
    /// the deleted steps.
    fn after_commit(&self, info: &StepInfo, dropped: &[StepInfo]) -> Vec<u64> {
        let _ = self.storage.append(HISTORY, &manifest::history_line(info));
        for s in dropped {
            let _ = self.storage.remove(&s.dir());
        }
        if !dropped.is_empty() {
            // Best effort, like the step deletions: leftovers go on open.
            let _ = self.sweep_blobs();
        }
        dropped.iter().map(|s| s.step).collect()
    }

    /// Replaces the manifest atomically. An error says whether the new
    /// one is already in place (the commit happened).
    pub(super) fn write_manifest(
        &self,
        manifest: &Manifest,
    ) -> std::result::Result<(), ManifestWrite> {
        let bytes = manifest.to_bytes();
        let durable = self.options.durable;
        let write = &mut |w: &mut dyn Write| w.write_all(&bytes);
        crate::storage::replace(&*self.storage, MANIFEST, durable, write).map_err(|e| match e {
            ReplaceError::NotReplaced(e) => ManifestWrite::NotCommitted(self.io_error(MANIFEST, e)),
            ReplaceError::NotDurable(e) => ManifestWrite::NotDurable(self.io_error("", e)),
        })
    }
}
