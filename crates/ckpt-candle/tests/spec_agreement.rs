//! Every layer kind of a `ModelSpec`, built in candle from the weights of
//! the same model built in torch (tests/fixtures/spec/, written by
//! make_fixtures.py), gives torch's outputs within 1e-5.

use std::path::PathBuf;

use candle_core::Device;
use ckpt::{ModelSpec, StateDict, Value};
use ckpt_candle::{from_candle, to_candle, Model};

/// Every golden model in tests/fixtures/spec/, by name.
fn cases() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/spec");
    let mut names: Vec<String> = std::fs::read_dir(dir)
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

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/spec")
        .join(format!("{name}.pth"));
    ckpt::load(path).unwrap()
}

#[test]
fn every_layer_kind_matches_torch() {
    for case in cases() {
        let case = case.as_str();
        let f = fixture(case);
        let Some(Value::Str(json)) = f.get("spec") else {
            panic!("{case}: no spec")
        };
        let spec = ModelSpec::from_json(json).unwrap_or_else(|e| panic!("{case}: {e}"));
        let sd = StateDict::try_from(f.get("state_dict").unwrap()).unwrap();
        let model = Model::from_state_dict(spec, sd.clone(), &Device::Cpu)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(
            model.state_dict().unwrap(),
            sd,
            "{case}: the weights come back as loaded"
        );
        let x = to_candle(
            f.get("input").unwrap().as_tensor().unwrap(),
            &Device::Cpu,
            "input",
        )
        .unwrap();
        let y = from_candle(
            &model.forward(&x).unwrap_or_else(|e| panic!("{case}: {e}")),
            "y",
        )
        .unwrap();
        let want = f.get("output").unwrap().as_tensor().unwrap();
        assert_eq!(y.shape(), want.shape(), "{case}");
        let (ours, theirs): (Vec<f64>, Vec<f64>) =
            (y.values_f64().collect(), want.values_f64().collect());
        let scale = theirs.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs() / scale)
            .fold(0.0, f64::max);
        assert!(
            worst <= 1e-5,
            "{case}: differs from torch by {worst:.2e} of the output's scale"
        );
    }
}

#[test]
fn a_state_dict_for_another_spec_is_refused_naming_the_keys() {
    let f = fixture("residual");
    let Some(Value::Str(json)) = f.get("spec") else {
        panic!()
    };
    let spec = ModelSpec::from_json(json).unwrap();
    let other = StateDict::try_from(fixture("linear").get("state_dict").unwrap()).unwrap();
    let err = Model::from_state_dict(spec, other, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing keys: 1.0.bias"), "{err}");
    assert!(
        err.contains("0.weight: the model has shape [8, 6], the file [5, 6]"),
        "{err}"
    );
}
