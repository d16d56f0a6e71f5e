//! A whole training state in one call: [`capture`] a model, optimizer,
//! scheduler and generator into a [`TrainingCheckpoint`], and [`restore`]
//! them from one, all or nothing.

use ckpt::{LoadReport, LoadRules, TrainingCheckpoint, Value};

use crate::params::prepare;
use crate::{Error, LrScheduler, Optimizer, ParamStore, ReduceLrOnPlateau, Result, Rng};

/// A learning-rate scheduler's state, whatever its kind.
pub trait SchedulerState {
    /// The state dict, as PyTorch's.
    fn state_dict(&self) -> Value;
    /// Restores a state dict; on error nothing changes.
    fn load_state_dict(&mut self, state: &Value) -> Result<()>;
}

impl SchedulerState for LrScheduler {
    fn state_dict(&self) -> Value {
        LrScheduler::state_dict(self)
    }
    fn load_state_dict(&mut self, state: &Value) -> Result<()> {
        LrScheduler::load_state_dict(self, state)
    }
}

impl SchedulerState for ReduceLrOnPlateau {
    fn state_dict(&self) -> Value {
        ReduceLrOnPlateau::state_dict(self)
    }
    fn load_state_dict(&mut self, state: &Value) -> Result<()> {
        ReduceLrOnPlateau::load_state_dict(self, state)
    }
}

/// The parts of a training run that a checkpoint holds. `epoch`, `step`,
/// `loss` and `metrics` are the caller's to set on the result of
/// [`capture`].
pub struct Training<'a> {
    /// The model's variables.
    pub model: &'a ParamStore,
    /// The optimizer.
    pub optimizer: &'a mut dyn Optimizer,
    /// The scheduler, when there is one.
    pub scheduler: Option<&'a mut dyn SchedulerState>,
    /// The generator that draws data order and dropout, when there is one.
    pub rng: Option<&'a mut Rng>,
}

/// Copies the model, optimizer, scheduler and generator states into a new
/// checkpoint (on the CPU, in ckpt's byte form).
///
/// ```
/// use candle_core::{DType, Device};
/// use ckpt_candle::{capture, restore, Adam, AdamConfig, ParamStore, Rng, Training};
/// let store = ParamStore::new(0);
/// candle_nn::linear(2, 1, store.var_builder(DType::F32, &Device::Cpu).pp("fc")).unwrap();
/// let mut opt = Adam::new(store.vars(), AdamConfig::default()).unwrap();
/// let mut rng = Rng::new(1);
/// let mut c = capture(Training { model: &store, optimizer: &mut opt, scheduler: None, rng: Some(&mut rng) }).unwrap();
/// c.epoch = 1;
///
/// let fresh = ParamStore::new(9);
/// candle_nn::linear(2, 1, fresh.var_builder(DType::F32, &Device::Cpu).pp("fc")).unwrap();
/// let mut opt2 = Adam::new(fresh.vars(), AdamConfig::default()).unwrap();
/// let mut rng2 = Rng::new(2);
/// restore(&c, &Default::default(), Training { model: &fresh, optimizer: &mut opt2, scheduler: None, rng: Some(&mut rng2) }).unwrap();
/// assert_eq!(fresh.state_dict().unwrap(), store.state_dict().unwrap());
/// assert_eq!(rng2, rng);
/// ```
pub fn capture(parts: Training<'_>) -> Result<TrainingCheckpoint> {
    let mut c = TrainingCheckpoint::new(parts.model.state_dict()?);
    c.optimizer = Some(parts.optimizer.state_dict()?);
    c.scheduler = parts.scheduler.map(|s| s.state_dict());
    c.rng_state = parts.rng.map(|r| r.state());
    Ok(c)
}

