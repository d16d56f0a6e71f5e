//! A metric of a run against step, as a PNG (plotters, with an embedded
//! font): `ckpt plot`, and the curve `ckpt demo` ends with.

use std::path::Path;

use anyhow::{Context, Result};
use ckpt::store::RunReader;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::shared::metrics::metric_names;

/// DejaVu Sans Mono (Bitstream Vera licence, `assets/DejaVuSansMono.LICENSE`),
/// embedded so plots need no system fonts.
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSansMono.ttf");

/// Draws `metric` of every committed step of the run in `dir` into the
/// PNG `output` (the best step circled when the run ranks by `metric`);
/// returns how many points it drew.
pub fn draw_metric(dir: &Path, metric: &str, output: &Path) -> Result<usize> {
    let reader = RunReader::open(dir)?;
    let steps = reader.steps();
    let points: Vec<(f64, f64)> = reader
        .history()?
        .iter()
        .filter_map(|s| {
            s.metric(metric)
                .filter(|v| v.is_finite())
                .map(|v| (s.step as f64, v))
        })
        .collect();
    if points.is_empty() {
        let names = metric_names(&steps);
        anyhow::bail!(
            "{}: no step has a value for {metric:?} (recorded: {})",
            dir.display(),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        );
    }
    let best = reader
        .retention()
        .and_then(|r| r.best(&steps))
        .and_then(|s| s.metric(metric).map(|v| (s.step as f64, v)));
    draw(&points, best, metric, &dir.display().to_string(), output)
        .with_context(|| format!("{}: cannot draw the plot", output.display()))?;
    Ok(points.len())
}

fn draw(
    points: &[(f64, f64)],
    best: Option<(f64, f64)>,
    metric: &str,
    title: &str,
    output: &Path,
) -> Result<()> {
    // Registering twice (a second plot in one process) is harmless.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let (x0, x1) = (points[0].0, points[points.len() - 1].0);
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| {
            (l.min(p.1), h.max(p.1))
        });
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.05
    };
    let x_pad = if x1 > x0 { 0.0 } else { 1.0 };
    let root = BitMapBackend::new(output, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{metric} — {title}"), ("sans-serif", 22))
        .margin(16)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 - x_pad)..(x1 + x_pad), (lo - pad)..(hi + pad))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(metric)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let blue = RGBColor(31, 119, 180);
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            blue.stroke_width(2),
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 3, blue.filled())))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(b) = best {
        chart
            .draw_series(std::iter::once(Circle::new(b, 7, RED.stroke_width(2))))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
