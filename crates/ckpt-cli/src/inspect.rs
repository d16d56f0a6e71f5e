//! `ckpt inspect FILE [--json]`.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use ckpt::{Key, LoadOptions, StateDict, Value};
use serde_json::{json, Value as Json};

use crate::output::{human_bytes, thousands, Table};

/// Prints the tensors, values and metadata of `file`.
pub fn run(file: &Path, as_json: bool, out: &mut dyn Write) -> Result<()> {
    let loaded = ckpt::read(file, &LoadOptions::default())?;
    let tensors = StateDict::flatten(&loaded.value)?;
    let mut values = Vec::new();
    collect_values(&loaded.value, "", &mut values);

    if as_json {
        let report = json!({
            "format": loaded.format.id(),
            "tensors": tensors.iter().map(|(name, t)| json!({
                "name": name,
                "dtype": t.dtype().torch_name(),
                "shape": t.shape(),
                "bytes": t.bytes().len(),
            })).collect::<Vec<_>>(),
            "values": values.iter().map(|(path, v)| (path.clone(), to_json(v))).collect::<serde_json::Map<_, _>>(),
            "metadata": loaded.metadata.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "total_params": tensors.total_params(),
            "total_bytes": tensors.total_bytes(),
        });
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
        return Ok(());
    }

    writeln!(out, "{} ({})", file.display(), loaded.format)?;
    writeln!(out)?;
    let mut table = Table::new(
        vec!["name", "dtype", "shape", "params", "bytes"],
        vec![false, false, false, true, true],
    );
    for (name, t) in tensors.iter() {
        table.row(vec![
            name.clone(),
            t.dtype().torch_name().to_owned(),
            format!("{:?}", t.shape()),
            thousands(t.numel() as u64),
            thousands(t.bytes().len() as u64),
        ]);
    }
    table.write(out)?;
    writeln!(
        out,
        "\n{} tensors, {} parameters, {} bytes ({})",
        thousands(tensors.len() as u64),
        thousands(tensors.total_params()),
        thousands(tensors.total_bytes()),
        human_bytes(tensors.total_bytes()),
    )?;
    if !values.is_empty() {
        writeln!(out, "\nvalues:")?;
        for (path, v) in &values {
            writeln!(out, "  {path} = {}", repr(v))?;
        }
    }
    if !loaded.metadata.is_empty() {
        writeln!(out, "\nmetadata:")?;
        for (k, v) in &loaded.metadata {
            writeln!(out, "  {k}: {v}")?;
        }
    }
    Ok(())
}

fn has_tensor(value: &Value) -> bool {
    match value {
        Value::Tensor(_) => true,
        Value::List(items) | Value::Tuple(items) => items.iter().any(has_tensor),
        Value::Dict(dict) => dict.values().any(has_tensor),
        _ => false,
    }
}

/// The parts of a tree that hold no tensor, by path: `epoch`, `loss`,
/// `optimizer_state_dict/param_groups/0/betas`.
fn collect_values(value: &Value, path: &str, out: &mut Vec<(String, Value)>) {
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
        _ => {}
    }
}

/// A Python-like rendering of a tensor-free value.
fn repr(value: &Value) -> String {
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
    }
}

/// A JSON rendering of a tensor-free value (non-finite floats as strings).
fn to_json(value: &Value) -> Json {
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
    }
}
