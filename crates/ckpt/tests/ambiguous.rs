//! Differential test against the reference readers: for every hostile
//! file that numpy, torch or safetensors accepts
//! (`tests/interop/ambiguous_peer.py`), ckpt gives the same tensors or
//! refuses the file — never different ones. Ambiguous files (a key or a
//! zip entry named twice) are where the readers disagree among
//! themselves (torch takes the first `data/0`, numpy the last header
//! key), so ckpt refuses them. Runs when `CKPT_PYTHON` is set.

mod common;

use common::*;

#[path = "../../../tests/interop/python.rs"]
mod python;
use python::{python, run_peer};

#[test]
fn where_a_reference_reader_accepts_ckpt_agrees_or_refuses() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("peer.json");
    let folder = fixture("hostile");
    run_peer(
        &python,
        "ambiguous_peer.py",
        &[folder.to_str().unwrap(), out.to_str().unwrap()],
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let (mut agreed, mut refused) = (0, Vec::new());
    for (name, peer) in report.as_object().unwrap() {
        if peer["accepted"] != true {
            continue;
        }
        let loaded = match ckpt::load(folder.join(name)) {
            Ok(loaded) => loaded,
            Err(e) => {
                refused.push(format!("{name}: {e}"));
                continue;
            }
        };
        let tensors = ckpt::StateDict::flatten(&loaded).unwrap();
        let want = peer["tensors"].as_object().unwrap();
        // A lone .npy is one unnamed tensor.
        let names: Vec<&String> = want.keys().collect();
        assert_eq!(tensors.len(), want.len(), "{name}: {names:?}");
        for (i, (key, t)) in tensors.iter().enumerate() {
            let want = if names == [""] {
                &want[""]
            } else {
                &want[key.as_str()]
            };
            assert!(
                !want.is_null(),
                "{name}: ckpt has {key:?}, the reference does not"
            );
            let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
            assert_eq!(
                serde_json::json!(shape),
                want["shape"],
                "{name}: {key} ({i})"
            );
            assert_eq!(hex(t.bytes()), want["hex"], "{name}: {key} differs");
        }
        agreed += 1;
    }
    eprintln!(
        "ckpt agrees on {agreed} files and refuses {}: {refused:#?}",
        refused.len()
    );
    assert!(agreed >= 3, "{agreed}");
    // The ambiguous files are each accepted by their reference reader,
    // which resolves them its own way; ckpt refuses every one.
    for ambiguous in ["dup_key.npy", "dup_member.npz", "dup_entry.pth"] {
        assert_eq!(report[ambiguous]["accepted"], true, "{ambiguous}");
        assert!(
            refused.iter().any(|r| r.starts_with(ambiguous)),
            "{ambiguous} was not refused"
        );
    }
}
