//! `ckpt inspect FILE [--json]`.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use ckpt::{LoadOptions, StateDict};
use serde_json::json;

use crate::output::{human_bytes, thousands, Table};
use crate::values::{collect_values, repr, to_json, write_tree};

/// Prints the tensors, values and metadata of `file`, or with `tree` its
/// nested structure.
pub fn run(file: &Path, as_json: bool, tree: bool, out: &mut dyn Write) -> Result<()> {
    let loaded = ckpt::read(file, &LoadOptions::default())?;
    if tree {
        writeln!(out, "{} ({})", file.display(), loaded.format)?;
        write_tree(&loaded.value, out)?;
        return Ok(());
    }
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
