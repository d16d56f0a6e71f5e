//! File formats: which one a path is, and the readers and writers behind
//! the one entry point ([`crate::read`], [`crate::save`]).
//!
//! The format is chosen by extension and confirmed by the first bytes; a
//! file whose contents are plainly another format is refused naming both.

pub mod compressed;
pub mod numpy;
pub mod pytorch;
pub mod safetensors;
pub mod sharded;

use std::fmt;
use std::io::{self, Write};
use std::path::Path;

use crate::{Error, Result};

/// A file fully planned for writing: everything that can fail except I/O
/// has been checked, and the bytes stream from the tensors.
pub(crate) trait WritePlan {
    /// Writes the whole file to `out`.
    fn write_to(&self, out: &mut dyn Write) -> io::Result<()>;

    /// The tensor bytes the file holds: what progress is measured in.
    fn payload_len(&self) -> u64;
}

/// A file format ckpt knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// safetensors (`.safetensors`), with a ckpt tree in its metadata when
    /// the checkpoint is more than a flat state dict.
    Safetensors,
    /// PyTorch `torch.save` files (`.pth`, `.pt`, `.bin`, `.ckpt`).
    PyTorch,
    /// A NumPy array (`.npy`).
    Npy,
    /// A NumPy archive of arrays (`.npz`).
    Npz,
    /// A Hugging Face sharded checkpoint's index
    /// (`model.safetensors.index.json`, `pytorch_model.bin.index.json`).
    ShardedIndex,
    /// ckpt's compressed format (`.ckptz`): safetensors' contents, each
    /// tensor compressed ([`compressed`]).
    Compressed,
}

/// What a file's first bytes show, for confirming an extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Zip,
    Npy,
    Pickle,
    Safetensors,
    Compressed,
    Other,
}

impl Content {
    fn sniff(head: &[u8]) -> Content {
        let safetensors_len = head
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        if safetensors_len.is_some_and(|n| n <= safetensors::MAX_HEADER_LEN)
            && head.get(8) == Some(&b'{')
        {
            Content::Safetensors
        } else if head.starts_with(&compressed::MAGIC[..5]) {
            Content::Compressed
        } else if head.starts_with(b"PK\x03\x04") {
            Content::Zip
        } else if head.starts_with(b"\x93NUMPY") {
            Content::Npy
        } else if head.starts_with(&pytorch::LEGACY_MAGIC) {
            Content::Pickle
        } else {
            Content::Other
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Content::Zip => "a zip archive (a PyTorch or .npz file)",
            Content::Npy => "a NumPy .npy array",
            Content::Pickle => "a legacy PyTorch file",
            Content::Safetensors => "a safetensors file",
            Content::Compressed => "a ckpt compressed file",
            Content::Other => "not recognised",
        }
    }
}

impl Format {
    /// The extensions ckpt recognises, for messages.
    pub const EXTENSIONS: &'static str =
        ".safetensors, .pth/.pt/.bin/.ckpt, .npy, .npz, .index.json, .ckptz";

    /// The format a path's extension names (case-insensitive).
    ///
    /// ```
    /// use ckpt::Format;
    /// assert_eq!(Format::from_path("model.safetensors".as_ref()).unwrap(), Format::Safetensors);
    /// assert_eq!(Format::from_path("model.PTH".as_ref()).unwrap(), Format::PyTorch);
    /// assert_eq!(Format::from_path("model.safetensors.index.json".as_ref()).unwrap(), Format::ShardedIndex);
    /// assert!(Format::from_path("model.txt".as_ref()).is_err());
    /// ```
    pub fn from_path(path: &Path) -> Result<Format> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.to_ascii_lowercase().ends_with(".index.json") {
            return Ok(Format::ShardedIndex);
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("safetensors") => Ok(Format::Safetensors),
            Some("pth" | "pt" | "bin" | "ckpt") => Ok(Format::PyTorch),
            Some("npy") => Ok(Format::Npy),
            Some("npz") => Ok(Format::Npz),
            Some("ckptz") => Ok(Format::Compressed),
            _ => Err(Error::UnknownExtension {
                path: path.to_owned(),
            }),
        }
    }

    /// A short, stable, lowercase name for programs (`"safetensors"`,
    /// `"pytorch"`, `"npy"`, `"npz"`), as in `ckpt inspect --json`.
    pub fn id(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::PyTorch => "pytorch",
            Format::Npy => "npy",
            Format::Npz => "npz",
            Format::ShardedIndex => "sharded",
            Format::Compressed => "ckptz",
        }
    }

    /// The extension ckpt gives files it writes in this format
    /// (`"safetensors"`, `"pth"`, `"npy"`, `"npz"`, `"safetensors.index.json"`).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::PyTorch => "pth",
            Format::Npy => "npy",
            Format::Npz => "npz",
            Format::ShardedIndex => "safetensors.index.json",
            Format::Compressed => "ckptz",
        }
    }

    /// Checks that a file's first bytes do not contradict this format.
    /// Formats without a magic number (safetensors) are confirmed by their
    /// parser; here they are only refused when the bytes are plainly another
    /// format.
    pub(crate) fn confirm(self, head: &[u8], path: &Path) -> Result<()> {
        let found = Content::sniff(head);
        let fits = match self {
            Format::Safetensors => matches!(found, Content::Safetensors | Content::Other),
            Format::PyTorch => matches!(found, Content::Zip | Content::Pickle),
            Format::Npy => found == Content::Npy,
            Format::Npz => found == Content::Zip,
            Format::ShardedIndex => head.first() == Some(&b'{'),
            Format::Compressed => found == Content::Compressed,
        };
        // An empty or tiny file is left to the parser, which says "truncated".
        if fits || head.len() < 8 {
            Ok(())
        } else {
            Err(Error::FormatMismatch {
                path: path.to_owned(),
                expected: self,
                found: found.describe(),
            })
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Safetensors => "safetensors",
            Format::PyTorch => "PyTorch",
            Format::Npy => "NumPy .npy",
            Format::Npz => "NumPy .npz",
            Format::ShardedIndex => "sharded checkpoint",
            Format::Compressed => "ckpt compressed",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_bytes_in_a_safetensors_file_are_a_mismatch() {
        let err = Format::Safetensors
            .confirm(b"PK\x03\x04rest-of-zip", Path::new("m.safetensors"))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("m.safetensors"), "{msg}");
        assert!(msg.contains("safetensors") && msg.contains("zip"), "{msg}");
    }

    #[test]
    fn safetensors_bytes_in_a_pth_file_are_a_mismatch() {
        let head = [8u8, 0, 0, 0, 0, 0, 0, 0, b'{', b'}'];
        assert!(matches!(
            Format::PyTorch.confirm(&head, Path::new("m.pth")),
            Err(Error::FormatMismatch { .. })
        ));
    }

    #[test]
    fn extensions_are_case_insensitive() {
        assert_eq!(
            Format::from_path(Path::new("a/b.NPZ")).unwrap(),
            Format::Npz
        );
        assert!(matches!(
            Format::from_path(Path::new("noext")),
            Err(Error::UnknownExtension { .. })
        ));
    }
}
