//! `ckpt eval`: model packages' held-out accuracy on the demo's digits and
//! their inference time, beside their size on disk (the scoring itself is
//! in `digits.rs`, shared with `--eval` of `ckpt prune`/`ckpt quantize`).

use std::io::Write;

use anyhow::Result;

use crate::args::EvalArgs;
use crate::shared::digits::{load, row, HEADER, RUNS};
use crate::shared::output::Table;

/// `ckpt eval FILE...`: one row per model package, sizes relative to the
/// first.
pub fn run(args: &EvalArgs, out: &mut dyn Write) -> Result<()> {
    let paths = &args.models;
    let mut header = vec!["model"];
    header.extend(HEADER);
    header.push("size");
    let mut table = Table::new(
        header,
        vec![false, false, true, true, true, true, true, true],
    );
    let mut first = None;
    for path in paths {
        let (package, model) = load(path)?;
        let mut cells = vec![path.display().to_string()];
        cells.extend(row(path, &package, &model)?);
        let size = std::fs::metadata(path)?.len() as f64;
        let base = *first.get_or_insert(size);
        cells.push(format!("{:.1}%", 100.0 * size / base));
        table.row(cells);
    }
    table.write(out)?;
    writeln!(
        out,
        "accuracy on the demo's 270 held-out digits; inference = median of {RUNS} forward passes over them (one batch, CPU); size relative to the first file"
    )?;
    Ok(())
}
