//! ONNX export checked by a real runtime: every layer kind (the spec golden
//! files) and the external-data layout, exported by ckpt, pass
//! `onnx.checker.check_model(full_check=True)` and give ckpt's own outputs
//! in onnxruntime within 1e-5, on batches of 1 and 7 through the dynamic
//! batch dimension. Runs when `CKPT_PYTHON` names a Python with onnx and
//! onnxruntime (`scripts/test` and CI arrange it).

use std::path::Path;

use ckpt::compress::quantize::{Activations, Granularity};
use ckpt::export::onnx::{export, OnnxOptions};
use ckpt::{ModelSpec, Package, PackageInfo, StateDict};
use ckpt_candle::Rng;
use serde_json::json;

#[path = "../../../tests/interop/python.rs"]
mod python;

mod common;
mod exports;

use common::{spec_cases, spec_fixture};
use exports::record_runs;

fn fixture(name: &str) -> (ModelSpec, StateDict) {
    let (spec, weights, _) = spec_fixture(name);
    (spec, weights)
}

/// Exports `case` and writes inputs and ckpt's outputs for batches of 1 and 7.
fn prepare(
    dir: &Path,
    case: &str,
    file: &str,
    options: &OnnxOptions,
    rng: &mut Rng,
) -> serde_json::Value {
    let (spec, weights) = fixture(case);
    let package = Package::new(spec, weights, PackageInfo::new(&fixture(case).0, "1.0.0")).unwrap();
    prepare_package(dir, case, file, &package, options, rng)
}

/// [`prepare`] for a package (quantized or not); a quantized one may
/// differ from ckpt by ckpt's own quantization error (the largest
/// difference between its quantized and float outputs), recorded as the
/// entry's `tolerance`.
fn prepare_package(
    dir: &Path,
    case: &str,
    file: &str,
    package: &Package,
    options: &OnnxOptions,
    rng: &mut Rng,
) -> serde_json::Value {
    let mut options = options.clone();
    options.quantization = package.quantization.clone();
    export(
        &package.spec,
        package.weights.clone(),
        &options,
        &dir.join(file),
    )
    .unwrap_or_else(|e| panic!("{case}: {e}"));
    let (runs, tolerance) = record_runs(dir, file, package, rng);
    json!({"onnx": file, "runs": runs, "tolerance": tolerance})
}

#[test]
fn every_layer_kind_runs_in_onnxruntime_as_in_ckpt() {
    let Some(py) = python::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(3);
    let mut manifest = Vec::new();
    for case in spec_cases() {
        manifest.push(prepare(
            dir.path(),
            &case,
            &format!("{case}.onnx"),
            &OnnxOptions::default(),
            &mut rng,
        ));
    }
    // Opset 13 where no layer needs newer operators, and external data.
    let mut old = OnnxOptions::default();
    old.opset = 13;
    manifest.push(prepare(
        dir.path(),
        "activations",
        "activations13.onnx",
        &old,
        &mut rng,
    ));
    let mut external = OnnxOptions::default();
    external.external_data = true;
    manifest.push(prepare(
        dir.path(),
        "conv",
        "conv_external.onnx",
        &external,
        &mut rng,
    ));
    assert!(dir.path().join("conv_external.onnx.data").exists());
    std::fs::write(
        dir.path().join("onnx.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    python::run_peer(
        &py,
        "peer.py",
        &["check-onnx", dir.path().to_str().unwrap()],
    );
}

#[test]
fn quantized_packages_run_in_onnxruntime_within_the_quantization_error() {
    let Some(py) = python::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(8);
    let mut manifest = Vec::new();
    // Every weight of rank 2 or more: Linear layers (int8 MatMulInteger
    // when dynamic), Conv2d and Embedding (DequantizeLinear).
    for (case, activations, granularity) in [
        ("linear", Activations::Dynamic, Granularity::PerChannel),
        ("linear", Activations::Dynamic, Granularity::PerTensor),
        ("linear", Activations::WeightOnly, Granularity::PerChannel),
        ("activations", Activations::Dynamic, Granularity::PerChannel),
        ("residual", Activations::Dynamic, Granularity::PerChannel),
        ("conv", Activations::Dynamic, Granularity::PerChannel),
        ("embedding", Activations::Dynamic, Granularity::PerTensor),
    ] {
        let (spec, weights) = fixture(case);
        let package = Package::new(spec.clone(), weights, PackageInfo::new(&spec, "1.0.0"))
            .unwrap()
            .quantize(granularity, activations, |n, t| {
                n.ends_with(".weight") && t.shape().len() >= 2
            })
            .unwrap();
        assert!(
            !package.quantization.as_ref().unwrap().tensors.is_empty(),
            "{case}"
        );
        let file = format!("{case}_{}_{}.onnx", activations.name(), granularity.name());
        manifest.push(prepare_package(
            dir.path(),
            case,
            &file,
            &package,
            &OnnxOptions::default(),
            &mut rng,
        ));
    }
    std::fs::write(
        dir.path().join("onnx.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    python::run_peer(
        &py,
        "peer.py",
        &["check-onnx", dir.path().to_str().unwrap()],
    );
}

#[test]
fn unsupported_layers_and_opsets_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, weights) = fixture("layernorm");
    let mut old = OnnxOptions::default();
    old.opset = 13;
    let err = export(&spec, weights, &old, &dir.path().join("x.onnx"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "cannot export 0: LayerNorm needs opset 17 (LayerNormalization); asked for 13"
    );
    let mut future = OnnxOptions::default();
    future.opset = 30;
    let (spec, weights) = fixture("linear");
    let err = export(&spec, weights, &future, &dir.path().join("x.onnx"))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "cannot export model: opset 30 (ckpt writes 13 to 21)");
    // An Embedding fed by another layer's floats has no ids to gather.
    let spec = ModelSpec::from_json(
        r#"{"name": "e", "input_shape": [4], "layers": [
            {"name": "f", "type": "Linear", "in_features": 4, "out_features": 4},
            {"name": "e", "type": "Embedding", "num_embeddings": 10, "embedding_dim": 2}]}"#,
    )
    .unwrap();
    let err = export(
        &spec,
        StateDict::new(),
        &OnnxOptions::default(),
        &dir.path().join("e.onnx"),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "cannot export e: an Embedding takes integer ids, which only the model's input holds"
    );
}
