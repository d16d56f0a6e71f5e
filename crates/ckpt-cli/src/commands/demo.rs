//! `ckpt demo`: the whole life of a model on a real task. Trains an MLP on
//! the handwritten digits shipped in the repository (embedded in the
//! binary), checkpointing every epoch into a run directory, and ends with
//! a model package, an inference package, the validation-loss curve and
//! the held-out accuracy. `--resume` continues an interrupted or finished
//! run exactly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use ckpt::store::{
    CheckpointManager, KeepBest, MetricMode, MissingMetric, Retention, StepInfo, StoreOptions,
};
use ckpt::{Format, LoadRules, ModelSpec};
use ckpt_candle::{
    capture, restore, Adam, AdamConfig, LrScheduler, Model, Optimizer, Rng, Training,
};

use crate::args::DemoArgs;
use crate::shared::digits::{digits, evaluate, Split};
use crate::shared::output::{human_bytes, thousands, warning, Table};
use crate::shared::progress;

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

/// The model, its optimizer, the learning-rate schedule and the random
/// stream: what each checkpoint holds.
struct Trainer {
    model: Model,
    opt: Adam,
    sched: LrScheduler,
    rng: Rng,
}

impl Trainer {
    /// The demo's model, freshly initialised from `seed`, with AdamW.
    fn new(seed: u64) -> Result<Trainer> {
        let model = Model::new(ModelSpec::from_json(SPEC)?, &Device::Cpu, seed)?;
        let mut opt = Adam::new(
            model.store().vars(),
            AdamConfig {
                lr: 3e-3,
                weight_decay: 1e-4,
                ..AdamConfig::adamw()
            },
        )?;
        // Warm up for 5 epochs, then decay by 7% an epoch: nothing depends
        // on the total, so a run continued to more epochs is the longer run.
        let warmup = LrScheduler::linear_lr(&mut opt, 0.1, 1.0, 5)?;
        let decay = LrScheduler::exponential_lr(&mut opt, 0.93)?;
        let sched = LrScheduler::sequential_lr(&mut opt, vec![warmup, decay], &[5])?;
        let rng = Rng::new(seed);
        Ok(Trainer {
            model,
            opt,
            sched,
            rng,
        })
    }

    /// The states a checkpoint captures or restores.
    fn parts(&mut self) -> Training<'_> {
        Training {
            model: self.model.store(),
            optimizer: &mut self.opt,
            scheduler: Some(&mut self.sched),
            rng: Some(&mut self.rng),
        }
    }

    /// One epoch over `train` in shuffled batches (a bar on a terminal);
    /// returns the mean training loss and the learning rate it used.
    fn epoch(&mut self, epoch: u64, train: &Split) -> Result<(f64, f64)> {
        let mut order: Vec<u32> = (0..train.len() as u32).collect();
        self.rng.shuffle(&mut order);
        let bar = progress::steps(
            &format!("epoch {epoch}"),
            train.len().div_ceil(BATCH) as u64,
            "batches",
        );
        let mut total_loss = 0.0;
        for chunk in order.chunks(BATCH) {
            let idx = Tensor::new(chunk, &Device::Cpu)?;
            let (x, y) = (
                train.x.index_select(&idx, 0)?,
                train.y.index_select(&idx, 0)?,
            );
            let logits = self.model.forward_train(&x, &mut self.rng)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            total_loss += f64::from(loss.to_scalar::<f32>()?) * chunk.len() as f64;
            self.opt.step(&loss.backward()?)?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        let lr = self.opt.lrs()[0];
        self.sched.step(&mut self.opt)?;
        Ok((total_loss / train.len() as f64, lr))
    }
}

/// Runs the demo.
pub fn run(args: &DemoArgs, out: &mut dyn Write) -> Result<()> {
    let start = Instant::now();
    let format = args.format.format();
    let (train, val, test) = digits()?;
    let mut trainer = Trainer::new(args.seed)?;
    let best = KeepBest {
        metric: "val_loss".into(),
        mode: MetricMode::Min,
        k: 1,
        missing: MissingMetric::Ignore,
    };
    let store_options = StoreOptions::default()
        .format(format)
        .retention(Retention::default().keep_last(3).keep_best(best));
    let mut run = CheckpointManager::open(&args.dir, store_options)?;
    let mut epoch = resume(&run, args, &mut trainer, out)?;
    writeln!(
        out,
        "training digits-mlp (64-128-64-10, {} parameters) on {} digits, validating on {}, seed {}; checkpoints in {}",
        thousands(trainer.model.spec().parameter_count()),
        train.len(),
        val.len(),
        args.seed,
        args.dir.display(),
    )?;
    let batches = train.len().div_ceil(BATCH);
    while epoch < args.epochs {
        epoch += 1;
        let epoch_start = Instant::now();
        let (train_loss, lr) = trainer.epoch(epoch, &train)?;
        let (val_loss, val_acc) = evaluate(&trainer.model, &val)?;
        let mut checkpoint = capture(trainer.parts())?;
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
            args.epochs,
            val_acc * 100.0,
            epoch_start.elapsed().as_secs_f64() * 1e3,
            report.seconds * 1e3,
        )?;
    }
    finish(&run, &args.dir, format, &test, out, start)
}

