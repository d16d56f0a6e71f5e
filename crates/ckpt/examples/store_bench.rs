//! The checkpoint store's benchmark: its targets against the limits
//! measured in the same run.
//!
//! ```text
//! cargo run --release -p ckpt --example store_bench -- WORKDIR [RUNS] [MIB]
//! ```
//!
//! With a state of MIB MiB (default 1024) in 200 float32 tensors, RUNS
//! times each (default 5), in rotating order, every write after `sync`:
//!
//! - limit: a plain sequential write of the same bytes + fsync;
//! - a durable `save` through the whole commit protocol (time to commit),
//!   and a durable save of a 4 KiB checkpoint (the commit's own cost);
//! - limit: one memcpy of the state into warm memory; the `save_async`
//!   stall (snapshot + return) for the state and for a 100 MB state;
//! - `load` + reading every byte, with and without hash verification;
//! - opening a run directory with 1,000 committed steps and finding the
//!   latest.
//!
//! Prints a table of medians with the ratios the targets are stated in.

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use ckpt::store::{CheckpointManager, Retention, RunReader, StoreOptions};
use ckpt::{StateDict, TensorData, TrainingCheckpoint};

fn state(mib: usize, tensors: usize) -> TrainingCheckpoint {
    let per = mib * (1 << 20) / 4 / tensors;
    let mut model = StateDict::new();
    for i in 0..tensors {
        let values: Vec<f32> = (0..per).map(|j| (i * per + j) as f32 * 1e-3).collect();
        model.insert(
            format!("layers.{i}.weight"),
            TensorData::from_f32(&[per], &values).unwrap(),
        );
    }
    TrainingCheckpoint::new(model)
}

fn sync() {
    let _ = std::process::Command::new("sync").status();
}

