//! NumPy files written by real NumPy (tests/fixtures/make_fixtures.py).

mod common;

use common::*;
use std::path::Path;

use ckpt::{DType, Error, StateDict, TensorData, Value};
use serde_json::Value as Json;

fn expected() -> serde_json::Map<String, Json> {
    let text = std::fs::read_to_string(fixture("numpy/expected.json")).unwrap();
    serde_json::from_str::<Json>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

#[test]
fn every_npy_reads_as_numpy_shows_it() {
    for (name, want) in expected() {
        let v = ckpt::load(fixture(&format!("numpy/{name}.npy"))).unwrap();
        assert_tensor(&name, v.as_tensor().unwrap(), &want);
    }
}

#[test]
fn stored_and_compressed_npz_read_as_state_dicts() {
    for file in ["stored.npz", "compressed.npz"] {
        let sd = ckpt::load_state_dict(fixture(&format!("numpy/{file}"))).unwrap();
        let want = expected();
        assert_eq!(sd.len(), want.len(), "{file}");
        for (name, w) in &want {
            assert_tensor(name, &sd[name.as_str()], w);
        }
    }
    // Stored members are borrowed from the map; deflated ones are inflated.
    assert!(ckpt::load_state_dict(fixture("numpy/stored.npz")).unwrap()["f32"].is_mapped());
}

#[test]
fn npy_and_npz_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let sd = ckpt::load_state_dict(fixture("numpy/stored.npz")).unwrap();
    let out = dir.path().join("copy.npz");
    ckpt::save(&out, &sd.clone().into()).unwrap();
    assert_eq!(ckpt::load_state_dict(&out).unwrap(), sd);
    let one = dir.path().join("one.npy");
    ckpt::save(&one, &Value::Tensor(sd["fortran"].clone())).unwrap();
    assert_eq!(
        ckpt::load(&one).unwrap(),
        Value::Tensor(sd["fortran"].clone())
    );
}

#[test]
fn numpy_refuses_what_it_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let bf16 = TensorData::new(DType::BF16, vec![1], vec![0, 0]).unwrap();
    let err = ckpt::save(dir.path().join("x.npy"), &Value::Tensor(bf16)).unwrap_err();
    assert!(matches!(err, Error::NumpyDType { .. }), "{err}");
    let mut sd = StateDict::new();
    sd.insert("a".into(), TensorData::from_f32(&[1], &[1.0]).unwrap());
    let err = ckpt::save(dir.path().join("x.npy"), &sd.into()).unwrap_err();
    assert!(matches!(err, Error::NotATensor { .. }), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn truncated_npy_is_an_error() {
    let bytes = std::fs::read(fixture("numpy/f32.npy")).unwrap();
    for len in [0, 5, 9, 40, bytes.len() - 1] {
        let err = ckpt::read_bytes(
            ckpt::Format::Npy,
            bytes[..len].to_vec(),
            Path::new("cut.npy"),
        );
        assert!(err.is_err(), "{len}");
    }
}
