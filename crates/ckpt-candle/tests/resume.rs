//! Exact resume: a candle MLP trained for N steps in one go, and the same
//! run stopped at step k, checkpointed, and continued in a fresh process,
//! end bit-identical (parameters, optimizer and scheduler state), data
//! order and dropout included.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear, Linear};
use ckpt::{LoadRules, TrainingCheckpoint, Value};
use ckpt_candle::{
    capture, restore, Adam, AdamConfig, LrScheduler, Optimizer, ParamStore, Rng, Training,
};

const SAMPLES: usize = 64;
const BATCH: usize = 8;
const STEPS_PER_EPOCH: usize = SAMPLES / BATCH;
const TOTAL: i64 = 20;

struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

fn data() -> (Tensor, Tensor) {
    let x: Vec<f32> = (0..SAMPLES * 6)
        .map(|i| ((i as f32) * 0.37).sin())
        .collect();
    let y: Vec<u32> = (0..SAMPLES as u32).map(|i| (i * 7 + 1) % 3).collect();
    (
        Tensor::from_vec(x, (SAMPLES, 6), &Device::Cpu).unwrap(),
        Tensor::from_vec(y, SAMPLES, &Device::Cpu).unwrap(),
    )
}

struct Run {
    store: ParamStore,
    model: Mlp,
    opt: Adam,
    sched: LrScheduler,
    rng: Rng,
    step: i64,
    order: Vec<i64>,
}

impl Run {
    fn fresh() -> Run {
        let store = ParamStore::new(42);
        let vb = store.var_builder(DType::F32, &Device::Cpu);
        let model = Mlp {
            fc1: linear(6, 16, vb.pp("fc1")).unwrap(),
            fc2: linear(16, 3, vb.pp("fc2")).unwrap(),
        };
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
            model,
            opt,
            sched,
            rng: Rng::new(7),
            step: 0,
            order: Vec::new(),
        }
    }

    fn parts(&mut self) -> Training<'_> {
        Training {
            model: &self.store,
            optimizer: &mut self.opt,
            scheduler: Some(&mut self.sched),
            rng: Some(&mut self.rng),
        }
    }

    fn resume(path: &Path) -> Run {
        let mut run = Run::fresh();
        let ckpt = TrainingCheckpoint::load(path).unwrap();
        restore(&ckpt, &LoadRules::default(), run.parts()).unwrap();
        run.step = ckpt.step;
        let order = ckpt
            .extra
            .get(&ckpt::Key::from("data_order"))
            .and_then(Value::as_tensor)
            .unwrap();
        run.order = order.values_f64().map(|v| v as i64).collect();
        run
    }

    fn train_until(&mut self, until: i64) {
        let (x, y) = data();
        while self.step < until {
            let within = self.step as usize % STEPS_PER_EPOCH;
            if within == 0 {
                self.order = (0..SAMPLES as i64).collect();
                self.rng.shuffle(&mut self.order);
            }
            let idx: Vec<u32> = self.order[within * BATCH..][..BATCH]
                .iter()
                .map(|&i| i as u32)
                .collect();
            let idx = Tensor::new(idx.as_slice(), &Device::Cpu).unwrap();
            let (xb, yb) = (
                x.index_select(&idx, 0).unwrap(),
                y.index_select(&idx, 0).unwrap(),
            );
            let h = self.model.fc1.forward(&xb).unwrap().relu().unwrap();
            let h = self.rng.dropout(&h, 0.2).unwrap();
            let logits = self.model.fc2.forward(&h).unwrap();
            let loss = candle_nn::loss::cross_entropy(&logits, &yb).unwrap();
            self.opt.step(&loss.backward().unwrap()).unwrap();
            self.sched.step(&mut self.opt).unwrap();
            self.step += 1;
        }
    }

    fn checkpoint(&mut self) -> TrainingCheckpoint {
        let mut c = capture(self.parts()).unwrap();
        c.step = self.step;
        c.epoch = self.step / STEPS_PER_EPOCH as i64;
        let order = ckpt::TensorData::new(
            ckpt::DType::I64,
            vec![self.order.len()],
            self.order.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
        .unwrap();
        c.extra.insert("data_order".into(), Value::Tensor(order));
        c
    }
}

/// The child processes: `first` trains to k and checkpoints; `second`
/// resumes from that checkpoint in a fresh process and trains to the end.
#[test]
fn child_process() {
    let (Ok(role), Ok(dir)) = (
        std::env::var("CKPT_RESUME_ROLE"),
        std::env::var("CKPT_RESUME_DIR"),
    ) else {
        return; // only runs when re-executed by the test below
    };
    let dir = PathBuf::from(dir);
    let ext = std::env::var("CKPT_RESUME_EXT").unwrap();
    let k: i64 = std::env::var("CKPT_RESUME_K").unwrap().parse().unwrap();
    let at_k = dir.join(format!("step-k.{ext}"));
    match role.as_str() {
        "first" => {
            let mut run = Run::fresh();
            run.train_until(k);
            run.checkpoint().save(&at_k).unwrap();
        }
        "second" => {
            let mut run = Run::resume(&at_k);
            run.train_until(TOTAL);
            run.checkpoint()
                .save(dir.join(format!("final.{ext}")))
                .unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

fn child(role: &str, dir: &Path, k: i64, ext: &str) {
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process",
            "--test-threads=1",
            "--nocapture",
        ])
        .env("CKPT_RESUME_ROLE", role)
        .env("CKPT_RESUME_DIR", dir)
        .env("CKPT_RESUME_K", k.to_string())
        .env("CKPT_RESUME_EXT", ext)
        .status()
        .unwrap();
    assert!(status.success(), "{role} process failed");
}

#[test]
fn resuming_in_a_fresh_process_is_bit_identical() {
    let mut whole = Run::fresh();
    whole.train_until(TOTAL);
    let expected = whole.checkpoint();

    // Mid-epoch in safetensors, at an epoch boundary in .pth.
    for (k, ext) in [(11, "safetensors"), (16, "pth")] {
        let dir = tempfile::tempdir().unwrap();
        child("first", dir.path(), k, ext);
        child("second", dir.path(), k, ext);
        let resumed = TrainingCheckpoint::load(dir.path().join(format!("final.{ext}"))).unwrap();
        assert_eq!(
            resumed.model, expected.model,
            "parameters differ after resuming at {k} ({ext})"
        );
        assert_eq!(
            resumed.optimizer, expected.optimizer,
            "optimizer state differs ({ext})"
        );
        assert_eq!(
            resumed.scheduler, expected.scheduler,
            "scheduler state differs ({ext})"
        );
        assert_eq!(resumed.rng_state, expected.rng_state);
        assert_eq!(resumed.step, TOTAL);
    }

    // A different seed or a skipped RNG restore would not be identical.
    let mut other = Run::fresh();
    other.rng = Rng::new(8);
    other.train_until(TOTAL);
    assert_ne!(other.checkpoint().model, expected.model);
}
