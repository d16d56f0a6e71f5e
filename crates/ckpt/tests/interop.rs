//! Interop with the real Python peers (safetensors, torch). These run when
//! `CKPT_PYTHON` names a Python with torch and safetensors, as the test
//! script (`scripts/test`) and CI arrange; plain `cargo test` skips them
//! with a message.

mod common;

use common::*;
use std::path::PathBuf;

use ckpt::{DType, Dict, Key, StateDict, TensorData, Value};
use serde_json::{json, Value as Json};

#[path = "../../../tests/interop/python.rs"]
mod python;
use python::{python, run_peer};

fn peer(python: &str, args: &[&str]) {
    run_peer(python, "peer.py", args);
}

fn describe(sd: &StateDict) -> Json {
    sd.iter()
        .map(|(name, t)| {
            (
                name.clone(),
                json!({"dtype": t.dtype().torch_name(), "shape": t.shape(), "hex": hex(t.bytes())}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Deterministic pseudo-random bytes (a small LCG; no dependency needed).
fn bytes(len: usize, seed: &mut u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (*seed >> 56) as u8
        })
        .collect()
}

fn random_state_dict(seed: &mut u64) -> StateDict {
    random_state_dict_of(seed, |_| true)
}

/// Random tensors of the dtypes `keep` allows.
fn random_state_dict_of(seed: &mut u64, keep: impl Fn(DType) -> bool) -> StateDict {
    let dtypes: Vec<DType> = DType::all().filter(|&d| keep(d)).collect();
    let count = (bytes(1, seed)[0] % 8) as usize;
    (0..count)
        .map(|i| {
            let pick = bytes(4, seed);
            let dtype = dtypes[pick[0] as usize % dtypes.len()];
            let shape: Vec<usize> = (0..pick[1] % 4)
                .map(|j| (pick[2 + (j as usize % 2)] % 4) as usize)
                .collect();
            let len = ckpt::byte_len(dtype, &shape).unwrap() as usize;
            let mut data = bytes(len, seed);
            if dtype == DType::Bool {
                data.iter_mut().for_each(|b| *b &= 1);
            }
            (
                format!("block.{i}.weight"),
                TensorData::new(dtype, shape, data).unwrap(),
            )
        })
        .collect()
}

#[test]
fn files_ckpt_writes_load_in_python_safetensors() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = serde_json::Map::new();
    let mut seed = 42u64;
    let options = ckpt::SaveOptions::default().metadata("written_by", "ckpt");
    // safetensors has no complex128, and Python safetensors 0.8 reads no
    // F8_E8M0 (it writes it, but its reader's table lacks the name).
    let python_reads = |d: DType| !matches!(d, DType::C128 | DType::F8E8M0);
    for i in 0..30 {
        let sd = random_state_dict_of(&mut seed, python_reads);
        let name = format!("ckpt-{i}.safetensors");
        ckpt::save_with(dir.path().join(&name), &sd.clone().into(), &options).unwrap();
        manifest.insert(
            name,
            json!({"tensors": describe(&sd), "metadata": {"format": "pt", "written_by": "ckpt"}}),
        );
    }
    // A nested checkpoint is still a valid safetensors file, its tensors
    // under their flattened names.
    let mut state = Dict::new();
    state.insert(
        Key::Int(0),
        Value::Dict(
            random_state_dict(&mut seed)
                .into_iter()
                .map(|(k, v)| (Key::Str(k), v.into()))
                .collect(),
        ),
    );
    let mut tree = Dict::new();
    tree.insert("epoch".into(), Value::Int(3));
    tree.insert("model".into(), random_state_dict(&mut seed).into());
    tree.insert("state".into(), Value::Dict(state));
    let tree = Value::Dict(tree);
    ckpt::save(dir.path().join("nested.safetensors"), &tree).unwrap();
    manifest.insert(
        "nested.safetensors".into(),
        json!({"tensors": describe(&StateDict::flatten(&tree).unwrap()), "metadata": {"format": "pt"}}),
    );
    std::fs::write(
        dir.path().join("manifest.json"),
        Json::Object(manifest).to_string(),
    )
    .unwrap();
    peer(&python, &["check", dir.path().to_str().unwrap()]);
}

#[test]
fn files_python_safetensors_writes_load_in_ckpt() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    peer(&python, &["write", dir.path().to_str().unwrap(), "30", "7"]);
    let manifest: Json =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    for (file, want) in manifest.as_object().unwrap() {
        let path: PathBuf = dir.path().join(file);
        let loaded = ckpt::read(&path, &ckpt::LoadOptions::default()).unwrap();
        let sd = StateDict::try_from(&loaded.value).unwrap();
        // Python's safetensors sorts tensors; compare as maps.
        let got: serde_json::Map<String, Json> = describe(&sd).as_object().unwrap().clone();
        assert_eq!(&Json::Object(got), &want["tensors"], "{file}");
        for (k, v) in want["metadata"].as_object().unwrap() {
            assert_eq!(
                loaded.metadata[k.as_str()],
                v.as_str().unwrap(),
                "{file}: {k}"
            );
        }
    }
}

fn random_tree(seed: &mut u64, depth: usize) -> Value {
    let pick = bytes(2, seed);
    let kinds = if depth < 3 { 11 } else { 7 };
    match pick[0] as usize % kinds {
        0 => Value::None,
        1 => Value::Bool(pick[1] & 1 == 1),
        2 => Value::Int(
            [
                0,
                1,
                255,
                256,
                65535,
                65536,
                -1,
                i32::MIN as i64,
                1 << 31,
                i64::MIN,
                i64::MAX,
            ][pick[1] as usize % 11],
        ),
        3 => Value::Float(
            [
                0.0,
                -0.0,
                0.1,
                1e-300,
                -1e300,
                f64::INFINITY,
                f64::NEG_INFINITY,
                3.25,
            ][pick[1] as usize % 8],
        ),
        4 => Value::Str(["", "lr", "ünïcode", "a/b"][pick[1] as usize % 4].to_owned()),
        5 => Value::Bytes(bytes(pick[1] as usize % 6, seed)),
        6 => Value::Tensor(random_state_dict(seed).into_iter().next().map_or_else(
            || TensorData::new(DType::F32, vec![0], vec![]).unwrap(),
            |(_, t)| t,
        )),
        7 => Value::List(
            (0..pick[1] % 4)
                .map(|_| random_tree(seed, depth + 1))
                .collect(),
        ),
        8 => Value::Tuple(
            (0..pick[1] % 5)
                .map(|_| random_tree(seed, depth + 1))
                .collect(),
        ),
        _ => Value::Dict(
            (0..pick[1] % 4)
                .map(|i| {
                    let key = if bytes(1, seed)[0].is_multiple_of(2) {
                        Key::Int(i as i64 - 1)
                    } else {
                        Key::Str(format!("k{i}"))
                    };
                    (key, random_tree(seed, depth + 1))
                })
                .collect(),
        ),
    }
}

#[test]
fn pth_files_ckpt_writes_load_in_torch_with_weights_only() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = serde_json::Map::new();
    let mut seed = 7u64;
    for i in 0..40 {
        let mut root = Dict::new();
        root.insert("epoch".into(), Value::Int(i));
        root.insert("tree".into(), random_tree(&mut seed, 0));
        root.insert("model".into(), random_state_dict(&mut seed).into());
        let value = Value::Dict(root);
        let name = format!("ckpt-{i}.pth");
        ckpt::save(dir.path().join(&name), &value).unwrap();
        manifest.insert(name, describe_tree(&value));
    }
    std::fs::write(
        dir.path().join("manifest.json"),
        Json::Object(manifest).to_string(),
    )
    .unwrap();
    peer(&python, &["check-pth", dir.path().to_str().unwrap()]);
}

