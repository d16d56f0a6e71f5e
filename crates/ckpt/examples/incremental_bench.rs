//! Incremental checkpoints' targets, measured: re-checkpointing an
//! unchanged state (time and bytes written) and a state with 10% of its
//! tensors changed (bytes written against the changed bytes).
//!
//! ```text
//! cargo run --release -p ckpt --example incremental_bench -- WORKDIR [RUNS] [MIB]
//! ```
//!
//! A state of MIB MiB (default 1024) in 200 float32 tensors; after one
//! full save, RUNS times (default 5) each: a save of the unchanged state
//! (the same tensors: their chunk hashes are remembered), of the unchanged
//! values in fresh buffers (hashed again), then a save with 20 of the 200
//! tensors changed. Durable saves (fsync), medians.

use std::time::Instant;

use ckpt::store::{CheckpointManager, Retention, SaveReport, StoreOptions};
use ckpt::{StateDict, TensorData, TrainingCheckpoint};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Tensor `i` of a state of `per` floats a tensor, at `version`.
fn tensor(per: usize, i: usize, version: usize) -> TensorData {
    let values: Vec<f32> = (0..per)
        .map(|j| (i * per + j) as f32 * 1e-3 + version as f32)
        .collect();
    TensorData::from_f32(&[per], &values).unwrap()
}

/// A durable save of `model` as step `step`: its seconds (the checkpoint's
/// making included; its tensors are shared, not copied) and the report.
fn timed_save(run: &mut CheckpointManager, step: u64, model: &StateDict) -> (f64, SaveReport) {
    let t = Instant::now();
    let report = run
        .save(step, &TrainingCheckpoint::new(model.clone()), &[])
        .unwrap();
    (t.elapsed().as_secs_f64(), report)
}

/// What the runs measured, one entry a run.
#[derive(Default)]
struct Measured {
    same_t: Vec<f64>,
    same_w: Vec<f64>,
    copy_t: Vec<f64>,
    copy_w: Vec<f64>,
    changed_t: Vec<f64>,
    changed_ratio: Vec<f64>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(work) = args.get(1) else {
        eprintln!("usage: incremental_bench WORKDIR [RUNS] [MIB]");
        std::process::exit(2);
    };
    let runs: usize = args.get(2).map_or(5, |r| r.parse().unwrap());
    let mib: usize = args.get(3).map_or(1024, |m| m.parse().unwrap());
    let per = mib * (1 << 20) / 4 / 200;
    let mut model = StateDict::new();
    for i in 0..200 {
        model.insert(format!("layers.{i}.weight"), tensor(per, i, 0));
    }
    let dir = std::path::Path::new(work).join("incremental-bench");
    let _ = std::fs::remove_dir_all(&dir);
    let options = StoreOptions::default()
        .incremental(true)
        .retention(Retention::default().keep_last(2));
    let mut run = CheckpointManager::open(&dir, options).unwrap();
    let (full_s, full) = timed_save(&mut run, 1, &model);
    let mut m = Measured::default();
    let mut step = 1;
    for r in 0..runs {
        one_run(&mut run, &mut model, per, r, &mut step, &mut m);
    }
    println!("state {mib} MiB in 200 tensors; medians of {runs}");
    println!(
        "first (full) save          {:.3} s, {:.1} MiB written",
        full_s,
        full.written as f64 / (1 << 20) as f64
    );
    report(m);
}

/// Run `r`: saves of the unchanged state, of its values in fresh buffers,
/// of the caller's tensors again, then of the state with 20 tensors
/// changed.
fn one_run(
    run: &mut CheckpointManager,
    model: &mut StateDict,
    per: usize,
    r: usize,
    step: &mut u64,
    m: &mut Measured,
) {
    *step += 1;
    let (t, report) = timed_save(run, *step, model);
    m.same_t.push(t);
    m.same_w.push(report.written as f64);
    // The same values in fresh buffers (as a training loop captures
    // them from the device each time): hashed again.
    let copies: StateDict = model
        .iter()
        .map(|(n, t)| {
            let fresh = TensorData::new(t.dtype(), t.shape().to_vec(), t.bytes().to_vec());
            (n.clone(), fresh.unwrap())
        })
        .collect();
    *step += 1;
    let (t, report) = timed_save(run, *step, &copies);
    m.copy_t.push(t);
    m.copy_w.push(report.written as f64);
    // The caller's tensors again, for the next run's unchanged save.
    *step += 1;
    run.save(*step, &TrainingCheckpoint::new(model.clone()), &[])
        .unwrap();
    // 10% of the tensors change.
    let mut changed = 0u64;
    for k in 0..20 {
        let i = (r * 20 + k) * 7 % 200;
        model.insert(format!("layers.{i}.weight"), tensor(per, i, r + 1));
        changed += (per * 4) as u64;
    }
    *step += 1;
    let (t, report) = timed_save(run, *step, model);
    m.changed_t.push(t);
    m.changed_ratio.push(report.written as f64 / changed as f64);
}

/// The medians against the targets.
fn report(m: Measured) {
    println!(
        "unchanged state            {:.1} ms, {:.1} KiB written (targets: < 50 ms, < 1 MiB)",
        median(m.same_t) * 1e3,
        median(m.same_w) / 1024.0
    );
    println!(
        "unchanged, fresh buffers   {:.1} ms, {:.1} KiB written (every byte hashed again)",
        median(m.copy_t) * 1e3,
        median(m.copy_w) / 1024.0
    );
    println!(
        "10% of tensors changed     {:.3} s, written / changed bytes {:.3} (target ≤ 1.15)",
        median(m.changed_t),
        median(m.changed_ratio)
    );
}
