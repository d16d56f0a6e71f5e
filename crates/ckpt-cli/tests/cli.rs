//! End-to-end tests of the `ckpt` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn ckpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(args)
        .output()
        .expect("run ckpt")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Runs ckpt expecting exit code 2 and an error line containing `needle`.
fn expect_error(args: &[&str], needle: &str) {
    let out = ckpt(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
}

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
fn convert_pth_to_safetensors_and_back_keeps_the_whole_tree() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("c.safetensors");
    let pth = dir.path().join("c.pth");
    let source = fixture("pth/checkpoint.pth");
    let out = ckpt(&["convert", source.to_str().unwrap(), st.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("27 tensors"), "{}", stdout(&out));
    assert!(
        ckpt(&["convert", st.to_str().unwrap(), pth.to_str().unwrap()])
            .status
            .success()
    );
    assert_eq!(ckpt::load(&pth).unwrap(), ckpt::load(&source).unwrap());
    let diff = ckpt(&["diff", source.to_str().unwrap(), pth.to_str().unwrap()]);
    assert_eq!(diff.status.code(), Some(0), "{}", stdout(&diff));
    assert!(
        stdout(&diff).starts_with("\nequal") || stdout(&diff).contains("equal: 27 tensors"),
        "{}",
        stdout(&diff)
    );
}

#[test]
fn convert_casts_floats_only() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("h.safetensors");
    let out = ckpt(&[
        "convert",
        fixture("pth/checkpoint.pth").to_str().unwrap(),
        out_path.to_str().unwrap(),
        "--dtype",
        "bf16",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sd = ckpt::load_state_dict(&out_path).unwrap();
    assert_eq!(sd["model_state_dict/fc1.weight"].dtype(), ckpt::DType::BF16);
    assert_eq!(
        sd["model_state_dict/bn.num_batches_tracked"].dtype(),
        ckpt::DType::I64
    );
    expect_error(
        &["convert", "a.pth", "b.pth", "--dtype", "int8"],
        "not a float dtype",
    );
}

#[test]
fn convert_strips_a_prefix_and_refuses_collisions() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("dp.safetensors");
    let mut sd = ckpt::StateDict::new();
    sd.insert(
        "module.fc.weight".into(),
        ckpt::TensorData::from_f32(&[1], &[1.0]).unwrap(),
    );
    sd.insert(
        "module.fc.bias".into(),
        ckpt::TensorData::from_f32(&[1], &[2.0]).unwrap(),
    );
    ckpt::save(&input, &sd.clone().into()).unwrap();
    let output = dir.path().join("plain.pth");
    let out = ckpt(&[
        "convert",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--strip-prefix",
        "module.",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = ckpt::load_state_dict(&output)
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(names, ["fc.weight", "fc.bias"]);

    sd.insert(
        "fc.bias".into(),
        ckpt::TensorData::from_f32(&[1], &[3.0]).unwrap(),
    );
    ckpt::save(&input, &sd.into()).unwrap();
    expect_error(
        &[
            "convert",
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            "--strip-prefix",
            "module.",
        ],
        "fc.bias",
    );
}

#[test]
fn diff_reports_differences_with_exit_1_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.pth");
    let mut sa = ckpt::StateDict::new();
    sa.insert(
        "w".into(),
        ckpt::TensorData::from_f32(&[3], &[1.0, 2.0, 3.0]).unwrap(),
    );
    sa.insert(
        "gone".into(),
        ckpt::TensorData::from_f32(&[1], &[0.0]).unwrap(),
    );
    let mut sb = ckpt::StateDict::new();
    sb.insert(
        "w".into(),
        ckpt::TensorData::from_f32(&[3], &[1.0, 2.5, 3.0]).unwrap(),
    );
    sb.insert(
        "new".into(),
        ckpt::TensorData::from_f32(&[1], &[0.0]).unwrap(),
    );
    ckpt::save(&a, &sa.into()).unwrap();
    ckpt::save(&b, &sb.into()).unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());

    let out = ckpt(&["diff", a, b]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("only in A: gone") && text.contains("only in B: new"),
        "{text}"
    );
    assert!(text.contains("5.000e-1"), "{text}");

    let out = ckpt(&["diff", "--json", "--atol", "0.6", a, b]);
    assert_eq!(out.status.code(), Some(1)); // keys still differ
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["only_in_a"], serde_json::json!(["gone"]));
    let w = &json["tensors"][0];
    assert_eq!(w["name"], "w");
    assert_eq!(w["equal"], true);
    assert_eq!(w["max_abs"], 0.5);
    assert_eq!(w["max_rel"], 0.2);

    assert_eq!(ckpt(&["diff", a, "/no/such.pth"]).status.code(), Some(2));
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
fn convert_writes_and_reads_hugging_face_shards() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("model.safetensors");
    let source = fixture("mlp.safetensors");
    let out = ckpt(&[
        "convert",
        source.to_str().unwrap(),
        out_path.to_str().unwrap(),
        "--max-shard-size",
        "50KB",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let index = dir.path().join("model.safetensors.index.json");
    assert!(dir.path().join("model-00003-of-00003.safetensors").exists());
    let diff = ckpt(&["diff", source.to_str().unwrap(), index.to_str().unwrap()]);
    assert_eq!(diff.status.code(), Some(0), "{}", stdout(&diff));
    let inspect = ckpt(&["inspect", index.to_str().unwrap()]);
    assert!(
        stdout(&inspect).contains("(sharded checkpoint)"),
        "{}",
        stdout(&inspect)
    );
    expect_error(
        &["convert", "a.pth", "b.pth", "--max-shard-size", "5 parsecs"],
        "unknown unit",
    );
}

#[test]
fn convert_to_numpy_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let npz = dir.path().join("m.npz");
    let source = fixture("mlp.safetensors");
    assert!(
        ckpt(&["convert", source.to_str().unwrap(), npz.to_str().unwrap()])
            .status
            .success()
    );
    let diff = ckpt(&[
        "diff",
        "--json",
        source.to_str().unwrap(),
        npz.to_str().unwrap(),
    ]);
    assert_eq!(diff.status.code(), Some(0), "{}", stdout(&diff));
}

#[test]
fn verify_reports_checksum_mismatches_but_the_file_still_loads() {
    let good = fixture("pth/checkpoint.pth");
    let out = ckpt(&[
        "verify",
        good.to_str().unwrap(),
        fixture("numpy/stored.npz").to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains(": ok (PyTorch, 27 tensors"),
        "{}",
        stdout(&out)
    );

    let no_crc = fixture("pth/no_crc.pth");
    assert!(ckpt::load(&no_crc).is_ok());
    let out = ckpt(&["verify", no_crc.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("checksums do not match") && stdout(&out).contains("no_crc/data/0"),
        "{}",
        stdout(&out)
    );

    expect_error(
        &[
            "verify",
            good.to_str().unwrap(),
            fixture("hostile/truncated.pth").to_str().unwrap(),
        ],
        "truncated.pth",
    );
}

/// A run directory with steps 10..=60 (val_loss lowest at 30), keeping the
/// last 2 and the best 1.
fn make_run(dir: &Path) {
    use ckpt::store::{
        CheckpointManager, KeepBest, MetricMode, MissingMetric, Retention, StoreOptions,
    };
    let best = KeepBest {
        metric: "val_loss".into(),
        mode: MetricMode::Min,
        k: 1,
        missing: MissingMetric::Ignore,
    };
    let options =
        StoreOptions::default().retention(Retention::default().keep_last(2).keep_best(best));
    let mut store = CheckpointManager::open(dir, options).unwrap();
    for (i, val) in [0.9, 0.5, 0.2, 0.4, 0.35, 0.3].into_iter().enumerate() {
        let step = (i as u64 + 1) * 10;
        let mut model = ckpt::StateDict::new();
        model.insert(
            "w".into(),
            ckpt::TensorData::from_f32(&[4], &[step as f32; 4]).unwrap(),
        );
        let mut c = ckpt::TrainingCheckpoint::new(model);
        c.epoch = i as i64;
        store
            .save(step, &c, &[("val_loss", val), ("lr", 0.1)])
            .unwrap();
    }
}

#[test]
fn ls_lists_steps_with_rules_best_and_a_sparkline() {
    let dir = tempfile::tempdir().unwrap();
    make_run(dir.path());
    let d = dir.path().to_str().unwrap();
    let out = ckpt(&["ls", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("step  epoch  val_loss"), "{text}");
    assert!(
        lines[1].trim_start().starts_with("*30") && lines[1].ends_with("best#1"),
        "{text}"
    );
    assert!(
        lines[3].trim_start().starts_with("60") && lines[3].ends_with("latest,last"),
        "{text}"
    );
    assert!(
        text.contains("3 steps,") && text.contains("* best by val_loss (min)"),
        "{text}"
    );
    assert!(
        text.contains("val_loss: █▄▁▃▂▂  (min 0.2000, max 0.9000, last 0.3000; 6 saves)"),
        "{text}"
    );

    let out = ckpt(&["ls", "--json", d]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["best"], 30);
    let steps = json["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[2]["kept_by"], serde_json::json!(["latest", "last"]));
    assert_eq!(steps[0]["metrics"]["val_loss"], 0.2);

    expect_error(
        &["ls", fixture("").to_str().unwrap()],
        "not a ckpt run directory",
    );
}

#[test]
fn verify_checks_a_run_directory_and_exits_1_on_damage() {
    let dir = tempfile::tempdir().unwrap();
    make_run(dir.path());
    let d = dir.path().to_str().unwrap();
    let out = ckpt(&["verify", d]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("step 60: ok"), "{}", stdout(&out));

    let file = dir.path().join("step-00000050/checkpoint.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    std::fs::create_dir(dir.path().join(".tmp-1-2-3")).unwrap();
    let out = ckpt(&["verify", d]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("step 50: ") && text.contains("content hash"),
        "{text}"
    );
    assert!(
        text.contains(".tmp-1-2-3: left by an interrupted save"),
        "{text}"
    );
    assert!(text.contains("2 problems"), "{text}");
}

#[test]
fn gc_applies_given_or_recorded_rules_and_respects_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    make_run(dir.path());
    let d = dir.path().to_str().unwrap();
    let out = ckpt(&["gc", d, "--keep-last", "1", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("would delete 2 of 3 steps (30, 50)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 6); // 3 steps, manifest, history, lock

    let out = ckpt(&["gc", d]); // the recorded rules keep all three
    assert!(
        stdout(&out).contains("every step is kept (3 steps)"),
        "{}",
        stdout(&out)
    );

    {
        let _writer = ckpt::store::CheckpointManager::open(dir.path(), Default::default()).unwrap();
        expect_error(
            &["gc", d, "--keep-last", "1"],
            "another process is writing to this run directory",
        );
    }
    let out = ckpt(&["gc", d, "--keep-best", "1", "--metric", "val_loss"]);
    assert!(
        stdout(&out).contains("deleted 1 of 3 steps (50)"),
        "{}",
        stdout(&out)
    );
    let out = ckpt(&["ls", "--json", d]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let steps: Vec<u64> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [30, 60]);
    expect_error(&["gc", d, "--keep-best", "1"], "--metric");
}

#[test]
fn plot_draws_a_png_of_a_metric() {
    let dir = tempfile::tempdir().unwrap();
    make_run(dir.path());
    let png = dir.path().join("curve.png");
    let out = ckpt(&[
        "plot",
        dir.path().to_str().unwrap(),
        "--metric",
        "val_loss",
        "-o",
        png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("val_loss at 6 steps"),
        "{}",
        stdout(&out)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        bytes.len() > 5_000,
        "a nearly empty image: {} bytes",
        bytes.len()
    );
    expect_error(
        &["plot", dir.path().to_str().unwrap(), "--metric", "acc"],
        "no step has a value for \"acc\" (recorded: val_loss, lr)",
    );
}

#[test]
fn demo_trains_packages_and_reports_held_out_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = ckpt(&["demo", "--dir", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("held-out accuracy: "), "{text}");
    let accuracy: f64 = last["held-out accuracy: ".len()..]
        .split('%')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(accuracy >= 95.0, "{last}");
    assert!(text.contains("epoch  30/30"), "{text}");
    for file in [
        "best-model.safetensors",
        "inference-model.safetensors",
        "val_loss.png",
    ] {
        assert!(run.join(file).exists(), "{file} missing:\n{text}");
    }
    // Three checkpoints kept (last 3; the best is among them or kept too).
    let steps = std::fs::read_dir(&run)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("step-")
        })
        .count();
    assert!((3..=4).contains(&steps), "{steps}");

    // The inference package runs through `ckpt run` and predicts digits.
    let x = ckpt::TensorData::from_f32(&[2, 64], &[0.25; 128]).unwrap();
    let input = dir.path().join("x.npy");
    ckpt::save(&input, &ckpt::Value::Tensor(x)).unwrap();
    let output = dir.path().join("y.npy");
    let model = run.join("inference-model.safetensors");
    let out = ckpt(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2 samples through digits-mlp 1.0.0 on cpu"),
        "{}",
        stdout(&out)
    );
    let ckpt::Value::Tensor(y) = ckpt::load(&output).unwrap() else {
        panic!()
    };
    assert_eq!(y.shape(), [2, 10]);

    // A plain state dict plus the spec as JSON runs the same.
    let package = ckpt::Package::load(&model, &Default::default()).unwrap();
    let weights = dir.path().join("weights.pth");
    ckpt::save(&weights, &package.weights.clone().into()).unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, package.spec.to_json().to_string()).unwrap();
    let output2 = dir.path().join("y2.npy");
    let out = ckpt(&[
        "run",
        weights.to_str().unwrap(),
        "--spec",
        spec.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output2.to_str().unwrap(),
        "--batch-size",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ckpt::load(&output2).unwrap(), ckpt::load(&output).unwrap());

    // Compression targets on the trained model: int8 (in .ckptz) at most
    // 30% of the float file and 0.5 points of accuracy, 30% pruning at
    // most 1 point, int8 + 50% pruned in .ckptz at most 20%.
    let f = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let m = model.to_str().unwrap();
    for args in [
        vec!["prune", m, &f("p30.safetensors"), "--amount", "0.3"],
        vec!["quantize", m, &f("q.ckptz")],
        vec!["prune", m, &f("p50.safetensors"), "--amount", "0.5"],
        vec!["quantize", &f("p50.safetensors"), &f("p50q.ckptz")],
    ] {
        let out = ckpt(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let out = ckpt(&[
        "eval",
        m,
        &f("q.ckptz"),
        &f("p30.safetensors"),
        &f("p50q.ckptz"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    // Per row: the first percentage is the accuracy, the last the size.
    let rows: Vec<(f64, f64)> = table
        .lines()
        .skip(1)
        .take(4)
        .map(|line| {
            let pcts: Vec<f64> = line
                .split_whitespace()
                .filter_map(|w| w.strip_suffix('%')?.parse().ok())
                .collect();
            (pcts[0], *pcts.last().unwrap())
        })
        .collect();
    let (float, int8, pruned, both) = (rows[0], rows[1], rows[2], rows[3]);
    assert!(int8.0 >= float.0 - 0.5 && int8.1 <= 30.0, "{table}");
    assert!(pruned.0 >= float.0 - 1.0, "{table}");
    assert!(both.1 <= 20.0, "{table}");

    // inspect shows the spec; a second demo in the same directory is refused.
    let out = ckpt(&["inspect", model.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("head   Linear(64 → 10)   [10]       650"),
        "{}",
        stdout(&out)
    );
    expect_error(
        &["demo", "--dir", run.to_str().unwrap()],
        "already holds a run (epoch 30): add --resume",
    );
    expect_error(
        &[
            "run",
            model.to_str().unwrap(),
            "--input",
            model.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ],
        "expected one array",
    );
}

#[test]
fn demo_resumes_exactly_after_sigkill_and_extends_a_finished_run() {
    let dir = tempfile::tempdir().unwrap();
    let (killed, whole) = (dir.path().join("killed"), dir.path().join("whole"));
    let arg = |p: &PathBuf| p.to_str().unwrap().to_owned();
    // Kill a run of 12 epochs after its first commits, then resume it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(["demo", "--epochs", "12", "--dir", &arg(&killed)])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !killed.join("manifest.json").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::thread::sleep(std::time::Duration::from_millis(30));
    child.kill().unwrap();
    child.wait().unwrap();
    let out = ckpt(&["demo", "--epochs", "12", "--dir", &arg(&killed), "--resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("resumed ") || stdout(&out).contains("resumed"),
        "{}",
        stdout(&out)
    );

    // A finished run extended: 3 epochs, then to 12 with --resume.
    let extended = dir.path().join("extended");
    assert!(ckpt(&["demo", "--epochs", "3", "--dir", &arg(&extended)])
        .status
        .success());
    assert!(ckpt(&[
        "demo",
        "--epochs",
        "12",
        "--dir",
        &arg(&extended),
        "--resume"
    ])
    .status
    .success());

    assert!(ckpt(&["demo", "--epochs", "12", "--dir", &arg(&whole)])
        .status
        .success());
    let last = |d: &PathBuf| arg(&d.join("step-00000012/checkpoint.safetensors"));
    for other in [&killed, &extended] {
        let out = ckpt(&["diff", &last(other), &last(&whole)]);
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    }
}

#[test]
fn bad_packages_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    assert!(ckpt(&[
        "demo",
        "--epochs",
        "2",
        "--dir",
        run.to_str().unwrap(),
        "--format",
        "pth"
    ])
    .status
    .success());
    let good = ckpt::load(run.join("inference-model.pth")).unwrap();
    let ckpt::Value::Dict(dict) = good else {
        panic!()
    };
    let write = |name: &str, change: &dyn Fn(&mut ckpt::Dict)| {
        let mut d = dict.clone();
        change(&mut d);
        let path = dir.path().join(name);
        ckpt::save(&path, &ckpt::Value::Dict(d)).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let spec_text = |d: &ckpt::Dict| match d.get(&ckpt::Key::from("spec")) {
        Some(ckpt::Value::Str(s)) => s.clone(),
        _ => panic!(),
    };
    let mismatched = write("mismatch.pth", &|d| {
        let s = spec_text(d).replace("\"out_features\":10", "\"out_features\":12");
        d.insert("spec".into(), ckpt::Value::Str(s));
    });
    let corrupt = write("corrupt.pth", &|d| {
        let s = spec_text(d);
        d.insert("spec".into(), ckpt::Value::Str(s[..s.len() / 2].to_owned()));
    });
    let unknown = write("unknown.pth", &|d| {
        let s = spec_text(d).replace("\"type\":\"ReLU\"", "\"type\":\"Mish\"");
        d.insert("spec".into(), ckpt::Value::Str(s));
    });
    let newer = write("newer.pth", &|d| {
        if let Some(ckpt::Value::Dict(meta)) = d.get_mut(&ckpt::Key::from("ckpt_package")) {
            meta.insert("format_version".into(), ckpt::Value::Int(99));
        }
    });
    let y = dir.path().join("y.npy");
    let x = dir.path().join("x.npy");
    ckpt::save(
        &x,
        &ckpt::Value::Tensor(ckpt::TensorData::from_f32(&[1, 64], &[0.0; 64]).unwrap()),
    )
    .unwrap();
    let run_it = |model: &str, needle: &str| {
        expect_error(
            &[
                "run",
                model,
                "--input",
                x.to_str().unwrap(),
                "--output",
                y.to_str().unwrap(),
            ],
            needle,
        )
    };
    run_it(&mismatched, "the weights do not fit the package's spec");
    run_it(
        &mismatched,
        "head.weight: the model has shape [12, 64], the file [10, 64]",
    );
    run_it(&corrupt, "model spec: spec: not JSON");
    run_it(&unknown, "unknown layer type \"Mish\"");
    run_it(
        &newer,
        "package format 99 is newer than this ckpt reads (2)",
    );
    expect_error(&["inspect", &unknown], "unknown layer type \"Mish\"");
}

#[path = "../../../tests/interop/python.rs"]
mod python;

#[test]
fn demo_pth_checkpoints_continue_in_torch_adamw() {
    let Some(py) = python::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    assert!(ckpt(&[
        "demo",
        "--epochs",
        "7",
        "--dir",
        run.to_str().unwrap(),
        "--format",
        "pth"
    ])
    .status
    .success());
    for step in [5, 6, 7] {
        let file = run.join(format!("step-{step:08}/checkpoint.pth"));
        python::run_peer(
            &py,
            "train_peer.py",
            &["demo-check", file.to_str().unwrap()],
        );
    }
}

/// Every layer kind (the spec golden files) exported and run in tract by
/// `ckpt export`'s check, against ckpt's own inference.
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
        assert!(
            stdout(&out).contains("check:      ok"),
            "{case}: {}",
            stdout(&out)
        );
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
        text.contains("parameters: 17,226") && text.contains("tract on a random batch of 5"),
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

    let out = ckpt(&["export", &p("q.safetensors"), &p("q.onnx")]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("DynamicQuantizeLinear×2") && text.contains("MatMulInteger×2"),
        "{text}"
    );
    assert!(text.contains("check:      ok"), "{text}");
    let out = ckpt(&["export", &p("w.ckptz"), &p("w.onnx")]);
    assert!(
        stdout(&out).contains("DequantizeLinear×2"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("check:      ok"), "{}", stdout(&out));

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

#[path = "../../../tests/interop/moto.rs"]
mod moto;

#[test]
fn commands_take_s3_urls_for_files_and_runs() {
    if moto::start().is_none() {
        return;
    }
    let base = format!("s3://{}/cli-{}", moto::BUCKET, std::process::id());
    let mlp = fixture("mlp.safetensors");
    let remote = format!("{base}/mlp.pth");
    let out = ckpt(&["convert", mlp.to_str().unwrap(), &remote]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ckpt(&["inspect", &remote]);
    assert!(
        stdout(&out).contains("fc1.weight"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        ckpt(&["diff", mlp.to_str().unwrap(), &remote])
            .status
            .code(),
        Some(0)
    );
    let out = ckpt(&["verify", &remote]);
    assert!(
        stdout(&out).contains(": ok (PyTorch"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // A run on object storage: ls and verify read it as they read a directory.
    let run = format!("{base}/run");
    let mut m = ckpt::store::CheckpointManager::open(&run, Default::default()).unwrap();
    for step in 1..=3 {
        let mut sd = ckpt::StateDict::new();
        sd.insert(
            "w".into(),
            ckpt::TensorData::from_f32(&[4], &[step as f32; 4]).unwrap(),
        );
        m.save(
            step,
            &ckpt::TrainingCheckpoint::new(sd),
            &[("loss", 1.0 / step as f64)],
        )
        .unwrap();
    }
    drop(m);
    let out = ckpt(&["ls", &run]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("3 steps"), "{text}");
    let out = ckpt(&["verify", &run]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    expect_error(
        &["inspect", &format!("{base}/missing.safetensors")],
        "missing.safetensors",
    );
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
    let index = dir.path().join("ckpt.index.json");
    expect_error(&["inspect", index.to_str().unwrap()], "ckpt.index.json");
    commit(dir.path(), 2).unwrap();
    let out = ckpt(&["inspect", index.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("layer.weight  float32  [6, 4]"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let whole = dir.path().join("whole.safetensors");
    let out = ckpt(&["convert", index.to_str().unwrap(), whole.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        ckpt::load_state_dict(&whole).unwrap()["layer.weight"],
        ckpt::TensorData::from_f32(&[6, 4], &values).unwrap()
    );
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
    assert!(stdout(&out).contains("check:      ok"), "{}", stdout(&out));
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
fn convert_format_writes_that_format_whatever_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("checkpoint.tar");
    let out = ckpt(&[
        "convert",
        fixture("mlp.safetensors").to_str().unwrap(),
        out_path.to_str().unwrap(),
        "--format",
        "pth",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("-> "), "{}", stdout(&out));
    assert!(stdout(&out).contains("(PyTorch)"), "{}", stdout(&out));
    let loaded = ckpt::read(&out_path, &ckpt::LoadOptions::default()).unwrap();
    assert_eq!(loaded.format, ckpt::Format::PyTorch);
    assert_eq!(
        loaded.value,
        ckpt::load(fixture("mlp.safetensors")).unwrap()
    );
}

#[test]
fn counts_of_zero_and_tolerances_that_are_not_numbers_are_argument_errors() {
    for (args, needle) in [
        (
            &[
                "run",
                "m.pth",
                "--input",
                "x.npy",
                "--output",
                "y.npy",
                "--batch-size",
                "0",
            ][..],
            "--batch-size",
        ),
        (&["gc", "runs/x", "--keep-last", "0"][..], "--keep-last"),
        (&["demo", "--epochs", "0"][..], "--epochs"),
        (&["diff", "a.pth", "b.pth", "--atol", "nan"][..], "--atol"),
        (&["diff", "a.pth", "b.pth", "--rtol=-1"][..], "--rtol"),
    ] {
        let out = ckpt(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    use std::process::Stdio;
    let files: Vec<String> = (0..2000)
        .map(|_| fixture("mlp.safetensors").to_str().unwrap().to_owned())
        .collect();
    let mut args = vec!["verify".to_owned()];
    args.extend(files);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `ckpt verify … | head -0`: the reader closes before the first line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
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
