//! The non-tensor parts of a checkpoint (epoch, loss, hyper-parameters),
//! found by path and rendered for people and for JSON.

use ckpt::{Key, PyObject, Value};
use serde_json::{json, Value as Json};

fn has_tensor(value: &Value) -> bool {
    match value {
        Value::Tensor(_) => true,
        Value::List(items) | Value::Tuple(items) => items.iter().any(has_tensor),
        Value::Dict(dict) => dict.values().any(has_tensor),
        Value::Object(o) => o.args.iter().any(has_tensor) || has_tensor(&o.state),
        _ => false,
    }
}

/// The parts of a tree that hold no tensor, by path: `epoch`, `loss`,
/// `optimizer_state_dict/param_groups/0/betas`.
pub fn collect_values(value: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    if !has_tensor(value) {
        if !path.is_empty() {
            out.push((path.to_owned(), value.clone()));
        }
        return;
    }
    let join = |label: &dyn std::fmt::Display| {
        if path.is_empty() {
            label.to_string()
        } else {
            format!("{path}{}{label}", ckpt::SEPARATOR)
        }
    };
    match value {
        Value::List(items) | Value::Tuple(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_values(v, &join(&i), out);
            }
        }
        Value::Dict(dict) => {
            for (k, v) in dict {
                collect_values(v, &join(k), out);
            }
        }
        Value::Object(o) => collect_values(&o.to_plain(), path, out),
        _ => {}
    }
}

/// A Python-like rendering of a tensor-free value.
pub fn repr(value: &Value) -> String {
    let seq = |items: &[Value]| items.iter().map(repr).collect::<Vec<_>>().join(", ");
    match value {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Str(s) => format!("{s:?}"),
        Value::Bytes(b) => format!("<{} bytes>", b.len()),
        Value::List(items) => format!("[{}]", seq(items)),
        Value::Tuple(items) if items.len() == 1 => format!("({},)", repr(&items[0])),
        Value::Tuple(items) => format!("({})", seq(items)),
        Value::Dict(dict) => {
            let pairs: Vec<String> = dict
                .iter()
                .map(|(k, v)| match k {
                    Key::Str(s) => format!("{s:?}: {}", repr(v)),
                    Key::Int(i) => format!("{i}: {}", repr(v)),
                })
                .collect();
            format!("{{{}}}", pairs.join(", "))
        }
        Value::Tensor(t) => format!("<tensor {} {:?}>", t.dtype(), t.shape()),
        Value::Object(o) => object_repr(o),
    }
}

/// `module.Class(arg, key=value)`: the call an object stands for, with a
/// dict state as keyword-like entries.
fn object_repr(o: &PyObject) -> String {
    let mut parts: Vec<String> = o.args.iter().map(repr).collect();
    match &o.state {
        Value::None => {}
        Value::Dict(d) if d.keys().all(|k| matches!(k, Key::Str(_))) => {
            parts.extend(d.iter().map(|(k, v)| format!("{k}={}", repr(v))));
        }
        other => parts.push(format!("state={}", repr(other))),
    }
    format!("{}({})", o.class, parts.join(", "))
}

/// The classes of every Python object in a tree, sorted, each once.
pub fn object_classes(value: &Value, out: &mut std::collections::BTreeSet<String>) {
    match value {
        Value::Object(o) => {
            out.insert(o.class.clone());
            o.args.iter().for_each(|v| object_classes(v, out));
            object_classes(&o.state, out);
        }
        Value::List(items) | Value::Tuple(items) => {
            items.iter().for_each(|v| object_classes(v, out))
        }
        Value::Dict(d) => d.values().for_each(|v| object_classes(v, out)),
        _ => {}
    }
}

/// A JSON rendering of a tensor-free value (non-finite floats as strings).
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::None => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) if f.is_finite() => json!(f),
        Value::Float(f) => json!(format!("{f:?}")),
        Value::Str(s) => json!(s),
        Value::Bytes(b) => json!(b),
        Value::List(items) | Value::Tuple(items) => {
            Json::Array(items.iter().map(to_json).collect())
        }
        Value::Dict(dict) => Json::Object(
            dict.iter()
                .map(|(k, v)| (k.to_string(), to_json(v)))
                .collect(),
        ),
        Value::Tensor(t) => json!(format!("<tensor {} {:?}>", t.dtype(), t.shape())),
        Value::Object(o) => to_json(&o.to_plain()),
    }
}

/// Writes a checkpoint's nested structure: containers that hold tensors
/// expand one entry per line; tensor-free values print inline.
pub fn write_tree(value: &Value, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(out, "{}", node_label(value))?;
    write_children(value, "", out)
}

fn node_label(value: &Value) -> String {
    match value {
        Value::Tensor(t) => format!("tensor {} {:?}", t.dtype(), t.shape()),
        Value::Dict(d) if has_tensor(value) => format!("dict ({} entries)", d.len()),
        Value::List(items) if has_tensor(value) => format!("list ({} items)", items.len()),
        Value::Tuple(items) if has_tensor(value) => format!("tuple ({} items)", items.len()),
        Value::Object(o) if has_tensor(value) => format!("object {}", o.class),
        other => {
            let text = repr(other);
            match text.char_indices().nth(120) {
                Some((cut, _)) => format!("{}…", &text[..cut]),
                None => text,
            }
        }
    }
}

fn write_children(
    value: &Value,
    indent: &str,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    if !has_tensor(value) {
        return Ok(());
    }
    if let Value::Object(o) = value {
        return write_children(&o.to_plain(), indent, out);
    }
    let children: Vec<(String, &Value)> = match value {
        Value::Dict(d) => d.iter().map(|(k, v)| (k.to_string(), v)).collect(),
        Value::List(items) | Value::Tuple(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return Ok(()),
    };
    for (i, (label, child)) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        writeln!(
            out,
            "{indent}{}{label}: {}",
            if last { "└── " } else { "├── " },
            node_label(child)
        )?;
        write_children(
            child,
            &format!("{indent}{}", if last { "    " } else { "│   " }),
            out,
        )?;
    }
    Ok(())
}
