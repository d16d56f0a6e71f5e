//! Where bytes live, below every format and layout: a [`Location`] (a
//! local path or an `s3://` URL, parsed once), the [`Storage`] trait that
//! folders and bucket prefixes are written and read through
//! ([`LocalStorage`]; `s3::ObjectStorage` with the `s3` feature), the one
//! atomic replace (`replace`), ranged reads, and the content hashes of
//! streams.
//!
//! Nothing here knows a file format or a run: formats read bytes this
//! module hands them, and the store and the layouts write through it.

use std::any::Any;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Error, Result};

mod file;
pub(crate) mod hash;
mod local;
#[cfg(feature = "s3")]
pub mod s3;

pub(crate) use file::{open, open_file, write_atomic, Open};
pub use local::LocalStorage;

/// Writes smaller than this are gathered; larger ones go straight to the
/// file or upload, so big tensors are written with one call each.
const WRITE_BUFFER: usize = 4 << 20;

/// The prefix of every temporary name ckpt writes: a save in progress,
/// a file about to replace another. Anything so named that no writer holds
/// is a leftover of an interrupted write.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// A place a user names: a path on this machine or an object (or prefix)
/// in an S3-compatible bucket, told apart once, where the text comes in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A file or folder on the local filesystem.
    Local(PathBuf),
    /// `s3://bucket/key`: an object, or a prefix standing for a folder.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key or prefix inside it, without leading or trailing `/`.
        key: String,
    },
}

impl Location {
    /// `s3://bucket/key` is an object URL; anything else a local path.
    pub fn parse(path: impl AsRef<Path>) -> Location {
        let path = path.as_ref();
        match path.to_str().and_then(|p| p.strip_prefix("s3://")) {
            Some(rest) => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                Location::S3 {
                    bucket: bucket.to_owned(),
                    key: key.trim_matches('/').to_owned(),
                }
            }
            None => Location::Local(path.to_owned()),
        }
    }

    /// True for object storage, where there are no folders to list and
    /// nothing to memory-map.
    pub fn is_remote(&self) -> bool {
        !matches!(self, Location::Local(_))
    }

    /// The location as the user would write it, for messages and paths.
    pub fn to_path(&self) -> PathBuf {
        match self {
            Location::Local(path) => path.clone(),
            Location::S3 { bucket, key } if key.is_empty() => format!("s3://{bucket}").into(),
            Location::S3 { bucket, key } => format!("s3://{bucket}/{key}").into(),
        }
    }

    /// A local folder on this machine (true for a folder; false for a
    /// file, a missing path or any object URL).
    pub fn is_local_dir(&self) -> bool {
        matches!(self, Location::Local(path) if path.is_dir())
    }

    /// This location as the root of a [`Storage`]: a local directory, or
    /// (with the `s3` feature) a bucket prefix.
    pub fn storage(&self) -> Result<Arc<dyn Storage>> {
        match self {
            Location::Local(path) => Ok(Arc::new(LocalStorage::new(path))),
            #[cfg(feature = "s3")]
            Location::S3 { .. } => {
                let url = self.to_path();
                let storage = s3::ObjectStorage::from_url(&url).map_err(|e| Error::io(&url, e))?;
                Ok(Arc::new(storage))
            }
            #[cfg(not(feature = "s3"))]
            Location::S3 { .. } => Err(file::no_s3(&self.to_path())),
        }
    }

    /// The storage of the folder or prefix holding this file, and the
    /// file's name in it. A path that ends in a separator or `.` names a
    /// folder, not a file, and is refused; so is a local name that is not
    /// UTF-8 (a run's names are text).
    pub(crate) fn parent_and_name(&self) -> Result<(Arc<dyn Storage>, String)> {
        let path = self.to_path();
        let not_a_file = |why: &str| {
            Error::io(
                &path,
                io::Error::new(io::ErrorKind::InvalidInput, why.to_owned()),
            )
        };
        let (parent, name) = match self {
            Location::Local(p) => {
                let text = p
                    .to_str()
                    .ok_or_else(|| not_a_file("a file name that is not UTF-8"))?;
                let (dir, name) = text.rsplit_once('/').unwrap_or(("", text));
                let dir = match dir {
                    "" if text.starts_with('/') => "/",
                    "" => ".",
                    dir => dir,
                };
                (Location::Local(dir.into()), name)
            }
            Location::S3 { bucket, key } => {
                let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
                let parent = Location::S3 {
                    bucket: bucket.clone(),
                    key: prefix.to_owned(),
                };
                (parent, name)
            }
        };
        if name.is_empty() || name == "." || name == ".." {
            return Err(not_a_file("expected a file name, not a folder"));
        }
        #[cfg(not(feature = "s3"))]
        if self.is_remote() {
            return Err(file::no_s3(&path));
        }
        Ok((parent.storage()?, name.to_owned()))
    }
}

