//! [`StateDict`] and the naming rule that flattens a [`Value`] tree into
//! named tensors and back.
//!
//! The rule (DESIGN.md): a tensor's name is the keys on its path from the
//! root joined by `/`, list and tuple positions written as their index
//! (`optimizer_state_dict/state/0/exp_avg`). A flat state dict at the top
//! level keeps its own names (`fc1.weight`). Every tool that shows or
//! writes a flat list of tensors uses this rule, so a tensor has the same
//! name everywhere.

use std::ops::{Deref, DerefMut};

use indexmap::IndexMap;

use crate::{Dict, Error, Key, Result, TensorData, Value};

/// The separator between the levels of a flattened name.
pub const SEPARATOR: char = '/';

/// An ordered map from tensor name to tensor: what `model.state_dict()` is.
///
/// It dereferences to an [`IndexMap`], so `insert`, `get`, `iter` and
/// friends work as usual and keep insertion order.
///
/// ```
/// use ckpt::{StateDict, TensorData, Value};
/// let mut sd = StateDict::new();
/// sd.insert("fc1.weight".into(), TensorData::from_f32(&[2, 1], &[0.5, -0.5]).unwrap());
/// let value: Value = sd.clone().into();
/// assert_eq!(StateDict::try_from(&value).unwrap(), sd);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateDict(IndexMap<String, TensorData>);

impl StateDict {
    /// An empty state dict.
    pub fn new() -> StateDict {
        StateDict::default()
    }

    /// Every tensor of a tree, named by the flattening rule. A flat dict of
    /// tensors flattens to itself; non-tensor leaves (ints, strings, ...) are
    /// skipped. Two paths that produce the same name are an error, and so is
    /// a tree deeper than [`tree::MAX_DEPTH`](crate::tree::MAX_DEPTH).
    pub fn flatten(value: &Value) -> Result<StateDict> {
        let mut out = StateDict::new();
        flatten_into(value, &mut String::new(), 0, &mut out)?;
        Ok(out)
    }

    /// Rebuilds nested dicts from flattened names: each name is split at `/`
    /// and segments that are decimal integers become integer keys. This
    /// undoes [`StateDict::flatten`] for trees of dicts; lists, tuples and
    /// non-tensor leaves need the tree that ckpt stores beside the tensors.
    pub fn unflatten(&self) -> Result<Value> {
        let mut root = Dict::new();
        for (name, tensor) in self.iter() {
            let mut level = &mut root;
            let mut segments = name.split(SEPARATOR).peekable();
            while let Some(segment) = segments.next() {
                let key = key_from_segment(segment);
                if segments.peek().is_none() {
                    if level.insert(key, Value::Tensor(tensor.clone())).is_some() {
                        return Err(Error::DuplicateName { name: name.clone() });
                    }
                    break;
                }
                let entry = level.entry(key).or_insert_with(|| Value::Dict(Dict::new()));
                match entry {
                    Value::Dict(dict) => level = dict,
                    _ => return Err(Error::DuplicateName { name: name.clone() }),
                }
            }
        }
        Ok(Value::Dict(root))
    }

