//! SequentialLR: schedulers run one after another, switching at
//! milestones; its construction, PyTorch's `recursive_undo`, and its state
//! dict's parse.

use ckpt::{Dict, Value};

use super::{Kind, LrScheduler, PART};
use crate::state::{entry, int_at, numbers_at};
use crate::{Error, Optimizer, Result};

impl LrScheduler {
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

    /// A SequentialLR from its state dict `d`, each child of the kind of
    /// this one's `schedulers` (`at`: where the state sits, for errors).
    pub(super) fn parse_sequential(
        d: &Dict,
        at: &str,
        schedulers: &[LrScheduler],
        milestones: &[i64],
    ) -> Result<LrScheduler> {
        let at_key = |k: &str| crate::state::join(at, k);
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
        Ok(LrScheduler {
            kind: Kind::Sequential {
                schedulers: parsed,
                milestones: saved,
            },
            base_lrs: Vec::new(),
            last_epoch: int_at(PART, d, "last_epoch", at)?,
            step_count: 0,
            last_lr: numbers_at(PART, d, "_last_lr", at)?,
        })
    }
}