/// The operations the store needs, on names relative to the run's root
/// (`manifest.json`, `step-00000010/meta.json`). Every write goes through
/// [`Storage::write`]; nothing is durable until [`Storage::sync`].
pub trait Storage: Send + Sync + 'static {
    /// The root, for messages (a directory path or a URL).
    fn root(&self) -> &Path;

    /// Creates the root if it is missing.
    fn create_root(&self) -> io::Result<()>;

    /// Takes the run's writer lock, held until the returned guard drops.
    /// `Ok(None)` means another live process holds it.
    fn lock(&self) -> io::Result<Option<Box<dyn Any + Send + Sync>>>;

    /// Whether a writer holds the lock now, asked without writing
    /// anything (readers need no write permission). The default takes
    /// the lock and releases it; the storages here look without taking it.
    fn writer_active(&self) -> io::Result<bool> {
        Ok(self.lock()?.is_none())
    }

    /// Whether [`Storage::rename`] is atomic. When it is not (object
    /// storage), the store writes a step's files in place and commits with
    /// the manifest alone.
    fn renames(&self) -> bool {
        true
    }

    /// Creates a directory.
    fn create_dir(&self, name: &str) -> io::Result<()>;

    /// Creates (or truncates) a file and fills it with what `write`
    /// produces, buffered in large sequential writes.
    fn write(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()>;

    /// Appends bytes to a file, creating it if missing.
    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()>;

    /// Makes a file, or a directory's entries (`""` is the root), durable.
    fn sync(&self, name: &str) -> io::Result<()>;

    /// Renames a file or directory, replacing a file of the new name.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;

    /// Removes a file, or a directory and everything in it; a missing
    /// name is not an error.
    fn remove(&self, name: &str) -> io::Result<()>;

    /// The names in the root.
    fn list(&self) -> io::Result<Vec<String>> {
        self.list_in("")
    }

    /// The names in directory `dir` (`""` is the root); a missing
    /// directory has none.
    fn list_in(&self, dir: &str) -> io::Result<Vec<String>>;

    /// A whole (small) file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;

    /// Bytes `range` of a file (fewer at its end).
    fn read_range(&self, name: &str, range: std::ops::Range<u64>) -> io::Result<Vec<u8>> {
        let all = self.read(name)?;
        let end = (range.end as usize).min(all.len());
        Ok(all
            .get(range.start as usize..end)
            .unwrap_or_default()
            .to_vec())
    }

    /// A local path for `name`, when the file can be memory-mapped.
    fn local_path(&self, name: &str) -> Option<PathBuf>;
}

/// Why a [`replace`] failed: before the new file took the old one's place
/// (the old one is intact), or after (the new one is in place but its
/// directory entry may not survive a power cut).
#[derive(Debug)]
pub(crate) enum ReplaceError {
    /// Nothing changed: the old file (if any) is still there.
    NotReplaced(io::Error),
    /// The new file is in place; making the rename durable failed.
    NotDurable(io::Error),
}

impl ReplaceError {
    /// The underlying error, whichever side of the rename it fell on.
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            ReplaceError::NotReplaced(e) | ReplaceError::NotDurable(e) => e,
        }
    }
}

/// The one atomic replace: `name` becomes what `write` produces, whole or
/// not at all. Where renames are atomic the bytes go to a temporary name
/// beside it, which is synced (when `durable`), renamed over `name`, and
/// the folder synced (when `durable`), so a reader sees the old file or the
/// new one, never a part; on failure the temporary is removed. On object
/// storage one upload replaces the object whole.
pub(crate) fn replace(
    storage: &dyn Storage,
    name: &str,
    durable: bool,
    write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> std::result::Result<(), ReplaceError> {
    if !storage.renames() {
        return storage
            .write(name, write)
            .map_err(ReplaceError::NotReplaced);
    }
    let (dir, file) = name.rsplit_once('/').unwrap_or(("", name));
    let tmp = match dir {
        "" => temp_name(file),
        dir => format!("{dir}/{}", temp_name(file)),
    };
    let staged = storage
        .write(&tmp, write)
        .and_then(|()| if durable { storage.sync(&tmp) } else { Ok(()) })
        .and_then(|()| storage.rename(&tmp, name));
    if let Err(e) = staged {
        let _ = storage.remove(&tmp);
        return Err(ReplaceError::NotReplaced(e));
    }
    if durable {
        storage.sync(dir).map_err(ReplaceError::NotDurable)?;
    }
    Ok(())
}

/// A name no other writer uses, starting with [`TMP_PREFIX`]: the process,
/// the time and a counter, then what it stands in for (`label`).
pub(crate) fn temp_name(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{TMP_PREFIX}{}-{nanos:08x}-{}-{label}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_told_apart_once() {
        let s3 = Location::parse("s3://bucket/runs/a/");
        assert_eq!(
            s3,
            Location::S3 {
                bucket: "bucket".into(),
                key: "runs/a".into()
            }
        );
        assert!(s3.is_remote());
        assert_eq!(s3.to_path(), Path::new("s3://bucket/runs/a"));
        let local = Location::parse("runs/s3:/x");
        assert_eq!(local, Location::Local("runs/s3:/x".into()));
        assert!(!local.is_remote());
    }

    #[test]
    fn a_file_location_splits_into_its_folder_and_name() {
        let names = |text: &str| {
            Location::parse(text)
                .parent_and_name()
                .map(|(storage, name)| (storage.root().to_owned(), name))
        };
        assert_eq!(
            names("m.safetensors").unwrap(),
            (PathBuf::from("."), "m.safetensors".into())
        );
        assert_eq!(
            names("/m.pth").unwrap(),
            (PathBuf::from("/"), "m.pth".into())
        );
        assert_eq!(
            names("a/b/m.npz").unwrap(),
            (PathBuf::from("a/b"), "m.npz".into())
        );
        for folder in ["out.safetensors/", "dir/.", "dir/..", "."] {
            let err = names(folder).err().unwrap().to_string();
            assert!(
                err.contains("not a folder") && err.contains(folder),
                "{err}"
            );
        }
    }

    #[test]
    fn temporary_names_are_unique_and_marked() {
        let (a, b) = (temp_name("manifest.json"), temp_name("manifest.json"));
        assert_ne!(a, b);
        assert!(
            a.starts_with(TMP_PREFIX) && a.ends_with("-manifest.json"),
            "{a}"
        );
    }
}
