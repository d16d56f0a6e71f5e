//! [`LocalStorage`]: a directory on the local filesystem as a [`Storage`].

use std::any::Any;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{file::open_file, Storage, WRITE_BUFFER};

/// A run directory on the local filesystem.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// The run directory `root` (created on open if missing).
    pub fn new(root: impl Into<PathBuf>) -> LocalStorage {
        LocalStorage { root: root.into() }
    }

    fn path(&self, name: &str) -> PathBuf {
        if name.is_empty() {
            self.root.clone()
        } else {
            self.root.join(name)
        }
    }

    /// The path of `name` for reading, refused when any part of it below
    /// the root is a symbolic link: ckpt never makes one in a run, and one
    /// could lead a reader (and `verify`'s "ok") outside the run.
    fn inside(&self, name: &str) -> io::Result<PathBuf> {
        let mut path = self.root.clone();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            path.push(part);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                        "{} is a symbolic link: a run never holds one, and ckpt does not follow it",
                        path.display()
                    ),
                    ))
                }
                // A missing part is reported by whoever opens the path.
                _ => {}
            }
        }
        Ok(path)
    }
}

/// How many times a writer tries the lock, 10 ms apart, before it says
/// another process holds it.
const LOCK_TRIES: usize = 10;

impl Storage for LocalStorage {
    fn root(&self) -> &Path {
        &self.root
    }

    fn create_root(&self) -> io::Result<()> {
        fs::create_dir_all(&self.root)
    }

    fn lock(&self) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path(".lock"))?;
        // A reader looking (`writer_active`) holds a shared lock for an
        // instant: a writer waits that out rather than report a writer.
        for _ in 0..LOCK_TRIES {
            match file.try_lock() {
                // The lock lives with the open file; dropping the guard (or
                // the process dying) releases it.
                Ok(()) => return Ok(Some(Box::new(file))),
                Err(std::fs::TryLockError::WouldBlock) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        Ok(None)
    }

    fn writer_active(&self) -> io::Result<bool> {
        // Opened read-only and never created: a reader writes nothing.
        let file = match open_file(&self.path(".lock")) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(false), // released as the file closes
            Err(std::fs::TryLockError::WouldBlock) => Ok(true),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn create_dir(&self, name: &str) -> io::Result<()> {
        fs::create_dir(self.path(name))
    }

    fn write(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, File::create(self.path(name))?);
        write(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?;
        Ok(())
    }

    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        File::options()
            .create(true)
            .append(true)
            .open(self.path(name))?
            .write_all(bytes)
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        // fsync applies to the file, not the descriptor: reopening works.
        File::open(self.path(name))?.sync_all()
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from), self.path(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let path = self.path(name);
        let removed = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
            Ok(_) => fs::remove_file(&path),
            Err(e) => Err(e),
        };
        match removed {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn list_in(&self, dir: &str) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = match fs::read_dir(self.inside(dir)?) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.is_empty() => return Ok(names),
            other => other?,
        };
        for entry in entries {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        open_file(&self.inside(name)?)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn read_range(&self, name: &str, range: std::ops::Range<u64>) -> io::Result<Vec<u8>> {
        use std::io::{Seek, SeekFrom};
        let mut file = open_file(&self.inside(name)?)?;
        file.seek(SeekFrom::Start(range.start))?;
        let mut bytes = Vec::new();
        file.take(range.end.saturating_sub(range.start))
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn local_path(&self, name: &str) -> Option<PathBuf> {
        // Through a symbolic link: none; `read` says why.
        self.inside(name).ok()
    }
}
