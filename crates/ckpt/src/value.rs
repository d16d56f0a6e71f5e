//! [`Value`]: the nested tree a checkpoint is.

use std::fmt;

use indexmap::IndexMap;

use crate::TensorData;

/// A dict key. PyTorch checkpoints use strings, and integers for optimizer
/// state (`state[0]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A string key.
    Str(String),
    /// An integer key.
    Int(i64),
}

impl fmt::Display for Key {
    /// Strings as they are, integers in decimal: the form used in flattened
    /// tensor names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Str(s) => f.write_str(s),
            Key::Int(i) => write!(f, "{i}"),
        }
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key::Str(s.to_owned())
    }
}

impl From<String> for Key {
    fn from(s: String) -> Key {
        Key::Str(s)
    }
}

impl From<i64> for Key {
    fn from(i: i64) -> Key {
        Key::Int(i)
    }
}

/// An ordered dict: keys keep their insertion order.
pub type Dict = IndexMap<Key, Value>;

/// What a checkpoint holds: anything `torch.load(weights_only=True)` can
/// return, as plain data.
///
/// Equality is exact: floats compare by their bits (so `NaN == NaN` when the
/// bits agree and `0.0 != -0.0`), dicts compare in order, tensors byte by
/// byte.
///
/// ```
/// use ckpt::{Dict, Value, TensorData};
/// let mut state = Dict::new();
/// state.insert("epoch".into(), Value::Int(3));
/// state.insert("loss".into(), Value::Float(0.25));
/// state.insert("w".into(), TensorData::from_f32(&[2], &[1.0, 2.0]).unwrap().into());
/// let checkpoint = Value::Dict(state);
/// assert_eq!(checkpoint.get("epoch"), Some(&Value::Int(3)));
/// ```
#[derive(Debug, Clone)]
pub enum Value {
    /// Python `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A double-precision float.
    Float(f64),
    /// A string.
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Value>),
    /// A tuple (PyTorch keeps `betas` as one).
    Tuple(Vec<Value>),
    /// An ordered dict with string or integer keys.
    Dict(Dict),
    /// A tensor.
    Tensor(TensorData),
    /// A Python object that is not plain data (`argparse.Namespace`, a
    /// dataclass, an enum, an OmegaConf config): its class, the arguments
    /// it would be called with and the state it would be given, kept as
    /// inert data. ckpt never constructs it.
    Object(Box<PyObject>),
}

/// The keys [`PyObject::to_plain`] gives a meaning.
fn is_reserved(key: &Key) -> bool {
    matches!(key, Key::Str(s) if matches!(s.as_str(), "__class__" | "__args__" | "__state__"))
}

/// A Python object read from a pickle and never constructed: what
/// `torch.load(weights_only=False)` would build from `class(*args)` and
/// then `__setstate__(state)` (or `__dict__.update(state)`).
///
/// ```
/// use ckpt::{Dict, PyObject, Value};
/// let mut state = Dict::new();
/// state.insert("lr".into(), Value::Float(0.1));
/// let args = PyObject::new("argparse.Namespace", vec![], Value::Dict(state));
/// assert_eq!(args.to_plain().get("__class__"), Some(&Value::Str("argparse.Namespace".into())));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PyObject {
    /// `module.QualifiedName`, as the pickle names it.
    pub class: String,
    /// The arguments of the call that creates it (`NEWOBJ`/`REDUCE`).
    pub args: Vec<Value>,
    /// The state `BUILD` gives it, `Value::None` when there is none.
    pub state: Value,
}

impl PyObject {
    /// An object of `class` with these arguments and state.
    pub fn new(class: impl Into<String>, args: Vec<Value>, state: Value) -> PyObject {
        PyObject {
            class: class.into(),
            args,
            state,
        }
    }

    /// The object as a plain dict: `__class__`, then `__args__` when there
    /// are arguments, then the state's entries when it is a non-empty dict
    /// whose keys do not collide with those two, else `__state__` (absent
    /// when there is no state). [`PyObject::from_plain`] undoes it exactly. This is what
    /// formats without objects store (a `.pth` ckpt writes stays loadable
    /// with `weights_only=True`).
    pub fn to_plain(&self) -> Value {
        let mut dict = Dict::new();
        dict.insert("__class__".into(), Value::Str(self.class.clone()));
        if !self.args.is_empty() {
            dict.insert("__args__".into(), Value::Tuple(self.args.clone()));
        }
        match (self.inlined_state(), &self.state) {
            (Some(state), _) => dict.extend(state.iter().map(|(k, v)| (k.clone(), v.clone()))),
            (None, Value::None) => {}
            (None, other) => {
                dict.insert("__state__".into(), other.clone());
            }
        }
        Value::Dict(dict)
    }

