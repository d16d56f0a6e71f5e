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
            other => other.clone(),
        })
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
            _ => false,
        }
    }
}

impl From<TensorData> for Value {
    fn from(t: TensorData) -> Value {
        Value::Tensor(t)
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
