//! The chunks of incremental runs in `blobs/`: which ones the committed
//! steps name, writing a save's new ones, and sweeping the rest.

use std::collections::{BTreeMap, HashSet};

use super::manifest::Manifest;
use super::Shared;
use crate::layout::incremental::{self, Chunked};
use crate::Result;

impl Shared {
    /// Every chunk the committed steps name; `None` when an index could not
    /// be read (then no blob may be deleted).
    fn referenced(&self) -> Option<HashSet<String>> {
        let chunks = self.chunks();
        Some(chunks.as_ref()?.values().flatten().cloned().collect())
    }

    /// Reads the chunk lists of `manifest`'s incremental steps (at open).
    /// An unreadable index (damaged, or the network) turns blob deletion
    /// off for this run.
    pub(super) fn read_chunk_lists(&self, manifest: &Manifest) {
        let mut chunks = BTreeMap::new();
        let mut known = true;
        for s in manifest
            .steps
            .iter()
            .filter(|s| s.file == incremental::INDEX_FILE)
        {
            let name = format!("{}/{}", s.dir(), s.file);
            match self
                .storage
                .read(&name)
                .map(|b| incremental::parse(&b, &self.path(&name)))
            {
                Ok(Ok(index)) => {
                    chunks.insert(s.step, index.hashes().map(str::to_owned).collect());
                }
                _ => known = false,
            }
        }
        *self.chunks() = known.then_some(chunks);
    }

    /// Deletes the blobs no committed step names (at open, after a commit
    /// or a `gc`) and returns their names; nothing when the references are
    /// not all known.
    pub(super) fn sweep_blobs(&self) -> Result<Vec<String>> {
        let present = self.io(incremental::BLOBS, self.storage.list_in(incremental::BLOBS))?;
        let Some(referenced) = self.referenced() else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        for hash in present.iter().filter(|h| !referenced.contains(*h)) {
            let name = incremental::blob_name(hash);
            self.io(&name, self.storage.remove(&name))?;
            removed.push(name);
        }
        Ok(removed)
    }

    /// Writes the chunks of `chunked` that no committed step holds;
    /// returns the bytes written.
    pub(super) fn write_blobs(&self, chunked: &Chunked) -> Result<u64> {
        let known = self.referenced().unwrap_or_default();
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
}
