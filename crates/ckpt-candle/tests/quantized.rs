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

#[test]
fn torch_quantize_dynamic_state_dicts_run_as_quantized_packages() {
    let file = ckpt::load(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/pth/quantize_dynamic.pth"),
    )
    .unwrap();
    let Some(ckpt::Value::Str(json)) = file.get("spec") else {
        panic!("no spec")
    };
    let spec = ckpt::ModelSpec::from_json(json).unwrap();
    let weights = StateDict::flatten(file.get("state_dict").unwrap()).unwrap();
    let flat = StateDict::flatten(&file).unwrap();
    let package = Package::from_state_dict(
        spec.clone(),
        weights.clone(),
        PackageInfo::new(&spec, "1.0.0"),
    )
    .unwrap();
    let q = package.quantization.as_ref().unwrap();
    assert_eq!(q.tensors, ["0.weight", "2.weight"]);
    assert_eq!(q.granularity, Granularity::PerTensor);
    assert_eq!(q.activations, Activations::Dynamic);
    // torch's int8 weights, unchanged.
    assert_eq!(
        package.weights["0.weight"],
        weights["0._packed_params._packed_params/0"]
    );
    let model = Model::from_package(package, &Device::Cpu).unwrap();
    let got = outputs(&model, &flat["input"]);
    let torch: Vec<f64> = flat["output"].values_f64().collect();
    let float: Vec<f64> = flat["float_output"].values_f64().collect();
    let scale = float.iter().fold(0f64, |m, v| m.max(v.abs()));
    let worst = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f64, f64::max)
    };
    // torch quantizes activations to 7 bits (reduce_range), ckpt to 8
    // (ONNX's DynamicQuantizeLinear): both stay within their rounding of
    // the float model and of each other.
    let (vs_torch, torch_vs_float) = (worst(&got, &torch), worst(&torch, &float));
    println!("max |ckpt - torch quantized| = {vs_torch:.3e}, torch quantized vs float = {torch_vs_float:.3e}, scale {scale:.3}");
    assert!(vs_torch <= 0.02 * scale, "{vs_torch} vs scale {scale}");
    assert!(worst(&got, &float) <= 0.02 * scale);
}
