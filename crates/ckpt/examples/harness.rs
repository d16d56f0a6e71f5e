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
//! seconds, plus the bytes involved. `harness --rss FILE` instead maps FILE,
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

fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--rss") {
        let loaded = ckpt::read(&args[1], &LoadOptions::default()).expect("load");
        let sd = StateDict::flatten(&loaded.value).expect("flatten");
        black_box(sd.keys().count());
        println!(
            "{}",
            serde_json::json!({ "peak_rss_bytes": peak_rss(), "file_bytes": std::fs::metadata(&args[1]).unwrap().len() })
        );
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

    let mut dst = vec![1u8; total];
    let memcpy = time(
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
    );
    drop(dst);

    let out = workdir.join("rust-out.safetensors");
    let raw = workdir.join("rust-plain.bin");
    let remove = |p: &Path| {
        let _ = std::fs::remove_file(p);
    };
    let plain_write = |sync: bool| {
        let mut f = File::create(&raw).unwrap();
        for t in sd.values() {
            f.write_all(t.bytes()).unwrap();
        }
        if sync {
            f.sync_all().unwrap();
        }
    };
    let write = time(runs, || remove(&raw), || plain_write(false));
    let write_fsync = time(runs, || remove(&raw), || plain_write(true));
    remove(&raw);

    let save = time(runs, || remove(&out), || ckpt::save(&out, &value).unwrap());
    let durable = ckpt::SaveOptions::default().durable(true);
    let save_durable = time(
        runs,
        || remove(&out),
        || ckpt::save_with(&out, &value, &durable).unwrap(),
    );
    let out_pth = workdir.join("rust-out.pth");
    let save_pth = time(
        runs,
        || remove(&out_pth),
        || ckpt::save(&out_pth, &value).unwrap(),
    );
    remove(&out_pth);
    drop(value);
    drop(sd);

    let open_list = time(
        runs,
        || {},
        || {
            let loaded = ckpt::read(&out, &LoadOptions::default()).unwrap();
            let sd = StateDict::flatten(&loaded.value).unwrap();
            sd.keys().map(String::len).sum::<usize>()
        },
    );
    let load_touch = time(
        runs,
        || {},
        || {
            let sd = ckpt::load_state_dict(&out).unwrap();
            touch_all(&sd)
        },
    );
    let load_owned_touch = time(
        runs,
        || {},
        || {
            let loaded = ckpt::read(&out, &LoadOptions::default().mmap(false)).unwrap();
            touch_all(&StateDict::flatten(&loaded.value).unwrap())
        },
    );
    remove(&out);
    let load_pth_touch = time(
        runs,
        || {},
        || {
            let sd = ckpt::load_state_dict(torch_pth).unwrap();
            touch_all(&sd)
        },
    );

    println!(
        "{}",
        serde_json::json!({
            "bytes": total,
            "memcpy": memcpy,
            "write": write,
            "write_fsync": write_fsync,
            "ckpt_save": save,
            "ckpt_save_durable": save_durable,
            "ckpt_open_list": open_list,
            "ckpt_load_touch": load_touch,
            "ckpt_load_owned_touch": load_owned_touch,
            "ckpt_save_pth": save_pth,
            "ckpt_load_pth_touch": load_pth_touch,
        })
    );
}
