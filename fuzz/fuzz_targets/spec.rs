//! Any bytes as a model spec's JSON, then as a model package: parsing,
//! shape inference, parameter lists, summaries, the JSON round trip, and
//! lowering to ONNX with zero weights of the right shapes when small.
#![no_main]

use std::path::Path;

use ckpt::{ModelSpec, StateDict, TensorData};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(spec) = ModelSpec::from_json(text) else { return };
    let _ = spec.output_shape();
    let _ = spec.summary();
    let _ = spec.parameter_count();
    let again = ModelSpec::from_json(&spec.to_json().to_string()).expect("a spec's own JSON parses");
    assert_eq!(again, spec);
    let params = spec.parameters();
    let total: usize = params.iter().map(|p| p.shape.iter().product::<usize>()).sum();
    if total <= 1 << 16 {
        let weights: StateDict = params
            .iter()
            .map(|p| {
                let n: usize = p.shape.iter().product();
                let bytes = vec![0u8; n * p.dtype.size()];
                (p.name.clone(), TensorData::new(p.dtype, p.shape.clone(), bytes).unwrap())
            })
            .collect();
        let _ = ckpt::export::onnx::to_bytes(&spec, weights.clone(), &Default::default());
        if let Ok(package) = ckpt::Package::new(spec, weights, ckpt::PackageInfo::new(&again, "1.0.0")) {
            let value = package.to_value();
            let back = ckpt::Package::from_value(&value, Path::new("fuzz"), &Default::default()).expect("round trip");
            assert_eq!(back.weights, package.weights);
        }
    }
});
