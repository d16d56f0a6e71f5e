//! # ckpt: neural-network checkpoints, safely
//!
//! Save, load and inspect model files without a tensor engine and without
//! ever running code from a file.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("checkpoint.safetensors");
//! use ckpt::{Dict, TensorData, Value};
//!
//! // A training checkpoint: a tree of plain values and tensors.
//! let mut model = Dict::new();
//! model.insert("fc1.weight".into(), TensorData::from_f32(&[2, 2], &[1.0, 2.0, 3.0, 4.0])?.into());
//! let mut checkpoint = Dict::new();
//! checkpoint.insert("epoch".into(), Value::Int(5));
//! checkpoint.insert("loss".into(), Value::Float(0.125));
//! checkpoint.insert("model_state_dict".into(), Value::Dict(model));
//! let checkpoint = Value::Dict(checkpoint);
//!
//! ckpt::save(&path, &checkpoint)?;               // atomic; a valid safetensors file
//! assert_eq!(ckpt::load(&path)?, checkpoint);    // memory-mapped, exact
//!
//! // Every tensor by its flattened name:
//! let tensors = ckpt::load_state_dict(&path)?;
//! assert!(tensors.contains_key("model_state_dict/fc1.weight"));
//! # Ok::<(), ckpt::Error>(())
//! ```
//!
//! The pieces:
//! - [`DType`], [`TensorData`] (bytes owned or borrowed from a memory map),
//!   [`Value`] (the checkpoint tree) and [`StateDict`] (name → tensor);
//! - [`save`], [`load`], [`load_state_dict`], [`read`] and [`read_bytes`],
//!   one entry point for every [`Format`];
//! - [`Error`]: every failure, naming the file and the place in it.
#![deny(missing_docs)]

mod cast;
mod checkpoint;
pub mod compress;
mod convert;
mod dtype;
mod error;
pub mod export;
pub mod format;
mod json;
pub mod layout;
mod load;
pub mod package;
mod parallel;
pub mod report;
mod save;
pub mod spec;
mod state_dict;
pub mod storage;
pub mod store;
mod tensor;
pub mod tree;
mod value;
mod verify;

pub use checkpoint::TrainingCheckpoint;
pub use convert::{convert, ConvertOptions, Converted};
pub use dtype::DType;
pub use error::{Error, Result};
pub use format::pytorch::PickleReport;
pub use format::{Format, LoadOptions, Loaded, Progress, SaveOptions};
pub use load::rules::{
    match_state_dict, Expected, KeyRule, LoadReport, LoadRules, Matched, Mismatch, OnMismatch,
};
pub use load::{load, load_state_dict, read, read_bytes};
pub use package::{Package, PackageInfo, PackageOptions};
pub use save::{save, save_with};
pub use spec::{Layer, LayerKind, LayerSummary, ModelSpec, Param};
pub use state_dict::{StateDict, SEPARATOR};
pub use tensor::{byte_len, TensorData};
pub use value::{Dict, Key, PyObject, Value};
pub use verify::{verify, VerifyReport};
