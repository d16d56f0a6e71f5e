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

/// The operations measured, in the order they rotate through.
const NAMES: [&str; 10] = [
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

/// The states, the run they are saved to, and the buffers the limits use.
struct Bench {
    work: std::path::PathBuf,
    run_dir: std::path::PathBuf,
    store: CheckpointManager,
    big: TrainingCheckpoint,
    small: TrainingCheckpoint,
    tiny: TrainingCheckpoint,
    step: u64,
    /// The newest step holding `big`.
    big_step: u64,
    warm: Vec<u8>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let work = std::path::PathBuf::from(args.next().expect("WORKDIR"));
    let runs: usize = args.next().map_or(5, |s| s.parse().unwrap());
    let mib: usize = args.next().map_or(1024, |s| s.parse().unwrap());
    std::fs::create_dir_all(&work).unwrap();
    let mut bench = Bench::new(work, mib);
    let times = bench.rotate(runs);
    drop(bench.store);
    let open_times = open_many(&bench.work, &bench.tiny, runs);
    report(times, open_times, bench.big.model.total_bytes(), runs);
    let _ = std::fs::remove_dir_all(&bench.work);
}

impl Bench {
    /// The states, and a run holding one save of the big one.
    fn new(work: std::path::PathBuf, mib: usize) -> Bench {
        let big = state(mib, 200);
        let small = state(100, 50);
        let tiny = state(0, 1); // one empty tensor: a checkpoint of a few hundred bytes
        let bytes: u64 = big.model.total_bytes();

        let run_dir = work.join("run");
        let _ = std::fs::remove_dir_all(&run_dir);
        // The newest big save is at most two saves back when a load runs.
        let options = StoreOptions::default().retention(Retention::default().keep_last(4));
        let mut store = CheckpointManager::open(&run_dir, options).unwrap();
        store.save(1, &big, &[]).unwrap();
        Bench {
            work,
            run_dir,
            store,
            big,
            small,
            tiny,
            step: 1,
            big_step: 1,
            warm: vec![0u8; bytes as usize],
        }
    }

    /// Every operation `runs` times, in rotating order: the seconds each
    /// took, by operation.
    fn rotate(&mut self, runs: usize) -> Vec<Vec<f64>> {
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); NAMES.len()];
        for run in 0..runs {
            for k in 0..NAMES.len() {
                let op = (k + run) % NAMES.len();
                let t = self.measure(op);
                // The first stall of each size allocates the snapshot buffer;
                // steady state is what training sees.
                if !(run == 0 && (op == 4 || op == 5)) {
                    times[op].push(t);
                }
            }
        }
        self.store.wait().unwrap();
        times
    }

    /// Operation `op` of [`NAMES`], once: its seconds.
    fn measure(&mut self, op: usize) -> f64 {
        match op {
            0 => self.plain_write(),
            1 | 2 => self.durable_save(op),
            3 => self.memcpy(),
            4 | 5 => self.async_stall(op),
            _ => self.load(op),
        }
    }

    /// The limit: the state's bytes written sequentially + fsync.
    fn plain_write(&self) -> f64 {
        let plain = self.work.join("plain.bin");
        sync();
        let start = Instant::now();
        let mut f = std::io::BufWriter::with_capacity(4 << 20, File::create(&plain).unwrap());
        for t in self.big.model.values() {
            f.write_all(t.bytes()).unwrap();
        }
        f.into_inner().unwrap().sync_all().unwrap();
        let t = start.elapsed().as_secs_f64();
        std::fs::remove_file(&plain).unwrap();
        t
    }

    /// Waits for any background save and syncs; the next step, recorded
    /// as the newest big one when `big`.
    fn next_step(&mut self, big: bool) -> u64 {
        self.store.wait().unwrap();
        sync();
        self.step += 1;
        if big {
            self.big_step = self.step;
        }
        self.step
    }

    /// A durable save of the big state (op 1) or the tiny one (op 2).
    fn durable_save(&mut self, op: usize) -> f64 {
        let step = self.next_step(op == 1);
        let c = if op == 1 { &self.big } else { &self.tiny };
        self.store.save(step, c, &[("loss", 1.0)]).unwrap().seconds
    }

    /// The limit: one memcpy of the state into warm memory.
    fn memcpy(&mut self) -> f64 {
        let start = Instant::now();
        let mut at = 0;
        for t in self.big.model.values() {
            self.warm[at..at + t.bytes().len()].copy_from_slice(t.bytes());
            at += t.bytes().len();
        }
        black_box(&self.warm);
        start.elapsed().as_secs_f64()
    }

    /// The `save_async` stall for the big state (op 4) or 100 MB (op 5).
    fn async_stall(&mut self, op: usize) -> f64 {
        let step = self.next_step(op == 4);
        let c = if op == 4 { &self.big } else { &self.small };
        // Warm the snapshot buffer for this size first.
        let start = Instant::now();
        self.store.save_async(step, c, &[]).unwrap();
        let t = start.elapsed().as_secs_f64();
        self.store.wait().unwrap();
        t
    }

    /// A load of the newest big save + reading every byte: mapped (ops 6,
    /// 7) or owned (8, 9), verified (7, 9) or not.
    fn load(&self, op: usize) -> f64 {
        let reader = RunReader::open_with(
            std::sync::Arc::new(ckpt::storage::LocalStorage::new(&self.run_dir)),
            StoreOptions::default()
                .verify(op == 7 || op == 9)
                .mmap(op < 8),
        )
        .unwrap();
        let start = Instant::now();
        let c = reader.load(self.big_step).unwrap();
        black_box(touch(&c));
        start.elapsed().as_secs_f64()
    }
}

/// Opening a run directory with 1,000 committed steps and finding the
/// latest, `runs` times (at least 5): the seconds each took.
fn open_many(work: &std::path::Path, tiny: &TrainingCheckpoint, runs: usize) -> Vec<f64> {
    let many = work.join("many");
    let _ = std::fs::remove_dir_all(&many);
    {
        let options = StoreOptions::default()
            .durable(false)
            .retention(Retention::default().keep_last(1000));
        let mut store = CheckpointManager::open(&many, options).unwrap();
        for s in 1..=1000 {
            store.save(s, tiny, &[("loss", 1.0 / s as f64)]).unwrap();
        }
    }
    (0..runs.max(5))
        .map(|_| {
            let start = Instant::now();
            let store = CheckpointManager::open(&many, StoreOptions::default()).unwrap();
            black_box(store.latest().unwrap());
            start.elapsed().as_secs_f64()
        })
        .collect()
}

/// The table of medians, with the ratios the targets are stated in.
fn report(times: Vec<Vec<f64>>, open_times: Vec<f64>, bytes: u64, runs: usize) {
    let names = NAMES;
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
}

fn human(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}
