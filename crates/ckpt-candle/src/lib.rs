//! ckpt for candle: a model's variables as PyTorch-style state dicts,
//! optimizers and learning-rate schedulers with `torch.optim`'s
//! mathematics and state dicts, and a seedable generator, so that a candle
//! training run resumes exactly from a checkpoint and can continue in
//! PyTorch (and the reverse).
//!
//! The file formats, the value tree and the loading rules live in the
//! [`ckpt`] crate; this crate adds only what needs a tensor engine.
#![deny(missing_docs)]

mod convert;
mod error;
mod optim;
mod params;
mod plateau;
mod rng;
mod scheduler;
mod state;

pub use convert::{candle_dtype, ckpt_dtype, from_candle, to_candle, Placement};
pub use error::{Error, Result};
pub use optim::{
    Adam, AdamConfig, AdamState, Optim, Optimizer, ParamGroup, Sgd, SgdConfig, SgdState, UpdateRule,
};
pub use params::{load_varmap, varmap_state_dict, ParamStore};
pub use plateau::{Mode, PlateauConfig, ReduceLrOnPlateau, ThresholdMode};
pub use rng::Rng;
pub use scheduler::LrScheduler;
