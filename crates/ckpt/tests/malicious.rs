//! The malicious corpus (`tests/fixtures/malicious/`, written by
//! `tests/fixtures/make_malicious.py` from the public pickle scanners'
//! patterns and the bypasses reported against them): every file is refused
//! by name, by reading and by verifying, and none is forgotten. With
//! `CKPT_PYTHON` set, `tests/interop/malicious_peer.py` shows that Python
//! would have run each one.

mod common;

use common::*;
use std::collections::BTreeMap;

use serde_json::Value as Json;

#[path = "../../../tests/interop/python.rs"]
mod python;
use python::{python, run_peer};

/// `expected.json`: file -> its entry (`global`, `runs_in`, `pattern`).
fn expected() -> BTreeMap<String, Json> {
    let text = std::fs::read_to_string(fixture("malicious/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn global(entry: &Json) -> &str {
    entry["global"].as_str().unwrap()
}

#[test]
fn every_malicious_file_is_refused_by_reading_naming_its_global() {
    let mut wrong = Vec::new();
    for (name, entry) in expected() {
        let want = global(&entry);
        match ckpt::read(
            fixture(&format!("malicious/{name}")),
            &ckpt::LoadOptions::default(),
        ) {
            Ok(_) => wrong.push(format!("{name}: ACCEPTED (should name {want})")),
            Err(e) => {
                let msg = e.to_string();
                if !msg.contains(&format!("names {want} at byte")) || !msg.contains("dangerous") {
                    wrong.push(format!("{name}: should name {want}, says: {msg}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn no_malicious_file_verifies() {
    let accepted: Vec<String> = expected()
        .into_keys()
        .filter(|name| ckpt::verify(fixture(&format!("malicious/{name}"))).is_ok())
        .collect();
    assert!(accepted.is_empty(), "verify accepted {accepted:?}");
}

#[test]
fn refusals_are_dangerous_global_errors() {
    for name in expected().keys() {
        let err = ckpt::verify(fixture(&format!("malicious/{name}"))).unwrap_err();
        assert!(
            matches!(err, ckpt::Error::DangerousGlobal { .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn every_file_in_the_corpus_is_listed() {
    let listed = expected();
    let mut unlisted = Vec::new();
    for entry in std::fs::read_dir(fixture("malicious")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name != "expected.json" && !listed.contains_key(&name) {
            unlisted.push(name);
        }
    }
    assert!(unlisted.is_empty(), "not in expected.json: {unlisted:?}");
    for (name, entry) in &listed {
        assert!(
            fixture(&format!("malicious/{name}")).is_file(),
            "{name} is listed but missing"
        );
        assert!(
            matches!(
                entry["runs_in"].as_str(),
                Some("torch.load" | "pickle.load" | "numpy.load" | "none")
            ),
            "{name}: runs_in {}",
            entry["runs_in"]
        );
    }
    // The corpus covers the scanners' pattern classes, not a handful.
    assert!(listed.len() >= 25, "only {} files", listed.len());
}

#[test]
fn python_would_have_run_each_malicious_file() {
    let Some(python) = python() else { return };
    let folder = fixture("malicious");
    run_peer(&python, "malicious_peer.py", &[folder.to_str().unwrap()]);
}
