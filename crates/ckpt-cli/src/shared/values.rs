//! Values rendered for people: a Python-like `repr`, and a checkpoint's
//! nested structure as a tree.

use ckpt::{Key, PyObject, Value};

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

/// Writes a checkpoint's nested structure: containers that hold tensors
/// expand one entry per line; tensor-free values print inline.
pub fn write_tree(value: &Value, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(out, "{}", node_label(value))?;
    write_children(value, "", out)
}

fn node_label(value: &Value) -> String {
    match value {
        Value::Tensor(t) => format!("tensor {} {:?}", t.dtype(), t.shape()),
        Value::Dict(d) if value.has_tensors() => format!("dict ({} entries)", d.len()),
        Value::List(items) if value.has_tensors() => format!("list ({} items)", items.len()),
        Value::Tuple(items) if value.has_tensors() => format!("tuple ({} items)", items.len()),
        Value::Object(o) if value.has_tensors() => format!("object {}", o.class),
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
    if !value.has_tensors() {
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
