//! `ckpt diff A B [--atol X] [--rtol Y] [--json]`.

use std::io::Write;

use anyhow::Result;
use ckpt::{LoadOptions, StateDict, TensorData, Value};
use serde_json::json;

use crate::args::DiffArgs;
use crate::shared::output::Table;
use crate::shared::values::{collect_values, repr, to_json};

/// How two tensors of the same name compare.
struct TensorDiff {
    name: String,
    /// `(dtype, shape)` of each side, when they differ.
    changed: Option<(String, String)>,
    /// Largest |a - b| and |a - b| / |b|; `None` when shapes differ.
    max_abs: Option<f64>,
    max_rel: Option<f64>,
    equal: bool,
}

fn describe(t: &TensorData) -> String {
    format!("{} {:?}", t.dtype(), t.shape())
}

/// Compares element by element as f64: equal when the bits match (so NaN
/// equals NaN) or |a - b| <= atol + rtol * |b|.
fn compare(name: &str, a: &TensorData, b: &TensorData, atol: f64, rtol: f64) -> TensorDiff {
    let changed =
        (a.dtype() != b.dtype() || a.shape() != b.shape()).then(|| (describe(a), describe(b)));
    if a.shape() != b.shape() {
        return TensorDiff {
            name: name.to_owned(),
            changed,
            max_abs: None,
            max_rel: None,
            equal: false,
        };
    }
    let (mut max_abs, mut max_rel, mut equal) = (0f64, 0f64, changed.is_none());
    if a.dtype() == b.dtype() && a.bytes() == b.bytes() {
        return TensorDiff {
            name: name.to_owned(),
            changed,
            max_abs: Some(0.0),
            max_rel: Some(0.0),
            equal,
        };
    }
    for (x, y) in a.values_f64().zip(b.values_f64()) {
        if x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()) {
            continue;
        }
        let abs = if x.is_nan() || y.is_nan() {
            f64::INFINITY
        } else {
            (x - y).abs()
        };
        let rel = if y == 0.0 {
            f64::INFINITY
        } else {
            abs / y.abs()
        };
        max_abs = max_abs.max(abs);
        max_rel = max_rel.max(rel);
        // Infinities (and NaN against a number) are only equal bit for bit.
        let within = x.is_finite() && y.is_finite() && abs <= atol + rtol * y.abs();
        equal &= within;
    }
    TensorDiff {
        name: name.to_owned(),
        changed,
        max_abs: Some(max_abs),
        max_rel: Some(max_rel),
        equal,
    }
}

/// Compares two files of any formats; returns true when they are equal
/// within the tolerances.
pub fn run(args: &DiffArgs, out: &mut dyn Write) -> Result<bool> {
    let (a_path, b_path) = (&args.a, &args.b);
    let (atol, rtol, as_json) = (args.atol, args.rtol, args.json);
    let a = ckpt::read(a_path, &LoadOptions::default())?.value;
    let b = ckpt::read(b_path, &LoadOptions::default())?.value;
    let (ta, tb) = (StateDict::flatten(&a)?, StateDict::flatten(&b)?);
    let only_a: Vec<&String> = ta.keys().filter(|k| !tb.contains_key(*k)).collect();
    let only_b: Vec<&String> = tb.keys().filter(|k| !ta.contains_key(*k)).collect();
    let diffs: Vec<TensorDiff> = ta
        .iter()
        .filter_map(|(name, x)| tb.get(name).map(|y| compare(name, x, y, atol, rtol)))
        .collect();
    let values = value_changes(&a, &b);
    let equal = only_a.is_empty()
        && only_b.is_empty()
        && diffs.iter().all(|d| d.equal)
        && values.is_empty();

    if as_json {
        let report = json!({
            "equal": equal,
            "atol": atol,
            "rtol": rtol,
            "only_in_a": only_a,
            "only_in_b": only_b,
            "tensors": diffs.iter().map(|d| json!({
                "name": d.name,
                "equal": d.equal,
                "max_abs": d.max_abs.map(finite_or_string),
                "max_rel": d.max_rel.map(finite_or_string),
                "a": d.changed.as_ref().map(|c| &c.0),
                "b": d.changed.as_ref().map(|c| &c.1),
            })).collect::<Vec<_>>(),
            "values": values.iter().map(|(path, x, y)| json!({
                "path": path,
                "a": x.as_ref().map(to_json),
                "b": y.as_ref().map(to_json),
            })).collect::<Vec<_>>(),
        });
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
        return Ok(equal);
    }

    for name in &only_a {
        writeln!(out, "only in A: {name}")?;
    }
    for name in &only_b {
        writeln!(out, "only in B: {name}")?;
    }
    for d in diffs.iter().filter(|d| d.changed.is_some()) {
        let (x, y) = d.changed.as_ref().expect("filtered");
        writeln!(out, "changed: {}: {x} -> {y}", d.name)?;
    }
    for (path, x, y) in &values {
        let show = |v: &Option<Value>| v.as_ref().map_or_else(|| "(absent)".to_owned(), repr);
        writeln!(out, "value: {path}: {} -> {}", show(x), show(y))?;
    }
    let differing: Vec<&TensorDiff> = diffs
        .iter()
        .filter(|d| !d.equal || d.max_abs.is_some_and(|m| m > 0.0))
        .collect();
    if !differing.is_empty() {
        let mut table = Table::new(
            vec!["tensor", "max abs diff", "max rel diff", "within tolerance"],
            vec![false, true, true, false],
        );
        for d in &differing {
            let fmt = |v: Option<f64>| {
                v.map_or_else(|| "shape differs".to_owned(), |v| format!("{v:.3e}"))
            };
            table.row(vec![
                d.name.clone(),
                fmt(d.max_abs),
                fmt(d.max_rel),
                if d.equal { "yes" } else { "no" }.to_owned(),
            ]);
        }
        writeln!(out)?;
        table.write(out)?;
    }
    writeln!(
        out,
        "\n{}: {} tensors compared, {} only in A, {} only in B, {} differ beyond atol={atol} rtol={rtol}, {} other values differ",
        if equal { "equal" } else { "different" },
        diffs.len(),
        only_a.len(),
        only_b.len(),
        diffs.iter().filter(|d| !d.equal).count(),
        values.len(),
    )?;
    Ok(equal)
}

fn finite_or_string(v: f64) -> serde_json::Value {
    if v.is_finite() {
        json!(v)
    } else {
        json!(format!("{v}"))
    }
}

/// Non-tensor values (epoch, loss, hyper-parameters) that differ, by path.
fn value_changes(a: &Value, b: &Value) -> Vec<(String, Option<Value>, Option<Value>)> {
    let (mut va, mut vb) = (Vec::new(), Vec::new());
    collect_values(a, "", &mut va);
    collect_values(b, "", &mut vb);
    let mut changes: Vec<_> = va
        .iter()
        .filter_map(|(path, x)| {
            let y = vb.iter().find(|(p, _)| p == path).map(|(_, y)| y);
            (y != Some(x)).then(|| (path.clone(), Some(x.clone()), y.cloned()))
        })
        .collect();
    changes.extend(
        vb.iter()
            .filter(|(path, _)| !va.iter().any(|(p, _)| p == path))
            .map(|(path, y)| (path.clone(), None, Some(y.clone()))),
    );
    changes
}
