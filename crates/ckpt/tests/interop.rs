//! Interop with the real Python peers (safetensors, torch). These run when
//! `CKPT_PYTHON` names a Python with torch and safetensors, as the test
//! script (`scripts/test`) and CI arrange; plain `cargo test` skips them
//! with a message.

use std::path::{Path, PathBuf};
use std::process::Command;

use ckpt::{DType, Dict, Key, StateDict, TensorData, Value};
use serde_json::{json, Value as Json};

fn python() -> Option<String> {
    let python = std::env::var("CKPT_PYTHON").ok();
    if python.is_none() {
        eprintln!("skipping interop test: set CKPT_PYTHON to a Python with torch and safetensors");
    }
    python
}

fn peer(python: &str, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/peer.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "peer.py {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    let dtypes: Vec<DType> = DType::all().collect();
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
    for i in 0..30 {
        let sd = random_state_dict(&mut seed);
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
