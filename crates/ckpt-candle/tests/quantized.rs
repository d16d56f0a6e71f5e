//! Quantized packages in candle: on every golden model with Linear,
//! Conv2d or Embedding weights, weight-only inference is exactly the float
//! model of the dequantized weights, and dynamic int8 inference stays
//! within a few quantization steps of torch's float output; the recorded
//! mode is the default and can be overridden.

use candle_core::Device;
use ckpt::compress::quantize::{Activations, Granularity};
use ckpt::{Package, PackageInfo, StateDict, TensorData};
use ckpt_candle::{from_candle, to_candle, Model};

mod common;

fn outputs(model: &Model, x: &TensorData) -> Vec<f64> {
    let y = model
        .forward(&to_candle(x, &Device::Cpu, "input").unwrap())
        .unwrap();
    from_candle(&y, "output").unwrap().values_f64().collect()
}

#[test]
fn quantized_packages_run_weight_only_exactly_and_dynamic_closely() {
    let mut quantized = 0;
    for case in common::spec_cases() {
        let case = case.as_str();
        let (spec, weights, file) = common::spec_fixture(case);
        if !weights
            .iter()
            .any(|(n, t)| n.ends_with(".weight") && t.shape().len() >= 2)
        {
            continue; // nothing to quantize (norms, pools, activations only)
        }
        quantized += 1;
        let x = StateDict::flatten(&file).unwrap()["input"].clone();
        let torch = StateDict::flatten(&file).unwrap()["output"].clone();
        let float = Package::new(spec.clone(), weights, PackageInfo::new(&spec, "1.0.0")).unwrap();
        let q = float
            .quantize(Granularity::PerChannel, Activations::Dynamic, |n, t| {
                n.ends_with(".weight") && t.shape().len() >= 2
            })
            .unwrap();
        assert!(
            !q.quantization.as_ref().unwrap().tensors.is_empty(),
            "{case}"
        );

        // Weight-only: the float model of the dequantized weights, exactly.
        let weight_only =
            Model::from_package_as(q.clone(), &Device::Cpu, Activations::WeightOnly).unwrap();
        let dequantized = Model::from_package(q.dequantize().unwrap(), &Device::Cpu).unwrap();
        assert_eq!(
            outputs(&weight_only, &x),
            outputs(&dequantized, &x),
            "{case}"
        );
        assert_eq!(
            weight_only.state_dict().unwrap(),
            q.dequantize().unwrap().weights,
            "{case}"
        );

        // Dynamic (the recorded mode): close to torch's float outputs.
        let dynamic = Model::from_package(q.clone(), &Device::Cpu).unwrap();
        let ours = outputs(&dynamic, &x);
        let theirs: Vec<f64> = torch.values_f64().collect();
        let scale = theirs.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= 0.05 * scale,
            "{case}: int8 differs from torch by {worst:.3e} (scale {scale:.3e})"
        );
        if case == "linear" {
            assert!(worst > 0.0, "dynamic int8 should not be bit-exact");
        }
    }
    assert!(quantized >= 5, "{quantized} golden models quantized");
}
