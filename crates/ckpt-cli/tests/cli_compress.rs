//! End-to-end tests of `ckpt prune`, `ckpt quantize` and `ckpt export`:
//! compressed packages, ONNX checked in tract, and agreement with torch.

mod common;

use std::path::Path;

use common::{ckpt, expect_error, export_checked, fixture, stderr, stdout};

/// Every layer kind (the spec golden files) exported and run in tract by
/// `ckpt export`'s check, against ckpt's own inference.
#[cfg(feature = "onnx-check")]
#[test]
fn export_checks_every_layer_kind_in_tract() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<String> = std::fs::read_dir(fixture("spec"))
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_suffix(".pth")
                .map(str::to_owned)
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 12);
    for case in &cases {
        let f = ckpt::load(fixture(&format!("spec/{case}.pth"))).unwrap();
        let Some(ckpt::Value::Str(json)) = f.get("spec") else {
            panic!()
        };
        let spec = dir.path().join(format!("{case}.json"));
        std::fs::write(&spec, json).unwrap();
        let weights = dir.path().join(format!("{case}.safetensors"));
        ckpt::save(&weights, f.get("state_dict").unwrap()).unwrap();
        let onnx = dir.path().join(format!("{case}.onnx"));
        let out = ckpt(&[
            "export",
            weights.to_str().unwrap(),
            onnx.to_str().unwrap(),
            "--spec",
            spec.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{case}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(export_checked(&stdout(&out)), "{case}: {}", stdout(&out));
    }
    let layernorm = [
        dir.path().join("layernorm.safetensors"),
        dir.path().join("layernorm.json"),
    ];
    expect_error(
        &[
            "export",
            layernorm[0].to_str().unwrap(),
            "x.onnx",
            "--spec",
            layernorm[1].to_str().unwrap(),
            "--opset",
            "13",
        ],
        "cannot export 0: LayerNorm needs opset 17 (LayerNormalization); asked for 13",
    );
}

#[test]
fn export_reports_operators_metadata_and_static_batches() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    assert!(
        ckpt(&["demo", "--epochs", "2", "--dir", run.to_str().unwrap()])
            .status
            .success()
    );
    let model = run.join("inference-model.safetensors");
    let onnx = dir.path().join("digits.onnx");
    let out = ckpt(&[
        "export",
        model.to_str().unwrap(),
        onnx.to_str().unwrap(),
        "--static-batch",
        "5",
        "--opset",
        "13",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("(opset 13, batch 5)")
            && text.contains("operators:  Gemm×3, Identity×2, Relu×2"),
        "{text}"
    );
    assert!(
        text.contains("parameters: 17,226")
            && match cfg!(feature = "onnx-check") {
                true => text.contains("tract on a random batch of 5"),
                false => export_checked(&text),
            },
        "{text}"
    );
    let bytes = std::fs::read(&onnx).unwrap();
    for needle in [
        &b"model_version"[..],
        b"classes",
        b"digits-mlp",
        b"fc1.weight",
    ] {
        assert!(
            bytes.windows(needle.len()).any(|w| w == needle),
            "{}",
            String::from_utf8_lossy(needle)
        );
    }
    let out = ckpt(&[
        "export",
        model.to_str().unwrap(),
        onnx.to_str().unwrap(),
        "--no-check",
    ]);
    assert!(
        stdout(&out).contains("check:      skipped (--no-check)"),
        "{}",
        stdout(&out)
    );
}

#[path = "../../../tests/interop/python.rs"]
mod python;

#[test]
fn export_agrees_with_torch_onnx_export_in_onnxruntime() {
    let Some(py) = python::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    assert!(
        ckpt(&["demo", "--epochs", "3", "--dir", run.to_str().unwrap()])
            .status
            .success()
    );
    let model = run.join("inference-model.safetensors");
    let onnx = dir.path().join("digits.onnx");
    assert!(
        ckpt(&["export", model.to_str().unwrap(), onnx.to_str().unwrap()])
            .status
            .success()
    );
    python::run_peer(
        &py,
        "train_peer.py",
        &[
            "onnx-vs-torch",
            model.to_str().unwrap(),
            onnx.to_str().unwrap(),
        ],
    );
}

#[test]
fn prune_and_quantize_report_and_write_loadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let mlp = fixture("mlp.safetensors");
    let pruned = dir.path().join("pruned.safetensors");
    let out = ckpt(&[
        "prune",
        mlp.to_str().unwrap(),
        pruned.to_str().unwrap(),
        "--amount",
        "0.3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("fc1.weight    25,088  7,526     30.0%"),
        "{text}"
    );
    assert!(text.contains("after       25,450     17,828"), "{text}");
    let sd = ckpt::load_state_dict(&pruned).unwrap();
    assert_eq!(
        sd["fc1.weight"].values_f64().filter(|v| *v == 0.0).count(),
        7526
    );

    // PyTorch's reparametrisation, then back.
    let re = dir.path().join("re.pth");
    let out = ckpt(&[
        "prune",
        mlp.to_str().unwrap(),
        re.to_str().unwrap(),
        "--amount",
        "10",
        "--structured",
        "--n",
        "1",
        "--reparametrize",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sd = ckpt::load_state_dict(&re).unwrap();
    assert!(
        sd.contains_key("fc1.weight_orig") && sd.contains_key("fc1.weight_mask"),
        "{:?}",
        sd.keys().collect::<Vec<_>>()
    );

    let q = dir.path().join("q.safetensors");
    let out = ckpt(&["quantize", mlp.to_str().unwrap(), q.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2 tensors to int8 (per channel)"),
        "{}",
        stdout(&out)
    );
    let sd = ckpt::load_state_dict(&q).unwrap();
    assert_eq!(sd["fc1.weight"].dtype(), ckpt::DType::I8);
    assert_eq!(sd["fc1.weight_scale"].shape(), [32]);
    let (before, after) = (
        std::fs::metadata(&mlp).unwrap().len(),
        std::fs::metadata(&q).unwrap().len(),
    );
    assert!(
        after * 10 <= before * 3,
        "int8 file {after} bytes is over 30% of {before}"
    );

    expect_error(
        &[
            "prune",
            mlp.to_str().unwrap(),
            "x.safetensors",
            "--amount",
            "1.5",
        ],
        "neither a fraction in [0, 1] nor a count",
    );
    expect_error(
        &[
            "prune",
            mlp.to_str().unwrap(),
            "x.safetensors",
            "--amount",
            "0.1",
            "--layers",
            "nothing",
        ],
        "no tensor to prune",
    );
}

/// A model package of the digits' shape (64 → 32 → 10) with seeded
/// weights: untrained, but it runs.
fn digits_package(path: &Path) {
    let spec = ckpt::ModelSpec::from_json(
        r#"{"name": "tiny-digits", "input_shape": [64], "layers": [
            {"name": "fc1", "type": "Linear", "in_features": 64, "out_features": 32},
            {"name": "act", "type": "ReLU"},
            {"name": "head", "type": "Linear", "in_features": 32, "out_features": 10}]}"#,
    )
    .unwrap();
    let mut state = 7u64;
    let mut weights = ckpt::StateDict::new();
    for p in spec.parameters() {
        let n: usize = p.shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.3
            })
            .collect();
        weights.insert(
            p.name,
            ckpt::TensorData::from_f32(&p.shape, &values).unwrap(),
        );
    }
    let info = ckpt::PackageInfo::new(&spec, "1.0.0");
    ckpt::Package::new(spec, weights, info)
        .unwrap()
        .save(path)
        .unwrap();
}

