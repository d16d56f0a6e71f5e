//! Learning-rate schedulers with `torch.optim.lr_scheduler`'s semantics
//! (the same recursive formulas, so the same floating-point results) and
//! state dicts: StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR,
//! LinearLR and SequentialLR here; ReduceLROnPlateau in
//! [`crate::ReduceLrOnPlateau`].

use std::f64::consts::PI;

use ckpt::{Dict, Key, Value};

use crate::state::{entry, int_at, number_at, numbers_at, Part};
use crate::{Error, Optimizer, Result};

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

/// The keys each kind's state dict has beyond the common ones, in
/// PyTorch's order.
fn own_keys(name: &str) -> &'static [&'static str] {
    match name {
        "StepLR" => &["step_size", "gamma"],
        "MultiStepLR" => &["milestones", "gamma"],
        "ExponentialLR" => &["gamma"],
        "CosineAnnealingLR" => &["T_max", "eta_min"],
        "LinearLR" => &["start_factor", "end_factor", "total_iters"],
        "SequentialLR" => &["_milestones", "_schedulers"],
        "ReduceLROnPlateau" => &[
            "factor",
            "default_min_lr",
            "min_lrs",
            "patience",
            "cooldown",
            "eps",
            "mode_worse",
            "mode",
            "threshold",
            "threshold_mode",
            "best",
            "cooldown_counter",
            "num_bad_epochs",
        ],
        _ => &[],
    }
}

const KINDS: [&str; 7] = [
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "LinearLR",
    "SequentialLR",
    "ReduceLROnPlateau",
];

