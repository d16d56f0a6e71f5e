//! Learning-rate schedulers with `torch.optim.lr_scheduler`'s semantics
//! (the same recursive formulas, so the same floating-point results) and
//! state dicts: StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR,
//! LinearLR and SequentialLR here; ReduceLROnPlateau in
//! [`crate::ReduceLrOnPlateau`].
//!
//! Here the schedule and its steps; the rates each kind computes are in
//! `rates.rs`, SequentialLR's switching in `sequential.rs`, state dicts in
//! `state_dict.rs`.

mod rates;
mod sequential;
mod state_dict;

use crate::state::Part;
use crate::{Error, Optimizer, Result};
pub(crate) use state_dict::check_kind;

/// The part errors name (`scheduler state: ...`).
const PART: Part = Part::Scheduler;

/// An epoch- or step-based schedule. Create it after the optimizer, call
/// [`LrScheduler::step`] after each `optimizer.step`, as in PyTorch.
///
/// ```
/// use candle_core::{Device, Var};
/// use ckpt_candle::{LrScheduler, Optimizer, Sgd, SgdConfig};
/// let w = Var::new(&[1.0f32], &Device::Cpu).unwrap();
/// let mut opt = Sgd::new(vec![w], SgdConfig { lr: 0.1, ..Default::default() }).unwrap();
/// let mut sched = LrScheduler::step_lr(&mut opt, 2, 0.5).unwrap();
/// let mut lrs = vec![];
/// for _ in 0..5 {
///     lrs.push(opt.lrs()[0]);
///     sched.step(&mut opt).unwrap();
/// }
/// assert_eq!(lrs, [0.1, 0.1, 0.05, 0.05, 0.025]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LrScheduler {
    kind: Kind,
    base_lrs: Vec<f64>,
    last_epoch: i64,
    step_count: i64,
    last_lr: Vec<f64>,
}

/// A scheduler kind and its parameters.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Step {
        step_size: i64,
        gamma: f64,
    },
    MultiStep {
        /// Sorted, with repeats (PyTorch's `Counter`).
        milestones: Vec<i64>,
        gamma: f64,
    },
    Exponential {
        gamma: f64,
    },
    CosineAnnealing {
        t_max: i64,
        eta_min: f64,
    },
    Linear {
        start_factor: f64,
        end_factor: f64,
        total_iters: i64,
    },
    Sequential {
        schedulers: Vec<LrScheduler>,
        milestones: Vec<i64>,
    },
}

impl Kind {
    /// PyTorch's class name.
    fn name(&self) -> &'static str {
        match self {
            Kind::Step { .. } => "StepLR",
            Kind::MultiStep { .. } => "MultiStepLR",
            Kind::Exponential { .. } => "ExponentialLR",
            Kind::CosineAnnealing { .. } => "CosineAnnealingLR",
            Kind::Linear { .. } => "LinearLR",
            Kind::Sequential { .. } => "SequentialLR",
        }
    }
}

impl LrScheduler {
    fn new(opt: &mut dyn Optimizer, kind: Kind) -> Result<LrScheduler> {
        let mut s = LrScheduler {
            kind,
            base_lrs: opt.init_initial_lrs(),
            last_epoch: -1,
            step_count: 0,
            last_lr: Vec::new(),
        };
        s.initial_step(opt)?;
        Ok(s)
    }

    /// `StepLR`: multiply the learning rate by `gamma` every `step_size`
    /// steps.
    pub fn step_lr(opt: &mut dyn Optimizer, step_size: i64, gamma: f64) -> Result<LrScheduler> {
        if step_size <= 0 {
            return Err(Error::InvalidArgument(format!(
                "step_size {step_size} must be positive"
            )));
        }
        LrScheduler::new(opt, Kind::Step { step_size, gamma })
    }

    /// `MultiStepLR`: multiply by `gamma` at each milestone (a milestone
    /// given twice multiplies by `gamma²`).
    pub fn multi_step_lr(
        opt: &mut dyn Optimizer,
        milestones: &[i64],
        gamma: f64,
    ) -> Result<LrScheduler> {
        let mut milestones = milestones.to_vec();
        milestones.sort_unstable();
        LrScheduler::new(opt, Kind::MultiStep { milestones, gamma })
    }

    /// `ExponentialLR`: multiply by `gamma` every step.
    pub fn exponential_lr(opt: &mut dyn Optimizer, gamma: f64) -> Result<LrScheduler> {
        LrScheduler::new(opt, Kind::Exponential { gamma })
    }

    /// `CosineAnnealingLR`: a half cosine from the initial rate down to
    /// `eta_min` over `t_max` steps (and back up, periodically, after).
    pub fn cosine_annealing_lr(
        opt: &mut dyn Optimizer,
        t_max: i64,
        eta_min: f64,
    ) -> Result<LrScheduler> {
        if t_max <= 0 {
            return Err(Error::InvalidArgument(format!(
                "T_max {t_max} must be positive"
            )));
        }
        LrScheduler::new(opt, Kind::CosineAnnealing { t_max, eta_min })
    }

