//! Loading: [`LoadOptions`], [`Loaded`], and the functions that read any
//! supported file into a [`Value`]; [`rules`] matches a loaded state dict
//! against what a model expects.

pub mod rules;

use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;

use crate::format::pytorch::PickleReport;
use crate::format::{self, Format};
use crate::tensor::Buffer;
use crate::{Result, StateDict, Value};

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
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { mmap: true }
    }
}

impl LoadOptions {
    /// Sets [`LoadOptions::mmap`].
    pub fn mmap(mut self, mmap: bool) -> Self {
        self.mmap = mmap;
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
}

/// Reads any supported file, or a Hugging Face model folder. The format
/// comes from the contents, whatever the name ([`Format::detect`]).
///
/// ```no_run
/// let loaded = ckpt::read("model.safetensors", &ckpt::LoadOptions::default())?;
/// println!("{} with {} metadata entries", loaded.format, loaded.metadata.len());
/// # Ok::<(), ckpt::Error>(())
/// ```
pub fn read(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Loaded> {
    let path = path.as_ref();
    if crate::storage::Location::parse(path).is_local_dir() {
        return crate::layout::folder::read(path, options);
    }
    let buffer = crate::storage::open(path, options.mmap)?;
    let format = Format::detect(buffer.as_slice(), path)?;
    dispatch(format, buffer, path, options)
}

/// Reads a whole file that is already in memory, as `format`; `origin`
/// only names it in errors. The tensors share `bytes` without copying.
///
/// ```
/// use std::path::Path;
/// let err = ckpt::read_bytes(ckpt::Format::Safetensors, vec![1, 2, 3], Path::new("upload")).unwrap_err();
/// assert!(err.to_string().starts_with("upload: truncated"));
/// ```
pub fn read_bytes(format: Format, bytes: Vec<u8>, origin: &Path) -> Result<Loaded> {
    read_buffer(
        format,
        Arc::new(Buffer::Heap(bytes)),
        origin,
        &LoadOptions::default(),
    )
}

/// The one dispatch from a format to its reader, after checking that the
/// first bytes do not contradict the format.
pub(crate) fn read_buffer(
    format: Format,
    buffer: Arc<Buffer>,
    path: &Path,
    options: &LoadOptions,
) -> Result<Loaded> {
    let bytes = buffer.as_slice();
    format.confirm(&bytes[..bytes.len().min(16)], path)?;
    dispatch(format, buffer, path, options)
}

/// The one dispatch from a format to its reader.
pub(crate) fn dispatch(
    format: Format,
    buffer: Arc<Buffer>,
    path: &Path,
    options: &LoadOptions,
) -> Result<Loaded> {
    match format {
        Format::Safetensors => format::safetensors::read(buffer, path),
        Format::PyTorch | Format::TorchScript => format::pytorch::read(buffer, path),
        Format::Pickle => format::pytorch::read_pickle(buffer, path),
        Format::ExportedProgram => format::pytorch::pt2::read(buffer, path),
        Format::Npy | Format::Npz => format::numpy::read(format, buffer, path),
        Format::Compressed => format::compressed::read(buffer, path),
        // Shards are found beside the index (for bytes, beside `path`).
        Format::ShardedIndex => crate::layout::read(buffer.as_slice(), path, options),
    }
}

/// Loads a checkpoint, memory-mapped: a flat state dict comes back as a
/// dict of tensors, a nested checkpoint as the tree that was saved.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("m.safetensors");
/// use ckpt::{StateDict, TensorData};
/// let mut sd = StateDict::new();
/// sd.insert("w".into(), TensorData::from_f32(&[2], &[1.0, 2.0]).unwrap());
/// ckpt::save(&path, &sd.clone().into()).unwrap();
/// assert_eq!(ckpt::load_state_dict(&path).unwrap(), sd);
/// ```
pub fn load(path: impl AsRef<Path>) -> Result<Value> {
    read(path, &LoadOptions::default()).map(|loaded| loaded.value)
}

/// Loads every tensor of a file as one state dict, named by the flattening
/// rule (a plain state dict keeps its names; a nested checkpoint's tensors
/// are named by their path, such as `model_state_dict/fc1.weight`).
pub fn load_state_dict(path: impl AsRef<Path>) -> Result<StateDict> {
    StateDict::flatten(&load(path)?)
}