/// Checks that `state` is a state dict of the scheduler kind `name`: all
/// of its own keys present, none that only other kinds have. Errors name
/// the kind the state looks like.
pub(crate) fn check_kind(state: &Dict, name: &str, at: &str) -> Result<()> {
    let has = |k: &str| state.contains_key(&Key::from(k));
    let looks_like = KINDS
        .iter()
        .find(|kind| {
            let own = own_keys(kind);
            own.iter().all(|k| has(k))
                && state.keys().all(|k| {
                    let k = k.to_string();
                    own.contains(&k.as_str())
                        || !KINDS.iter().any(|o| own_keys(o).contains(&k.as_str()))
                })
        })
        .copied();
    if looks_like == Some(name) {
        return Ok(());
    }
    let what = looks_like.map_or("an unknown scheduler's".to_owned(), |k| format!("a {k}"));
    let key = own_keys(name)
        .iter()
        .find(|k| !has(k))
        .map(|k| k.to_string())
        .or_else(|| {
            state.keys().map(|k| k.to_string()).find(|k| {
                !own_keys(name).contains(&k.as_str())
                    && KINDS.iter().any(|o| own_keys(o).contains(&k.as_str()))
            })
        })
        .unwrap_or_default();
    Err(Error::scheduler(
        crate::state::join(at, &key),
        format!("this is {what} state, not a {name} state"),
    ))
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

    /// `SequentialLR`: run `schedulers` one after another, switching at the
    /// `milestones` (one fewer than the schedulers). The schedulers must
    /// have been created on `opt`, in order, just before.
    ///
    /// ```
    /// use candle_core::{Device, Var};
    /// use ckpt_candle::{LrScheduler, Optimizer, Sgd, SgdConfig};
    /// let w = Var::new(&[1.0f32], &Device::Cpu).unwrap();
    /// let mut opt = Sgd::new(vec![w], SgdConfig { lr: 1.0, ..Default::default() }).unwrap();
    /// let warmup = LrScheduler::linear_lr(&mut opt, 0.5, 1.0, 2).unwrap();
    /// let decay = LrScheduler::exponential_lr(&mut opt, 0.5).unwrap();
    /// let mut sched = LrScheduler::sequential_lr(&mut opt, vec![warmup, decay], &[2]).unwrap();
    /// let mut lrs = vec![];
    /// for _ in 0..5 {
    ///     lrs.push(opt.lrs()[0]);
    ///     sched.step(&mut opt).unwrap();
    /// }
    /// assert_eq!(lrs, [0.5, 0.75, 1.0, 0.5, 0.25]);
    /// ```
    pub fn sequential_lr(
        opt: &mut dyn Optimizer,
        schedulers: Vec<LrScheduler>,
        milestones: &[i64],
    ) -> Result<LrScheduler> {
        if schedulers.is_empty() || milestones.len() + 1 != schedulers.len() {
            return Err(Error::InvalidArgument(format!(
                "SequentialLR needs one more scheduler than milestones, not {} and {}",
                schedulers.len(),
                milestones.len()
            )));
        }
        let initial = opt.init_initial_lrs();
        for (group, lr) in initial.iter().enumerate() {
            opt.set_lr(group, *lr);
        }
        let mut s = LrScheduler {
            kind: Kind::Sequential {
                schedulers,
                milestones: milestones.to_vec(),
            },
            base_lrs: Vec::new(),
            last_epoch: 0,
            step_count: 0,
            last_lr: Vec::new(),
        };
        s.undo_children();
        if let Kind::Sequential {
            schedulers,
            milestones,
        } = &mut s.kind
        {
            let idx = milestones.partition_point(|&m| m <= 0);
            schedulers[idx].initial_step(opt)?;
            s.last_lr = schedulers[idx].last_lr.clone();
        }
        Ok(s)
    }

    /// PyTorch's `recursive_undo`: every scheduler below this one steps
    /// its `last_epoch` back by one.
    fn undo_children(&mut self) {
        if let Kind::Sequential { schedulers, .. } = &mut self.kind {
            for child in schedulers {
                match child.kind {
                    Kind::Sequential { .. } => child.undo_children(),
                    _ => child.last_epoch -= 1,
                }
            }
        }
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

    /// PyTorch's `get_lr`: the next rates from the current ones.
    fn chained(&self, lrs: &[f64], initial: bool) -> Vec<f64> {
        let e = self.last_epoch;
        let zipped = || lrs.iter().zip(&self.base_lrs);
        match &self.kind {
            Kind::Step { step_size, gamma } => {
                if e == 0 || e.rem_euclid(*step_size) != 0 {
                    lrs.to_vec()
                } else {
                    lrs.iter().map(|lr| lr * gamma).collect()
                }
            }
            Kind::MultiStep { milestones, gamma } => {
                let count = milestones.iter().filter(|&&m| m == e).count();
                if count == 0 {
                    lrs.to_vec()
                } else {
                    lrs.iter().map(|lr| lr * gamma.powf(count as f64)).collect()
                }
            }
            Kind::Exponential { gamma } => {
                if initial {
                    lrs.to_vec()
                } else {
                    lrs.iter().map(|lr| lr * gamma).collect()
                }
            }
            Kind::CosineAnnealing { t_max, eta_min } => {
                let t = *t_max as f64;
                if initial {
                    lrs.to_vec()
                } else if self.step_count == 1 && e > 0 {
                    zipped()
                        .map(|(_, base)| {
                            eta_min + (base - eta_min) * (1.0 + (e as f64 * PI / t).cos()) / 2.0
                        })
                        .collect()
                } else if (e - 1 - t_max).rem_euclid(2 * t_max) == 0 {
                    zipped()
                        .map(|(lr, base)| lr + (base - eta_min) * (1.0 - (PI / t).cos()) / 2.0)
                        .collect()
                } else {
                    lrs.iter()
                        .map(|lr| {
                            (1.0 + (PI * e as f64 / t).cos())
                                / (1.0 + (PI * (e - 1) as f64 / t).cos())
                                * (lr - eta_min)
                                + eta_min
                        })
                        .collect()
                }
            }
            Kind::Linear {
                start_factor,
                end_factor,
                total_iters,
            } => {
                if e == 0 {
                    lrs.iter().map(|lr| lr * start_factor).collect()
                } else if initial || e > *total_iters {
                    lrs.to_vec()
                } else {
                    let factor = 1.0
                        + (end_factor - start_factor)
                            / (*total_iters as f64 * start_factor
                                + (e - 1) as f64 * (end_factor - start_factor));
                    lrs.iter().map(|lr| lr * factor).collect()
                }
            }
            Kind::Sequential { .. } => unreachable!("SequentialLR steps its children"),
        }
    }

    /// PyTorch's `_get_closed_form_lr`, used when a SequentialLR switches
    /// to this scheduler.
    fn closed_form(&self) -> Result<Vec<f64>> {
        let e = self.last_epoch;
        let each = |f: &dyn Fn(f64) -> f64| self.base_lrs.iter().map(|&b| f(b)).collect();
        Ok(match &self.kind {
            Kind::Step { step_size, gamma } => {
                each(&|b| b * gamma.powf(e.div_euclid(*step_size) as f64))
            }
            Kind::MultiStep { milestones, gamma } => {
                let passed = milestones.partition_point(|&m| m <= e);
                each(&|b| b * gamma.powf(passed as f64))
            }
            Kind::Exponential { gamma } => each(&|b| b * gamma.powf(e as f64)),
            Kind::CosineAnnealing { t_max, eta_min } => each(&|b| {
                eta_min + (b - eta_min) * (1.0 + (PI * e as f64 / *t_max as f64).cos()) / 2.0
            }),
            Kind::Linear {
                start_factor,
                end_factor,
                total_iters,
            } => each(&|b| {
                b * (start_factor
                    + (end_factor - start_factor) * (*total_iters).min(e) as f64
                        / *total_iters as f64)
            }),
            Kind::Sequential { .. } => {
                return Err(Error::InvalidArgument(
                    "a SequentialLR cannot be switched to by another SequentialLR".into(),
                ))
            }
        })
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

    /// The state dict, as PyTorch's `scheduler.state_dict()`.
    pub fn state_dict(&self) -> Value {
        let mut d = Dict::new();
        let floats = |v: &[f64]| Value::List(v.iter().map(|&x| Value::Float(x)).collect());
        match &self.kind {
            Kind::Step { step_size, gamma } => {
                d.insert("step_size".into(), Value::Int(*step_size));
                d.insert("gamma".into(), Value::Float(*gamma));
            }
            Kind::MultiStep { milestones, gamma } => {
                let mut counts = Dict::new();
                for m in milestones {
                    let c = counts.entry(Key::Int(*m)).or_insert(Value::Int(0));
                    if let Value::Int(c) = c {
                        *c += 1;
                    }
                }
                d.insert("milestones".into(), Value::Dict(counts));
                d.insert("gamma".into(), Value::Float(*gamma));
            }
            Kind::Exponential { gamma } => {
                d.insert("gamma".into(), Value::Float(*gamma));
            }
            Kind::CosineAnnealing { t_max, eta_min } => {
                d.insert("T_max".into(), Value::Int(*t_max));
                d.insert("eta_min".into(), Value::Float(*eta_min));
            }
            Kind::Linear {
                start_factor,
                end_factor,
                total_iters,
            } => {
                d.insert("start_factor".into(), Value::Float(*start_factor));
                d.insert("end_factor".into(), Value::Float(*end_factor));
                d.insert("total_iters".into(), Value::Int(*total_iters));
            }
            Kind::Sequential {
                schedulers,
                milestones,
            } => {
                let ms = milestones.iter().map(|&m| Value::Int(m)).collect();
                d.insert("_milestones".into(), Value::List(ms));
                d.insert("last_epoch".into(), Value::Int(self.last_epoch));
                d.insert("_last_lr".into(), floats(&self.last_lr));
                let children = schedulers.iter().map(LrScheduler::state_dict).collect();
                d.insert("_schedulers".into(), Value::List(children));
                return Value::Dict(d);
            }
        }
        d.insert("base_lrs".into(), floats(&self.base_lrs));
        d.insert("last_epoch".into(), Value::Int(self.last_epoch));
        d.insert("_step_count".into(), Value::Int(self.step_count));
        d.insert("_is_initial".into(), Value::Bool(false));
        d.insert("_get_lr_called_within_step".into(), Value::Bool(false));
        d.insert("_last_lr".into(), floats(&self.last_lr));
        Value::Dict(d)
    }

    /// Restores a state written by [`LrScheduler::state_dict`] or by
    /// PyTorch's scheduler of the same kind. A state of another kind is
    /// refused, naming the key and the kind it looks like; on any error
    /// nothing changes. The optimizer's learning rates come back with the
    /// optimizer's own state dict, as in PyTorch.
    pub fn load_state_dict(&mut self, state: &Value) -> Result<()> {
        *self = self.parse(state, "")?;
        Ok(())
    }

    fn parse(&self, state: &Value, at: &str) -> Result<LrScheduler> {
        let Value::Dict(d) = state else {
            return Err(Error::scheduler(
                at,
                format!("is {}, not a dict", state.kind()),
            ));
        };
        check_kind(d, self.kind.name(), at)?;
        let at_key = |k: &str| crate::state::join(at, k);
        let kind = match &self.kind {
            Kind::Step { .. } => Kind::Step {
                step_size: int_at(PART, d, "step_size", at)?,
                gamma: number_at(PART, d, "gamma", at)?,
            },
            Kind::MultiStep { .. } => {
                let Value::Dict(counts) = entry(PART, d, "milestones", at)? else {
                    return Err(Error::scheduler(
                        at_key("milestones"),
                        "is not a dict of counts",
                    ));
                };
                let mut milestones = Vec::new();
                for (k, v) in counts {
                    match (k, v) {
                        (Key::Int(m), Value::Int(c)) if (0..=1000).contains(c) => {
                            milestones.extend(std::iter::repeat_n(*m, *c as usize))
                        }
                        _ => {
                            return Err(Error::scheduler(
                                at_key("milestones"),
                                format!("has a bad entry {k}"),
                            ))
                        }
                    }
                }
                milestones.sort_unstable();
                Kind::MultiStep {
                    milestones,
                    gamma: number_at(PART, d, "gamma", at)?,
                }
            }
            Kind::Exponential { .. } => Kind::Exponential {
                gamma: number_at(PART, d, "gamma", at)?,
            },
            Kind::CosineAnnealing { .. } => Kind::CosineAnnealing {
                t_max: int_at(PART, d, "T_max", at)?,
                eta_min: number_at(PART, d, "eta_min", at)?,
            },
            Kind::Linear { .. } => Kind::Linear {
                start_factor: number_at(PART, d, "start_factor", at)?,
                end_factor: number_at(PART, d, "end_factor", at)?,
                total_iters: int_at(PART, d, "total_iters", at)?,
            },
            Kind::Sequential {
                schedulers,
                milestones,
            } => {
                let Value::List(children) = entry(PART, d, "_schedulers", at)? else {
                    return Err(Error::scheduler(at_key("_schedulers"), "is not a list"));
                };
                if children.len() != schedulers.len() {
                    return Err(Error::scheduler(
                        at_key("_schedulers"),
                        format!(
                            "the state has {} schedulers, this SequentialLR {}",
                            children.len(),
                            schedulers.len()
                        ),
                    ));
                }
                let parsed = schedulers
                    .iter()
                    .zip(children)
                    .enumerate()
                    .map(|(i, (s, v))| s.parse(v, &format!("{}/{i}", at_key("_schedulers"))))
                    .collect::<Result<Vec<_>>>()?;
                let saved: Vec<i64> = numbers_at(PART, d, "_milestones", at)?
                    .iter()
                    .map(|&m| m as i64)
                    .collect();
                if saved.len() != milestones.len() {
                    return Err(Error::scheduler(
                        at_key("_milestones"),
                        "has another number of milestones",
                    ));
                }
                return Ok(LrScheduler {
                    kind: Kind::Sequential {
                        schedulers: parsed,
                        milestones: saved,
                    },
                    base_lrs: Vec::new(),
                    last_epoch: int_at(PART, d, "last_epoch", at)?,
                    step_count: 0,
                    last_lr: numbers_at(PART, d, "_last_lr", at)?,
                });
            }
        };
        let step_size_ok = match kind {
            Kind::Step { step_size, .. } => step_size > 0,
            Kind::CosineAnnealing { t_max, .. } => t_max > 0,
            Kind::Linear { total_iters, .. } => total_iters > 0,
            _ => true,
        };
        if !step_size_ok {
            return Err(Error::scheduler(at, "has a period of zero or less"));
        }
        Ok(LrScheduler {
            kind,
            base_lrs: numbers_at(PART, d, "base_lrs", at)?,
            last_epoch: int_at(PART, d, "last_epoch", at)?,
            step_count: int_at(PART, d, "_step_count", at)?,
            last_lr: numbers_at(PART, d, "_last_lr", at)?,
        })
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
