//! `ckpt._ckpt`: the native core of the `ckpt` Python package. Trees cross
//! as Python's own types (None, bool, int, float, str, bytes, list, tuple,
//! dict with str or int keys); tensors as [`RawTensor`] (a torch dtype name,
//! a shape and the bytes), which the package's Python side turns into
//! torch tensors or NumPy arrays. Reading and writing run with the GIL
//! released.

use std::path::PathBuf;

use ckpt::{DType, Dict, Key, LoadOptions, SaveOptions, TensorData, Value};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

create_exception!(
    _ckpt,
    CkptError,
    PyException,
    "An error from ckpt: a file that is missing, truncated, corrupt or \
     malicious, or a value a format cannot hold. The message names the file \
     and the place."
);

/// A `ckpt::Error` as the Python exception.
fn error(e: ckpt::Error) -> PyErr {
    CkptError::new_err(e.to_string())
}

/// A tensor crossing between Python and ckpt: torch's name for its dtype
/// (`"float32"`, `"bfloat16"`), its shape, and its little-endian bytes in
/// row-major order.
#[pyclass(frozen, module = "ckpt._ckpt")]
struct RawTensor {
    #[pyo3(get)]
    dtype: String,
    #[pyo3(get)]
    shape: Vec<usize>,
    #[pyo3(get)]
    data: Py<PyBytes>,
}

#[pymethods]
impl RawTensor {
    #[new]
    fn new(dtype: String, shape: Vec<usize>, data: Py<PyBytes>) -> Self {
        RawTensor { dtype, shape, data }
    }
}

/// The tree in the file at `path` (any format or folder ckpt reads, or an
/// `s3://` URL), memory-mapped unless `mmap` is false.
#[pyfunction]
#[pyo3(signature = (path, mmap = true))]
fn load(py: Python<'_>, path: PathBuf, mmap: bool) -> PyResult<Py<PyAny>> {
    let options = LoadOptions::default().mmap(mmap);
    let loaded = py.detach(|| ckpt::read(&path, &options)).map_err(error)?;
    to_py(py, &loaded.value)
}

/// Saves `tree` to `path` in the format its extension names, atomically;
/// `durable` syncs it to disk before returning.
#[pyfunction]
#[pyo3(signature = (tree, path, durable = false))]
fn save(py: Python<'_>, tree: &Bound<'_, PyAny>, path: PathBuf, durable: bool) -> PyResult<()> {
    let value = from_py(tree, 0)?;
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

/// A ckpt value as a Python object (an inert pickled object as the plain
/// dict that stands in for it).
fn to_py(py: Python<'_>, value: &Value) -> PyResult<Py<PyAny>> {
    Ok(match value {
        Value::None => py.None(),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::Float(f) => PyFloat::new(py, *f).into_any().unbind(),
        Value::Str(s) => PyString::new(py, s).into_any().unbind(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any().unbind(),
        Value::List(items) => {
            let items = items
                .iter()
                .map(|v| to_py(py, v))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any().unbind()
        }
        Value::Tuple(items) => {
            let items = items
                .iter()
                .map(|v| to_py(py, v))
                .collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, items)?.into_any().unbind()
        }
        Value::Dict(d) => {
            let dict = PyDict::new(py);
            for (k, v) in d {
                match k {
                    Key::Str(s) => dict.set_item(s, to_py(py, v)?)?,
                    Key::Int(i) => dict.set_item(i, to_py(py, v)?)?,
                }
            }
            dict.into_any().unbind()
        }
        Value::Tensor(t) => {
            let raw = RawTensor {
                dtype: t.dtype().torch_name().to_owned(),
                shape: t.shape().to_vec(),
                data: PyBytes::new(py, t.bytes()).unbind(),
            };
            Py::new(py, raw)?.into_any()
        }
        Value::Object(o) => to_py(py, &o.to_plain())?,
    })
}

/// A Python tree as a ckpt value; anything else is a `TypeError` naming
/// its type.
fn from_py(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    if depth > ckpt::tree::MAX_DEPTH {
        return Err(PyTypeError::new_err(format!(
            "the tree is deeper than {} levels",
            ckpt::tree::MAX_DEPTH
        )));
    }
    let child = |v: Bound<'_, PyAny>| from_py(&v, depth + 1);
    Ok(if obj.is_none() {
        Value::None
    } else if let Ok(b) = obj.cast::<PyBool>() {
        Value::Bool(b.is_true())
    } else if obj.is_instance_of::<PyInt>() {
        Value::Int(obj.extract()?)
    } else if obj.is_instance_of::<PyFloat>() {
        Value::Float(obj.extract()?)
    } else if let Ok(s) = obj.cast::<PyString>() {
        Value::Str(s.to_cow()?.into_owned())
    } else if let Ok(b) = obj.cast::<PyBytes>() {
        Value::Bytes(b.as_bytes().to_vec())
    } else if let Ok(l) = obj.cast::<PyList>() {
        Value::List(l.iter().map(child).collect::<PyResult<_>>()?)
    } else if let Ok(t) = obj.cast::<PyTuple>() {
        Value::Tuple(t.iter().map(child).collect::<PyResult<_>>()?)
    } else if let Ok(d) = obj.cast::<PyDict>() {
        let mut dict = Dict::new();
        for (k, v) in d.iter() {
            let key = if let Ok(s) = k.cast::<PyString>() {
                Key::Str(s.to_cow()?.into_owned())
            } else if k.is_instance_of::<PyInt>() && !k.is_instance_of::<PyBool>() {
                Key::Int(k.extract()?)
            } else {
                let kind = k.get_type().name()?;
                return Err(PyTypeError::new_err(format!(
                    "a dict key is a {kind}: ckpt saves str and int keys"
                )));
            };
            dict.insert(key, child(v)?);
        }
        Value::Dict(dict)
    } else if let Ok(raw) = obj.cast::<RawTensor>() {
        let raw = raw.get();
        let dtype = DType::from_torch(&raw.dtype)
            .ok_or_else(|| PyTypeError::new_err(format!("unknown dtype {}", raw.dtype)))?;
        let bytes = raw.data.bind(obj.py()).as_bytes().to_vec();
        Value::Tensor(TensorData::new(dtype, raw.shape.clone(), bytes).map_err(error)?)
    } else {
        let kind = obj.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "ckpt saves tensors, dicts, lists, tuples, numbers, strings, bytes and None, not {kind}"
        )));
    })
}

/// The native module.
#[pymodule]
fn _ckpt(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CkptError", m.py().get_type::<CkptError>())?;
    m.add_class::<RawTensor>()?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(save, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    Ok(())
}
