//! `ckpt._ckpt`: the native core of the `ckpt` Python package. Trees and
//! tensors cross as `tree.rs` describes; the run store is `manager.rs`.
//! Reading and writing run with the GIL released.

mod manager;
mod tree;

use std::path::PathBuf;

use ckpt::{LoadOptions, SaveOptions};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

create_exception!(
    _ckpt,
    CkptError,
    PyException,
    "An error from ckpt: a file that is missing, truncated, corrupt or \
     malicious, or a value a format cannot hold. The message names the file \
     and the place."
);
create_exception!(
    _ckpt,
    IntegrityError,
    CkptError,
    "A checkpoint whose bytes do not match the content hash recorded when \
     it was written, or a run in which no committed step loads."
);
create_exception!(
    _ckpt,
    UnsafeFileError,
    CkptError,
    "A pickle that would run code or build objects if torch.load opened it \
     with weights_only=False; ckpt refuses it and runs nothing."
);
create_exception!(
    _ckpt,
    StepError,
    CkptError,
    "A step a run does not hold, or one it already holds."
);
create_exception!(
    _ckpt,
    LockedError,
    CkptError,
    "A run directory another live process is writing to."
);

/// A `ckpt::Error` as the Python exception for its kind (a failed
/// background save's, by what failed), with the core's message.
fn error(e: ckpt::Error) -> PyErr {
    use ckpt::Error as E;
    let message = e.to_string();
    let mut cause = &e;
    while let E::BackgroundSave { source, .. } | E::CommitNotDurable { source, .. } = cause {
        cause = source;
    }
    match cause {
        E::HashMismatch { .. } | E::NoIntactCheckpoint { .. } => IntegrityError::new_err(message),
        E::DangerousGlobal { .. } | E::RefusedGlobal { .. } => UnsafeFileError::new_err(message),
        E::NoSuchStep { .. } | E::StepExists { .. } => StepError::new_err(message),
        E::StoreLocked { .. } => LockedError::new_err(message),
        _ => CkptError::new_err(message),
    }
}

/// The tree in the file at `path` (any format or folder ckpt reads, or an
/// `s3://` URL): mapped copy-on-write unless `mmap` is false, so its
/// tensors may be written without touching the file.
#[pyfunction]
#[pyo3(signature = (path, mmap = true))]
fn load(py: Python<'_>, path: PathBuf, mmap: bool) -> PyResult<Py<PyAny>> {
    let options = LoadOptions::default().mmap(mmap).writable(true);
    let loaded = py.detach(|| ckpt::read(&path, &options)).map_err(error)?;
    tree::to_py(py, &loaded.value)
}

/// Saves `tree` to `path` in the format its extension names, atomically;
/// `durable` syncs it to disk before returning. Tensors are written
/// straight from the memory the tree's RawTensors name.
#[pyfunction]
#[pyo3(signature = (tree, path, durable = false))]
fn save(py: Python<'_>, tree: &Bound<'_, PyAny>, path: PathBuf, durable: bool) -> PyResult<()> {
    let value = tree::from_py(tree, 0)?;
    let options = SaveOptions::default().durable(durable);
    py.detach(|| ckpt::save_with(&path, &value, &options))
        .map_err(error)
}

/// Reads the whole file at `path` as `load` would, every tensor byte
/// included, and compares every stored checksum: a dict of `format` (a
/// short id such as `"pytorch"`), `tensors`, `bytes`, `checksums` (how many
/// were compared) and `mismatches` (entries whose data does not match).
/// Structural problems, and hash mismatches in ckpt's own folders, raise.
#[pyfunction]
fn verify(py: Python<'_>, path: PathBuf) -> PyResult<Py<PyDict>> {
    let report = py.detach(|| ckpt::verify(&path)).map_err(error)?;
    let dict = PyDict::new(py);
    dict.set_item("format", report.format.id())?;
    dict.set_item("tensors", report.tensors)?;
    dict.set_item("bytes", report.bytes)?;
    dict.set_item("checksums", report.checksums)?;
    dict.set_item("mismatches", report.mismatches)?;
    Ok(dict.unbind())
}

