//! Trees between Python and ckpt. Containers cross as Python's own types
//! (None, bool, int, float, str, bytes, list, tuple, dict with str or int
//! keys); tensors as [`RawTensor`], whose memory is never copied on the
//! way: a loaded tensor's bytes stay where ckpt read them (a file map or
//! one heap buffer) and reach NumPy and torch through
//! `__array_interface__`; a tensor to save is read straight from the
//! NumPy array (or bytes) the Python side hands over.

use ckpt::{DType, Dict, Key, TensorData, Value};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::error;

/// A tensor crossing between Python and ckpt: torch's name for its dtype
/// (`"float32"`, `"bfloat16"`), its shape, and its little-endian bytes in
/// row-major order. Made in Python from `bytes` or a one-dimensional
/// C-contiguous `uint8` NumPy array over the tensor's memory; made by a
/// load over ckpt's own memory, which `numpy.asarray(raw)` views as
/// `uint8` without a copy.
#[pyclass(frozen, module = "ckpt._ckpt")]
pub struct RawTensor {
    #[pyo3(get)]
    dtype: String,
    #[pyo3(get)]
    shape: Vec<usize>,
    data: Data,
}

/// Where a [`RawTensor`]'s bytes are.
enum Data {
    /// A Python object holding them (to save).
    Python(Py<PyAny>),
    /// ckpt's tensor (loaded).
    Loaded(TensorData),
}

#[pymethods]
impl RawTensor {
    #[new]
    fn new(dtype: String, shape: Vec<usize>, data: Py<PyAny>) -> Self {
        RawTensor {
            dtype,
            shape,
            data: Data::Python(data),
        }
    }

    /// NumPy's array interface over a loaded tensor's bytes (`uint8`, one
    /// dimension), writable when they are ckpt's private memory.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let Data::Loaded(t) = &self.data else {
            return Err(PyTypeError::new_err(
                "only a loaded RawTensor has an array interface",
            ));
        };
        let bytes = t.bytes();
        let dict = PyDict::new(py);
        dict.set_item("version", 3)?;
        dict.set_item("typestr", "|u1")?;
        dict.set_item("shape", (bytes.len(),))?;
        dict.set_item("data", (bytes.as_ptr() as usize, !t.is_writable()))?;
        Ok(dict)
    }
}

/// A Python object a pickle names (an `argparse.Namespace`, a class of
/// the training script), inert: never constructed, nothing of it run. Its
/// class's dotted name, the arguments the pickle would have called it
/// with and the state it would have set, all read-only. `ckpt.save`
/// writes it back as it was read.
#[pyclass(frozen, module = "ckpt._ckpt")]
pub struct Object {
    object: ckpt::PyObject,
}

#[pymethods]
impl Object {
    #[new]
    fn new(
        class_name: String,
        args: &Bound<'_, PyTuple>,
        state: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let args = args
            .iter()
            .map(|a| from_py(&a, 1))
            .collect::<PyResult<_>>()?;
        Ok(Object {
            object: ckpt::PyObject::new(class_name, args, from_py(state, 1)?),
        })
    }

    /// The class's dotted name (`argparse.Namespace`).
    #[getter]
    fn class_name(&self) -> &str {
        &self.object.class
    }

    /// The arguments the pickle passes to the class, as a tuple.
    #[getter]
    fn args(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py(py, &Value::Tuple(self.object.args.clone()))
    }

    /// The state the pickle sets on the object (often a dict of its
    /// attributes), or None.
    #[getter]
    fn state(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py(py, &self.object.state)
    }
}