    /// Inserts a tensor under a name not yet present; a repeated name is
    /// [`Error::DuplicateName`].
    pub(crate) fn insert_new(&mut self, name: &str, tensor: &TensorData) -> Result<()> {
        if self.insert(name.to_owned(), tensor.clone()).is_some() {
            return Err(Error::DuplicateName {
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    /// The total number of elements of all tensors.
    pub fn total_params(&self) -> u64 {
        self.values().map(|t| t.numel() as u64).sum()
    }

    /// The total number of bytes of all tensors.
    pub fn total_bytes(&self) -> u64 {
        self.values().map(|t| t.bytes().len() as u64).sum()
    }
}

/// Appends one level to a flattened name and returns the length to
/// truncate back to afterwards.
pub(crate) fn push_level(path: &mut String, label: &dyn std::fmt::Display) -> usize {
    let len = path.len();
    if !path.is_empty() {
        path.push(SEPARATOR);
    }
    use std::fmt::Write;
    let _ = write!(path, "{label}");
    len
}

fn flatten_into(value: &Value, path: &mut String, depth: usize, out: &mut StateDict) -> Result<()> {
    if depth > crate::tree::MAX_DEPTH {
        return Err(Error::TreeTooDeep {
            limit: crate::tree::MAX_DEPTH,
        });
    }
    let mut child = |label: &dyn std::fmt::Display, v: &Value, path: &mut String| {
        let len = push_level(path, label);
        let result = flatten_into(v, path, depth + 1, out);
        path.truncate(len);
        result
    };
    match value {
        Value::Tensor(t) => out.insert_new(path, t)?,
        Value::Dict(dict) => {
            for (key, v) in dict {
                child(key, v, path)?;
            }
        }
        Value::List(items) | Value::Tuple(items) => {
            for (i, v) in items.iter().enumerate() {
                child(&i, v, path)?;
            }
        }
        // Tensors inside a Python object: named as its plain dict
        // (PyObject::to_plain) names them, without copying it.
        Value::Object(o) => {
            if !o.args.is_empty() {
                let len = push_level(path, &"__args__");
                for (i, v) in o.args.iter().enumerate() {
                    child(&i, v, path)?;
                }
                path.truncate(len);
            }
            match (o.inlined_state(), &o.state) {
                (Some(state), _) => {
                    for (key, v) in state {
                        child(key, v, path)?;
                    }
                }
                (None, Value::None) => {}
                (None, state) => child(&"__state__", state, path)?,
            }
        }
        _ => {}
    }
    Ok(())
}

fn key_from_segment(segment: &str) -> Key {
    match segment.parse::<i64>() {
        Ok(i) if i.to_string() == segment => Key::Int(i),
        _ => Key::from(segment),
    }
}

impl Deref for StateDict {
    type Target = IndexMap<String, TensorData>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for StateDict {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl FromIterator<(String, TensorData)> for StateDict {
    fn from_iter<I: IntoIterator<Item = (String, TensorData)>>(iter: I) -> StateDict {
        StateDict(iter.into_iter().collect())
    }
}

impl IntoIterator for StateDict {
    type Item = (String, TensorData);
    type IntoIter = indexmap::map::IntoIter<String, TensorData>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl From<StateDict> for Value {
    /// A dict with string keys and tensor values.
    fn from(sd: StateDict) -> Value {
        Value::Dict(
            sd.into_iter()
                .map(|(name, t)| (Key::Str(name), Value::Tensor(t)))
                .collect(),
        )
    }
}

impl TryFrom<&Value> for StateDict {
    type Error = Error;

    /// Accepts only a flat dict whose values are all tensors (integer keys
    /// become their decimal names). Use [`StateDict::flatten`] for any tree.
    fn try_from(value: &Value) -> Result<StateDict> {
        let Value::Dict(dict) = value else {
            return Err(Error::NotAStateDict {
                at: "the top level".into(),
                found: value.kind(),
            });
        };
        dict.iter()
            .map(|(key, child)| match child {
                Value::Tensor(t) => Ok((key.to_string(), t.clone())),
                other => Err(Error::NotAStateDict {
                    at: key.to_string(),
                    found: other.kind(),
                }),
            })
            .collect()
    }
}

/// True when `value` is a flat dict from string keys to tensors: the shape
/// that round-trips through a plain tensor file without any extra tree.
pub fn is_plain_state_dict(value: &Value) -> bool {
    match value {
        Value::Dict(dict) => dict
            .iter()
            .all(|(key, child)| matches!((key, child), (Key::Str(_), Value::Tensor(_)))),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: f32) -> TensorData {
        TensorData::from_f32(&[1], &[v]).unwrap()
    }

    fn checkpoint() -> Value {
        let mut exp_avg = Dict::new();
        exp_avg.insert("exp_avg".into(), t(1.0).into());
        let mut state = Dict::new();
        state.insert(Key::Int(0), Value::Dict(exp_avg));
        let mut opt = Dict::new();
        opt.insert("state".into(), Value::Dict(state));
        let mut model = Dict::new();
        model.insert("fc1.weight".into(), t(2.0).into());
        let mut root = Dict::new();
        root.insert("epoch".into(), Value::Int(4));
        root.insert("model_state_dict".into(), Value::Dict(model));
        root.insert("optimizer_state_dict".into(), Value::Dict(opt));
        root.insert("history".into(), Value::List(vec![t(3.0).into()]));
        Value::Dict(root)
    }

    #[test]
    fn nested_names_join_levels_with_slashes() {
        let sd = StateDict::flatten(&checkpoint()).unwrap();
        let names: Vec<_> = sd.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "model_state_dict/fc1.weight",
                "optimizer_state_dict/state/0/exp_avg",
                "history/0"
            ]
        );
    }

    #[test]
    fn flat_state_dict_keeps_its_names() {
        let mut sd = StateDict::new();
        sd.insert("fc1.weight".into(), t(1.0));
        sd.insert("fc1.bias".into(), t(2.0));
        let value = Value::from(sd.clone());
        assert!(is_plain_state_dict(&value));
        assert_eq!(StateDict::flatten(&value).unwrap(), sd);
    }

    #[test]
    fn unflatten_restores_nested_dicts_with_int_keys() {
        let mut value = checkpoint();
        if let Value::Dict(root) = &mut value {
            root.shift_remove(&Key::from("epoch"));
            root.shift_remove(&Key::from("history"));
        }
        let sd = StateDict::flatten(&value).unwrap();
        assert_eq!(sd.unflatten().unwrap(), value);
    }

    #[test]
    fn colliding_names_are_an_error() {
        let mut inner = Dict::new();
        inner.insert("b".into(), t(1.0).into());
        let mut root = Dict::new();
        root.insert("a/b".into(), t(2.0).into());
        root.insert("a".into(), Value::Dict(inner));
        let err = StateDict::flatten(&Value::Dict(root)).unwrap_err();
        assert!(matches!(err, Error::DuplicateName { name } if name == "a/b"));
    }

    #[test]
    fn a_name_that_is_also_a_prefix_cannot_unflatten() {
        let sd: StateDict = [("a".to_string(), t(1.0)), ("a/b".to_string(), t(2.0))]
            .into_iter()
            .collect();
        assert!(matches!(sd.unflatten(), Err(Error::DuplicateName { .. })));
    }

    #[test]
    fn try_from_rejects_nested_values_naming_the_key() {
        let err = StateDict::try_from(&checkpoint()).unwrap_err();
        assert!(matches!(err, Error::NotAStateDict { at, found: "int" } if at == "epoch"));
    }

    #[test]
    fn leading_zero_segments_stay_strings() {
        assert_eq!(key_from_segment("007"), Key::from("007"));
        assert_eq!(key_from_segment("-3"), Key::Int(-3));
    }
}
