//! From the machine's arena to a [`Value`]: shared objects are copied
//! under a node budget and a depth limit, tensors are materialised through
//! the caller's function (a shared tensor once), NumPy arrays become
//! tensors, and other objects become inert [`crate::PyObject`]s.

use std::collections::HashMap;
use std::path::Path;

use super::reduce::numpy_dtype;
use super::{Id, Obj, QScheme, TensorRef, Unpickled, MAX_DEPTH, MAX_DIMS, NODE_SLACK};
use crate::{DType, Dict, Error, Key, PyObject, Result, TensorData, Value};

/// Turns the arena into a [`Value`], materialising tensors through
/// `tensor`. Shared objects are copied; a shared tensor is materialised
/// once.
pub(crate) struct Converter<'a, F> {
    unpickled: &'a Unpickled,
    tensor: F,
    path: &'a Path,
    entry: &'a str,
    budget: usize,
    tensors: HashMap<Id, TensorData>,
    /// The objects being converted, from the root down: one met again
    /// inside itself is a reference cycle.
    on_stack: Vec<bool>,
}

/// What a reference back to an object that contains it becomes (OmegaConf
/// nodes point at their parents): Python shows such a cycle as `...`.
pub(crate) const RECURSIVE: &str = "<recursive reference>";

impl<'a, F: FnMut(&TensorRef) -> Result<TensorData>> Converter<'a, F> {
    /// A converter over `unpickled` that builds tensors with `tensor`.
    pub(crate) fn new(unpickled: &'a Unpickled, path: &'a Path, entry: &'a str, tensor: F) -> Self {
        Converter {
            unpickled,
            tensor,
            path,
            entry,
            budget: unpickled
                .arena
                .len()
                .saturating_mul(2)
                .saturating_add(NODE_SLACK),
            tensors: HashMap::new(),
            on_stack: vec![false; unpickled.arena.len()],
        }
    }

    fn err(&self, problem: &'static str) -> Error {
        Error::Pickle {
            path: self.path.to_owned(),
            entry: self.entry.to_owned(),
            offset: 0,
            problem,
        }
    }

    /// Converts the root object.
    pub(crate) fn root(&mut self) -> Result<Value> {
        self.value(self.unpickled.root, 0)
    }

    /// Converts object `id`; a reference back to an object being
    /// converted (a cycle) becomes the string [`RECURSIVE`].
    pub(crate) fn value(&mut self, id: Id, depth: usize) -> Result<Value> {
        if self.on_stack[id] {
            return Ok(Value::Str(RECURSIVE.to_owned()));
        }
        self.on_stack[id] = true;
        let value = self.value_of(id, depth);
        self.on_stack[id] = false;
        value
    }

    /// One level of the recursion: checks, then a container's own helper.
    /// Kept to a dispatch so that its frame stays small (the recursion
    /// goes through it at every level; MAX_DEPTH levels must fit a 2 MiB
    /// thread stack in a debug build).
    #[inline(never)]
    fn value_of(&mut self, id: Id, depth: usize) -> Result<Value> {
        self.enter(id, depth)?;
        match &self.unpickled.arena[id] {
            Obj::List(items) | Obj::Tuple(items) => self.sequence(id, items, depth),
            Obj::Dict(pairs) => self.dict(pairs, depth),
            Obj::Tensor(t) => self.tensor(id, t),
            Obj::QTensor(..) => self.lone_quantized(id, depth),
            Obj::NdArray { .. } | Obj::Object { .. } => self.object_or_array(id, depth),
            _ => self.scalar(id),
        }
    }

