//! Reading one file's bytes: [`LoadOptions`], [`Loaded`], and the one
//! dispatch from a single-file format to its reader.

use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;

use super::pytorch::PickleReport;
use super::Format;
use crate::tensor::Buffer;
use crate::{Error, Result, Value};

/// How to load a file.
///
/// ```
/// let mapped = ckpt::LoadOptions::default();   // memory-mapped
/// let owned = ckpt::LoadOptions::default().mmap(false); // one heap copy
/// assert!(mapped.mmap && !owned.mmap);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Map the file instead of reading it (the default). Loading then costs
    /// time in the number of tensors, not bytes, and the bytes are paged in
    /// when used. With `false` the file is read once into one heap buffer,
    /// which the tensors share; use it when the file may change under you.
    pub mmap: bool,
    /// Map the file copy-on-write (private) instead of read-only, so
    /// whoever is handed the tensors' memory (a torch tensor over it) may
    /// write to it without touching the file. The written pages are copied
    /// then; the map counts towards the system's committed memory.
    pub writable: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            mmap: true,
            writable: false,
        }
    }
}

impl LoadOptions {
    /// Sets [`LoadOptions::mmap`].
    pub fn mmap(mut self, mmap: bool) -> Self {
        self.mmap = mmap;
        self
    }

    /// How the file is brought into memory.
    pub(crate) fn open_as(&self) -> crate::storage::Open {
        use crate::storage::Open;
        match (self.mmap, self.writable) {
            (false, _) => Open::Read,
            (true, false) => Open::Map,
            (true, true) => Open::PrivateMap,
        }
    }

    /// Sets [`LoadOptions::writable`].
    pub fn writable(mut self, writable: bool) -> Self {
        self.writable = writable;
        self
    }
}

/// A loaded file: its format, its contents and its metadata.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Loaded {
    /// The format the file was read as.
    pub format: Format,
    /// The checkpoint: a flat dict of tensors, or the whole tree that was
    /// saved.
    pub value: Value,
    /// The file's own string metadata (ckpt's internal keys removed).
    pub metadata: IndexMap<String, String>,
    /// For files that hold pickles (PyTorch's formats): what opening the
    /// file in Python would take. `None` for formats without pickles.
    pub pickle: Option<PickleReport>,
    /// For `torch.save(model)` files: the pickled module tree (classes,
    /// plain attributes, submodules), from which a spec may be derived.
    pub module: Option<super::pytorch::PickledModule>,
}

/// The one dispatch from a format to its reader.
pub(crate) fn read(format: Format, buffer: Arc<Buffer>, path: &Path) -> Result<Loaded> {
    match format {
        Format::Safetensors => super::safetensors::read(buffer, path),
        Format::PyTorch | Format::TorchScript => super::pytorch::read(buffer, path),
        Format::Pickle => super::pytorch::read_pickle(buffer, path),
        Format::ExportedProgram => super::pytorch::pt2::read(buffer, path),
        Format::Npy | Format::Npz => super::numpy::read(format, buffer, path),
        Format::Compressed => super::compressed::read(buffer, path),
        // Not one file: `layout` reads what an index names.
        Format::ShardedIndex | Format::Dcp => Err(Error::UnknownExtension {
            path: path.to_owned(),
        }),
    }
}
