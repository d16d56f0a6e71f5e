//! Whole files by path: mapping or reading one for a format to parse, and
//! writing one atomically. Format code never opens files; it works on
//! bytes.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use super::{replace, Location};
use crate::tensor::Buffer;
use crate::{Error, Result};

/// How [`open`] brings a file into memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Open {
    /// Read it onto the heap.
    Read,
    /// Map it read-only.
    Map,
    /// Map it copy-on-write: the memory may be written, the file never is.
    PrivateMap,
}

/// Brings `path` into memory as `how` says; an `s3://` URL is fetched
/// whole.
pub(crate) fn open(path: &Path, how: Open) -> Result<Arc<Buffer>> {
    if let location @ Location::S3 { .. } = Location::parse(path) {
        let (storage, name) = location.parent_and_name()?;
        let bytes = storage.read(&name).map_err(|e| Error::io(path, e))?;
        return Ok(Arc::new(Buffer::Heap(bytes)));
    }
    let mut file = open_file(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if how == Open::Read || len == 0 {
        // A zero-length file cannot be mapped; there is nothing to share.
        // The capacity is the file's real length, not anything it claims.
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
        return Ok(Arc::new(Buffer::Heap(bytes)));
    }
    if how == Open::PrivateMap {
        // SAFETY: as below; writes go to private copies of the pages,
        // never to the file.
        let map = unsafe { memmap2::MmapOptions::new().map_copy(&file) };
        return Ok(Arc::new(Buffer::PrivateMap(
            map.map_err(|e| Error::io(path, e))?,
        )));
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

/// Replaces the file (or object) `path` atomically with what `write`
/// produces, through the one [`replace`]: a reader sees the old file or the
/// new one, never a part, and on any error `path` is untouched.
pub(crate) fn write_atomic(
    path: &Path,
    durable: bool,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let (storage, name) = Location::parse(path).parent_and_name()?;
    let mut write = Some(write);
    let mut once = |out: &mut dyn Write| match write.take() {
        Some(f) => f(out),
        None => Err(std::io::Error::other("written twice")),
    };
    replace(&*storage, &name, durable, &mut once).map_err(|e| Error::io(path, e.into_io()))
}

/// The error for an `s3://` path in a build without the `s3` feature.
#[cfg(not(feature = "s3"))]
pub(crate) fn no_s3(path: &Path) -> Error {
    Error::io(
        path,
        std::io::Error::other("this ckpt was built without the `s3` feature"),
    )
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
        let Err(err) = open(Path::new("/nonexistent/x.safetensors"), Open::Map) else {
            panic!("opening a missing file succeeded");
        };
        assert!(err.to_string().contains("/nonexistent/x.safetensors"));
    }

    #[cfg(not(feature = "s3"))]
    #[test]
    fn s3_paths_without_the_feature_say_so() {
        let url = Path::new("s3://bucket/run");
        let file = crate::load(url.join("m.safetensors")).unwrap_err();
        assert!(
            file.to_string().contains("s3://bucket/run/m.safetensors"),
            "{file}"
        );
        for err in [file, crate::store::RunReader::open(url).err().unwrap()] {
            let msg = err.to_string();
            assert!(
                msg.contains("s3://bucket/run") && msg.contains("`s3` feature"),
                "{msg}"
            );
        }
    }
}
