//! Loading: the functions that read any supported file, index or folder
//! into a [`Value`] (with [`LoadOptions`], returning [`Loaded`]); [`rules`]
//! matches a loaded state dict against what a model expects.

pub mod rules;

use std::path::Path;
use std::sync::Arc;

use crate::format::{Format, LoadOptions, Loaded};
use crate::tensor::Buffer;
use crate::{Result, StateDict, Value};

/// Reads any supported file, or a Hugging Face model folder. The format
/// comes from the contents, whatever the name ([`Format::detect`]).
///
/// ```no_run
/// let loaded = ckpt::read("model.safetensors", &ckpt::LoadOptions::default())?;
/// println!("{} with {} metadata entries", loaded.format, loaded.metadata.len());
/// # Ok::<(), ckpt::Error>(())
/// ```
pub fn read(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Loaded> {
    crate::layout::read_path(path.as_ref(), options)
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
    crate::layout::read_buffer(
        format,
        Arc::new(Buffer::Heap(bytes)),
        origin,
        &LoadOptions::default(),
    )
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
