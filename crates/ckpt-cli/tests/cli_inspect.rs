//! End-to-end tests of `ckpt inspect`: tables, JSON, trees, values,
//! packages from the wild, and the escaping of what files name.

mod common;
#[path = "../../../tests/interop/python.rs"]
mod python;

use common::{ckpt, expect_error, fixture, stderr, stdout};

#[test]
fn inspect_prints_a_table_with_totals_and_metadata() {
    let out = ckpt(&["inspect", fixture("mlp.safetensors").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("fc1.weight  float32  [32, 784]  25,088  100,352"),
        "{text}"
    );
    assert!(
        text.contains("4 tensors, 25,450 parameters, 101,800 bytes"),
        "{text}"
    );
    assert!(text.contains("architecture: mlp-784-32-10"), "{text}");
}

#[test]
fn inspect_json_has_the_documented_fields() {
    let out = ckpt(&[
        "inspect",
        "--json",
        fixture("all_dtypes.safetensors").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["format"], "safetensors");
    let tensors = json["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 14);
    let bf16 = tensors.iter().find(|t| t["name"] == "bf16").unwrap();
    assert_eq!(bf16["dtype"], "bfloat16");
    assert_eq!(bf16["shape"], serde_json::json!([2, 2]));
    assert_eq!(bf16["bytes"], 8);
    assert_eq!(
        json["total_bytes"],
        tensors
            .iter()
            .map(|t| t["bytes"].as_u64().unwrap())
            .sum::<u64>()
    );
    assert!(json["total_params"].as_u64().unwrap() > 0);
    assert!(json["metadata"].is_object());
}

#[test]
fn inspect_shows_the_values_of_a_nested_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let mut tree = ckpt::Dict::new();
    tree.insert("epoch".into(), ckpt::Value::Int(12));
    tree.insert(
        "betas".into(),
        ckpt::Value::Tuple(vec![ckpt::Value::Float(0.9), ckpt::Value::Float(0.999)]),
    );
    tree.insert(
        "w".into(),
        ckpt::TensorData::from_f32(&[1], &[1.0]).unwrap().into(),
    );
    ckpt::save(&path, &ckpt::Value::Dict(tree)).unwrap();
    let text = stdout(&ckpt(&["inspect", path.to_str().unwrap()]));
    assert!(text.contains("epoch = 12"), "{text}");
    assert!(text.contains("betas = (0.9, 0.999)"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&stdout(&ckpt(&[
        "inspect",
        "--json",
        path.to_str().unwrap(),
    ])))
    .unwrap();
    assert_eq!(json["values"]["epoch"], 12);
}

#[test]
fn missing_and_unrecognised_files_are_clear_errors() {
    let out = ckpt(&["inspect", "/no/such/file.safetensors"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/no/such/file.safetensors"));
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "a shopping list, not a model").unwrap();
    expect_error(
        &["inspect", notes.to_str().unwrap()],
        "not a format ckpt knows",
    );
    let out_path = dir.path().join("out.docx");
    expect_error(
        &[
            "convert",
            fixture("mlp.safetensors").to_str().unwrap(),
            out_path.to_str().unwrap(),
        ],
        "unknown file extension",
    );
}

#[test]
fn inspect_says_which_format_the_contents_showed() {
    let dir = tempfile::tempdir().unwrap();
    let renamed = dir.path().join("checkpoint.pth.tar");
    std::fs::copy(fixture("pth/checkpoint.pth"), &renamed).unwrap();
    let out = ckpt(&["inspect", renamed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("(PyTorch)"), "{}", stdout(&out));
    let bare = dir.path().join("weights");
    std::fs::copy(fixture("mlp.safetensors"), &bare).unwrap();
    let out = ckpt(&["inspect", bare.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("safetensors, recognised by its contents"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn inspect_tree_shows_the_nesting_of_a_pth_checkpoint() {
    let out = ckpt(&[
        "inspect",
        "--tree",
        fixture("pth/checkpoint.pth").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("├── model_state_dict: dict (9 entries)"),
        "{text}"
    );
    assert!(text.contains("│   │   ├── 0: dict (3 entries)"), "{text}");
    assert!(text.contains("epoch: 3"), "{text}");
}

#[test]
fn inspect_shows_a_pickled_module_with_its_classes() {
    let out = ckpt(&["inspect", fixture("pth/full_model.pth").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("bn.num_batches_tracked  int64"), "{text}");
    assert!(text.contains("pytorch.classes: __main__.Tiny"), "{text}");
}

#[test]
fn inspect_and_convert_see_a_multi_rank_checkpoint_as_one_state_dict() {
    use ckpt::layout::distributed::{commit, save_part, Part};
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<f32> = (0..24).map(|i| i as f32).collect();
    for (rank, rows) in [(0, 0..2), (1, 2..6)] {
        let part = Part {
            name: "layer.weight".into(),
            shape: vec![6, 4],
            rows: rows.clone(),
            data: ckpt::TensorData::from_f32(
                &[rows.len(), 4],
                &values[rows.start * 4..rows.end * 4],
            )
            .unwrap(),
        };
        save_part(dir.path(), rank, 2, &[part]).unwrap();
    }
    // Until the commit writes .metadata, the folder is no checkpoint.
    let index = dir.path().to_str().unwrap();
    expect_error(&["inspect", index], index);
    commit(dir.path(), 2).unwrap();
    let out = ckpt(&["inspect", index]);
    assert!(
        stdout(&out).contains("layer.weight  float32  [6, 4]"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let whole = dir.path().join("whole.safetensors");
    let out = ckpt(&["convert", index, whole.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        ckpt::load_state_dict(&whole).unwrap()["layer.weight"],
        ckpt::TensorData::from_f32(&[6, 4], &values).unwrap()
    );
}

#[test]
fn inspect_shows_the_verdict_on_checkpoints_from_the_wild() {
    let path = fixture("wild/lightning.ckpt");
    let out = ckpt(&["inspect", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("state_dict/net.0.weight"), "{text}");
    assert!(
        text.contains("in Python: opens with torch.load(weights_only=True)"),
        "{text}"
    );
    let path = fixture("wild/checkpoint.pth.tar");
    let out = ckpt(&["inspect", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("in Python: needs torch.load(weights_only=False) for ")
            && text.contains("argparse.Namespace"),
        "{text}"
    );
}

#[test]
fn names_metadata_and_values_cannot_drive_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("escapes.safetensors");
    let fake = "\u{1b}[2K\r\u{1b}[1Averify: ok";
    let mut tree = ckpt::Dict::new();
    tree.insert(
        format!("w{fake}").into(),
        ckpt::Value::Tensor(ckpt::TensorData::from_f32(&[1], &[1.0]).unwrap()),
    );
    tree.insert("note".into(), ckpt::Value::Str(fake.into()));
    let options = ckpt::SaveOptions::default().metadata("author", fake);
    ckpt::save_with(&path, &ckpt::Value::Dict(tree), &options).unwrap();
    for args in [
        vec!["inspect", path.to_str().unwrap()],
        vec!["inspect", "--tree", path.to_str().unwrap()],
    ] {
        let out = ckpt(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\r'),
            "{args:?}: {text:?}"
        );
        assert!(text.contains("\\x1b[2K\\x0d"), "{args:?}: {text}");
    }
    // JSON stays exact (its own escapes).
    let out = ckpt(&["inspect", "--json", path.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["values"]["note"], fake);
    // Errors too: a missing file whose name holds escapes.
    let missing = dir.path().join(format!("gone{fake}.pth"));
    let out = ckpt(&["inspect", missing.to_str().unwrap()]);
    assert!(!stderr(&out).contains('\u{1b}'), "{:?}", stderr(&out));
    assert!(stderr(&out).contains("gone\\x1b"), "{}", stderr(&out));
}

/// An incremental step's index, named from inside its step folder, reads
/// as its checkpoint: the chunks come from the run's `blobs/`.
#[test]
fn inspect_reads_an_incremental_steps_index_from_its_folder() {
    use ckpt::store::{CheckpointManager, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::default().incremental(true);
    let mut run = CheckpointManager::open(dir.path(), options).unwrap();
    let mut model = ckpt::StateDict::new();
    let w = ckpt::TensorData::from_f32(&[6], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    model.insert("fc.weight".into(), w);
    run.save(3, &ckpt::TrainingCheckpoint::new(model), &[])
        .unwrap();
    drop(run);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(["inspect", "checkpoint.index.json"])
        .current_dir(dir.path().join("step-00000003"))
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("fc.weight") && text.contains("[6]"), "{text}");
}

/// `torch.save(model)` of an `nn.Sequential` (tests/fixtures/modules,
/// written by real torch): `inspect` shows the spec derived from the
/// pickled modules, `run` takes the file with no spec and gives torch's
/// outputs (saved beside it by the fixtures script), `export` writes ONNX;
/// a class of the user's script is refused by name.
#[test]
fn whole_pickled_models_run_without_a_spec() {
    let modules = |name: &str| fixture(&format!("modules/{name}"));
    let text = stdout(&ckpt(&["inspect", modules("linear.pth").to_str().unwrap()]));
    assert!(text.contains("spec derived from the modules"), "{text}");
    assert!(text.contains("Linear(5 → 3, no bias)"), "{text}");
    // A traced file: its module tree, then the spec.
    let text = stdout(&ckpt(&[
        "inspect",
        modules("nested.trace.pt").to_str().unwrap(),
    ]));
    assert!(
        text.contains("      0: Linear(in_features=4, out_features=3)\n      1: ReLU()"),
        "{text}"
    );
    assert!(text.contains("0.2.0  Linear(3 → 3)"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    // Every layer kind: torch.save(model), torch.jit.script and
    // torch.jit.trace of it, run on torch's input; the input shape is
    // given where the first layer does not tell it.
    for (name, shape) in [
        ("linear", None),
        ("batchnorm1d", None),
        ("batchnorm1d_seq", Some("3,7")),
        ("batchnorm2d", Some("3,4,4")),
        ("conv", Some("2,9,9")),
        ("conv_groups", Some("4,8,8")),
        ("layernorm", Some("3,4,5")),
        ("embedding", Some("5")),
        ("activations", Some("6")),
        ("dropout_flatten", Some("3,4,2")),
        ("pools", Some("3,11,13")),
        ("nested", None),
    ] {
        for file in ["pth", "script.pt", "trace.pt"] {
            let y = dir.path().join(format!("{name}.{file}.npy"));
            let model = modules(&format!("{name}.{file}"));
            let x = modules(&format!("{name}.input.npy"));
            let mut args = vec![
                "run",
                model.to_str().unwrap(),
                "--input",
                x.to_str().unwrap(),
                "--output",
                y.to_str().unwrap(),
            ];
            args.extend(shape.map(|s| ["--input-shape", s]).into_iter().flatten());
            let out = ckpt(&args);
            assert!(out.status.success(), "{name}: {}", stderr(&out));
            let ours = ckpt::load_state_dict(&y).unwrap();
            let torch = ckpt::load_state_dict(modules(&format!("{name}.output.npy"))).unwrap();
            let (a, b) = (
                ours.values().next().unwrap(),
                torch.values().next().unwrap(),
            );
            assert_eq!(a.shape(), b.shape(), "{name}");
            for (x, t) in a.values_f64().zip(b.values_f64()) {
                assert!((x - t).abs() <= 1e-5, "{name}.{file}: {x} vs torch {t}");
            }
        }
    }
    // The nested model as TorchScript runs in torch as the original did.
    let pt = dir.path().join("nested.pt");
    let out = ckpt(&[
        "export",
        modules("nested.pth").to_str().unwrap(),
        pt.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    if let Some(py) = python::python() {
        let weights = ckpt::load_state_dict(modules("nested.pth")).unwrap();
        ckpt::save(dir.path().join("nested.safetensors"), &weights.into()).unwrap();
        let runs = serde_json::json!([{
            "input": modules("nested.input.npy"), "output": modules("nested.output.npy")}]);
        let manifest = serde_json::json!([{"file": "nested.pt", "weights": "nested.safetensors",
            "runs": runs, "name": "nested"}]);
        std::fs::write(dir.path().join("torchscript.json"), manifest.to_string()).unwrap();
        python::run_peer(
            &py,
            "peer.py",
            &["check-torchscript", dir.path().to_str().unwrap()],
        );
    }
    let onnx = dir.path().join("m.onnx");
    for name in ["linear.pth", "nested.pth"] {
        let out = ckpt(&[
            "export",
            modules(name).to_str().unwrap(),
            onnx.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    }
    // `convert` makes a model package of it, which runs as torch did.
    let package = dir.path().join("conv.safetensors");
    let out = ckpt(&[
        "convert",
        modules("conv.pth").to_str().unwrap(),
        package.to_str().unwrap(),
        "--package",
        "--input-shape",
        "2,9,9",
    ]);
    assert!(
        stdout(&out).contains("safetensors model package"),
        "{}",
        stderr(&out)
    );
    // The package runs as torch did, and so does its TorchScript export,
    // whose input shape comes back from the metadata it carries.
    let pt = dir.path().join("conv.pt");
    let out = ckpt(&["export", package.to_str().unwrap(), pt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&ckpt(&["inspect", pt.to_str().unwrap()]));
    assert!(text.contains("ckpt.input_shape: [2,9,9]"), "{text}");
    assert!(text.contains("input [2, 9, 9] per sample"), "{text}");
    for model in [&package, &pt] {
        let y = dir.path().join("package.npy");
        let out = ckpt(&[
            "run",
            model.to_str().unwrap(),
            "--input",
            modules("conv.input.npy").to_str().unwrap(),
            "--output",
            y.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let (ours, torch) = (
            ckpt::load_state_dict(&y).unwrap(),
            ckpt::load_state_dict(modules("conv.output.npy")).unwrap(),
        );
        let worst = (ours.values().next().unwrap().values_f64())
            .zip(torch.values().next().unwrap().values_f64())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1e-5, "{}: {worst}", model.display());
    }
    // Without --package a conversion writes the weights, as it always did;
    // with it, a model whose spec cannot be derived is refused, naming why.
    let weights = dir.path().join("weights.safetensors");
    let out = ckpt(&[
        "convert",
        modules("conv.pth").to_str().unwrap(),
        weights.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ckpt::load_state_dict(&weights)
        .unwrap()
        .contains_key("0.weight"));
    expect_error(
        &[
            "convert",
            modules("residual.pth").to_str().unwrap(),
            weights.to_str().unwrap(),
            "--package",
        ],
        "__main__.Residual",
    );
    // A Conv2d first layer does not tell its image size.
    expect_error(
        &[
            "export",
            modules("conv.pth").to_str().unwrap(),
            onnx.to_str().unwrap(),
        ],
        "--input-shape",
    );
    let text = stdout(&ckpt(&[
        "inspect",
        modules("residual.pth").to_str().unwrap(),
    ]));
    assert!(
        text.contains("__main__.Residual") && text.contains("user code"),
        "{text}"
    );
    let y = dir.path().join("r.npy");
    expect_error(
        &[
            "run",
            modules("residual.pth").to_str().unwrap(),
            "--input",
            modules("linear.input.npy").to_str().unwrap(),
            "--output",
            y.to_str().unwrap(),
        ],
        "__main__.Residual",
    );
}
