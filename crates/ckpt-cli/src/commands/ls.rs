//! `ckpt ls DIR`: the committed steps of a run directory.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use ckpt::store::{Retention, RunReader, StepInfo};
use serde_json::json;

use crate::args::LsArgs;
use crate::shared::metrics::metric_names;
use crate::shared::output::{human_age, human_bytes, Table};

/// What the listing needs of a run: its steps, their retention reasons,
/// the best step, and now (for ages).
struct Listing<'a> {
    dir: &'a Path,
    steps: Vec<StepInfo>,
    retention: Option<Retention>,
    reasons: Option<Vec<Vec<String>>>,
    best: Option<u64>,
    now: f64,
}

impl Listing<'_> {
    /// The retention rules that keep step `i`.
    fn kept_by(&self, i: usize) -> Vec<String> {
        self.reasons
            .as_ref()
            .map_or_else(Vec::new, |r| r[i].clone())
    }
}

/// Lists the steps: a table (or JSON) and a sparkline of `--metric` (or
/// the metric the retention ranks by, or the first one recorded).
pub fn run(args: &LsArgs, out: &mut dyn Write) -> Result<()> {
    let dir = args.dir.as_path();
    let reader = RunReader::open(dir)?;
    let steps = reader.steps();
    let retention = reader.retention().cloned();
    let reasons = retention.as_ref().map(|r| {
        r.reasons(&steps)
            .iter()
            .map(|why| why.iter().map(ToString::to_string).collect())
            .collect()
    });
    let best = retention
        .as_ref()
        .and_then(|r| r.best(&steps))
        .map(|s| s.step);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let listing = Listing {
        dir,
        steps,
        retention,
        reasons,
        best,
        now,
    };
    if args.json {
        return json_listing(&listing, out);
    }
    if listing.steps.is_empty() {
        writeln!(out, "{}: no committed steps", dir.display())?;
        return Ok(());
    }
    let names = metric_names(&listing.steps);
    table(&listing, &names, out)?;
    let chosen = args
        .metric
        .clone()
        .or_else(|| {
            listing
                .retention
                .as_ref()
                .and_then(|r| r.keep_best.as_ref())
                .map(|b| b.metric.clone())
        })
        .or_else(|| names.first().cloned());
    match chosen {
        Some(name) => sparkline_line(&reader, &name, &names, out),
        None => Ok(()),
    }
}

/// `--json`: every step with its metrics, sizes, age and reasons.
fn json_listing(listing: &Listing, out: &mut dyn Write) -> Result<()> {
    let Listing { dir, best, now, .. } = *listing;
    let entries: Vec<_> = listing
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "step": s.step,
                "epoch": s.epoch,
                "metrics": s.metrics.iter().map(|(k, v)| (k.clone(), finite(*v))).collect::<serde_json::Map<_, _>>(),
                "bytes": s.bytes,
                "written": s.written.unwrap_or(s.bytes),
                "time": s.time,
                "age_seconds": now - s.time,
                "kept_by": listing.kept_by(i),
                "best": best == Some(s.step),
                "dir": dir.join(s.dir()),
            })
        })
        .collect();
    let doc = json!({"dir": dir, "steps": entries, "best": best});
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)?;
    Ok(())
}

/// The table of steps and the totals line.
fn table(listing: &Listing, names: &[String], out: &mut dyn Write) -> Result<()> {
    let steps = &listing.steps;
    // Incremental runs: what each save wrote beside the logical size.
    let incremental = steps.iter().any(|s| s.written.is_some());
    let mut header: Vec<String> = vec!["step".into(), "epoch".into()];
    header.extend(names.iter().cloned());
    header.push("size".into());
    if incremental {
        header.push("written".into());
    }
    header.extend(["age".into(), "kept by".into()]);
    let mut right = vec![true; header.len()];
    *right.last_mut().expect("header") = false;
    let mut table = Table::new(header, right);
    for (i, s) in steps.iter().enumerate() {
        let mark = if listing.best == Some(s.step) {
            "*"
        } else {
            ""
        };
        let mut row = vec![format!("{mark}{}", s.step), s.epoch.to_string()];
        row.extend(
            names
                .iter()
                .map(|n| s.metric(n).map_or("-".into(), format_metric)),
        );
        row.push(human_bytes(s.bytes));
        if incremental {
            row.push(human_bytes(s.written.unwrap_or(s.bytes)));
        }
        row.extend([
            human_age(listing.now - s.time),
            listing.kept_by(i).join(","),
        ]);
        table.row(row);
    }
    table.write(out)?;
    let total: u64 = steps.iter().map(|s| s.bytes).sum();
    write!(out, "{} steps, {}", steps.len(), human_bytes(total))?;
    if incremental {
        let written: u64 = steps.iter().map(|s| s.written.unwrap_or(s.bytes)).sum();
        write!(
            out,
            " ({} written: chunks are shared)",
            human_bytes(written)
        )?;
    }
    if listing.best.is_some() {
        write!(
            out,
            "; * best by {}",
            describe_best(listing.retention.as_ref())
        )?;
    }
    writeln!(out)?;
    Ok(())
}

/// The last line: metric `name` over the run's history as a sparkline.
fn sparkline_line(
    reader: &RunReader,
    name: &str,
    names: &[String],
    out: &mut dyn Write,
) -> Result<()> {
    let history = reader.history()?;
    let values: Vec<f64> = history.iter().filter_map(|s| s.metric(name)).collect();
    if values.is_empty() {
        anyhow::bail!(
            "no step has the metric {name:?} (recorded: {})",
            names.join(", ")
        );
    }
    let (lo, hi) = range(&values);
    // At most 60 characters: the newest values.
    let shown = &values[values.len().saturating_sub(60)..];
    writeln!(
        out,
        "{name}: {}  (min {}, max {}, last {}; {} saves)",
        sparkline(shown),
        format_metric(lo),
        format_metric(hi),
        format_metric(*values.last().expect("non-empty")),
        values.len(),
    )?;
    Ok(())
}

fn describe_best(retention: Option<&Retention>) -> String {
    match retention.and_then(|r| r.keep_best.as_ref()) {
        Some(b) => format!("{} ({:?})", b.metric, b.mode).to_lowercase(),
        None => String::new(),
    }
}

fn finite(v: f64) -> serde_json::Value {
    if v.is_finite() {
        json!(v)
    } else {
        json!(v.to_string())
    }
}

fn format_metric(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// One character per value, `▁` (lowest) to `█` (highest); `·` for NaN.
pub fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (lo, hi) = range(values);
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                '·'
            } else if hi > lo {
                BARS[(((v - lo) / (hi - lo)) * 7.0).round() as usize]
            } else {
                BARS[3]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_span_the_range() {
        assert_eq!(sparkline(&[1.0, 2.0, 3.0, 8.0]), "▁▂▃█");
        assert_eq!(sparkline(&[5.0, 5.0]), "▄▄");
        assert_eq!(sparkline(&[0.0, f64::NAN, 1.0]), "▁·█");
    }
}
