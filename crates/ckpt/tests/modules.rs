//! Specs derived from whole models as `torch.save(model)` pickles them
//! (tests/fixtures/modules, written by real torch from the same models as
//! spec/): equal to the hand-written spec of every layer kind, with the
//! weights under the spec's parameter names; user classes refused by name.

use std::path::PathBuf;

use ckpt::{LoadOptions, ModelSpec, StateDict};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/modules")
        .join(name)
}

const CASES: &[&str] = &[
    "linear",
    "conv",
    "conv_groups",
    "batchnorm1d",
    "batchnorm1d_seq",
    "batchnorm2d",
    "layernorm",
    "embedding",
    "activations",
    "dropout_flatten",
    "pools",
    "nested",
];

#[test]
fn every_layer_kind_derives_the_hand_written_spec() {
    for name in CASES {
        let text = std::fs::read_to_string(fixture(&format!("{name}.spec.json"))).unwrap();
        let expected = ModelSpec::from_json(&text).unwrap();
        let loaded = ckpt::read(fixture(&format!("{name}.pth")), &LoadOptions::default()).unwrap();
        let module = loaded.module.as_ref().expect("a pickled module");
        let derived = ModelSpec::from_module(module, name, Some(&expected.input_shape))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(derived.to_json(), expected.to_json(), "{name}");
        // The weights torch saved are exactly the spec's parameters.
        let weights = StateDict::flatten(&loaded.value).unwrap();
        let names: Vec<String> = derived.expected().into_iter().map(|e| e.name).collect();
        let mut found: Vec<String> = weights.keys().cloned().collect();
        let mut wanted = names.clone();
        found.sort();
        wanted.sort();
        assert_eq!(found, wanted, "{name}");
    }
}

#[test]
fn scripted_and_traced_torchscript_derive_the_hand_written_spec() {
    for name in CASES {
        let text = std::fs::read_to_string(fixture(&format!("{name}.spec.json"))).unwrap();
        let expected = ModelSpec::from_json(&text).unwrap();
        for kind in ["script", "trace"] {
            let file = fixture(&format!("{name}.{kind}.pt"));
            let loaded = ckpt::read(&file, &LoadOptions::default()).unwrap();
            let module = loaded.module.as_ref().expect("a module tree");
            let derived = ModelSpec::from_module(module, name, Some(&expected.input_shape))
                .unwrap_or_else(|e| panic!("{name}.{kind}: {e}"));
            assert_eq!(derived.to_json(), expected.to_json(), "{name}.{kind}");
            let weights = StateDict::flatten(&loaded.value).unwrap();
            let mut found: Vec<String> = weights.keys().cloned().collect();
            let mut wanted: Vec<String> = derived.expected().into_iter().map(|e| e.name).collect();
            found.sort();
            wanted.sort();
            assert_eq!(found, wanted, "{name}.{kind}");
        }
    }
}

#[test]
fn the_input_shape_comes_from_the_first_layer_when_it_tells() {
    for (name, shape) in [
        ("linear", Some(vec![6])),
        ("batchnorm1d", Some(vec![5])),
        ("nested", Some(vec![4])),
        ("conv", None),
    ] {
        let loaded = ckpt::read(fixture(&format!("{name}.pth")), &LoadOptions::default()).unwrap();
        let derived = ModelSpec::from_module(loaded.module.as_ref().unwrap(), name, None);
        match shape {
            Some(shape) => assert_eq!(derived.unwrap().input_shape, shape, "{name}"),
            None => {
                let err = derived.unwrap_err().to_string();
                assert!(err.contains("--input-shape"), "{err}");
            }
        }
    }
}

#[test]
fn a_user_class_is_refused_with_its_name_and_its_weights_still_read() {
    // Pickled by torch.save, and traced into TorchScript.
    for (file, class) in [
        ("residual.pth", "__main__.Residual"),
        ("residual.trace.pt", "__torch__.Residual"),
    ] {
        let loaded = ckpt::read(fixture(file), &LoadOptions::default()).unwrap();
        assert!(StateDict::flatten(&loaded.value)
            .unwrap()
            .contains_key("1.0.weight"));
        let err = ModelSpec::from_module(loaded.module.as_ref().unwrap(), "residual", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(class) && err.contains("user code"), "{err}");
    }
}

#[test]
fn files_that_are_not_pickled_modules_have_none() {
    let spec_case =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/spec/linear.pth");
    assert!(ckpt::read(spec_case, &LoadOptions::default())
        .unwrap()
        .module
        .is_none());
}
