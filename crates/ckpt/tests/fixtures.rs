//! Golden files written by the real tools (tests/fixtures/make_fixtures.py):
//! ckpt must read them exactly, and refuse the hostile ones with a clear
//! error instead of a panic.

mod common;

use common::*;

use ckpt::{Error, StateDict};
use serde_json::Value as Json;

/// Compares every tensor with the dtype, shape and bytes torch reported.
fn assert_matches_expected(sd: &StateDict, expected: &str) {
    let expected: Json =
        serde_json::from_str(&std::fs::read_to_string(fixture(expected)).unwrap()).unwrap();
    let expected = expected.as_object().unwrap();
    assert_eq!(sd.len(), expected.len());
    for (name, want) in expected {
        assert_tensor(name, &sd[name.as_str()], want);
    }
}

#[test]
fn reads_every_dtype_written_by_python_safetensors() {
    let sd = ckpt::load_state_dict(fixture("all_dtypes.safetensors")).unwrap();
    assert_matches_expected(&sd, "all_dtypes.expected.json");
    assert_eq!(sd["scalar"].shape(), &[] as &[usize]);
    assert_eq!(sd["empty"].numel(), 0);
}

#[test]
fn reads_a_torch_model_state_dict_with_its_metadata() {
    let loaded = ckpt::read(fixture("mlp.safetensors"), &ckpt::LoadOptions::default()).unwrap();
    assert_eq!(loaded.metadata["architecture"], "mlp-784-32-10");
    let sd = StateDict::try_from(&loaded.value).unwrap();
    assert_matches_expected(&sd, "mlp.expected.json");
    assert_eq!(sd["fc1.weight"].shape(), &[32, 784]);
}

#[test]
fn rewriting_a_python_file_keeps_every_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.safetensors");
    let value = ckpt::load(fixture("all_dtypes.safetensors")).unwrap();
    ckpt::save(&out, &value).unwrap();
    assert_matches_expected(
        &ckpt::load_state_dict(&out).unwrap(),
        "all_dtypes.expected.json",
    );
}

fn hostile(name: &str) -> Error {
    let path = fixture(&format!("hostile/{name}"));
    let err = ckpt::load(&path).expect_err(name);
    assert!(
        err.to_string().contains(name),
        "{name}: error does not name the file: {err}"
    );
    err
}

#[test]
fn empty_and_truncated_files_are_truncation_errors() {
    for name in [
        "empty.safetensors",
        "truncated_length.safetensors",
        "truncated_header.safetensors",
    ] {
        assert!(matches!(hostile(name), Error::Truncated { .. }), "{name}");
    }
}

#[test]
fn truncated_data_names_the_tensor_that_runs_past_the_end() {
    let err = hostile("truncated_data.safetensors");
    assert!(
        matches!(err, Error::BadDataRange { ref tensor, .. } if tensor.starts_with("fc")),
        "{err}"
    );
}

#[test]
fn random_bytes_are_an_error() {
    hostile("random.safetensors");
}

#[test]
fn header_lengths_past_the_file_or_the_cap_are_refused() {
    assert!(matches!(
        hostile("header_past_end.safetensors"),
        Error::Truncated { .. }
    ));
    assert!(matches!(
        hostile("header_terabytes.safetensors"),
        Error::HeaderTooLarge { .. }
    ));
}

#[test]
fn malformed_json_is_a_json_error() {
    assert!(matches!(
        hostile("not_json.safetensors"),
        Error::HeaderJson { .. }
    ));
}

#[test]
fn bad_data_ranges_are_refused() {
    assert!(matches!(
        hostile("overlap.safetensors"),
        Error::BadDataRange { .. }
    ));
    assert!(matches!(
        hostile("out_of_range.safetensors"),
        Error::BadDataRange { .. }
    ));
    assert!(matches!(
        hostile("shape_terabytes.safetensors"),
        Error::BadDataRange { .. }
    ));
    assert!(matches!(
        hostile("length_mismatch.safetensors"),
        Error::ByteLengthMismatch {
            expected: 12,
            actual: 8,
            ..
        }
    ));
}

#[test]
fn unknown_dtype_is_refused() {
    assert!(matches!(
        hostile("unknown_dtype.safetensors"),
        Error::UnknownDType { .. }
    ));
}

#[test]
fn a_tree_naming_a_missing_tensor_is_refused() {
    assert!(matches!(
        hostile("bad_tree.safetensors"),
        Error::BadTree { .. }
    ));
}

#[test]
fn a_torch_zip_named_safetensors_opens_as_what_it_is() {
    let loaded = ckpt::read(
        fixture("wild/zip_inside.safetensors"),
        &ckpt::LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(loaded.format, ckpt::Format::PyTorch);
    // Told explicitly that the bytes are safetensors, they are refused.
    let bytes = std::fs::read(fixture("wild/zip_inside.safetensors")).unwrap();
    let err = ckpt::read_bytes(ckpt::Format::Safetensors, bytes, "upload".as_ref()).unwrap_err();
    assert!(matches!(err, Error::FormatMismatch { .. }), "{err}");
}
