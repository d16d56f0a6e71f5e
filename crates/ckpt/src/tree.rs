//! The ckpt tree: a [`Value`]'s structure as JSON, with each tensor replaced
//! by its flattened name, so a flat tensor file can carry a whole checkpoint.
//!
//! Encoding (one JSON value per node):
//!
//! | value | JSON |
//! |---|---|
//! | `None`, `Bool`, `Int`, `Str` | `null`, `true`/`false`, an integer, a string |
//! | `Float` | `{"float": "0.1"}`: Rust's shortest round-trip form; NaN as `"nan:<16 hex digits of its bits>"` |
//! | `Bytes` | `{"bytes": "<hex>"}` |
//! | `List`, `Tuple` | `{"list": [...]}`, `{"tuple": [...]}` |
//! | `Dict` | `{"dict": [[key, value], ...]}`, keys strings or integers, in order |
//! | `Tensor` | `{"tensor": "<flattened name>"}` |
//! | `Object` | `{"object": <its plain dict>}` ([`PyObject::to_plain`]) |
//!
//! Floats survive bit for bit; decoding never trusts a name that the file
//! does not hold.

use std::path::Path;

use indexmap::IndexMap;
use serde_json::{json, Value as Json};

use crate::state_dict::push_level;
use crate::{Dict, Error, Key, PyObject, Result, StateDict, TensorData, Value};

/// The deepest tree ckpt writes: deeper trees would exceed the JSON
/// parser's nesting limit (128) when read back.
pub const MAX_DEPTH: usize = 40;

/// Encodes `value`, naming tensors by the flattening rule, and returns the
/// JSON and the named tensors in tree order.
pub(crate) fn encode(value: &Value) -> Result<(Json, StateDict)> {
    let mut tensors = StateDict::new();
    let json = encode_node(value, &mut String::new(), 0, &mut tensors)?;
    Ok((json, tensors))
}

fn encode_node(
    value: &Value,
    path: &mut String,
    depth: usize,
    out: &mut StateDict,
) -> Result<Json> {
    if depth > MAX_DEPTH {
        return Err(Error::TreeTooDeep { limit: MAX_DEPTH });
    }
    let mut child = |label: &dyn std::fmt::Display, v: &Value, path: &mut String| {
        let len = push_level(path, label);
        let json = encode_node(v, path, depth + 1, out);
        path.truncate(len);
        json
    };
    Ok(match value {
        Value::None => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!({ "float": float_to_string(*f) }),
        Value::Str(s) => json!(s),
        Value::Bytes(b) => json!({ "bytes": to_hex(b) }),
        Value::List(items) | Value::Tuple(items) => {
            let encoded = items
                .iter()
                .enumerate()
                .map(|(i, v)| child(&i, v, path))
                .collect::<Result<Vec<_>>>()?;
            let tag = if matches!(value, Value::List(_)) {
                "list"
            } else {
                "tuple"
            };
            json!({ tag: encoded })
        }
        Value::Dict(dict) => {
            let pairs = dict
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Key::Str(s) => json!(s),
                        Key::Int(i) => json!(i),
                    };
                    Ok(json!([key, child(k, v, path)?]))
                })
                .collect::<Result<Vec<_>>>()?;
            json!({ "dict": pairs })
        }
        Value::Tensor(t) => {
            out.insert_new(path, t)?;
            json!({ "tensor": path })
        }
        // Tensors inside an object are named as its plain dict names them,
        // as flattening does.
        Value::Object(o) => json!({ "object": encode_node(&o.to_plain(), path, depth + 1, out)? }),
    })
}

/// Rebuilds a tree, taking each referenced tensor out of `tensors`. Every
/// tensor of the file must be referenced exactly once, so none is dropped
/// silently.
pub(crate) fn decode(
    json: &Json,
    mut tensors: IndexMap<String, TensorData>,
    file: &Path,
) -> Result<Value> {
    let value = decode_node(json, &mut tensors, file, &mut String::new())?;
    if let Some(name) = tensors.keys().next() {
        return Err(bad(file, name, "tensor is in the file but not in the tree"));
    }
    Ok(value)
}

fn bad(file: &Path, at: &str, problem: &'static str) -> Error {
    Error::BadTree {
        path: file.to_owned(),
        at: if at.is_empty() {
            "the root".into()
        } else {
            at.to_owned()
        },
        problem,
    }
}