/// Restores every part from `checkpoint`: the model under `rules`, then the
/// optimizer, scheduler and generator. Each part the caller passes must be
/// in the checkpoint. Either everything is restored, or (on error) nothing
/// is: the model and generator are checked and built first, the scheduler's
/// old state is put back if the optimizer's load fails, and the model's
/// variables are assigned last.
pub fn restore(
    checkpoint: &TrainingCheckpoint,
    rules: &LoadRules,
    parts: Training<'_>,
) -> Result<LoadReport> {
    let missing = |key: &str| Error::BadState {
        what: "training checkpoint",
        key: key.into(),
        message: "missing".into(),
    };
    let model = prepare(parts.model.named_vars(), checkpoint.model.clone(), rules)?;
    let rng = match &parts.rng {
        None => None,
        Some(_) => Some(Rng::from_state(
            checkpoint
                .rng_state
                .as_ref()
                .ok_or_else(|| missing("rng_state"))?,
        )?),
    };
    let optimizer_state = checkpoint
        .optimizer
        .as_ref()
        .ok_or_else(|| missing("optimizer_state_dict"))?;
    let mut scheduler = parts.scheduler;
    let previous = match scheduler.as_deref_mut() {
        None => None,
        Some(s) => {
            let state = checkpoint
                .scheduler
                .as_ref()
                .ok_or_else(|| missing("scheduler_state_dict"))?;
            let previous = s.state_dict();
            s.load_state_dict(state)?;
            Some(previous)
        }
    };
    if let Err(e) = parts.optimizer.load_state_dict(optimizer_state) {
        if let (Some(s), Some(previous)) = (scheduler, previous) {
            s.load_state_dict(&previous)?;
        }
        return Err(e);
    }
    if let (Some(target), Some(rng)) = (parts.rng, rng) {
        *target = rng;
    }
    let report = model.report.clone();
    model.apply()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Adam, AdamConfig};
    use candle_core::{DType, Device};

    struct Run {
        store: ParamStore,
        opt: Adam,
        sched: LrScheduler,
        rng: Rng,
    }

    fn run(seed: u64, width: usize) -> Run {
        let store = ParamStore::new(seed);
        let vb = store.var_builder(DType::F32, &Device::Cpu);
        candle_nn::linear(2, width, vb.pp("fc")).unwrap();
        let mut opt = Adam::new(store.vars(), AdamConfig::default()).unwrap();
        let sched = LrScheduler::exponential_lr(&mut opt, 0.5).unwrap();
        Run {
            store,
            opt,
            sched,
            rng: Rng::new(seed),
        }
    }

    impl Run {
        fn parts(&mut self) -> Training<'_> {
            Training {
                model: &self.store,
                optimizer: &mut self.opt,
                scheduler: Some(&mut self.sched),
                rng: Some(&mut self.rng),
            }
        }
    }

    #[test]
    fn a_failed_restore_changes_nothing() {
        let mut source = run(1, 3);
        source.sched.step(&mut source.opt).unwrap();
        let mut good = capture(source.parts()).unwrap();

        let mut target = run(2, 3);
        let before = (
            target.store.state_dict().unwrap(),
            target.sched.clone(),
            target.rng.clone(),
        );

        // An optimizer state for a model with another shape.
        let mut other = run(3, 4);
        let x = candle_core::Tensor::ones((1, 2), DType::F32, &Device::Cpu).unwrap();
        let vars = other.store.vars();
        let loss = x
            .matmul(&vars[0].as_tensor().t().unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        other.opt.step(&loss.backward().unwrap()).unwrap();
        good.optimizer = Some(other.opt.state_dict().unwrap());

        let err = restore(&good, &LoadRules::default(), target.parts()).unwrap_err();
        assert!(
            err.to_string()
                .contains("has shape [4, 2], its parameter [3, 2]"),
            "{err}"
        );
        assert_eq!(target.store.state_dict().unwrap(), before.0);
        assert_eq!(target.sched, before.1);
        assert_eq!(target.rng, before.2);

        // The whole checkpoint restores everything.
        let good = capture(source.parts()).unwrap();
        restore(&good, &LoadRules::default(), target.parts()).unwrap();
        assert_eq!(
            target.store.state_dict().unwrap(),
            source.store.state_dict().unwrap()
        );
        assert_eq!(target.sched, source.sched);
        assert_eq!(target.rng, source.rng);

        // A part the caller passes must be in the checkpoint.
        let mut no_rng = good.clone();
        no_rng.rng_state = None;
        let err = restore(&no_rng, &LoadRules::default(), target.parts()).unwrap_err();
        assert_eq!(err.to_string(), "training checkpoint: rng_state: missing");
    }
}
