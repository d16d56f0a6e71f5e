//! Training interop with real torch, both directions: a checkpoint written
//! by ckpt after K AdamW steps continues in `torch.optim.AdamW`, and a
//! torch checkpoint continues in ckpt; the trajectories agree within 1e-5.
//! Runs when `CKPT_PYTHON` names a Python with torch (`scripts/test` and CI
//! arrange it); plain `cargo test` skips it with a message.

use std::path::Path;

use candle_core::{DType, Device, Module};
use candle_nn::{linear, Linear};
use ckpt::{LoadRules, StateDict, TensorData, TrainingCheckpoint, Value};
use ckpt_candle::{
    capture, restore, to_candle, Adam, AdamConfig, LrScheduler, Optimizer, ParamStore, Training,
};

const SAMPLES: usize = 32;
const BATCH: usize = 8;
const K: i64 = 6;
const M: &str = "7";

#[path = "../../../tests/interop/python.rs"]
mod python;
use python::{python, run_peer};

fn peer(python: &str, args: &[&str]) {
    run_peer(python, "train_peer.py", args);
}

struct Run {
    store: ParamStore,
    fc1: Linear,
    fc2: Linear,
    opt: Adam,
    sched: LrScheduler,
    step: i64,
}

impl Run {
    fn new() -> Run {
        let store = ParamStore::new(5);
        let vb = store.var_builder(DType::F32, &Device::Cpu);
        let fc1 = linear(6, 16, vb.pp("fc1")).unwrap();
        let fc2 = linear(16, 3, vb.pp("fc2")).unwrap();
        let mut opt = Adam::new(
            store.vars(),
            AdamConfig {
                lr: 0.01,
                ..AdamConfig::adamw()
            },
        )
        .unwrap();
        let sched = LrScheduler::step_lr(&mut opt, 5, 0.7).unwrap();
        Run {
            store,
            fc1,
            fc2,
            opt,
            sched,
            step: 0,
        }
    }

    fn parts(&mut self) -> Training<'_> {
        Training {
            model: &self.store,
            optimizer: &mut self.opt,
            scheduler: Some(&mut self.sched),
            rng: None,
        }
    }

    fn resume(path: &Path) -> Run {
        let mut run = Run::new();
        let c = TrainingCheckpoint::load(path).unwrap();
        restore(&c, &LoadRules::default(), run.parts()).unwrap();
        run.step = c.step;
        run
    }

    fn train(&mut self, data: &StateDict, steps: i64) {
        let x = to_candle(&data["x"], &Device::Cpu, "x").unwrap();
        let y = to_candle(&data["y"], &Device::Cpu, "y")
            .unwrap()
            .to_dtype(DType::U32)
            .unwrap();
        for _ in 0..steps {
            let b = self.step as usize % (SAMPLES / BATCH);
            let (xb, yb) = (
                x.narrow(0, b * BATCH, BATCH).unwrap(),
                y.narrow(0, b * BATCH, BATCH).unwrap(),
            );
            let logits = self
                .fc2
                .forward(&self.fc1.forward(&xb).unwrap().relu().unwrap())
                .unwrap();
            let loss = candle_nn::loss::cross_entropy(&logits, &yb).unwrap();
            self.opt.step(&loss.backward().unwrap()).unwrap();
            self.sched.step(&mut self.opt).unwrap();
            self.step += 1;
        }
    }

    fn checkpoint(&mut self) -> TrainingCheckpoint {
        let mut c = capture(self.parts()).unwrap();
        c.step = self.step;
        c
    }
}

fn data(dir: &Path) -> StateDict {
    let x: Vec<f32> = (0..SAMPLES * 6)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    let y: Vec<u8> = (0..SAMPLES as i64)
        .flat_map(|i| ((i * 7 + 1) % 3).to_le_bytes())
        .collect();
    let mut sd = StateDict::new();
    sd.insert("x".into(), TensorData::from_f32(&[SAMPLES, 6], &x).unwrap());
    sd.insert(
        "y".into(),
        TensorData::new(ckpt::DType::I64, vec![SAMPLES], y).unwrap(),
    );
    ckpt::save(dir.join("data.safetensors"), &sd.clone().into()).unwrap();
    sd
}

/// Every tensor of the two checkpoints' model and optimizer state within
/// 1e-5, relative to the tensor's largest magnitude.
fn assert_agree(ours: &TrainingCheckpoint, theirs: &TrainingCheckpoint, what: &str) {
    let flat = |c: &TrainingCheckpoint| {
        let mut v = ckpt::Dict::new();
        v.insert("model".into(), c.model.clone().into());
        v.insert("optimizer".into(), c.optimizer.clone().unwrap());
        StateDict::flatten(&Value::Dict(v)).unwrap()
    };
    let (a, b) = (flat(ours), flat(theirs));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}"
    );
    let mut worst = 0f64;
    for (name, ta) in a.iter() {
        let (va, vb): (Vec<f64>, Vec<f64>) =
            (ta.values_f64().collect(), b[name].values_f64().collect());
        let scale = vb.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
        for (x, y) in va.iter().zip(&vb) {
            let rel = (x - y).abs() / scale;
            worst = worst.max(rel);
            assert!(rel <= 1e-5, "{what}: {name}: ckpt {x} vs torch {y}");
        }
    }
    eprintln!("{what}: largest difference {worst:.2e} of the tensor's scale");
    assert_eq!(
        ours.scheduler.as_ref().unwrap().get("last_epoch"),
        theirs.scheduler.as_ref().unwrap().get("last_epoch")
    );
}

#[test]
fn a_ckpt_checkpoint_continues_in_torch_and_a_torch_checkpoint_in_ckpt() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = data(d);

    // ckpt -> torch
    let mut run = Run::new();
    run.train(&data, K);
    run.checkpoint().save(d.join("ckpt_k.pth")).unwrap();
    peer(
        &python,
        &[
            "continue",
            d.to_str().unwrap(),
            "ckpt_k.pth",
            M,
            "torch_from_ckpt.pth",
        ],
    );
    run.train(&data, M.parse().unwrap());
    let theirs = TrainingCheckpoint::load(d.join("torch_from_ckpt.pth")).unwrap();
    assert_eq!(theirs.step, run.step);
    assert_agree(
        &run.checkpoint(),
        &theirs,
        "ckpt checkpoint continued in torch",
    );

    // torch -> ckpt
    peer(&python, &["start", d.to_str().unwrap(), &K.to_string()]);
    let mut ours = Run::resume(&d.join("torch_k.pth"));
    ours.train(&data, M.parse().unwrap());
    peer(
        &python,
        &[
            "continue",
            d.to_str().unwrap(),
            "torch_k.pth",
            M,
            "torch_continued.pth",
        ],
    );
    let theirs = TrainingCheckpoint::load(d.join("torch_continued.pth")).unwrap();
    assert_agree(
        &ours.checkpoint(),
        &theirs,
        "torch checkpoint continued in ckpt",
    );
}
