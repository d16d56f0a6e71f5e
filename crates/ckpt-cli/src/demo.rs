//! `ckpt demo`: the whole life of a model on a real task. Trains an MLP on
//! the handwritten digits shipped in the repository (embedded in the
//! binary), checkpointing every epoch into a run directory, and ends with
//! a model package, an inference package, the validation-loss curve and
//! the held-out accuracy. `--resume` continues an interrupted or finished
//! run exactly.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use ckpt::store::{
    CheckpointManager, KeepBest, MetricMode, MissingMetric, Retention, StoreOptions,
};
use ckpt::{Format, LoadRules, ModelSpec};
use ckpt_candle::{
    capture, restore, Adam, AdamConfig, LrScheduler, Model, Optimizer, Rng, Training,
};

use crate::digits::{digits, evaluate, Split};
use crate::output::{human_bytes, Table};

const BATCH: usize = 64;
/// The demo's model, as a spec: the same layers and names as a torch
/// module with attributes fc1, act1, drop, fc2, act2, head.
pub const SPEC: &str = r#"{"name": "digits-mlp", "input_shape": [64], "layers": [
    {"name": "fc1", "type": "Linear", "in_features": 64, "out_features": 128},
    {"name": "act1", "type": "ReLU"},
    {"name": "drop", "type": "Dropout", "p": 0.1},
    {"name": "fc2", "type": "Linear", "in_features": 128, "out_features": 64},
    {"name": "act2", "type": "ReLU"},
    {"name": "head", "type": "Linear", "in_features": 64, "out_features": 10}]}"#;

/// What the user asked for.
pub struct Options {
    pub epochs: u64,
    pub dir: PathBuf,
    pub seed: u64,
    pub format: Format,
    pub resume: bool,
}

