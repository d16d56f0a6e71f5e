//! Helpers shared by the integration tests: fixture paths and the exact
//! descriptions of loaded values that the Python side writes too; the
//! checkpoint store's helpers in [`store`].
#![allow(dead_code)] // each test crate uses its own subset

pub mod store;

use std::path::{Path, PathBuf};

use ckpt::{Key, Value};
use serde_json::{json, Value as Json};

/// A file under the repository's `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// Bytes as lowercase hex, as the fixtures record them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The exact description `tests/interop/peer.py`'s `describe_tree` gives a
/// loaded tree: floats by their bits, tensors by dtype, shape and bytes,
/// tuples apart from lists, int keys apart from str keys.
pub fn describe_tree(v: &Value) -> Json {
    match v {
        Value::None => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!({"int": i.to_string()}),
        Value::Float(f) => json!({"float": format!("{:016x}", f.to_bits())}),
        Value::Str(s) => json!(s),
        Value::Bytes(b) => json!({"bytes": hex(b)}),
        Value::Tensor(t) => {
            json!({"tensor": {"dtype": t.dtype().torch_name(), "shape": t.shape(), "hex": hex(t.bytes())}})
        }
        Value::Tuple(items) => {
            json!({"tuple": items.iter().map(describe_tree).collect::<Vec<_>>()})
        }
        Value::List(items) => json!({"list": items.iter().map(describe_tree).collect::<Vec<_>>()}),
        Value::Dict(d) => json!({"dict": d.iter().map(|(k, v)| {
            let key = match k { Key::Str(s) => json!(s), Key::Int(i) => json!({"int": i.to_string()}) };
            json!([key, describe_tree(v)])
        }).collect::<Vec<_>>()}),
        Value::Object(o) => json!({"object": {
            "class": o.class,
            "args": o.args.iter().map(describe_tree).collect::<Vec<_>>(),
            "state": describe_tree(&o.state),
        }}),
    }
}

/// Asserts that `t` has the dtype (torch name), shape and bytes the
/// fixture's expected JSON records for tensor `name`.
pub fn assert_tensor(name: &str, t: &ckpt::TensorData, want: &Json) {
    assert_eq!(t.dtype().torch_name(), want["dtype"], "{name}");
    let shape: Vec<usize> = want["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(t.shape(), shape.as_slice(), "{name}");
    assert_eq!(hex(t.bytes()), want["hex"], "{name}");
}
