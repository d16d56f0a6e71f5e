//! `ckpt diff A B [--atol X] [--rtol Y] [--json]`.

use std::io::Write;

use anyhow::Result;
use ckpt::report::TensorDiff;
use ckpt::{LoadOptions, Value};

use crate::args::DiffArgs;
use crate::shared::output::Table;
use crate::shared::values::repr;

/// Compares two files of any formats; returns true when they are equal
/// within the tolerances.
pub fn run(args: &DiffArgs, out: &mut dyn Write) -> Result<bool> {
    let (a_path, b_path) = (&args.a, &args.b);
    let (atol, rtol, as_json) = (args.atol, args.rtol, args.json);
    let a = ckpt::read(a_path, &LoadOptions::default())?.value;
    let b = ckpt::read(b_path, &LoadOptions::default())?.value;
    let d = ckpt::report::diff(&a, &b, atol, rtol)?;
    if as_json {
        serde_json::to_writer_pretty(&mut *out, &d.to_json())?;
        writeln!(out)?;
        return Ok(d.equal);
    }
    let (only_a, only_b, diffs, values, equal) =
        (&d.only_in_a, &d.only_in_b, &d.tensors, &d.values, d.equal);
    for name in only_a {
        writeln!(out, "only in A: {name}")?;
    }
    for name in only_b {
        writeln!(out, "only in B: {name}")?;
    }
    for d in diffs.iter().filter(|d| d.changed.is_some()) {
        let (x, y) = d.changed.as_ref().expect("filtered");
        writeln!(out, "changed: {}: {x} -> {y}", d.name)?;
    }
    for (path, x, y) in values {
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