fn touch(c: &TrainingCheckpoint) -> u64 {
    c.model.values().fold(0u64, |s, t| {
        t.bytes().chunks_exact(8).fold(s, |s, w| {
            s.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()))
        })
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let work = std::path::PathBuf::from(args.next().expect("WORKDIR"));
    let runs: usize = args.next().map_or(5, |s| s.parse().unwrap());
    let mib: usize = args.next().map_or(1024, |s| s.parse().unwrap());
    std::fs::create_dir_all(&work).unwrap();
    let big = state(mib, 200);
    let small = state(100, 50);
    let tiny = state(0, 1); // one empty tensor: a checkpoint of a few hundred bytes
    let bytes: u64 = big.model.total_bytes();

    let run_dir = work.join("run");
    let _ = std::fs::remove_dir_all(&run_dir);
    // The newest big save is at most two saves back when a load runs.
    let options = StoreOptions::default().retention(Retention::default().keep_last(4));
    let mut store = CheckpointManager::open(&run_dir, options).unwrap();
    let mut step = 0u64;
    step += 1;
    store.save(step, &big, &[]).unwrap();
    let mut big_step = step;

    let names = [
        "limit: plain write + fsync",
        "store save, durable (to commit)",
        "store save of a tiny checkpoint (the commit)",
        "limit: memcpy of the state (warm)",
        "save_async stall",
        "save_async stall, 100 MB",
        "load (mmap) + read all, unverified",
        "load (mmap) + read all, verified",
        "load (owned) + read all, unverified",
        "load (owned) + read all, verified",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut warm = vec![0u8; bytes as usize];
    let plain = work.join("plain.bin");
    for run in 0..runs {
        for k in 0..names.len() {
            let op = (k + run) % names.len();
            let t = match op {
                0 => {
                    sync();
                    let start = Instant::now();
                    let mut f =
                        std::io::BufWriter::with_capacity(4 << 20, File::create(&plain).unwrap());
                    for t in big.model.values() {
                        f.write_all(t.bytes()).unwrap();
                    }
                    f.into_inner().unwrap().sync_all().unwrap();
                    let t = start.elapsed().as_secs_f64();
                    std::fs::remove_file(&plain).unwrap();
                    t
                }
                1 | 2 => {
                    store.wait().unwrap();
                    sync();
                    step += 1;
                    let c = if op == 1 { &big } else { &tiny };
                    if op == 1 {
                        big_step = step;
                    }
                    store.save(step, c, &[("loss", 1.0)]).unwrap().seconds
                }
                3 => {
                    let start = Instant::now();
                    let mut at = 0;
                    for t in big.model.values() {
                        warm[at..at + t.bytes().len()].copy_from_slice(t.bytes());
                        at += t.bytes().len();
                    }
                    black_box(&warm);
                    start.elapsed().as_secs_f64()
                }
                4 | 5 => {
                    store.wait().unwrap();
                    sync();
                    step += 1;
                    let c = if op == 4 { &big } else { &small };
                    if op == 4 {
                        big_step = step;
                    }
                    // Warm the snapshot buffer for this size first.
                    let start = Instant::now();
                    store.save_async(step, c, &[]).unwrap();
                    let t = start.elapsed().as_secs_f64();
                    store.wait().unwrap();
                    t
                }
                _ => {
                    let reader = RunReader::open_with(
                        std::sync::Arc::new(ckpt::storage::LocalStorage::new(&run_dir)),
                        StoreOptions::default()
                            .verify(op == 7 || op == 9)
                            .mmap(op < 8),
                    )
                    .unwrap();
                    let start = Instant::now();
                    let c = reader.load(big_step).unwrap();
                    black_box(touch(&c));
                    start.elapsed().as_secs_f64()
                }
            };
            // The first stall of each size allocates the snapshot buffer;
            // steady state is what training sees.
            if !(run == 0 && (op == 4 || op == 5)) {
                times[op].push(t);
            }
        }
    }
    store.wait().unwrap();
    drop(store);

    // A run directory with 1,000 committed steps.
    let many = work.join("many");
    let _ = std::fs::remove_dir_all(&many);
    {
        let options = StoreOptions::default()
            .durable(false)
            .retention(Retention::default().keep_last(1000));
        let mut store = CheckpointManager::open(&many, options).unwrap();
        for s in 1..=1000 {
            store.save(s, &tiny, &[("loss", 1.0 / s as f64)]).unwrap();
        }
    }
    let open_times: Vec<f64> = (0..runs.max(5))
        .map(|_| {
            let start = Instant::now();
            let store = CheckpointManager::open(&many, StoreOptions::default()).unwrap();
            black_box(store.latest().unwrap());
            start.elapsed().as_secs_f64()
        })
        .collect();

    let m: Vec<f64> = times
        .into_iter()
        .map(|t| if t.is_empty() { f64::NAN } else { median(t) })
        .collect();
    let gbs = |s: f64, b: u64| b as f64 / s / 1e9;
    println!(
        "state: {} in 200 float32 tensors; medians of {runs} runs",
        human(bytes)
    );
    println!("| operation | median ms | GB/s | ratio |");
    println!("|---|---:|---:|---|");
    let row = |name: &str, s: f64, b: Option<u64>, ratio: String| {
        let rate = b.map_or("—".into(), |b| format!("{:.2}", gbs(s, b)));
        println!("| {name} | {:.2} | {rate} | {ratio} |", s * 1e3);
    };
    row(names[0], m[0], Some(bytes), "1.00× (the limit)".into());
    row(
        names[1],
        m[1],
        Some(bytes),
        format!("{:.2}× the limit's bandwidth (target ≥ 0.9)", m[0] / m[1]),
    );
    row(names[2], m[2], None, "target < 5 ms".into());
    row(names[3], m[3], Some(bytes), "1.00× (the limit)".into());
    row(
        names[4],
        m[4],
        Some(bytes),
        format!("{:.2}× memcpy (target ≤ 1.5)", m[4] / m[3]),
    );
    row(names[5], m[5], Some(100 << 20), "target < 20 ms".into());
    row(names[6], m[6], Some(bytes), "1.00×".into());
    row(
        names[7],
        m[7],
        Some(bytes),
        format!("{:.2}× unverified (target ≤ 1.2)", m[7] / m[6]),
    );
    row(names[8], m[8], Some(bytes), "1.00×".into());
    row(
        names[9],
        m[9],
        Some(bytes),
        format!("{:.2}× unverified (target ≤ 1.2)", m[9] / m[8]),
    );
    row(
        "open a run of 1,000 steps + latest",
        median(open_times),
        None,
        "target < 50 ms".into(),
    );
    let _ = std::fs::remove_dir_all(&work);
}

fn human(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}
