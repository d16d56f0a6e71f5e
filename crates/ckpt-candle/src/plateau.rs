//! `ReduceLROnPlateau`: lower the learning rate when a metric stops
//! improving.

use ckpt::{Dict, Key, Value};

use crate::scheduler::check_kind;
use crate::state::{entry, int_at, number, number_at, numbers_at, Part};
use crate::{Error, Optimizer, Result};

const PART: Part = Part::Scheduler;

/// Whether a smaller or a larger metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Lower is better (a loss).
    Min,
    /// Higher is better (an accuracy).
    Max,
}

/// How `threshold` compares a new value with the best so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdMode {
    /// Better by a factor: `a < best * (1 - threshold)` in min mode.
    Rel,
    /// Better by an amount: `a < best - threshold` in min mode.
    Abs,
}

/// `ReduceLROnPlateau`'s settings, with PyTorch's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct PlateauConfig {
    /// Lower or higher is better.
    pub mode: Mode,
    /// The factor the rate is multiplied by (< 1).
    pub factor: f64,
    /// Steps without improvement tolerated before reducing.
    pub patience: i64,
    /// The smallest improvement that counts.
    pub threshold: f64,
    /// Relative or absolute threshold.
    pub threshold_mode: ThresholdMode,
    /// Steps to wait after a reduction before counting again.
    pub cooldown: i64,
    /// The lowest rate, per group (one value for all groups when it has
    /// one entry).
    pub min_lrs: Vec<f64>,
    /// Reductions smaller than this are skipped.
    pub eps: f64,
}

impl Default for PlateauConfig {
    fn default() -> Self {
        PlateauConfig {
            mode: Mode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lrs: vec![0.0],
            eps: 1e-8,
        }
    }
}

/// `torch.optim.lr_scheduler.ReduceLROnPlateau`.
///
/// ```
/// use candle_core::{Device, Var};
/// use ckpt_candle::{Optimizer, PlateauConfig, ReduceLrOnPlateau, Sgd, SgdConfig};
/// let w = Var::new(&[1.0f32], &Device::Cpu).unwrap();
/// let mut opt = Sgd::new(vec![w], SgdConfig { lr: 1.0, ..Default::default() }).unwrap();
/// let config = PlateauConfig { patience: 1, factor: 0.5, ..Default::default() };
/// let mut sched = ReduceLrOnPlateau::new(&mut opt, config).unwrap();
/// for loss in [1.0, 0.9, 0.9, 0.9] {
///     sched.step(&mut opt, loss).unwrap();
/// }
/// assert_eq!(opt.lrs(), [0.5]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ReduceLrOnPlateau {
    config: PlateauConfig,
    default_min_lr: Option<f64>,
    last_epoch: i64,
    last_lr: Vec<f64>,
    best: f64,
    cooldown_counter: i64,
    num_bad_epochs: i64,
}