fn epoch_bar(epoch: u64, done: usize, total: usize) {
    let width = 24;
    let filled = done * width / total.max(1);
    eprint!(
        "\r  epoch {epoch} [{}{}] {done}/{total} batches",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    if done == total {
        eprint!("\r{}\r", " ".repeat(60));
    }
}

/// Runs the demo.
pub fn run(options: &Options, out: &mut dyn Write) -> Result<()> {
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let (train, val, test) = digits()?;
    let spec = ModelSpec::from_json(SPEC)?;
    let model = Model::new(spec, &Device::Cpu, options.seed)?;
    let mut opt = Adam::new(
        model.store().vars(),
        AdamConfig {
            lr: 3e-3,
            weight_decay: 1e-4,
            ..AdamConfig::adamw()
        },
    )?;
    // Warm up for 5 epochs, then decay by 7% an epoch: nothing depends on
    // the total, so a run continued to more epochs is the longer run.
    let warmup = LrScheduler::linear_lr(&mut opt, 0.1, 1.0, 5)?;
    let decay = LrScheduler::exponential_lr(&mut opt, 0.93)?;
    let mut sched = LrScheduler::sequential_lr(&mut opt, vec![warmup, decay], &[5])?;
    let mut rng = Rng::new(options.seed);

    let best = KeepBest {
        metric: "val_loss".into(),
        mode: MetricMode::Min,
        k: 1,
        missing: MissingMetric::Ignore,
    };
    let store_options = StoreOptions::default()
        .format(options.format)
        .retention(Retention::default().keep_last(3).keep_best(best));
    let mut run = CheckpointManager::open(&options.dir, store_options)?;
    let dir = options.dir.display();
    let mut epoch = 0;
    match run.restore_latest()? {
        Some(restored) if options.resume => {
            for (step, why) in &restored.skipped {
                crate::output::warning(&format!("skipped damaged epoch {step}: {why}"));
            }
            let parts = Training { model: model.store(), optimizer: &mut opt, scheduler: Some(&mut sched), rng: Some(&mut rng) };
            restore(&restored.checkpoint, &LoadRules::default(), parts)
                .with_context(|| format!("{dir}: epoch {} does not fit the demo's model", restored.step))?;
            epoch = restored.checkpoint.epoch as u64;
            writeln!(out, "resumed {dir} at epoch {epoch}")?;
        }
        Some(restored) => bail!(
            "{dir} already holds a run (epoch {}): add --resume to continue it, or choose another --dir",
            restored.checkpoint.epoch
        ),
        None if options.resume => writeln!(out, "{dir}: nothing to resume; starting a new run")?,
        None => {}
    }
    if !run.opened().removed.is_empty() {
        writeln!(
            out,
            "removed the leftovers of an interrupted save: {}",
            run.opened().removed.join(", ")
        )?;
    }
    writeln!(
        out,
        "training digits-mlp (64-128-64-10, {} parameters) on {} digits, validating on {}, seed {}; checkpoints in {dir}",
        crate::output::thousands(model.spec().parameter_count()),
        train.len(),
        val.len(),
        options.seed
    )?;

    let batches = train.len().div_ceil(BATCH);
    while epoch < options.epochs {
        epoch += 1;
        let epoch_start = Instant::now();
        let mut order: Vec<u32> = (0..train.len() as u32).collect();
        rng.shuffle(&mut order);
        let mut total_loss = 0.0;
        for (b, chunk) in order.chunks(BATCH).enumerate() {
            let idx = Tensor::new(chunk, &Device::Cpu)?;
            let (x, y) = (
                train.x.index_select(&idx, 0)?,
                train.y.index_select(&idx, 0)?,
            );
            let loss = candle_nn::loss::cross_entropy(&model.forward_train(&x, &mut rng)?, &y)?;
            total_loss += f64::from(loss.to_scalar::<f32>()?) * chunk.len() as f64;
            opt.step(&loss.backward()?)?;
            if tty {
                epoch_bar(epoch, b + 1, batches);
            }
        }
        let lr = opt.lrs()[0];
        sched.step(&mut opt)?;
        let train_loss = total_loss / train.len() as f64;
        let (val_loss, val_acc) = evaluate(&model, &val)?;
        let parts = Training {
            model: model.store(),
            optimizer: &mut opt,
            scheduler: Some(&mut sched),
            rng: Some(&mut rng),
        };
        let mut checkpoint = capture(parts)?;
        checkpoint.epoch = epoch as i64;
        checkpoint.step = (epoch as usize * batches) as i64;
        checkpoint.loss = Some(train_loss);
        checkpoint.set_metric("val_loss", val_loss);
        checkpoint.set_metric("val_accuracy", val_acc);
        let metrics = [
            ("train_loss", train_loss),
            ("val_loss", val_loss),
            ("val_accuracy", val_acc),
        ];
        let report = run.save(epoch, &checkpoint, &metrics)?;
        writeln!(
            out,
            "epoch {epoch:>3}/{}  train loss {train_loss:.4}  val loss {val_loss:.4}  val acc {:.1}%  lr {lr:.5}  {:.0} ms (save {:.1} ms)",
            options.epochs,
            val_acc * 100.0,
            epoch_start.elapsed().as_secs_f64() * 1e3,
            report.seconds * 1e3,
        )?;
    }

    finish(&run, &options.dir, options.format, &test, out, start)
}

/// The packages, the curve, the summary and the held-out accuracy.
fn finish(
    run: &CheckpointManager,
    dir: &Path,
    format: Format,
    test: &Split,
    out: &mut dyn Write,
    start: Instant,
) -> Result<()> {
    let best = run
        .best()
        .or_else(|| run.latest())
        .context("the run has no checkpoint")?;
    let checkpoint = run.load(best.step)?;
    let model = Model::from_state_dict(
        ModelSpec::from_json(SPEC)?,
        checkpoint.model.clone(),
        &Device::Cpu,
    )?;
    let (test_loss, test_acc) = evaluate(&model, test)?;

    let mut package = model.package("1.0.0")?;
    package.info.classes = (0..10).map(|d| d.to_string()).collect();
    package.info.metrics.insert(
        "val_loss".into(),
        best.metric("val_loss").unwrap_or(f64::NAN),
    );
    package
        .info
        .metrics
        .insert("test_accuracy".into(), test_acc);
    package.info.metrics.insert("test_loss".into(), test_loss);
    package.info.user.insert(
        "dataset".into(),
        "UCI optical handwritten digits (CC BY 4.0)".into(),
    );
    package
        .info
        .user
        .insert("epoch".into(), checkpoint.epoch.to_string());
    let ext = format.extension();
    let best_path = dir.join(format!("best-model.{ext}"));
    let inference_path = dir.join(format!("inference-model.{ext}"));
    let mut training = package.clone();
    training.optimizer = checkpoint.optimizer.clone();
    training.save(&best_path)?;
    package.inference().save(&inference_path)?;
    // The package loads back as a runnable model, predicting the same.
    let reloaded = Model::load(&inference_path, &Device::Cpu)?;
    let (_, again) = evaluate(&reloaded, test)?;
    if again != test_acc {
        bail!(
            "{}: the saved package predicts differently",
            inference_path.display()
        );
    }

    let mut files: Vec<(String, &str, u64)> = Vec::new();
    // The curve is an image on the local disk (for a run on object
    // storage: `ckpt plot s3://... -o curve.png`).
    let remote = dir.to_str().is_some_and(|d| d.starts_with("s3://"));
    #[cfg(feature = "plot")]
    if !remote {
        let png = dir.join("val_loss.png");
        crate::plot::run(dir, "val_loss", &png, &mut std::io::sink())?;
        files.push((
            png.display().to_string(),
            "validation loss per epoch",
            std::fs::metadata(&png)?.len(),
        ));
    }
    // Objects' sizes are not looked up (0 shows as "-").
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    files.insert(
        0,
        (
            best_path.display().to_string(),
            "best model package (spec, weights, optimizer state)",
            size(&best_path),
        ),
    );
    files.insert(
        1,
        (
            inference_path.display().to_string(),
            "inference package (spec and weights)",
            size(&inference_path),
        ),
    );
    let last = run.latest().context("no latest step")?;
    let latest_file = dir.join(last.dir()).join(&last.file);
    files.push((
        latest_file.display().to_string(),
        "latest training checkpoint",
        last.bytes,
    ));

    writeln!(out)?;
    let mut table = Table::new(vec!["file", "what", "size"], vec![false, false, true]);
    for (path, what, bytes) in &files {
        let size = if *bytes == 0 {
            "-".to_owned()
        } else {
            human_bytes(*bytes)
        };
        table.row(vec![path.clone(), what.to_string(), size]);
    }
    table.write(out)?;
    writeln!(
        out,
        "\nbest epoch {} (val loss {:.4}, val acc {:.1}%); {} checkpoints kept in {} (see `ckpt ls {}`); {:.1} s",
        best.step,
        best.metric("val_loss").unwrap_or(f64::NAN),
        best.metric("val_accuracy").unwrap_or(f64::NAN) * 100.0,
        run.steps().len(),
        dir.display(),
        dir.display(),
        start.elapsed().as_secs_f64()
    )?;
    let correct = (test_acc * test.len() as f64).round() as usize;
    writeln!(
        out,
        "held-out accuracy: {:.1}% ({correct}/{} digits never seen in training)",
        test_acc * 100.0,
        test.len()
    )?;
    Ok(())
}
