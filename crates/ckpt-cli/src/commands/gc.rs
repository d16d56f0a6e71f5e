//! `ckpt gc DIR`: apply retention rules to a run directory now.

use std::io::Write;

use anyhow::Result;
use ckpt::store::{
    CheckpointManager, KeepBest, KeepEvery, MissingMetric, Retention, RunReader, StoreOptions,
};

use crate::args::GcArgs;
use crate::shared::output::human_bytes;

/// Deletes (or, with `--dry-run`, lists) the steps no rule keeps. Without
/// any rule flags, the rules the run's writer recorded apply.
pub fn run(rules: &GcArgs, out: &mut dyn Write) -> Result<()> {
    let (dir, dry_run) = (rules.dir.as_path(), rules.dry_run);
    let recorded = RunReader::open(dir)?;
    let given =
        rules.keep_last.is_some() || rules.keep_best.is_some() || rules.keep_every.is_some();
    let retention = if given {
        let mut r = Retention::default().keep_last(rules.keep_last.unwrap_or(0));
        if let Some(k) = rules.keep_best {
            let Some(metric) = rules.metric.clone() else {
                anyhow::bail!("--keep-best needs --metric NAME");
            };
            r = r.keep_best(KeepBest {
                metric,
                mode: rules.mode.metric_mode(),
                k,
                missing: MissingMetric::Ignore,
            });
        }
        if let Some(n) = rules.keep_every {
            r = r.keep_every(KeepEvery::Steps(n));
        }
        r
    } else {
        recorded.retention().cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no rules recorded; give --keep-last, --keep-best or --keep-every",
                dir.display()
            )
        })?
    };
    let sizes: Vec<(u64, u64)> = recorded.steps().iter().map(|s| (s.step, s.bytes)).collect();
    drop(recorded);
    let mut store =
        CheckpointManager::open(dir, StoreOptions::default().retention(retention.clone()))?;
    let deleted = store.gc(&retention, dry_run)?;
    let freed: u64 = sizes
        .iter()
        .filter(|(s, _)| deleted.contains(s))
        .map(|(_, b)| b)
        .sum();
    let verb = if dry_run { "would delete" } else { "deleted" };
    if deleted.is_empty() {
        writeln!(
            out,
            "{}: every step is kept ({} steps)",
            dir.display(),
            sizes.len()
        )?;
    } else {
        let list: Vec<String> = deleted.iter().map(u64::to_string).collect();
        writeln!(
            out,
            "{}: {verb} {} of {} steps ({}), freeing {}",
            dir.display(),
            deleted.len(),
            sizes.len(),
            list.join(", "),
            human_bytes(freed)
        )?;
    }
    Ok(())
}
