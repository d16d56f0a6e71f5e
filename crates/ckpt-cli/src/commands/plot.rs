//! `ckpt plot DIR --metric M`: a metric against step, as a PNG.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use crate::args::PlotArgs;
use crate::shared::plot::draw_metric;

/// Draws the metric into `--output` (default `METRIC.png`) and says so.
pub fn run(args: &PlotArgs, out: &mut dyn Write) -> Result<()> {
    let metric = &args.metric;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{metric}.png")));
    let points = draw_metric(&args.dir, metric, &output)?;
    writeln!(out, "{}: {metric} at {points} steps", output.display())?;
    Ok(())
}
