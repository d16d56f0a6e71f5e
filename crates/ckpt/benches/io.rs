//! `cargo bench -p ckpt`: the Rust side alone, against a memcpy baseline and
//! the `safetensors` crate, on the same data. Throughput is in bytes, so
//! criterion prints GB/s for every row and the rows compare directly.
//! (`bench/compare.py` measures against torch and Python safetensors.)

use std::collections::HashMap;
use std::hint::black_box;

use ckpt::{DType, LoadOptions, StateDict, TensorData};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn state_dict(tensors: usize, elements: usize) -> StateDict {
    (0..tensors)
        .map(|i| {
            let bytes = (0..elements * 4).map(|j| (i + j) as u8).collect();
            (
                format!("layers.{i}.weight"),
                TensorData::new(DType::F32, vec![elements], bytes).unwrap(),
            )
        })
        .collect()
}

fn total(sd: &StateDict) -> u64 {
    sd.total_bytes()
}

fn touch(sd: &StateDict) -> u64 {
    sd.values()
        .flat_map(|t| t.bytes().chunks_exact(8))
        .fold(0u64, |s, c| {
            s.wrapping_add(u64::from_le_bytes(c.try_into().unwrap()))
        })
}

fn save_and_load(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // 64 MiB in 32 tensors: big enough for sequential I/O, quick to run.
    let sd = state_dict(32, 1 << 19);
    let value = sd.clone().into();
    let bytes = total(&sd);
    let path = dir.path().join("bench.safetensors");
    let peer_path = dir.path().join("peer.safetensors");

    let mut group = c.benchmark_group("64MiB");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(10);
    let mut dst = vec![0u8; bytes as usize];
    group.bench_function("memcpy (limit)", |b| {
        b.iter(|| {
            let mut at = 0;
            for t in sd.values() {
                dst[at..at + t.bytes().len()].copy_from_slice(t.bytes());
                at += t.bytes().len();
            }
            black_box(&dst);
        })
    });
    group.bench_function("ckpt save", |b| {
        b.iter(|| ckpt::save(&path, &value).unwrap())
    });
    group.bench_function("safetensors crate serialize_to_file", |b| {
        b.iter(|| {
            let views = sd.iter().map(|(name, t)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    t.shape().to_vec(),
                    t.bytes(),
                )
                .unwrap();
                (name.as_str(), view)
            });
            safetensors::serialize_to_file(views, None, &peer_path).unwrap()
        })
    });
    group.bench_function("ckpt load (mmap) + read all", |b| {
        b.iter(|| touch(&ckpt::load_state_dict(&path).unwrap()))
    });
    group.bench_function("ckpt load (owned) + read all", |b| {
        b.iter(|| {
            let loaded = ckpt::read(&path, &LoadOptions::default().mmap(false)).unwrap();
            touch(&StateDict::flatten(&loaded.value).unwrap())
        })
    });
    group.finish();
}

fn open_many(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let sd = state_dict(5000, 256);
    let path = dir.path().join("many.safetensors");
    ckpt::save(&path, &sd.into()).unwrap();
    let file_bytes = std::fs::read(&path).unwrap();

    let mut group = c.benchmark_group("5000 tensors: parse header + list names");
    group.bench_function("ckpt", |b| {
        b.iter(|| {
            let header = ckpt::format::safetensors::parse_header(&file_bytes, &path).unwrap();
            header.entries.len()
        })
    });
    group.bench_function("safetensors crate", |b| {
        b.iter(|| {
            let st = safetensors::SafeTensors::deserialize(&file_bytes).unwrap();
            let names: HashMap<_, _> = st.tensors().into_iter().collect();
            names.len()
        })
    });
    group.finish();
}

criterion_group!(benches, save_and_load, open_many);
criterion_main!(benches);