    /// The depth limit and the budgets, charged for object `id`.
    #[inline(never)]
    fn enter(&mut self, id: Id, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(self.err("the data nests too deeply"));
        }
        self.budget = self
            .budget
            .checked_sub(1)
            .ok_or_else(|| self.err("the data expands to too many values (shared references)"))?;
        // Copies of strings, bytes and tensor shapes cost bytes too.
        let cost = match &self.unpickled.arena[id] {
            Obj::Str(s) => s.len(),
            Obj::Bytes(b) => b.len(),
            Obj::Global(g) => g.0.len() + g.1.len() + 1,
            Obj::NpDtype { code, .. } => code.len(),
            Obj::Tensor(t) | Obj::QTensor(t, _) => t.shape.len() * 8,
            Obj::Dict(pairs) => pairs.len() * std::mem::size_of::<(Key, Value)>(),
            Obj::List(items) | Obj::Tuple(items) => items.len() * std::mem::size_of::<Value>(),
            _ => 0,
        };
        self.unpickled.budget.charge(cost, self.path, self.entry)
    }

    /// A value that holds no other object.
    #[inline(never)]
    fn scalar(&self, id: Id) -> Result<Value> {
        Ok(match &self.unpickled.arena[id] {
            Obj::None => Value::None,
            Obj::Bool(b) => Value::Bool(*b),
            Obj::Int(i) => Value::Int(*i),
            Obj::Float(f) => Value::Float(*f),
            Obj::Str(s) => Value::Str(s.clone()),
            Obj::Bytes(b) => Value::Bytes(b.clone()),
            Obj::Dtype(d) => Value::Str(d.torch_name().to_owned()),
            // A class or function named as a value (a defaultdict's
            // factory, an activation function): its name.
            Obj::Global(g) => Value::Str(format!("{}.{}", g.0, g.1)),
            Obj::NpDtype { code, .. } => Value::Str(
                numpy_dtype(code).map_or_else(|| code.clone(), |d| d.torch_name().to_owned()),
            ),
            Obj::Storage(_) => return Err(self.err("a bare storage outside a tensor")),
            _ => return Err(self.err("a container where a plain value was expected")),
        })
    }

    #[inline(never)]
    fn sequence(&mut self, id: Id, items: &[Id], depth: usize) -> Result<Value> {
        if self.any_quantized(items) {
            return self.positional(items, depth);
        }
        let values = self.values(items, depth)?;
        Ok(match self.unpickled.arena[id] {
            Obj::Tuple(_) => Value::Tuple(values),
            _ => Value::List(values),
        })
    }

    /// A quantized tensor on its own: named `tensor`, its scales beside.
    #[inline(never)]
    fn lone_quantized(&mut self, id: Id, depth: usize) -> Result<Value> {
        let mut dict = Dict::new();
        self.quantized(Key::from("tensor"), id, depth, &mut dict)?;
        Ok(Value::Dict(dict))
    }

    /// A NumPy array as a tensor, or an inert object.
    #[inline(never)]
    fn object_or_array(&mut self, id: Id, depth: usize) -> Result<Value> {
        if let Obj::NdArray { state: Some(s) } = self.unpickled.arena[id] {
            if let Some(tensor) = self.ndarray(s) {
                return Ok(Value::Tensor(tensor?));
            }
        }
        self.object(id, depth)
    }

    #[inline(never)]
    fn dict(&mut self, pairs: &[(Id, Id)], depth: usize) -> Result<Value> {
        let arena = &self.unpickled.arena;
        self.check_sibling_names(pairs)?;
        let mut dict = Dict::with_capacity(pairs.len());
        for &(k, v) in pairs {
            let key = match &arena[k] {
                Obj::Str(s) => {
                    self.unpickled
                        .budget
                        .charge(s.len(), self.path, self.entry)?;
                    Key::Str(s.clone())
                }
                Obj::Int(i) => Key::Int(*i),
                Obj::Bool(b) => Key::Int(*b as i64),
                _ => return Err(self.err("a dict key is neither a string nor an integer")),
            };
            if matches!(arena[v], Obj::QTensor(..)) {
                self.quantized(key, v, depth, &mut dict)?;
                continue;
            }
            let value = self.value(v, depth + 1)?;
            // Python semantics: a repeated key keeps its first position and
            // takes the last value.
            dict.insert(key, value);
        }
        Ok(Value::Dict(dict))
    }

    /// Refuses a dict in which a quantized tensor's scale, zero point or
    /// axis would take the name of an entry it already has.
    fn check_sibling_names(&self, pairs: &[(Id, Id)]) -> Result<()> {
        let arena = &self.unpickled.arena;
        let quantized = pairs
            .iter()
            .filter(|&&(_, v)| matches!(arena[v], Obj::QTensor(..)));
        let name = |k: Id| match &arena[k] {
            Obj::Str(s) => Some(s.clone()),
            Obj::Int(i) => Some(i.to_string()),
            _ => None,
        };
        let mut taken: Option<std::collections::HashSet<String>> = None;
        for &(k, _) in quantized {
            let taken =
                taken.get_or_insert_with(|| pairs.iter().filter_map(|&(k, _)| name(k)).collect());
            let Some(base) = name(k) else { continue };
            if ["_scale", "_zero_point", "_axis"]
                .iter()
                .any(|suffix| taken.contains(&format!("{base}{suffix}")))
            {
                return Err(self.err(
                    "a quantized tensor's scale or zero point would take the name of another entry of its dict",
                ));
            }
        }
        Ok(())
    }

    fn any_quantized(&self, items: &[Id]) -> bool {
        items
            .iter()
            .any(|&i| matches!(self.unpickled.arena[i], Obj::QTensor(..)))
    }

    /// A list or tuple holding quantized tensors, as a dict keyed by
    /// position so that their scales can sit beside them (flattened names
    /// stay those of the list).
    #[inline(never)]
    fn positional(&mut self, items: &[Id], depth: usize) -> Result<Value> {
        let mut dict = Dict::with_capacity(items.len());
        for (i, &item) in items.iter().enumerate() {
            let key = Key::Int(i as i64);
            if matches!(self.unpickled.arena[item], Obj::QTensor(..)) {
                self.quantized(key, item, depth, &mut dict)?;
            } else {
                dict.insert(key, self.value(item, depth + 1)?);
            }
        }
        Ok(Value::Dict(dict))
    }

    /// A quantized tensor under `key`: its integers, then `{key}_scale`,
    /// `{key}_zero_point` (absent for int8 with zero points all 0: ckpt's
    /// own int8 layout) and `{key}_axis` (per channel along another
    /// dimension than 0), all tensors. A per-tensor scale is float32, as
    /// torch computes with it.
    #[inline(never)]
    fn quantized(&mut self, key: Key, id: Id, depth: usize, dict: &mut Dict) -> Result<()> {
        let Obj::QTensor(int, scheme) = &self.unpickled.arena[id] else {
            return Err(self.err("a quantized tensor expected"));
        };
        let int = match self.tensors.get(&id) {
            Some(done) => done.clone(),
            None => {
                let data = (self.tensor)(int)?;
                self.tensors.insert(id, data.clone());
                data
            }
        };
        let scalar = |dtype, bytes: Vec<u8>| TensorData::new(dtype, Vec::new(), bytes);
        let (scale, zero_point, axis) = match **scheme {
            QScheme::PerTensor { scale, zero_point } => (
                scalar(DType::F32, (scale as f32).to_le_bytes().to_vec())?,
                scalar(DType::I64, zero_point.to_le_bytes().to_vec())?,
                0,
            ),
            QScheme::PerChannel {
                scales,
                zero_points,
                axis,
            } => match (
                self.value(scales, depth + 1)?,
                self.value(zero_points, depth + 1)?,
            ) {
                (Value::Tensor(s), Value::Tensor(z)) => (s, z, axis),
                _ => return Err(self.err("a quantized tensor's scales are not tensors")),
            },
        };
        let symmetric_int8 = int.dtype() == DType::I8 && zero_point.values_f64().all(|z| z == 0.0);
        dict.insert(key.clone(), Value::Tensor(int));
        dict.insert(Key::Str(format!("{key}_scale")), Value::Tensor(scale));
        if !symmetric_int8 {
            dict.insert(
                Key::Str(format!("{key}_zero_point")),
                Value::Tensor(zero_point),
            );
        }
        if axis != 0 {
            let axis = scalar(DType::I64, (axis as i64).to_le_bytes().to_vec())?;
            dict.insert(Key::Str(format!("{key}_axis")), Value::Tensor(axis));
        }
        Ok(())
    }

    #[inline(never)]
    fn tensor(&mut self, id: Id, t: &TensorRef) -> Result<Value> {
        if let Some(done) = self.tensors.get(&id) {
            return Ok(Value::Tensor(done.clone()));
        }
        let data = (self.tensor)(t)?;
        self.tensors.insert(id, data.clone());
        Ok(Value::Tensor(data))
    }

    fn values(&mut self, items: &[Id], depth: usize) -> Result<Vec<Value>> {
        items.iter().map(|&i| self.value(i, depth + 1)).collect()
    }

    /// An inert object (or an array ckpt cannot read as a tensor).
    #[inline(never)]
    fn object(&mut self, id: Id, depth: usize) -> Result<Value> {
        let arena = &self.unpickled.arena;
        let (class, args, state) = match &arena[id] {
            Obj::Object { class, args, state } => {
                (format!("{}.{}", class.0, class.1), *args, *state)
            }
            Obj::NdArray { state } => ("numpy.ndarray".to_owned(), None, *state),
            _ => return Err(self.err("an object expected")),
        };
        let args = match args {
            Some(a) => match &arena[a] {
                Obj::Tuple(items) => self.values(items, depth)?,
                _ => vec![self.value(a, depth + 1)?],
            },
            None => Vec::new(),
        };
        let state = match state {
            Some(s) => self.value(s, depth + 1)?,
            None => Value::None,
        };
        self.unpickled
            .budget
            .charge(class.len(), self.path, self.entry)?;
        Ok(Value::Object(Box::new(PyObject { class, args, state })))
    }

    /// A NumPy array from its `BUILD` state `(version, shape, dtype,
    /// fortran_order, raw bytes)`; `None` when it is not a numeric array
    /// ckpt knows (object or string arrays stay objects).
    fn ndarray(&self, state: Id) -> Option<Result<TensorData>> {
        let arena = &self.unpickled.arena;
        let Obj::Tuple(parts) = &arena[state] else {
            return None;
        };
        let [_, shape, dtype, fortran, raw] = parts[..] else {
            return None;
        };
        let (Obj::Tuple(dims), Obj::NpDtype { code, big_endian }, Obj::Bytes(raw)) =
            (&arena[shape], &arena[dtype], &arena[raw])
        else {
            return None;
        };
        let dtype = numpy_dtype(code)?;
        let fortran = matches!(arena[fortran], Obj::Bool(true));
        Some(self.array(dims, dtype, *big_endian, fortran, raw))
    }

    fn array(
        &self,
        dims: &[Id],
        dtype: crate::DType,
        big_endian: bool,
        fortran: bool,
        raw: &[u8],
    ) -> Result<TensorData> {
        let arena = &self.unpickled.arena;
        if dims.len() > MAX_DIMS {
            return Err(self.err("a NumPy array has more than 64 dimensions"));
        }
        let shape: Vec<usize> = dims
            .iter()
            .map(|&d| match arena[d] {
                Obj::Int(n) => usize::try_from(n).ok(),
                _ => None,
            })
            .collect::<Option<_>>()
            .ok_or_else(|| self.err("a NumPy array's shape is not a tuple of sizes"))?;
        let len = crate::byte_len(dtype, &shape)
            .ok_or_else(|| self.err("a NumPy array's size overflows"))?;
        if len != raw.len() as u64 {
            return Err(self.err("a NumPy array's bytes are not the length its shape needs"));
        }
        self.unpickled
            .budget
            .charge(raw.len(), self.path, self.entry)?;
        let mut bytes = if fortran && shape.len() > 1 {
            super::super::column_major_to_row_major(raw, &shape, dtype.size())
        } else {
            raw.to_vec()
        };
        if big_endian && dtype.size() > 1 {
            let swap = if matches!(dtype, crate::DType::C64 | crate::DType::C128) {
                dtype.size() / 2
            } else {
                dtype.size()
            };
            bytes.chunks_exact_mut(swap).for_each(<[u8]>::reverse);
        }
        TensorData::new(dtype, shape, bytes)
    }
}