impl ReduceLrOnPlateau {
    /// A scheduler on `opt`'s groups.
    pub fn new(opt: &mut dyn Optimizer, mut config: PlateauConfig) -> Result<ReduceLrOnPlateau> {
        if config.factor.is_nan() || config.factor >= 1.0 {
            return Err(Error::InvalidArgument("factor must be < 1".into()));
        }
        let groups = opt.lrs().len();
        let default_min_lr = match config.min_lrs[..] {
            [one] => {
                config.min_lrs = vec![one; groups];
                Some(one)
            }
            _ if config.min_lrs.len() == groups => None,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "expected {groups} min_lrs, got {}",
                    config.min_lrs.len()
                )))
            }
        };
        let best = worst(config.mode);
        Ok(ReduceLrOnPlateau {
            config,
            default_min_lr,
            last_epoch: 0,
            last_lr: opt.lrs(),
            best,
            cooldown_counter: 0,
            num_bad_epochs: 0,
        })
    }

    /// Records this step's metric and lowers the rates after `patience`
    /// steps without improvement.
    pub fn step(&mut self, opt: &mut dyn Optimizer, metric: f64) -> Result<()> {
        self.last_epoch += 1;
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.config.patience {
            let lrs = opt.lrs();
            if lrs.len() != self.config.min_lrs.len() {
                match self.default_min_lr {
                    Some(m) => self.config.min_lrs = vec![m; lrs.len()],
                    None => {
                        return Err(Error::InvalidArgument(
                            "the optimizer's number of groups changed; set min_lrs for each".into(),
                        ))
                    }
                }
            }
            for (group, old) in lrs.into_iter().enumerate() {
                let new = (old * self.config.factor).max(self.config.min_lrs[group]);
                if old - new > self.config.eps {
                    opt.set_lr(group, new);
                }
            }
            self.cooldown_counter = self.config.cooldown;
            self.num_bad_epochs = 0;
        }
        self.last_lr = opt.lrs();
        Ok(())
    }

    fn is_better(&self, a: f64) -> bool {
        let (best, t) = (self.best, self.config.threshold);
        match (self.config.mode, self.config.threshold_mode) {
            (Mode::Min, ThresholdMode::Rel) => a < best * (1.0 - t),
            (Mode::Min, ThresholdMode::Abs) => a < best - t,
            (Mode::Max, ThresholdMode::Rel) => a > best * (t + 1.0),
            (Mode::Max, ThresholdMode::Abs) => a > best + t,
        }
    }

    /// The best metric seen.
    pub fn best(&self) -> f64 {
        self.best
    }

    /// The learning rates after the last step.
    pub fn last_lr(&self) -> &[f64] {
        &self.last_lr
    }

    /// The state dict, as PyTorch's.
    pub fn state_dict(&self) -> Value {
        let c = &self.config;
        let floats = |v: &[f64]| Value::List(v.iter().map(|&x| Value::Float(x)).collect());
        let mut d = Dict::new();
        d.insert("factor".into(), Value::Float(c.factor));
        d.insert(
            "default_min_lr".into(),
            self.default_min_lr.map_or(Value::None, Value::Float),
        );
        d.insert("min_lrs".into(), floats(&c.min_lrs));
        d.insert("patience".into(), Value::Int(c.patience));
        d.insert("cooldown".into(), Value::Int(c.cooldown));
        d.insert("eps".into(), Value::Float(c.eps));
        d.insert("last_epoch".into(), Value::Int(self.last_epoch));
        d.insert("_last_lr".into(), floats(&self.last_lr));
        d.insert("mode_worse".into(), Value::Float(worst(c.mode)));
        let mode = match c.mode {
            Mode::Min => "min",
            Mode::Max => "max",
        };
        d.insert("mode".into(), Value::Str(mode.into()));
        d.insert("threshold".into(), Value::Float(c.threshold));
        let tm = match c.threshold_mode {
            ThresholdMode::Rel => "rel",
            ThresholdMode::Abs => "abs",
        };
        d.insert("threshold_mode".into(), Value::Str(tm.into()));
        d.insert("best".into(), Value::Float(self.best));
        d.insert("cooldown_counter".into(), Value::Int(self.cooldown_counter));
        d.insert("num_bad_epochs".into(), Value::Int(self.num_bad_epochs));
        Value::Dict(d)
    }

    /// Restores a state from [`ReduceLrOnPlateau::state_dict`] or PyTorch;
    /// on any error nothing changes.
    pub fn load_state_dict(&mut self, state: &Value) -> Result<()> {
        let Value::Dict(d) = state else {
            return Err(Error::scheduler(
                "",
                format!("is {}, not a dict", state.kind()),
            ));
        };
        check_kind(d, "ReduceLROnPlateau", "")?;
        let text = |key: &str| match entry(PART, d, key, "")? {
            Value::Str(s) => Ok(s.as_str()),
            other => Err(Error::scheduler(
                key,
                format!("is {}, not a string", other.kind()),
            )),
        };
        let mode = match text("mode")? {
            "min" => Mode::Min,
            "max" => Mode::Max,
            other => {
                return Err(Error::scheduler(
                    "mode",
                    format!("{other:?} is neither min nor max"),
                ))
            }
        };
        let threshold_mode = match text("threshold_mode")? {
            "rel" => ThresholdMode::Rel,
            "abs" => ThresholdMode::Abs,
            other => {
                return Err(Error::scheduler(
                    "threshold_mode",
                    format!("{other:?} is neither rel nor abs"),
                ))
            }
        };
        let default_min_lr = match d.get(&Key::from("default_min_lr")) {
            None | Some(Value::None) => None,
            Some(v) => Some(number(PART, v, "default_min_lr")?),
        };
        *self = ReduceLrOnPlateau {
            config: PlateauConfig {
                mode,
                factor: number_at(PART, d, "factor", "")?,
                patience: int_at(PART, d, "patience", "")?,
                threshold: number_at(PART, d, "threshold", "")?,
                threshold_mode,
                cooldown: int_at(PART, d, "cooldown", "")?,
                min_lrs: numbers_at(PART, d, "min_lrs", "")?,
                eps: number_at(PART, d, "eps", "")?,
            },
            default_min_lr,
            last_epoch: int_at(PART, d, "last_epoch", "")?,
            last_lr: numbers_at(PART, d, "_last_lr", "")?,
            best: number_at(PART, d, "best", "")?,
            cooldown_counter: int_at(PART, d, "cooldown_counter", "")?,
            num_bad_epochs: int_at(PART, d, "num_bad_epochs", "")?,
        };
        Ok(())
    }
}

fn worst(mode: Mode) -> f64 {
    match mode {
        Mode::Min => f64::INFINITY,
        Mode::Max => f64::NEG_INFINITY,
    }
}
