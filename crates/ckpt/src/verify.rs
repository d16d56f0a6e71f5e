//! Checking a file end to end: [`verify`].

use std::collections::BTreeSet;
use std::path::Path;

use crate::format::pytorch::zip::ZipArchive;
use crate::storage::Open;
use crate::{Format, LoadOptions, Result, StateDict};

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The file's format.
    pub format: Format,
    /// How many tensors it holds.
    pub tensors: usize,
    /// How many tensor bytes were read.
    pub bytes: u64,
    /// How many stored checksums (zip CRC-32s) were compared.
    pub checksums: usize,
    /// Entries whose data does not match its stored checksum, as
    /// `file: entry`. Loading does not check these (nor does torch), so a
    /// file with mismatches still loads.
    pub mismatches: Vec<String>,
    /// For pickled files, what opening it in Python would take. A file
    /// whose pickle names a dangerous callable never gets a report: it is
    /// [`crate::Error::DangerousGlobal`].
    pub pickle: Option<crate::PickleReport>,
}

/// Reads a whole file as `load` would, reads every tensor byte, and
/// compares every stored checksum: zip CRC-32s of `.pth` and `.npz` files,
/// and of the shards of a sharded checkpoint. Structural problems are
/// errors; checksum mismatches are reported.
///
/// ```no_run
/// let report = ckpt::verify("model.pth")?;
/// assert!(report.mismatches.is_empty(), "corrupt entries: {:?}", report.mismatches);
/// # Ok::<(), ckpt::Error>(())
/// ```
pub fn verify(path: impl AsRef<Path>) -> Result<VerifyReport> {
    let path = path.as_ref();
    let loaded = crate::read(path, &LoadOptions::default())?;
    // A model folder is checked through the file it was read from (a DCP
    // folder's items were each parsed whole by the read).
    let chosen;
    let folder = crate::storage::Location::parse(path).is_local_dir();
    let path = if folder && loaded.format != Format::Dcp {
        chosen = crate::layout::folder::choose(path)?;
        chosen.as_path()
    } else {
        path
    };
    let tensors = StateDict::flatten(&loaded.value)?;
    // Reading every byte surfaces I/O errors a lazy map would defer.
    let mut sum = 0u8;
    for t in tensors.values() {
        sum = t.bytes().iter().fold(sum, |s, &b| s ^ b);
    }
    std::hint::black_box(sum);

    let files: BTreeSet<std::path::PathBuf> = match loaded.format {
        Format::PyTorch | Format::TorchScript | Format::ExportedProgram | Format::Npz => {
            [path.to_owned()].into()
        }
        Format::ShardedIndex => {
            let bytes = crate::storage::open(path, Open::Read)?;
            let index = crate::layout::Index::parse(bytes.as_slice(), path)?;
            index.checked_files(path).into_iter().collect()
        }
        // .ckptz: every blob's Adler-32 was checked by the read.
        // DCP: each item is parsed whole as its archive when read.
        Format::Safetensors | Format::Npy | Format::Compressed | Format::Pickle | Format::Dcp => {
            BTreeSet::new()
        }
    };
    let (mut checksums, mut mismatches) = (0, Vec::new());
    for file in files {
        let buffer = crate::storage::open(&file, Open::Map)?;
        let bytes = buffer.as_slice();
        if !bytes.starts_with(b"PK\x03\x04") {
            continue; // a legacy .pth or a safetensors shard: no checksums
        }
        for entry in ZipArchive::parse(bytes, &file)?.entries {
            checksums += 1;
            if !entry.crc_matches(bytes, &file)? {
                mismatches.push(format!("{}: {}", file.display(), entry.name));
            }
        }
    }
    Ok(VerifyReport {
        format: loaded.format,
        tensors: tensors.len(),
        bytes: tensors.total_bytes(),
        checksums,
        mismatches,
        pickle: loaded.pickle,
    })
}
