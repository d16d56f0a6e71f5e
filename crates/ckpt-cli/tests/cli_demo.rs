//! End-to-end tests of `ckpt demo`: training, packages, resuming after a
//! kill, and the packages it writes as inputs of the other commands.

mod common;
#[path = "../../../tests/interop/python.rs"]
mod python;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ckpt, expect_error, stderr, stdout};

#[test]
fn demo_trains_packages_and_reports_held_out_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    trains_to_95_percent(&run);
    let model = run.join("inference-model.safetensors");
    let output = runs_the_package_and_its_state_dict(dir.path(), &model);
    compression_meets_its_targets(dir.path(), &model);
    exports_torchscript_that_torch_runs(dir.path(), &model);

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

/// `ckpt demo` into `run`: 30 epochs, at least 95% held-out accuracy, the
/// packages and the curve, three or four checkpoints kept.
fn trains_to_95_percent(run: &Path) {
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
    for file in ["best-model.safetensors", "inference-model.safetensors"] {
        assert!(run.join(file).exists(), "{file} missing:\n{text}");
    }
    // The curve is drawn where the `plot` feature is (the default build).
    assert_eq!(
        run.join("val_loss.png").exists(),
        cfg!(feature = "plot"),
        "val_loss.png:\n{text}"
    );
    // Three checkpoints kept (last 3; the best is among them or kept too).
    let steps = std::fs::read_dir(run)
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
}

/// The inference package runs through `ckpt run` and predicts digits, and
/// so does a plain state dict plus the spec as JSON; returns the outputs'
/// file.
fn runs_the_package_and_its_state_dict(dir: &Path, model: &Path) -> PathBuf {
    // The inference package runs through `ckpt run` and predicts digits.
    let x = ckpt::TensorData::from_f32(&[2, 64], &[0.25; 128]).unwrap();
    let input = dir.join("x.npy");
    ckpt::save(&input, &ckpt::Value::Tensor(x)).unwrap();
    let output = dir.join("y.npy");
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
    let package = ckpt::Package::load(model, &Default::default()).unwrap();
    let weights = dir.join("weights.pth");
    ckpt::save(&weights, &package.weights.clone().into()).unwrap();
    let spec = dir.join("spec.json");
    std::fs::write(&spec, package.spec.to_json().to_string()).unwrap();
    let output2 = dir.join("y2.npy");
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
    output
}

/// `ckpt export MODEL m.pt` writes TorchScript that torch.jit.load runs
/// as `ckpt run` does, on batches of 1 and 7, with the package's weights.
fn exports_torchscript_that_torch_runs(dir: &Path, model: &Path) {
    let pt = dir.join("digits.pt");
    let out = ckpt(&["export", model.to_str().unwrap(), pt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("(TorchScript, file format version 3)"),
        "{text}"
    );
    assert!(
        text.contains("Dropout, Linear×3, ReLU×2, Sequential"),
        "{text}"
    );
    let Some(py) = python::python() else { return };
    let package = ckpt::Package::load(model, &Default::default()).unwrap();
    ckpt::save(dir.join("digits.safetensors"), &package.weights.into()).unwrap();
    let mut runs = Vec::new();
    for n in [1usize, 7] {
        let values: Vec<f32> = (0..n * 64).map(|i| (i % 17) as f32 / 16.0).collect();
        let x = ckpt::TensorData::from_f32(&[n, 64], &values).unwrap();
        let (input, output) = (
            format!("digits.b{n}.in.npy"),
            format!("digits.b{n}.out.npy"),
        );
        ckpt::save(dir.join(&input), &ckpt::Value::Tensor(x)).unwrap();
        let out = ckpt(&[
            "run",
            model.to_str().unwrap(),
            "--input",
            dir.join(&input).to_str().unwrap(),
            "--output",
            dir.join(&output).to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        runs.push(serde_json::json!({"input": input, "output": output}));
    }
    let manifest = serde_json::json!([{"file": "digits.pt", "weights": "digits.safetensors",
        "runs": runs, "name": "digits-mlp"}]);
    std::fs::write(dir.join("torchscript.json"), manifest.to_string()).unwrap();
    python::run_peer(
        &py,
        "peer.py",
        &["check-torchscript", dir.to_str().unwrap()],
    );
}

/// Compression targets on the trained model: int8 (in .ckptz) at most
/// 30% of the float file and 0.5 points of accuracy, 30% pruning at most
/// 1 point, int8 + 50% pruned in .ckptz at most 20%.
fn compression_meets_its_targets(dir: &Path, model: &Path) {
    let f = |name: &str| dir.join(name).to_str().unwrap().to_owned();
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

/// A `ckpt demo` of `epochs` epochs into `run`, checkpoints and packages
/// in the .pth format.
fn demo_pth(run: &Path, epochs: &str) {
    assert!(ckpt(&[
        "demo",
        "--epochs",
        epochs,
        "--dir",
        run.to_str().unwrap(),
        "--format",
        "pth"
    ])
    .status
    .success());
}

#[test]
fn bad_packages_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    demo_pth(&run, "2");
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

#[test]
fn demo_pth_checkpoints_continue_in_torch_adamw() {
    let Some(py) = python::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    demo_pth(&run, "7");
    for step in [5, 6, 7] {
        let file = run.join(format!("step-{step:08}/checkpoint.pth"));
        python::run_peer(
            &py,
            "train_peer.py",
            &["demo-check", file.to_str().unwrap()],
        );
    }
}
