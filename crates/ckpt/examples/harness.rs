//! The Rust side of the benchmark harness (`bench/compare.py` runs it).
//!
//! ```text
//! harness SOURCE.safetensors TORCH.pth WORKDIR RUNS
//! ```
//!
//! Loads SOURCE onto the heap once, then times, RUNS times each, on those
//! same bytes: single-thread memcpy, plain sequential writes to a new file
//! (with and without fsync), `ckpt::save` to `.safetensors` (with and
//! without `durable`) and to `.pth`, opening and listing the file, loading
//! it and reading every byte (mapped and owned), and loading TORCH.pth (the
//! same tensors, written by `torch.save`) and reading every byte. Prints one JSON object: each operation's times in
//! seconds, plus the bytes involved. Every timed write starts after `sync`,
//! from a clean page cache. `harness --rss FILE` instead maps FILE,
//! lists it, and prints the process's peak RSS in bytes.

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ckpt::{LoadOptions, StateDict, Value};

/// Reads every byte: a wrapping sum of 8-byte words (plus the tail).
fn touch(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    let mut sum = 0u64;
    for c in &mut chunks {
        sum = sum.wrapping_add(u64::from_le_bytes(c.try_into().unwrap()));
    }
    chunks
        .remainder()
        .iter()
        .fold(sum, |s, &b| s.wrapping_add(b as u64))
}

fn touch_all(sd: &StateDict) -> u64 {
    sd.values()
        .fold(0u64, |s, t| s.wrapping_add(touch(t.bytes())))
}

fn time<T>(runs: usize, mut before: impl FnMut(), mut f: impl FnMut() -> T) -> Vec<f64> {
    (0..runs)
        .map(|_| {
            before();
            let start = Instant::now();
            black_box(f());
            start.elapsed().as_secs_f64()
        })
        .collect()
}

/// A timed writer: its name in the results, what it does, the file it makes.
type Writer<'a> = (&'static str, Box<dyn Fn() + 'a>, &'a Path);

fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn remove(p: &Path) {
    let _ = std::fs::remove_file(p);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--rss") {
        rss(&args[1]);
        return;
    }
    let [source, torch_pth, workdir, runs] = &args[..] else {
        eprintln!("usage: harness SOURCE.safetensors TORCH.pth WORKDIR RUNS | harness --rss FILE");
        std::process::exit(2);
    };
    let runs: usize = runs.parse().expect("RUNS is a number");
    let workdir = PathBuf::from(workdir);
    let value: Value = ckpt::read(source, &LoadOptions::default().mmap(false))
        .expect("load source")
        .value;
    let sd = StateDict::flatten(&value).expect("flatten");
    let total: usize = sd.values().map(|t| t.bytes().len()).sum();
    let memcpy = memcpy_times(&sd, total, runs);
    let out = workdir.join("rust-out.safetensors");
    let write_times = write_times(&sd, &value, &workdir, &out, runs);
    // Leave one safetensors file for the readers below.
    ckpt::save(&out, &value).unwrap();
    drop(value);
    drop(sd);
    let [open_list, load_touch, load_owned_touch, load_pth_touch] =
        read_times(&out, torch_pth, runs);

    println!(
        "{}",
        serde_json::json!({
            "bytes": total,
            "memcpy": memcpy,
            "write": write_times["write"],
            "write_fsync": write_times["write_fsync"],
            "ckpt_save": write_times["ckpt_save"],
            "ckpt_save_durable": write_times["ckpt_save_durable"],
            "ckpt_save_pth": write_times["ckpt_save_pth"],
            "ckpt_open_list": open_list,
            "ckpt_load_touch": load_touch,
            "ckpt_load_owned_touch": load_owned_touch,
            "ckpt_load_pth_touch": load_pth_touch,
        })
    );
}

/// `--rss FILE`: maps FILE, lists it, prints the peak RSS.
fn rss(file: &str) {
    let loaded = ckpt::read(file, &LoadOptions::default()).expect("load");
    let sd = StateDict::flatten(&loaded.value).expect("flatten");
    black_box(sd.keys().count());
    println!(
        "{}",
        serde_json::json!({ "peak_rss_bytes": peak_rss(), "file_bytes": std::fs::metadata(file).unwrap().len() })
    );
}

