//! Upload throughput of the checkpoint store to S3-compatible storage
//! against a durable local save of the same state, in the same run.
//!
//! ```text
//! python tests/interop/moto_server.py 5050 bench < /dev/tty &   # or any S3 endpoint
//! AWS_ENDPOINT=http://127.0.0.1:5050 AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=x \
//! AWS_SECRET_ACCESS_KEY=x AWS_REGION=us-east-1 \
//! cargo run --release -p ckpt --features s3 --example s3_bench -- WORKDIR s3://bench/run [RUNS] [MIB]
//! ```
//!
//! Saves a state of MIB MiB (default 1024) in 200 float32 tensors RUNS
//! times (default 3) to a local run in WORKDIR (durable: fsync'd, after
//! `sync`) and to the object-store run, alternating, and prints medians
//! and the ratio of the two throughputs (the target: object store ≥ 0.5×
//! local).

use std::time::Instant;

use ckpt::store::{CheckpointManager, Retention, StoreOptions};
use ckpt::{StateDict, TensorData, TrainingCheckpoint};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(work), Some(url)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: s3_bench WORKDIR s3://bucket/prefix [RUNS] [MIB]");
        std::process::exit(2);
    };
    let runs: usize = args.get(3).map_or(3, |r| r.parse().unwrap());
    let mib: usize = args.get(4).map_or(1024, |m| m.parse().unwrap());
    let per = mib * (1 << 20) / 4 / 200;
    let mut model = StateDict::new();
    for i in 0..200 {
        let values: Vec<f32> = (0..per).map(|j| (i * per + j) as f32 * 1e-3).collect();
        model.insert(
            format!("layers.{i}.weight"),
            TensorData::from_f32(&[per], &values).unwrap(),
        );
    }
    let state = TrainingCheckpoint::new(model);
    let options = StoreOptions::default().retention(Retention::default().keep_last(1));
    let local_dir = std::path::Path::new(work).join("s3-bench-local");
    let _ = std::fs::remove_dir_all(&local_dir);
    let mut local = CheckpointManager::open(&local_dir, options.clone()).unwrap();
    let mut remote = CheckpointManager::open(url, options).unwrap();
    let first = remote.latest().map_or(0, |s| s.step) + 1;
    let (mut l, mut r) = (Vec::new(), Vec::new());
    for i in 0..runs as u64 {
        let _ = std::process::Command::new("sync").status();
        let t = Instant::now();
        local.save(i + 1, &state, &[]).unwrap();
        l.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        remote.save(first + i, &state, &[]).unwrap();
        r.push(t.elapsed().as_secs_f64());
    }
    let (l, r) = (median(l), median(r));
    let gib = mib as f64 / 1024.0;
    println!("state {mib} MiB, medians of {runs}");
    println!("local durable save   {:.2} s  {:.2} GiB/s", l, gib / l);
    println!("object-store save    {:.2} s  {:.2} GiB/s", r, gib / r);
    println!(
        "object store / local {:.2}× the throughput (target ≥ 0.5×)",
        l / r
    );
}
