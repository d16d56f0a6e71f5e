//! File formats: which one a path is, and the readers and writers behind
//! the one entry point ([`crate::read`], [`crate::save`]).
//!
//! Reading recognises the format from the file's contents whatever its
//! name ([`Format::detect`]); the extension is only a hint for files whose
//! first bytes say nothing (JSON indexes). Writing takes the format from
//! the extension ([`Format::from_path`]).

pub mod compressed;
pub(crate) mod inflate;
pub mod numpy;
pub mod pytorch;
mod reading;
pub mod safetensors;
mod writing;

pub(crate) use reading::read;
pub use reading::{LoadOptions, Loaded};
pub(crate) use writing::{plan, write_file, write_plan};
pub use writing::{Progress, SaveOptions};

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
    /// A PyTorch Distributed Checkpoint folder (`torch.distributed.checkpoint`:
    /// `.metadata` and `__<rank>_<n>.distcp` files), read as one checkpoint.
    /// Read only.
    Dcp,
    /// ckpt's compressed format (`.ckptz`): safetensors' contents, each
    /// tensor compressed ([`compressed`]).
    Compressed,
    /// A TorchScript archive (`torch.jit.save`: `.pt`, `.jit`,
    /// `.torchscript`): its weights under `state_dict()` names. Read only.
    TorchScript,
    /// A bare pickle (`pickle.dump`, `.pkl`): plain data, NumPy arrays and
    /// inert objects. Read only.
    Pickle,
    /// A `torch.export.save` archive (`.pt2`): each exported program's
    /// weights and constants under the names `torch.export.load` gives.
    /// Read only.
    ExportedProgram,
}

/// What a file's first bytes show, for confirming an extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Zip,
    Npy,
    Pickle,
    BarePickle,
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
        } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Content::Zip
        } else if head.starts_with(b"\x93NUMPY") {
            Content::Npy
        } else if head.starts_with(&pytorch::LEGACY_MAGIC) {
            Content::Pickle
        } else if head.len() >= 3 && head[0] == 0x80 && (2..=5).contains(&head[1])
            || pytorch::safety::text_pickle(head)
        {
            Content::BarePickle
        } else {
            Content::Other
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Content::Zip => "a zip archive (a PyTorch or .npz file)",
            Content::Npy => "a NumPy .npy array",
            Content::Pickle => "a legacy PyTorch file",
            Content::BarePickle => "a pickle",
            Content::Safetensors => "a safetensors file",
            Content::Compressed => "a ckpt compressed file",
            Content::Other => "not recognised",
        }
    }
}

impl Format {
    /// The extensions ckpt recognises, for messages.
    pub const EXTENSIONS: &'static str =
        ".safetensors, .pth/.pt/.bin/.ckpt/.pth.tar, .npy, .npz, .index.json, .ckptz (and reads .pkl, .jit, .torchscript, .pt2)";

    /// The format of a file from its contents, whatever its name: the
    /// first bytes (safetensors' header, ckptz's magic, NumPy's magic,
    /// the legacy PyTorch magic number, a pickle's PROTO), and for zip
    /// archives their entries (`data.pkl`, TorchScript's `constants.pkl`,
    /// `.npy` members). Files whose first bytes say nothing (a JSON index)
    /// fall back on the extension; anything else is
    /// [`Error::UnrecognisedFormat`].
    pub fn detect(bytes: &[u8], path: &Path) -> Result<Format> {
        Ok(match Content::sniff(&bytes[..bytes.len().min(16)]) {
            Content::Safetensors => Format::Safetensors,
            Content::Compressed => Format::Compressed,
            Content::Npy => Format::Npy,
            Content::Pickle => Format::PyTorch,
            Content::BarePickle => Format::Pickle,
            Content::Zip => Format::of_zip(bytes, path)?,
            Content::Other if bytes.first() == Some(&b'{') => Format::ShardedIndex,
            Content::Other => match Format::from_path(path) {
                // Too short to tell: the named format's parser says why.
                Ok(named) if bytes.len() < 16 => named,
                _ => {
                    return Err(Error::UnrecognisedFormat {
                        path: path.to_owned(),
                    })
                }
            },
        })
    }

    /// A zip archive's format, from its entries.
    fn of_zip(bytes: &[u8], path: &Path) -> Result<Format> {
        let zip = pytorch::zip::ZipArchive::parse(bytes, path)?;
        let names = || zip.entries.iter().map(|e| e.name.as_str());
        let under_top =
            |leaf: &str| names().any(|n| n.split_once('/').is_some_and(|(_, rest)| rest == leaf));
        Ok(if pytorch::pt2::is_pt2(&zip, bytes, path) {
            Format::ExportedProgram
        } else if under_top("constants.pkl") {
            Format::TorchScript
        } else if under_top("data.pkl") {
            Format::PyTorch
        } else if names().next().is_some() && names().all(|n| n.ends_with(".npy")) {
            Format::Npz
        } else if zip.entries.is_empty() {
            // An empty archive is an empty .npz (numpy.savez with nothing).
            Format::Npz
        } else {
            return Err(Error::UnrecognisedFormat {
                path: path.to_owned(),
            });
        })
    }

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
            .unwrap_or_default()
            .to_ascii_lowercase();
        if name.ends_with(".index.json") {
            return Ok(Format::ShardedIndex);
        }
        if name.ends_with(".pth.tar") {
            return Ok(Format::PyTorch);
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
            Some("jit" | "torchscript") => Ok(Format::TorchScript),
            Some("pkl" | "pickle") => Ok(Format::Pickle),
            Some("pt2") => Ok(Format::ExportedProgram),
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
            Format::Dcp => "dcp",
            Format::Compressed => "ckptz",
            Format::TorchScript => "torchscript",
            Format::Pickle => "pickle",
            Format::ExportedProgram => "pt2",
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
            Format::Dcp => "distcp",
            Format::Compressed => "ckptz",
            Format::TorchScript => "pt",
            Format::Pickle => "pkl",
            Format::ExportedProgram => "pt2",
        }
    }

    /// True for the formats ckpt writes.
    pub fn writable(self) -> bool {
        !matches!(
            self,
            Format::TorchScript | Format::Pickle | Format::ExportedProgram
        )
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
            // A folder: its `.metadata` is a bare pickle.
            Format::Dcp => found == Content::BarePickle,
            Format::Compressed => found == Content::Compressed,
            Format::TorchScript | Format::ExportedProgram => found == Content::Zip,
            Format::Pickle => found == Content::BarePickle,
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
            Format::Dcp => "PyTorch distributed checkpoint (DCP)",
            Format::Compressed => "ckpt compressed",
            Format::TorchScript => "TorchScript",
            Format::Pickle => "pickle",
            Format::ExportedProgram => "torch.export (.pt2)",
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