/// Single-thread memcpy of the state's `total` bytes, `runs` times.
fn memcpy_times(sd: &StateDict, total: usize, runs: usize) -> Vec<f64> {
    let mut dst = vec![1u8; total];
    time(
        runs,
        || {},
        || {
            let mut at = 0;
            for t in sd.values() {
                let b = t.bytes();
                dst[at..at + b.len()].copy_from_slice(b);
                at += b.len();
            }
            at
        },
    )
}

/// The writers' times by name: plain writes (with and without fsync) and
/// `ckpt::save` (safetensors to `out`, durable or not, and `.pth`),
/// `runs` rounds.
fn write_times(
    sd: &StateDict,
    value: &Value,
    workdir: &Path,
    out: &Path,
    runs: usize,
) -> std::collections::BTreeMap<&'static str, Vec<f64>> {
    let raw = workdir.join("rust-plain.bin");
    let plain_write = |sync: bool| {
        let mut f = File::create(&raw).unwrap();
        for t in sd.values() {
            f.write_all(t.bytes()).unwrap();
        }
        if sync {
            f.sync_all().unwrap();
        }
    };
    // The writers take turns, round by round and in a rotating order, so
    // that a slow spell of this shared machine lands on all of them alike.
    let durable = ckpt::SaveOptions::default().durable(true);
    let out_pth = workdir.join("rust-out.pth");
    let mut writers: Vec<Writer> = vec![
        ("write", Box::new(|| plain_write(false)), &raw),
        ("write_fsync", Box::new(|| plain_write(true)), &raw),
        (
            "ckpt_save",
            Box::new(|| ckpt::save(out, value).unwrap()),
            out,
        ),
        (
            "ckpt_save_durable",
            Box::new(|| ckpt::save_with(out, value, &durable).unwrap()),
            out,
        ),
        (
            "ckpt_save_pth",
            Box::new(|| ckpt::save(&out_pth, value).unwrap()),
            &out_pth,
        ),
    ];
    let mut write_times: std::collections::BTreeMap<&'static str, Vec<f64>> = Default::default();
    for round in 0..runs {
        // Each round starts with a different writer, so no writer always
        // follows the same one.
        writers.rotate_left(usize::from(round > 0));
        for (name, write, target) in &mut writers {
            // Each writer starts from a clean page cache: no dirty pages of
            // an earlier writer left for the kernel to throttle it on.
            let before = || {
                remove(target);
                let _ = std::process::Command::new("sync").status();
            };
            let t = time(1, before, write);
            write_times.entry(*name).or_default().extend(t);
        }
    }
    drop(writers);
    remove(&raw);
    remove(&out_pth);
    write_times
}

/// Opening and listing `out`, loading it and reading every byte (mapped,
/// owned), then `out` removed, loading `torch_pth` and reading every byte.
fn read_times(out: &Path, torch_pth: &str, runs: usize) -> [Vec<f64>; 4] {
    let open_list = time(
        runs,
        || {},
        || {
            let loaded = ckpt::read(out, &LoadOptions::default()).unwrap();
            let sd = StateDict::flatten(&loaded.value).unwrap();
            sd.keys().map(String::len).sum::<usize>()
        },
    );
    let load_touch = time(
        runs,
        || {},
        || {
            let sd = ckpt::load_state_dict(out).unwrap();
            touch_all(&sd)
        },
    );
    let load_owned_touch = time(
        runs,
        || {},
        || {
            let loaded = ckpt::read(out, &LoadOptions::default().mmap(false)).unwrap();
            touch_all(&StateDict::flatten(&loaded.value).unwrap())
        },
    );
    remove(out);
    let load_pth_touch = time(
        runs,
        || {},
        || {
            let sd = ckpt::load_state_dict(torch_pth).unwrap();
            touch_all(&sd)
        },
    );
    [open_list, load_touch, load_owned_touch, load_pth_touch]
}
