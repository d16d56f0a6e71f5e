//! TorchScript export checked by real torch: every layer kind (the spec
//! golden files), nested Sequentials and weight-only int8 packages,
//! exported by ckpt, load in `torch.jit.load`, hold the package's weights
//! in `state_dict()`, and give ckpt's own outputs within 1e-5 on batches
//! of 1 and 7. Runs when `CKPT_PYTHON` names a Python with torch
//! (`scripts/test` and CI arrange it).

use std::path::Path;

use ckpt::compress::quantize::{Activations, Granularity};
use ckpt::export::torchscript::{export, TorchScriptOptions};
use ckpt::{ModelSpec, Package, PackageInfo, Value};
use ckpt_candle::Rng;
use serde_json::json;

#[path = "../../../tests/interop/python.rs"]
mod python;

mod common;
mod exports;

use common::{spec_cases, spec_fixture};
use exports::record_runs;

fn package(case: &str) -> Package {
    let (spec, weights, _) = spec_fixture(case);
    let info = PackageInfo::new(&spec, "1.0.0");
    Package::new(spec, weights, info).unwrap()
}

/// Exports `package` to `FILE.pt`, its weights to `FILE.safetensors` and
/// ckpt's outputs beside them; the manifest entry.
fn prepare(dir: &Path, file: &str, package: &Package, rng: &mut Rng) -> serde_json::Value {
    let mut options = TorchScriptOptions::default();
    options.quantization = package.quantization.clone();
    options
        .metadata
        .insert("model_version".into(), package.info.model_version.clone());
    let pt = format!("{file}.pt");
    export(
        &package.spec,
        package.weights.clone(),
        &options,
        &dir.join(&pt),
    )
    .unwrap_or_else(|e| panic!("{file}: {e}"));
    let weights = format!("{file}.safetensors");
    ckpt::save(dir.join(&weights), &Value::from(package.weights.clone())).unwrap();
    // Weight-only int8 computes in float from the same dequantized
    // weights in both: no tolerance beyond float rounding.
    let (runs, _) = record_runs(dir, file, package, rng);
    json!({"file": pt, "weights": weights, "runs": runs, "name": package.spec.name})
}

fn check(py: &str, dir: &Path, manifest: Vec<serde_json::Value>) {
    std::fs::write(
        dir.join("torchscript.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    python::run_peer(py, "peer.py", &["check-torchscript", dir.to_str().unwrap()]);
}

#[test]
fn every_layer_kind_runs_in_torch_jit_load_as_in_ckpt() {
    let Some(py) = python::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(5);
    let mut manifest = Vec::new();
    for case in spec_cases() {
        manifest.push(prepare(dir.path(), &case, &package(&case), &mut rng));
    }
    // Sequentials nested in a residual block and in each other, named
    // layers beside indexed ones.
    let spec = ModelSpec::from_json(
        r#"{"name": "nested", "input_shape": [6], "layers": [
            {"name": "stem", "type": "Sequential", "layers": [
                {"type": "Linear", "in_features": 6, "out_features": 8},
                {"type": "GELU", "approximate": "tanh"}]},
            {"name": "res", "type": "Residual", "layers": [
                {"type": "Sequential", "layers": [
                    {"type": "LayerNorm", "normalized_shape": [8]},
                    {"type": "Linear", "in_features": 8, "out_features": 8, "bias": false}]},
                {"type": "SiLU"}]},
            {"name": "head", "type": "Linear", "in_features": 8, "out_features": 3}]}"#,
    )
    .unwrap();
    let model = ckpt_candle::Model::new(spec.clone(), &candle_core::Device::Cpu, 9).unwrap();
    let weights = model.state_dict().unwrap();
    let nested = Package::new(spec.clone(), weights, PackageInfo::new(&spec, "2.0.0")).unwrap();
    manifest.push(prepare(dir.path(), "nested", &nested, &mut rng));
    check(&py, dir.path(), manifest);
}

#[test]
fn weight_only_int8_packages_keep_their_int8_weights_in_torch() {
    let Some(py) = python::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(6);
    let mut manifest = Vec::new();
    for (case, granularity) in [
        ("linear", Granularity::PerChannel),
        ("conv", Granularity::PerTensor),
        ("embedding", Granularity::PerChannel),
        ("residual", Granularity::PerChannel),
    ] {
        let package = package(case)
            .quantize(granularity, Activations::WeightOnly, |n, t| {
                n.ends_with(".weight") && t.shape().len() >= 2
            })
            .unwrap();
        let file = format!("{case}_int8_{}", granularity.name());
        manifest.push(prepare(dir.path(), &file, &package, &mut rng));
    }
    // Every float tensor of a BatchNorm, running statistics included.
    let package = package("batchnorm2d")
        .quantize(Granularity::PerChannel, Activations::WeightOnly, |_, t| {
            t.dtype() == ckpt::DType::F32
        })
        .unwrap();
    assert_eq!(package.quantization.as_ref().unwrap().tensors.len(), 4);
    manifest.push(prepare(
        dir.path(),
        "batchnorm2d_int8_all",
        &package,
        &mut rng,
    ));
    check(&py, dir.path(), manifest);
}

#[test]
fn ckpt_reads_the_spec_back_out_of_its_own_exports() {
    let dir = tempfile::tempdir().unwrap();
    for case in spec_cases() {
        let package = package(&case);
        let path = dir.path().join(format!("{case}.pt"));
        let mut options = TorchScriptOptions::default();
        options
            .metadata
            .insert("model_version".into(), "1.0.0".into());
        export(&package.spec, package.weights.clone(), &options, &path).unwrap();
        let loaded = ckpt::read(&path, &Default::default()).unwrap();
        let module = loaded.module.as_ref().expect("a module tree");
        let spec = ModelSpec::from_module(module, &package.spec.name, None)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(spec.to_json(), package.spec.to_json(), "{case}");
        assert_eq!(
            ckpt::StateDict::flatten(&loaded.value).unwrap(),
            package.weights,
            "{case}"
        );
        assert_eq!(loaded.metadata["ckpt.model_version"], "1.0.0");
    }
}

#[test]
fn dynamic_int8_and_names_torchscript_cannot_hold_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dynamic = package("linear")
        .quantize(Granularity::PerChannel, Activations::Dynamic, |n, _| {
            n.ends_with(".weight")
        })
        .unwrap();
    let mut options = TorchScriptOptions::default();
    options.quantization = dynamic.quantization.clone();
    let err = export(
        &dynamic.spec,
        dynamic.weights,
        &options,
        &dir.path().join("q.pt"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("weight_only"), "{err}");
    let spec = ModelSpec::from_json(
        r#"{"name": "t", "input_shape": [2], "layers": [{"name": "training", "type": "ReLU"}]}"#,
    )
    .unwrap();
    let err = export(
        &spec,
        Default::default(),
        &TorchScriptOptions::default(),
        &dir.path().join("t.pt"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("\"training\" cannot be a TorchScript attribute"),
        "{err}"
    );
    assert!(!dir.path().join("t.pt").exists());
}
