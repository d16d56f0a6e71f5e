//! The file edge: mapping files for reading and the one atomic-write helper.
//! Format code never opens files; it works on bytes.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::tensor::Buffer;
use crate::{Error, Result};

/// Writes smaller than this are gathered; larger ones go straight to the
/// file, so big tensors are written with one call each and no copy.
const WRITE_BUFFER: usize = 256 << 10;

/// Maps `path` read-only, or reads it onto the heap when `mmap` is false.
pub(crate) fn open(path: &Path, mmap: bool) -> Result<Arc<Buffer>> {
    if is_url(path) {
        return Ok(Arc::new(Buffer::Heap(read_url(path)?)));
    }
    let mut file = open_file(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if !mmap || len == 0 {
        // A zero-length file cannot be mapped; there is nothing to share.
        // The capacity is the file's real length, not anything it claims.
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
        return Ok(Arc::new(Buffer::Heap(bytes)));
    }
    // SAFETY: the map is read-only and we never hand out mutable access.
    // The one hazard of any file map is another process truncating or
    // rewriting the file while it is mapped; ckpt's own writers never do
    // that (they write a new file and rename it over the old one, which
    // leaves existing maps of the old file intact).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(Arc::new(Buffer::Map(map)))
}

/// Opens a regular file for reading; a FIFO, device, socket or folder
/// (directly or through a symlink) is an error naming what it is, and
/// opening never blocks (a FIFO with no writer would wait forever).
pub(crate) fn open_file(path: &Path) -> std::io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    let what = if kind.is_dir() {
        "a folder"
    } else {
        special_kind(&kind)
    };
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("not a regular file but {what}; ckpt reads only regular files"),
    ))
}

#[cfg(unix)]
fn special_kind(kind: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &fs::FileType) -> &'static str {
    "a special file"
}

/// Replaces `path` atomically with what `write` produces: the bytes go to a
/// temporary file beside it, which is flushed (and, when `durable`, synced
/// to disk), closed, and renamed over `path`; when `durable`, the parent
/// directory is synced too so the rename itself survives a power cut. On
/// any error the temporary file is removed and `path` is untouched, so a
/// reader sees either the old file or the new one, never a part.
pub(crate) fn write_atomic(
    path: &Path,
    durable: bool,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    if is_url(path) {
        return write_url(path, write);
    }
    let tmp = temp_path(path);
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        write(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        if durable {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    if durable {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| Error::io(parent, e))?;
    }
    Ok(())
}

/// True for `s3://` URLs, which name objects rather than files.
pub(crate) fn is_url(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.starts_with("s3://"))
}

#[cfg(feature = "s3")]
fn read_url(path: &Path) -> Result<Vec<u8>> {
    crate::store::object::read_url(path).map_err(|e| Error::io(path, e))
}

#[cfg(feature = "s3")]
fn write_url(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let mut write = Some(write);
    crate::store::object::write_url(path, &mut |out| match write.take() {
        Some(f) => f(out),
        None => Ok(()),
    })
    .map_err(|e| Error::io(path, e))
}

/// The error for an `s3://` path in a build without the `s3` feature.
#[cfg(not(feature = "s3"))]
pub(crate) fn no_s3(path: &Path) -> Error {
    Error::io(
        path,
        std::io::Error::other("this ckpt was built without the `s3` feature"),
    )
}

#[cfg(not(feature = "s3"))]
fn read_url(path: &Path) -> Result<Vec<u8>> {
    Err(no_s3(path))
}

#[cfg(not(feature = "s3"))]
fn write_url(path: &Path, _: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    Err(no_s3(path))
}

/// A name beside `path` that no other writer uses: hidden, with the
/// process id and a counter, and marked as ckpt's temporary.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.ckpt-tmp-{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        fs::write(&path, b"old").unwrap();
        let err = write_atomic(&path, true, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"));
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn successful_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        fs::write(&path, b"old").unwrap();
        write_atomic(&path, false, |w| w.write_all(b"new")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let Err(err) = open(Path::new("/nonexistent/x.safetensors"), true) else {
            panic!("opening a missing file succeeded");
        };
        assert!(err.to_string().contains("/nonexistent/x.safetensors"));
    }

    #[cfg(not(feature = "s3"))]
    #[test]
    fn s3_paths_without_the_feature_say_so() {
        let url = Path::new("s3://bucket/run");
        for err in [
            crate::load(url.join("m.safetensors")).unwrap_err(),
            crate::store::RunReader::open(url).err().unwrap(),
        ] {
            let msg = err.to_string();
            assert!(
                msg.contains("s3://bucket/run") && msg.contains("`s3` feature"),
                "{msg}"
            );
        }
    }
}