    /// The state's entries when [`PyObject::to_plain`] puts them at the
    /// top level of the plain dict (a non-empty dict without reserved keys).
    pub(crate) fn inlined_state(&self) -> Option<&Dict> {
        match &self.state {
            Value::Dict(state) if !state.is_empty() && !state.keys().any(is_reserved) => {
                Some(state)
            }
            _ => None,
        }
    }

    /// The object a plain dict made by [`PyObject::to_plain`] stands for;
    /// `None` when `plain` is not such a dict.
    pub fn from_plain(plain: Value) -> Option<Value> {
        let Value::Dict(mut dict) = plain else {
            return None;
        };
        let Some(Value::Str(class)) = dict.shift_remove(&Key::from("__class__")) else {
            return None;
        };
        let args = match dict.shift_remove(&Key::from("__args__")) {
            Some(Value::Tuple(args)) => args,
            Some(_) => return None,
            None => Vec::new(),
        };
        let state = match dict.shift_remove(&Key::from("__state__")) {
            Some(state) if dict.is_empty() => state,
            Some(_) => return None,
            None if dict.is_empty() => Value::None,
            None => Value::Dict(dict),
        };
        Some(PyObject::new(class, args, state).into())
    }
}

impl Value {
    /// The kind of value, in words (`"dict"`, `"tensor"`, ...), for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Tensor(_) => "tensor",
            Value::Object(_) => "object",
        }
    }

    /// Looks up a string key when this is a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(dict) => dict.get(&Key::Str(key.to_owned())),
            _ => None,
        }
    }

    /// A copy with every tensor replaced by `f(tensor)`, the structure
    /// unchanged.
    pub fn try_map_tensors(
        &self,
        f: &mut impl FnMut(&TensorData) -> crate::Result<TensorData>,
    ) -> crate::Result<Value> {
        Ok(match self {
            Value::Tensor(t) => Value::Tensor(f(t)?),
            Value::List(items) => Value::List(
                items
                    .iter()
                    .map(|v| v.try_map_tensors(f))
                    .collect::<crate::Result<_>>()?,
            ),
            Value::Tuple(items) => Value::Tuple(
                items
                    .iter()
                    .map(|v| v.try_map_tensors(f))
                    .collect::<crate::Result<_>>()?,
            ),
            Value::Dict(dict) => Value::Dict(
                dict.iter()
                    .map(|(k, v)| Ok((k.clone(), v.try_map_tensors(f)?)))
                    .collect::<crate::Result<_>>()?,
            ),
            Value::Object(o) => Value::Object(Box::new(PyObject {
                class: o.class.clone(),
                args: o
                    .args
                    .iter()
                    .map(|v| v.try_map_tensors(f))
                    .collect::<crate::Result<_>>()?,
                state: o.state.try_map_tensors(f)?,
            })),
            other => other.clone(),
        })
    }

    /// Calls `f` with every tensor of the tree, in order.
    pub fn for_each_tensor<'a>(&'a self, f: &mut impl FnMut(&'a TensorData)) {
        match self {
            Value::Tensor(t) => f(t),
            Value::List(items) | Value::Tuple(items) => {
                items.iter().for_each(|v| v.for_each_tensor(f))
            }
            Value::Dict(dict) => dict.values().for_each(|v| v.for_each_tensor(f)),
            Value::Object(o) => {
                o.args.iter().for_each(|v| v.for_each_tensor(f));
                o.state.for_each_tensor(f);
            }
            _ => {}
        }
    }

    /// A copy where every Python object, at every level, is replaced by
    /// its plain dict ([`PyObject::to_plain`]), and how many were.
    pub fn without_objects(&self) -> (Value, usize) {
        let mut count = 0;
        let value = self.plain(&mut count);
        (value, count)
    }

    fn plain(&self, count: &mut usize) -> Value {
        let all = |items: &[Value], count: &mut usize| -> Vec<Value> {
            items.iter().map(|v| v.plain(count)).collect()
        };
        match self {
            Value::List(items) => Value::List(all(items, count)),
            Value::Tuple(items) => Value::Tuple(all(items, count)),
            Value::Dict(dict) => Value::Dict(
                dict.iter()
                    .map(|(k, v)| (k.clone(), v.plain(count)))
                    .collect(),
            ),
            Value::Object(o) => {
                *count += 1;
                o.to_plain().plain(count)
            }
            other => other.clone(),
        }
    }

    /// True when a tensor appears anywhere in the tree.
    pub fn has_tensors(&self) -> bool {
        match self {
            Value::Tensor(_) => true,
            Value::List(items) | Value::Tuple(items) => items.iter().any(Value::has_tensors),
            Value::Dict(dict) => dict.values().any(Value::has_tensors),
            Value::Object(o) => o.args.iter().any(Value::has_tensors) || o.state.has_tensors(),
            _ => false,
        }
    }

    /// True when a Python object appears anywhere in the tree.
    pub fn has_objects(&self) -> bool {
        match self {
            Value::Object(_) => true,
            Value::List(items) | Value::Tuple(items) => items.iter().any(Value::has_objects),
            Value::Dict(dict) => dict.values().any(Value::has_objects),
            _ => false,
        }
    }

    /// A copy where every string dict key, at every level, that starts with
    /// `prefix` has it removed: `module.fc1.weight` -> `fc1.weight` for the
    /// prefix `module.` that `DataParallel` adds. Two keys of one dict that
    /// become the same are an error, so nothing is dropped.
    ///
    /// ```
    /// use ckpt::{Dict, Value};
    /// let mut d = Dict::new();
    /// d.insert("module.fc.bias".into(), Value::Int(1));
    /// let stripped = Value::Dict(d).strip_key_prefix("module.").unwrap();
    /// assert_eq!(stripped.get("fc.bias"), Some(&Value::Int(1)));
    /// ```
    pub fn strip_key_prefix(&self, prefix: &str) -> crate::Result<Value> {
        let strip_all = |items: &[Value]| {
            items
                .iter()
                .map(|v| v.strip_key_prefix(prefix))
                .collect::<crate::Result<Vec<_>>>()
        };
        Ok(match self {
            Value::List(items) => Value::List(strip_all(items)?),
            Value::Tuple(items) => Value::Tuple(strip_all(items)?),
            Value::Dict(dict) => {
                let mut out = Dict::with_capacity(dict.len());
                for (k, v) in dict {
                    let key = match k {
                        Key::Str(s) => Key::Str(s.strip_prefix(prefix).unwrap_or(s).to_owned()),
                        other => other.clone(),
                    };
                    if out.contains_key(&key) {
                        return Err(crate::Error::DuplicateName {
                            name: key.to_string(),
                        });
                    }
                    out.insert(key, v.strip_key_prefix(prefix)?);
                }
                Value::Dict(out)
            }
            other => other.clone(),
        })
    }

    /// The tensor, when this is one.
    pub fn as_tensor(&self) -> Option<&TensorData> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::None, Value::None) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::List(a), Value::List(b)) | (Value::Tuple(a), Value::Tuple(b)) => a == b,
            (Value::Dict(a), Value::Dict(b)) => a.len() == b.len() && a.iter().eq(b.iter()),
            (Value::Tensor(a), Value::Tensor(b)) => a == b,
            (Value::Object(a), Value::Object(b)) => a == b,
            _ => false,
        }
    }
}