fn decode_node(
    json: &Json,
    tensors: &mut IndexMap<String, TensorData>,
    file: &Path,
    at: &mut String,
) -> Result<Value> {
    // The path grows and shrinks as the walk goes, so building it costs
    // the length of each label, not of the whole path per child.
    let child = |label: &dyn std::fmt::Display,
                 item: &Json,
                 at: &mut String,
                 tensors: &mut IndexMap<String, TensorData>| {
        let len = push_level(at, label);
        let value = decode_node(item, tensors, file, at);
        at.truncate(len);
        value
    };
    Ok(match json {
        Json::Null => Value::None,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => Value::Int(
            n.as_i64()
                .ok_or_else(|| bad(file, at, "number is not a 64-bit integer"))?,
        ),
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(_) => return Err(bad(file, at, "bare array; lists are {\"list\": [...]}")),
        Json::Object(map) => {
            let mut entries = map.iter();
            let (Some((tag, inner)), None) = (entries.next(), entries.next()) else {
                return Err(bad(file, at, "object must have exactly one tag"));
            };
            match (tag.as_str(), inner) {
                ("float", Json::String(s)) => Value::Float(
                    float_from_string(s).ok_or_else(|| bad(file, at, "float is not a number"))?,
                ),
                ("bytes", Json::String(s)) => {
                    Value::Bytes(from_hex(s).ok_or_else(|| bad(file, at, "bytes are not hex"))?)
                }
                ("list" | "tuple", Json::Array(items)) => {
                    let values = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| child(&i, item, at, tensors))
                        .collect::<Result<Vec<_>>>()?;
                    if tag == "list" {
                        Value::List(values)
                    } else {
                        Value::Tuple(values)
                    }
                }
                ("dict", Json::Array(pairs)) => {
                    let mut dict = Dict::with_capacity(pairs.len().min(1 << 16));
                    for pair in pairs {
                        let (key, item) = match pair.as_array().map(Vec::as_slice) {
                            Some([Json::String(s), item]) => (Key::Str(s.clone()), item),
                            Some([Json::Number(n), item]) if n.as_i64().is_some() => {
                                (Key::Int(n.as_i64().unwrap_or_default()), item)
                            }
                            _ => {
                                return Err(bad(file, at, "dict entry is not a [key, value] pair"))
                            }
                        };
                        let value = child(&key, item, at, tensors)?;
                        if dict.insert(key, value).is_some() {
                            return Err(bad(file, at, "dict has a repeated key"));
                        }
                    }
                    Value::Dict(dict)
                }
                ("tensor", Json::String(name)) => {
                    // swap_remove: O(1), so a tree naming n tensors decodes in O(n).
                    Value::Tensor(tensors.swap_remove(name).ok_or_else(|| {
                        bad(
                            file,
                            at,
                            "names a tensor the file does not hold (or names it twice)",
                        )
                    })?)
                }
                ("object", plain) => {
                    let plain = decode_node(plain, tensors, file, at)?;
                    PyObject::from_plain(plain)
                        .ok_or_else(|| bad(file, at, "object is not a dict with a __class__"))?
                }
                _ => return Err(bad(file, at, "unknown tag or wrongly typed contents")),
            }
        }
    })
}

fn float_to_string(f: f64) -> String {
    if f.is_nan() {
        format!("nan:{:016x}", f.to_bits())
    } else {
        format!("{f:?}")
    }
}

fn float_from_string(s: &str) -> Option<f64> {
    match s.strip_prefix("nan:") {
        Some(bits) if bits.len() == 16 => {
            let f = f64::from_bits(u64::from_str_radix(bits, 16).ok()?);
            f.is_nan().then_some(f)
        }
        Some(_) => None,
        None => s.parse().ok().filter(|f: &f64| !f.is_nan()),
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_survive_bit_for_bit() {
        let odd_nan = f64::from_bits(0x7ff8_0000_0000_0001);
        for f in [
            0.1,
            -0.0,
            1e-310,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            odd_nan,
        ] {
            let back = float_from_string(&float_to_string(f)).unwrap();
            assert_eq!(back.to_bits(), f.to_bits(), "{f:?}");
        }
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        assert_eq!(from_hex(&to_hex(&[0, 255, 16])).unwrap(), vec![0, 255, 16]);
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é1"), None);
    }

    #[test]
    fn a_nan_tag_with_a_non_nan_payload_is_refused() {
        assert_eq!(float_from_string("nan:3ff0000000000000"), None);
        assert_eq!(float_from_string("NaN"), None);
    }

    #[test]
    fn unreferenced_tensor_is_an_error() {
        let mut tensors = IndexMap::new();
        tensors.insert("w".to_string(), TensorData::from_f32(&[1], &[1.0]).unwrap());
        let err = decode(&Json::Null, tensors, Path::new("f")).unwrap_err();
        assert!(err.to_string().contains("not in the tree"), "{err}");
    }

    #[test]
    fn too_deep_a_tree_is_refused_on_write() {
        let mut v = Value::None;
        for _ in 0..=MAX_DEPTH + 1 {
            v = Value::List(vec![v]);
        }
        assert!(matches!(encode(&v), Err(Error::TreeTooDeep { .. })));
    }
}
