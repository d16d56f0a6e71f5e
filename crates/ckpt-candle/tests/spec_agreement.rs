//! Every layer kind of a `ModelSpec`, built in candle from the weights of
//! the same model built in torch (tests/fixtures/spec/, written by
//! make_fixtures.py), gives torch's outputs within 1e-5.

use candle_core::Device;
use ckpt_candle::{from_candle, to_candle, Model};

mod common;

use common::{spec_cases, spec_fixture};

#[test]
fn every_layer_kind_matches_torch() {
    for case in spec_cases() {
        let case = case.as_str();
        let (spec, sd, f) = spec_fixture(case);
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
    let (spec, _, _) = spec_fixture("residual");
    let (_, other, _) = spec_fixture("linear");
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
