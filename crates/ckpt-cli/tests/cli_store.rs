//! End-to-end tests of run directories: `ckpt ls`, `ckpt verify DIR`,
//! `ckpt gc`, `ckpt plot`, and `s3://` paths for files and runs.

mod common;

use std::path::Path;

use common::{ckpt, expect_error, fixture, stderr, stdout};

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

#[cfg(feature = "plot")]
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

#[cfg(feature = "s3")]
#[path = "../../../tests/interop/moto.rs"]
mod moto;

#[cfg(feature = "s3")]
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
