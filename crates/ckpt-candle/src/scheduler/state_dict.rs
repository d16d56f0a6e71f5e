//! State dicts with PyTorch's keys: writing them, telling the kinds apart
//! by their own keys, and parsing one back (all or nothing).

use ckpt::{Dict, Key, Value};

use super::{Kind, LrScheduler, PART};
use crate::state::{entry, int_at, number_at, numbers_at};
use crate::{Error, Result};

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
/// Every scheduler kind, by PyTorch's class name.
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

    /// The scheduler `state` describes, of this one's kind (`at`: where
    /// the state sits, for errors).
    pub(super) fn parse(&self, state: &Value, at: &str) -> Result<LrScheduler> {
        let Value::Dict(d) = state else {
            return Err(Error::scheduler(
                at,
                format!("is {}, not a dict", state.kind()),
            ));
        };
        check_kind(d, self.kind.name(), at)?;
        let kind = match &self.kind {
            Kind::Step { .. } => Kind::Step {
                step_size: int_at(PART, d, "step_size", at)?,
                gamma: number_at(PART, d, "gamma", at)?,
            },
            Kind::MultiStep { .. } => Kind::MultiStep {
                milestones: milestone_counts(d, at)?,
                gamma: number_at(PART, d, "gamma", at)?,
            },
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
            } => return LrScheduler::parse_sequential(d, at, schedulers, milestones),
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

/// MultiStepLR's `milestones`, a `Counter` of milestone to repeats, as a
/// sorted list with the repeats.
fn milestone_counts(d: &Dict, at: &str) -> Result<Vec<i64>> {
    let at_key = |k: &str| crate::state::join(at, k);
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
    Ok(milestones)
}