impl From<TensorData> for Value {
    fn from(t: TensorData) -> Value {
        Value::Tensor(t)
    }
}

impl From<PyObject> for Value {
    fn from(o: PyObject) -> Value {
        Value::Object(Box::new(o))
    }
}

impl From<Dict> for Value {
    fn from(d: Dict) -> Value {
        Value::Dict(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_equality_is_bitwise() {
        assert_eq!(Value::Float(f64::NAN), Value::Float(f64::NAN));
        assert_ne!(Value::Float(0.0), Value::Float(-0.0));
    }

    #[test]
    fn dict_equality_respects_order() {
        let mut a = Dict::new();
        a.insert("x".into(), Value::Int(1));
        a.insert("y".into(), Value::Int(2));
        let mut b = Dict::new();
        b.insert("y".into(), Value::Int(2));
        b.insert("x".into(), Value::Int(1));
        assert_ne!(Value::Dict(a.clone()), Value::Dict(b));
        assert_eq!(Value::Dict(a.clone()), Value::Dict(a));
    }

    #[test]
    fn list_and_tuple_differ() {
        assert_ne!(Value::List(vec![]), Value::Tuple(vec![]));
    }

    #[test]
    fn int_and_string_keys_differ() {
        assert_ne!(Key::Int(0), Key::from("0"));
        assert_eq!(Key::Int(0).to_string(), "0");
    }
}