/// Memory a Python object holds (a NumPy array or bytes), kept alive and
/// unmoved by the reference this holds.
struct PyMemory {
    _owner: Py<PyAny>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the memory belongs to `_owner`, which this keeps alive; NumPy
// arrays and bytes never move or free their data while referenced. Python
// code may still write to an array while ckpt reads it (as it may while
// torch.save reads it).
unsafe impl Send for PyMemory {}
unsafe impl Sync for PyMemory {}

impl AsRef<[u8]> for PyMemory {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: see above; `ptr` and `len` come from the owner's own
        // description of its memory.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl PyMemory {
    /// The memory of `obj`: bytes, or a one-dimensional C-contiguous
    /// `uint8` NumPy array (exactly `numpy.ndarray`, so the description is
    /// NumPy's own: its `__array_interface__`). The array keeps what it
    /// views alive (a torch tensor's storage); a storage resized to nothing
    /// by another thread during the save is not guarded against.
    fn of(obj: &Bound<'_, PyAny>) -> PyResult<PyMemory> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            let bytes = b.as_bytes();
            return Ok(PyMemory {
                _owner: obj.clone().unbind(),
                ptr: bytes.as_ptr(),
                len: bytes.len(),
            });
        }
        let bad = || {
            PyTypeError::new_err(
                "tensor data must be bytes or a 1-d uint8 C-contiguous numpy.ndarray",
            )
        };
        let ndarray = obj.py().import("numpy")?.getattr("ndarray")?;
        if !obj.get_type().is(&ndarray) {
            return Err(bad());
        }
        let interface = obj.getattr("__array_interface__").map_err(|_| bad())?;
        let interface = interface.cast::<PyDict>().map_err(|_| bad())?;
        let get = |k: &str| interface.get_item(k)?.ok_or_else(bad);
        let typestr: String = get("typestr")?.extract()?;
        let (len,): (usize,) = get("shape")?.extract().map_err(|_| bad())?;
        let strides = interface.get_item("strides")?;
        if typestr != "|u1" || strides.is_some_and(|s| !s.is_none()) {
            return Err(bad());
        }
        let (ptr, _readonly): (usize, bool) = get("data")?.extract()?;
        if ptr == 0 && len > 0 {
            return Err(bad());
        }
        Ok(PyMemory {
            _owner: obj.clone().unbind(),
            ptr: ptr as *const u8,
            len,
        })
    }
}

/// A ckpt value as a Python object (an inert pickled object as an
/// [`Object`]).
pub fn to_py(py: Python<'_>, value: &Value) -> PyResult<Py<PyAny>> {
    Ok(match value {
        Value::None => py.None(),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::Float(f) => PyFloat::new(py, *f).into_any().unbind(),
        Value::Str(s) => PyString::new(py, s).into_any().unbind(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any().unbind(),
        Value::List(items) => PyList::new(py, to_py_all(py, items)?)?.into_any().unbind(),
        Value::Tuple(items) => PyTuple::new(py, to_py_all(py, items)?)?.into_any().unbind(),
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
                data: Data::Loaded(t.clone()),
            };
            Py::new(py, raw)?.into_any()
        }
        Value::Object(o) => Py::new(
            py,
            Object {
                object: (**o).clone(),
            },
        )?
        .into_any(),
    })
}

fn to_py_all(py: Python<'_>, items: &[Value]) -> PyResult<Vec<Py<PyAny>>> {
    items.iter().map(|v| to_py(py, v)).collect()
}

/// A Python tree as a ckpt value, its tensors borrowing the Python side's
/// memory; anything else is a `TypeError` naming its type.
pub fn from_py(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    if depth > ckpt::tree::MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
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
            dict.insert(key(&k)?, child(v)?);
        }
        Value::Dict(dict)
    } else if let Ok(raw) = obj.cast::<RawTensor>() {
        Value::Tensor(tensor(raw.get(), obj.py())?)
    } else if let Ok(o) = obj.cast::<Object>() {
        Value::Object(Box::new(o.get().object.clone()))
    } else {
        let kind = obj.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "ckpt saves tensors, dicts, lists, tuples, numbers, strings, bytes and None, not {kind}"
        )));
    })
}

/// A dict key: str or int (not bool, which Python counts as an int).
fn key(k: &Bound<'_, PyAny>) -> PyResult<Key> {
    if let Ok(s) = k.cast::<PyString>() {
        Ok(Key::Str(s.to_cow()?.into_owned()))
    } else if k.is_instance_of::<PyInt>() && !k.is_instance_of::<PyBool>() {
        Ok(Key::Int(k.extract()?))
    } else {
        let kind = k.get_type().name()?;
        Err(PyTypeError::new_err(format!(
            "a dict key is a {kind}: ckpt saves str and int keys"
        )))
    }
}

/// The tensor a [`RawTensor`] stands for, over the same memory.
fn tensor(raw: &RawTensor, py: Python<'_>) -> PyResult<TensorData> {
    let dtype = DType::from_torch(&raw.dtype)
        .ok_or_else(|| PyTypeError::new_err(format!("unknown dtype {}", raw.dtype)))?;
    match &raw.data {
        Data::Loaded(t) => Ok(t.clone()),
        Data::Python(obj) => {
            let memory = PyMemory::of(obj.bind(py))?;
            TensorData::borrowed(dtype, raw.shape.clone(), memory).map_err(error)
        }
    }
}
