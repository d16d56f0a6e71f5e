//! The spec golden files (tests/fixtures/spec/, written by
//! make_fixtures.py spec), shared by the tests that use them.

use std::path::PathBuf;

use ckpt::{ModelSpec, StateDict, Value};

fn folder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/spec")
}

/// Every golden model, by name.
pub fn spec_cases() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder())
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_suffix(".pth")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 12, "{names:?}");
    names
}

/// A golden model: its spec, torch's weights, and the whole file (with
/// torch's `input` and `output`).
pub fn spec_fixture(name: &str) -> (ModelSpec, StateDict, Value) {
    let f = ckpt::load(folder().join(format!("{name}.pth"))).unwrap();
    let Some(Value::Str(json)) = f.get("spec") else {
        panic!("{name}: no spec")
    };
    let spec = ModelSpec::from_json(json).unwrap_or_else(|e| panic!("{name}: {e}"));
    let weights = StateDict::try_from(f.get("state_dict").unwrap()).unwrap();
    (spec, weights, f)
}
