//! The rates each kind computes, with PyTorch's formulas: `get_lr`'s
//! chained form, step by step, and `_get_closed_form_lr` for a
//! SequentialLR's switch.

use std::f64::consts::PI;

use super::{Kind, LrScheduler};
use crate::{Error, Result};

impl LrScheduler {
    /// PyTorch's `get_lr`: the next rates from the current ones.
    pub(super) fn chained(&self, lrs: &[f64], initial: bool) -> Vec<f64> {
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
    pub(super) fn closed_form(&self) -> Result<Vec<f64>> {
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
}