#[test]
fn pth_files_torch_writes_load_in_ckpt() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    peer(
        &python,
        &["write-pth", dir.path().to_str().unwrap(), "40", "11"],
    );
    let manifest: Json =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    for (file, want) in manifest.as_object().unwrap() {
        let value = ckpt::load(dir.path().join(file)).unwrap();
        assert_eq!(&describe_tree(&value), want, "{file}");
    }
}

#[test]
fn npy_and_npz_files_ckpt_writes_load_in_numpy_without_pickle() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = serde_json::Map::new();
    let mut seed = 99u64;
    let numpy_ok = |t: &TensorData| !t.dtype().numpy_name().contains('V');
    for i in 0..20 {
        let sd: StateDict = random_state_dict(&mut seed)
            .into_iter()
            .filter(|(_, t)| numpy_ok(t))
            .collect();
        let name = format!("ckpt-{i}.npz");
        ckpt::save(dir.path().join(&name), &sd.clone().into()).unwrap();
        manifest.insert(name, describe(&sd));
        if let Some((_, t)) = sd.into_iter().next() {
            let name = format!("ckpt-{i}.npy");
            ckpt::save(dir.path().join(&name), &Value::Tensor(t.clone())).unwrap();
            manifest.insert(
                name,
                describe(&std::iter::once((String::new(), t)).collect()),
            );
        }
    }
    std::fs::write(
        dir.path().join("manifest.json"),
        Json::Object(manifest).to_string(),
    )
    .unwrap();
    peer(&python, &["check-numpy", dir.path().to_str().unwrap()]);
}