/// What `ckpt inspect --json PATH` prints, as JSON text.
#[pyfunction]
fn inspect(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    let report = py.detach(|| {
        let loaded = ckpt::read(&path, &LoadOptions::default())?;
        ckpt::report::Inspection::of(&loaded)
    });
    let report = report.map_err(error)?;
    serde_json::to_string(&report).map_err(|e| CkptError::new_err(e.to_string()))
}

/// What `ckpt diff --json A B` prints, as JSON text.
#[pyfunction]
fn diff(py: Python<'_>, a: PathBuf, b: PathBuf, atol: f64, rtol: f64) -> PyResult<String> {
    let report = py.detach(|| {
        let a = ckpt::read(&a, &LoadOptions::default())?.value;
        let b = ckpt::read(&b, &LoadOptions::default())?.value;
        ckpt::report::diff(&a, &b, atol, rtol)
    });
    Ok(report.map_err(error)?.to_json().to_string())
}

/// Converts `input` to `output` (`ckpt convert`): `format` is a file
/// extension (`safetensors`, `pth`, `npz`, `npy`, `ckptz`) or `dcp` /
/// `dcp-hf`; `dtype` a torch float dtype name; `options` the rest of
/// `ckpt::ConvertOptions` (`strip_prefix`, `max_shard_size`, `package`,
/// `input_shape`). Returns (read as, written as, tensors, bytes).
#[pyfunction]
fn convert(
    py: Python<'_>,
    input: PathBuf,
    output: PathBuf,
    format: Option<String>,
    dtype: Option<String>,
    options: ConvertRest,
) -> PyResult<(String, String, usize, u64)> {
    let ConvertRest {
        strip_prefix,
        max_shard_size,
        package,
        input_shape,
    } = options;
    let mut options = ckpt::ConvertOptions::default();
    options.package = package;
    options.input_shape = input_shape;
    options.hf_flavour = format.as_deref() == Some("dcp-hf");
    options.format = match format.as_deref() {
        None => None,
        Some("dcp" | "dcp-hf") => Some(ckpt::Format::Dcp),
        Some(ext) => Some(
            ckpt::Format::from_path(std::path::Path::new(&format!("x.{ext}")))
                .ok()
                .filter(|f| f.writable())
                .ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "format is safetensors, pth, npz, npy, ckptz, dcp or dcp-hf, not {ext:?}"
                    ))
                })?,
        ),
    };
    options.dtype = match dtype {
        None => None,
        Some(name) => Some(
            ckpt::DType::from_torch(&name)
                .filter(|d| d.is_float())
                .ok_or_else(|| PyValueError::new_err(format!("{name:?} is not a float dtype")))?,
        ),
    };
    options.strip_prefix = strip_prefix;
    options.max_shard_size = max_shard_size;
    let done = py
        .detach(|| ckpt::convert(&input, &output, &options))
        .map_err(error)?;
    Ok((done.from.id().to_owned(), done.to, done.tensors, done.bytes))
}

/// The options of `convert` beyond the format and dtype, as the Python side
/// names them.
#[derive(FromPyObject)]
struct ConvertRest {
    strip_prefix: Option<String>,
    max_shard_size: Option<u64>,
    package: bool,
    input_shape: Option<Vec<usize>>,
}

/// The native module.
#[pymodule]
fn _ckpt(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CkptError", py.get_type::<CkptError>())?;
    m.add("IntegrityError", py.get_type::<IntegrityError>())?;
    m.add("UnsafeFileError", py.get_type::<UnsafeFileError>())?;
    m.add("StepError", py.get_type::<StepError>())?;
    m.add("LockedError", py.get_type::<LockedError>())?;
    m.add_class::<tree::RawTensor>()?;
    m.add_class::<manager::Manager>()?;
    m.add_class::<tree::Object>()?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(save, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(diff, m)?)?;
    m.add_function(wrap_pyfunction!(convert, m)?)?;
    Ok(())
}