/// Restores the run's latest checkpoint into `trainer` when `--resume`
/// asks (refusing a run that exists otherwise), says what was removed of
/// an interrupted save; returns the epoch to continue from.
fn resume(
    run: &CheckpointManager,
    args: &DemoArgs,
    trainer: &mut Trainer,
    out: &mut dyn Write,
) -> Result<u64> {
    let dir = args.dir.display();
    let mut epoch = 0;
    match run.restore_latest()? {
        Some(restored) if args.resume => {
            for (step, why) in &restored.skipped {
                warning(&format!("skipped damaged epoch {step}: {why}"));
            }
            restore(&restored.checkpoint, &LoadRules::default(), trainer.parts())
                .with_context(|| format!("{dir}: epoch {} does not fit the demo's model", restored.step))?;
            epoch = restored.checkpoint.epoch as u64;
            writeln!(out, "resumed {dir} at epoch {epoch}")?;
        }
        Some(restored) => bail!(
            "{dir} already holds a run (epoch {}): add --resume to continue it, or choose another --dir",
            restored.checkpoint.epoch
        ),
        None if args.resume => writeln!(out, "{dir}: nothing to resume; starting a new run")?,
        None => {}
    }
    if !run.opened().removed.is_empty() {
        writeln!(
            out,
            "removed the leftovers of an interrupted save: {}",
            run.opened().removed.join(", ")
        )?;
    }
    Ok(epoch)
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
    let ext = format.extension();
    let packages = [
        dir.join(format!("best-model.{ext}")),
        dir.join(format!("inference-model.{ext}")),
    ];
    let test_acc = write_packages(run, &best, test, &packages)?;
    let files = files_table(run, dir, &packages)?;
    writeln!(out)?;
    files.write(out)?;
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

/// Writes the best step as a training package and an inference package
/// (`paths`, in that order), checks that the inference package predicts
/// as the model did, and returns the held-out accuracy.
fn write_packages(
    run: &CheckpointManager,
    best: &StepInfo,
    test: &Split,
    [best_path, inference_path]: &[PathBuf; 2],
) -> Result<f64> {
    let checkpoint = run.load(best.step)?;
    let model = Model::from_state_dict(
        ModelSpec::from_json(SPEC)?,
        checkpoint.model.clone(),
        &Device::Cpu,
    )?;
    let (test_loss, test_acc) = evaluate(&model, test)?;
    let mut package = model.package("1.0.0")?;
    let info = &mut package.info;
    info.classes = (0..10).map(|d| d.to_string()).collect();
    let val_loss = best.metric("val_loss").unwrap_or(f64::NAN);
    info.metrics.insert("val_loss".into(), val_loss);
    info.metrics.insert("test_accuracy".into(), test_acc);
    info.metrics.insert("test_loss".into(), test_loss);
    info.user.insert(
        "dataset".into(),
        "UCI optical handwritten digits (CC BY 4.0)".into(),
    );
    info.user
        .insert("epoch".into(), checkpoint.epoch.to_string());
    let mut training = package.clone();
    training.optimizer = checkpoint.optimizer.clone();
    training.save(best_path)?;
    package.inference().save(inference_path)?;
    // The package loads back as a runnable model, predicting the same.
    let reloaded = Model::load(inference_path, &Device::Cpu)?;
    let (_, again) = evaluate(&reloaded, test)?;
    if again != test_acc {
        bail!(
            "{}: the saved package predicts differently",
            inference_path.display()
        );
    }
    Ok(test_acc)
}

/// The files the demo leaves: the two packages, the curve (drawn here, on
/// a local disk) and the latest training checkpoint, with their sizes.
fn files_table(run: &CheckpointManager, dir: &Path, packages: &[PathBuf; 2]) -> Result<Table> {
    // Objects' sizes are not looked up (0 shows as "-").
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut files: Vec<(String, &str, u64)> = vec![
        (
            packages[0].display().to_string(),
            "best model package (spec, weights, optimizer state)",
            size(&packages[0]),
        ),
        (
            packages[1].display().to_string(),
            "inference package (spec and weights)",
            size(&packages[1]),
        ),
    ];
    // The curve is an image on the local disk (for a run on object
    // storage: `ckpt plot s3://... -o curve.png`).
    #[cfg(feature = "plot")]
    if !ckpt::storage::Location::parse(dir).is_remote() {
        let png = dir.join("val_loss.png");
        crate::shared::plot::draw_metric(dir, "val_loss", &png)?;
        files.push((
            png.display().to_string(),
            "validation loss per epoch",
            std::fs::metadata(&png)?.len(),
        ));
    }
    let last = run.latest().context("no latest step")?;
    let latest_file = dir.join(last.dir()).join(&last.file);
    files.push((
        latest_file.display().to_string(),
        "latest training checkpoint",
        last.bytes,
    ));
    let mut table = Table::new(vec!["file", "what", "size"], vec![false, false, true]);
    for (path, what, bytes) in files {
        let size = if bytes == 0 {
            "-".to_owned()
        } else {
            human_bytes(bytes)
        };
        table.row(vec![path, what.to_string(), size]);
    }
    Ok(table)
}
