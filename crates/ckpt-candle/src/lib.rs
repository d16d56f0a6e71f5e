//! ckpt for candle: a model's variables as PyTorch-style state dicts,
//! optimizers and learning-rate schedulers with `torch.optim`'s
//! mathematics and state dicts, and a seedable generator, so that a candle
//! training run resumes exactly from a checkpoint and can continue in
//! PyTorch (and the reverse).
//!
//! The file formats, the value tree and the loading rules live in the
//! [`ckpt`] crate; this crate adds only what needs a tensor engine.
//!
//! The whole cycle (the README's example):
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! use ckpt::{LoadRules, TrainingCheckpoint};
//! use ckpt_candle::{capture, restore, Adam, AdamConfig, LrScheduler, ParamStore, Rng, Training};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//!
//! // Variables are created in the model's order, under PyTorch's names
//! // (fc1.weight, shape [out, in]); initialisation is seeded.
//! let store = ParamStore::new(0);
//! let vb = store.var_builder(DType::F32, &Device::Cpu);
//! let fc1 = candle_nn::linear(784, 128, vb.pp("fc1"))?;
//! let fc2 = candle_nn::linear(128, 10, vb.pp("fc2"))?;
//! let mut opt = Adam::new(store.vars(), AdamConfig { lr: 1e-3, ..AdamConfig::adamw() })?;
//! let mut sched = LrScheduler::step_lr(&mut opt, 30, 0.1)?;
//! let mut rng = Rng::new(0);          // data order and dropout: rng.shuffle, rng.dropout
//!
//! // ... loss.backward(), opt.step(&grads)?, sched.step(&mut opt)? ...
//!
//! let parts = Training { model: &store, optimizer: &mut opt, scheduler: Some(&mut sched), rng: Some(&mut rng) };
//! let mut c = capture(parts)?;          // model, optimizer, scheduler and rng states
//! c.epoch = 5;
//! c.set_metric("val_loss", 0.31);
//! c.save("checkpoint.pth")?;          // or .safetensors; torch.load(weights_only=True) reads the .pth
//!
//! // Resume (in a fresh process): build the same objects, then restore them
//! // all from the checkpoint, or none of them if any part does not fit.
//! let c = TrainingCheckpoint::load("checkpoint.pth")?;
//! let parts = Training { model: &store, optimizer: &mut opt, scheduler: Some(&mut sched), rng: Some(&mut rng) };
//! restore(&c, &LoadRules::default(), parts)?;
//! # let _ = (fc1, fc2);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod convert;
mod error;
mod model;
mod optim;
mod params;
mod plateau;
mod quantized;
mod rng;
mod scheduler;
mod state;
mod training;

pub use convert::{candle_dtype, ckpt_dtype, from_candle, to_candle, Placement};
pub use error::{Error, Result};
pub use model::Model;
pub use optim::{
    Adam, AdamConfig, AdamState, Optim, Optimizer, ParamGroup, Sgd, SgdConfig, SgdState, UpdateRule,
};
pub use params::{load_varmap, varmap_state_dict, ParamStore};
pub use plateau::{Mode, PlateauConfig, ReduceLrOnPlateau, ThresholdMode};
pub use rng::Rng;
pub use scheduler::LrScheduler;
pub use training::{capture, restore, SchedulerState, Training};