    /// `LinearLR` (warm-up): scale the rate from `start_factor` to
    /// `end_factor` linearly over `total_iters` steps. PyTorch's defaults
    /// are 1/3, 1.0 and 5.
    pub fn linear_lr(
        opt: &mut dyn Optimizer,
        start_factor: f64,
        end_factor: f64,
        total_iters: i64,
    ) -> Result<LrScheduler> {
        if !(start_factor > 0.0 && start_factor <= 1.0 && (0.0..=1.0).contains(&end_factor)) {
            return Err(Error::InvalidArgument(format!(
                "LinearLR needs 0 < start_factor ≤ 1 and 0 ≤ end_factor ≤ 1, not {start_factor} and {end_factor}"
            )));
        }
        if total_iters <= 0 {
            return Err(Error::InvalidArgument(format!(
                "total_iters {total_iters} must be positive"
            )));
        }
        LrScheduler::new(
            opt,
            Kind::Linear {
                start_factor,
                end_factor,
                total_iters,
            },
        )
    }

    fn initial_step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        self.step_count = 0;
        self.step_inner(opt, true)
    }

    /// Advances the schedule by one step (or epoch) and sets the
    /// optimizer's learning rates.
    pub fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        self.step_inner(opt, false)
    }

    fn step_inner(&mut self, opt: &mut dyn Optimizer, initial: bool) -> Result<()> {
        if let Kind::Sequential {
            schedulers,
            milestones,
        } = &mut self.kind
        {
            self.last_epoch += 1;
            let idx = milestones.partition_point(|&m| m <= self.last_epoch);
            let child = &mut schedulers[idx];
            if idx > 0 && milestones[idx - 1] == self.last_epoch {
                child.update_lr(opt, Some(0), false)?;
            } else {
                child.step_inner(opt, false)?;
            }
            self.last_lr = child.last_lr.clone();
            return Ok(());
        }
        self.step_count += 1;
        self.update_lr(opt, None, initial)
    }

    fn update_lr(
        &mut self,
        opt: &mut dyn Optimizer,
        epoch: Option<i64>,
        initial: bool,
    ) -> Result<()> {
        let values = match epoch {
            None => {
                self.last_epoch += 1;
                self.chained(&opt.lrs(), initial)
            }
            Some(epoch) => {
                self.last_epoch = epoch;
                self.closed_form()?
            }
        };
        if values.len() != opt.lrs().len() {
            return Err(Error::InvalidArgument(format!(
                "the scheduler has {} learning rates, the optimizer {} param groups",
                values.len(),
                opt.lrs().len()
            )));
        }
        for (group, lr) in values.into_iter().enumerate() {
            opt.set_lr(group, lr);
        }
        self.last_lr = opt.lrs();
        Ok(())
    }

    /// The learning rates the last step set, as `get_last_lr()`.
    pub fn last_lr(&self) -> &[f64] {
        &self.last_lr
    }

    /// The number of steps taken (`last_epoch`).
    pub fn last_epoch(&self) -> i64 {
        self.last_epoch
    }

    /// The kind, by PyTorch's class name (`StepLR`).
    pub fn kind(&self) -> &'static str {
        self.kind.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Sgd, SgdConfig};
    use candle_core::{Device, Var};

    fn sgd(lr: f64) -> Sgd {
        let w = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        Sgd::new(
            vec![w],
            SgdConfig {
                lr,
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn a_state_of_another_kind_is_refused_by_name() {
        let mut opt = sgd(0.1);
        let step = LrScheduler::step_lr(&mut opt, 3, 0.5).unwrap();
        let mut exp = LrScheduler::exponential_lr(&mut sgd(0.1), 0.9).unwrap();
        let before = exp.clone();
        let err = exp.load_state_dict(&step.state_dict()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "scheduler state: step_size: this is a StepLR state, not a ExponentialLR state"
        );
        assert_eq!(exp, before);
        let mut step2 = LrScheduler::step_lr(&mut sgd(0.1), 1, 0.1).unwrap();
        let err = step2.load_state_dict(&before.state_dict()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("scheduler state: step_size: this is a ExponentialLR state"),
            "{err}"
        );
        step2.load_state_dict(&step.state_dict()).unwrap();
        assert_eq!(step2, step);
    }

    #[test]
    fn cosine_reaches_eta_min_and_multistep_counts_repeats() {
        let mut opt = sgd(1.0);
        let mut cos = LrScheduler::cosine_annealing_lr(&mut opt, 4, 0.0).unwrap();
        for _ in 0..4 {
            cos.step(&mut opt).unwrap();
        }
        assert!(opt.lrs()[0].abs() < 1e-12);
        let mut opt = sgd(1.0);
        let mut ms = LrScheduler::multi_step_lr(&mut opt, &[2, 2], 0.5).unwrap();
        ms.step(&mut opt).unwrap();
        ms.step(&mut opt).unwrap();
        assert_eq!(opt.lrs(), [0.25]);
        assert!(LrScheduler::step_lr(&mut opt, 0, 0.5).is_err());
    }
}