#[test]
fn quantized_packages_inspect_evaluate_run_export_and_compress() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    digits_package(Path::new(&p("f.safetensors")));
    quantizes_dynamic_and_weight_only(&p);
    inspects_and_evaluates_quantized(&p);
    exports_quantized(&p);

    // The compressed format: any command takes it, and it is the same.
    let out = ckpt(&["convert", &p("f.safetensors"), &p("f.ckptz")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        ckpt(&["diff", &p("f.safetensors"), &p("f.ckptz")])
            .status
            .code(),
        Some(0)
    );
    assert!(ckpt(&["verify", &p("f.ckptz")]).status.success());

    expect_error(
        &[
            "prune",
            &p("q.safetensors"),
            &p("x.safetensors"),
            "--amount",
            "0.3",
        ],
        "prune before quantizing",
    );
    expect_error(
        &["quantize", &p("q.safetensors"), &p("x.safetensors")],
        "already quantized",
    );
    let mlp = fixture("mlp.safetensors");
    expect_error(
        &[
            "quantize",
            mlp.to_str().unwrap(),
            &p("x.safetensors"),
            "--eval",
        ],
        "--eval runs model packages",
    );
}

/// `f.safetensors` quantized to `q.safetensors` (dynamic, per channel,
/// with `--eval`) and `w.ckptz` (weight-only, per tensor); `p` names files
/// in the test's directory.
fn quantizes_dynamic_and_weight_only(p: &dyn Fn(&str) -> String) {
    let out = ckpt(&[
        "quantize",
        &p("f.safetensors"),
        &p("q.safetensors"),
        "--eval",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("a quantized package (format 2)"), "{text}");
    assert!(
        text.contains("accuracy") && text.contains("int8 dynamic"),
        "{text}"
    );
    let q = ckpt::Package::load(p("q.safetensors"), &Default::default()).unwrap();
    assert_eq!(q.info.format_version, 2);
    assert_eq!(
        q.quantization.as_ref().unwrap().tensors,
        ["fc1.weight", "head.weight"]
    );

    let out = ckpt(&[
        "quantize",
        &p("f.safetensors"),
        &p("w.ckptz"),
        "--mode",
        "weight-only",
        "--per-tensor",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let w = ckpt::Package::load(p("w.ckptz"), &Default::default()).unwrap();
    let record = w.quantization.unwrap();
    assert_eq!(
        (record.activations, record.granularity),
        (
            ckpt::compress::quantize::Activations::WeightOnly,
            ckpt::compress::quantize::Granularity::PerTensor
        )
    );
}

/// `inspect` shows the int8 layout, `eval` runs float and quantized
/// packages side by side.
fn inspects_and_evaluates_quantized(p: &dyn Fn(&str) -> String) {
    let out = ckpt(&["inspect", &p("q.safetensors")]);
    let text = stdout(&out);
    assert!(
        text.contains("quantized: int8 symmetric, per channel")
            && text.contains("NAME_scale (float32) beside it"),
        "{text}"
    );
    assert!(text.contains("fc1.weight   [32, 64]  [32]  "), "{text}");

    let out = ckpt(&[
        "eval",
        &p("f.safetensors"),
        &p("q.safetensors"),
        &p("w.ckptz"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        text.lines().filter(|l| l.contains('%')).count(),
        3,
        "{text}"
    );
    assert!(text.contains("int8 weight-only"), "{text}");
}

/// Both quantized packages export with their quantized operators and
/// pass the check in tract.
fn exports_quantized(p: &dyn Fn(&str) -> String) {
    let out = ckpt(&["export", &p("q.safetensors"), &p("q.onnx")]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("DynamicQuantizeLinear×2") && text.contains("MatMulInteger×2"),
        "{text}"
    );
    assert!(export_checked(&text), "{text}");
    let out = ckpt(&["export", &p("w.ckptz"), &p("w.onnx")]);
    assert!(
        stdout(&out).contains("DequantizeLinear×2"),
        "{}",
        stdout(&out)
    );
    assert!(export_checked(&stdout(&out)), "{}", stdout(&out));
}

#[test]
fn torch_quantize_dynamic_state_dicts_run_export_and_dequantize() {
    let dir = tempfile::tempdir().unwrap();
    let sd = fixture("pth/quantize_dynamic.state_dict.pth");
    let spec = fixture("pth/quantize_dynamic.spec.json");
    let golden =
        ckpt::StateDict::flatten(&ckpt::load(fixture("pth/quantize_dynamic.pth")).unwrap())
            .unwrap();
    let input = dir.path().join("x.npy");
    ckpt::save(&input, &ckpt::Value::Tensor(golden["input"].clone())).unwrap();
    let output = dir.path().join("y.npy");
    let args = |cmd: &str, out: &std::path::Path| {
        let mut v = vec![cmd.to_owned(), sd.to_str().unwrap().to_owned()];
        if cmd == "run" {
            v.extend([
                "--input".into(),
                input.to_str().unwrap().into(),
                "--output".into(),
            ]);
        }
        v.extend([
            out.to_str().unwrap().to_owned(),
            "--spec".into(),
            spec.to_str().unwrap().into(),
        ]);
        v
    };
    let run_args = args("run", &output);
    let out = ckpt(&run_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", stderr(&out));
    let ckpt::Value::Tensor(y) = ckpt::load(&output).unwrap() else {
        panic!()
    };
    let torch: Vec<f64> = golden["output"].values_f64().collect();
    let worst = y
        .values_f64()
        .zip(&torch)
        .map(|(a, b)| (a - b).abs())
        .fold(0f64, f64::max);
    assert!(worst < 0.02, "ckpt run vs torch's quantized model: {worst}");
    let onnx = dir.path().join("q.onnx");
    let export_args = args("export", &onnx);
    let out = ckpt(&export_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(export_checked(&stdout(&out)), "{}", stdout(&out));
    // --dtype float32 gives torch's dequantize() of every weight.
    let float = dir.path().join("float.safetensors");
    let out = ckpt(&[
        "convert",
        sd.to_str().unwrap(),
        float.to_str().unwrap(),
        "--dtype",
        "float32",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let f = ckpt::load_state_dict(&float).unwrap();
    assert_eq!(
        f["0._packed_params._packed_params/0"].dtype(),
        ckpt::DType::F32
    );
    assert!(!f.contains_key("0._packed_params._packed_params/0_scale"));
}
