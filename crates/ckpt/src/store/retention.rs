//! Retention: which committed steps to keep. Rules combine by union: a
//! step any rule keeps is kept, and the newest step is always kept.

use std::fmt;

use super::manifest::StepInfo;
use crate::{Error, Result};

/// Whether a smaller or a larger metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricMode {
    /// Smaller is better (a loss).
    Min,
    /// Larger is better (an accuracy).
    Max,
}

/// What the best-K rule does with a step that has no value for its metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingMetric {
    /// The step is not a candidate; other rules may still keep it (the
    /// default).
    #[default]
    Ignore,
    /// The step is always kept.
    Keep,
    /// Saving a step without the metric is an error.
    Error,
}

/// Keep the best `k` steps by a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct KeepBest {
    /// The metric's name.
    pub metric: String,
    /// Smaller or larger is better.
    pub mode: MetricMode,
    /// How many to keep.
    pub k: usize,
    /// Steps without the metric.
    pub missing: MissingMetric,
}

/// Keep every Nth step, or the last step of every Nth epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepEvery {
    /// Steps whose number is a multiple of N.
    Steps(u64),
    /// For each epoch that is a multiple of N, its newest step.
    Epochs(u64),
}

/// The retention rules. Defaults: keep the last 3, no best, no periodic.
///
/// ```
/// use ckpt::store::{KeepBest, KeepEvery, MetricMode, MissingMetric, Retention};
/// let rules = Retention::default()
///     .keep_last(2)
///     .keep_best(KeepBest { metric: "val_loss".into(), mode: MetricMode::Min, k: 1, missing: MissingMetric::Ignore })
///     .keep_every(KeepEvery::Steps(1000));
/// assert_eq!(rules.keep_last, 2);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Retention {
    /// Keep the newest N steps.
    pub keep_last: usize,
    /// Keep the best K by a metric.
    pub keep_best: Option<KeepBest>,
    /// Keep periodic steps.
    pub keep_every: Option<KeepEvery>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_last: 3,
            keep_best: None,
            keep_every: None,
        }
    }
}

/// Why a step is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The newest step.
    Latest,
    /// Among the last N.
    Last,
    /// Among the best K (1 is the best).
    Best(usize),
    /// A periodic step.
    Every,
    /// No value for the best-K metric, kept by [`MissingMetric::Keep`].
    MissingMetric,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Latest => f.write_str("latest"),
            Reason::Last => f.write_str("last"),
            Reason::Best(rank) => write!(f, "best#{rank}"),
            Reason::Every => f.write_str("every"),
            Reason::MissingMetric => f.write_str("no-metric"),
        }
    }
}

impl Retention {
    /// Sets [`Retention::keep_last`].
    pub fn keep_last(mut self, n: usize) -> Self {
        self.keep_last = n;
        self
    }

    /// Sets [`Retention::keep_best`].
    pub fn keep_best(mut self, best: KeepBest) -> Self {
        self.keep_best = Some(best);
        self
    }

    /// Sets [`Retention::keep_every`].
    pub fn keep_every(mut self, every: KeepEvery) -> Self {
        self.keep_every = Some(every);
        self
    }

    /// Checks that a step about to be saved satisfies the rules.
    pub(crate) fn check(&self, step: u64, metrics: &indexmap::IndexMap<String, f64>) -> Result<()> {
        if let Some(best) = &self.keep_best {
            if best.missing == MissingMetric::Error && !metrics.contains_key(&best.metric) {
                return Err(Error::MissingMetric {
                    step,
                    metric: best.metric.clone(),
                });
            }
        }
        Ok(())
    }

    /// The best step by the best-K metric (ties: the newer), when there is
    /// a rule and a step with the metric.
    pub fn best<'a>(&self, steps: &'a [StepInfo]) -> Option<&'a StepInfo> {
        let best = self.keep_best.as_ref()?;
        ranked(steps, best).into_iter().next().map(|i| &steps[i])
    }

    /// For each step (oldest first, as given), why it is kept; an empty
    /// list means it goes.
    pub fn reasons(&self, steps: &[StepInfo]) -> Vec<Vec<Reason>> {
        let n = steps.len();
        let mut out = vec![Vec::new(); n];
        if n == 0 {
            return out;
        }
        out[n - 1].push(Reason::Latest);
        for r in out.iter_mut().skip(n.saturating_sub(self.keep_last)) {
            r.push(Reason::Last);
        }
        if let Some(best) = &self.keep_best {
            for (rank, i) in ranked(steps, best).into_iter().take(best.k).enumerate() {
                out[i].push(Reason::Best(rank + 1));
            }
            if best.missing == MissingMetric::Keep {
                for (i, s) in steps.iter().enumerate() {
                    if s.metric(&best.metric).is_none() {
                        out[i].push(Reason::MissingMetric);
                    }
                }
            }
        }
        match self.keep_every {
            Some(KeepEvery::Steps(every)) if every > 0 => {
                for (i, s) in steps.iter().enumerate() {
                    if s.step % every == 0 {
                        out[i].push(Reason::Every);
                    }
                }
            }
            Some(KeepEvery::Epochs(every)) if every > 0 => {
                for (i, s) in steps.iter().enumerate() {
                    let last_of_epoch = steps.get(i + 1).is_none_or(|next| next.epoch != s.epoch);
                    if last_of_epoch && s.epoch.rem_euclid(every as i64) == 0 {
                        out[i].push(Reason::Every);
                    }
                }
            }
            _ => {}
        }
        out
    }
}

/// Indices of the steps that have the metric, best first; NaN is never
/// best; among equals the newer step ranks first.
fn ranked(steps: &[StepInfo], best: &KeepBest) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..steps.len())
        .filter(|&i| steps[i].metric(&best.metric).is_some_and(|v| !v.is_nan()))
        .collect();
    idx.sort_by(|&a, &b| {
        let (va, vb) = (
            steps[a].metrics[&best.metric],
            steps[b].metrics[&best.metric],
        );
        let order = match best.mode {
            MetricMode::Min => va.total_cmp(&vb),
            MetricMode::Max => vb.total_cmp(&va),
        };
        order.then(b.cmp(&a))
    });
    idx
}

impl Retention {
    /// The rules as JSON, as the manifest records them.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let best = self.keep_best.as_ref().map(|b| {
            json!({
                "metric": b.metric,
                "mode": match b.mode { MetricMode::Min => "min", MetricMode::Max => "max" },
                "k": b.k,
                "missing": match b.missing {
                    MissingMetric::Ignore => "ignore",
                    MissingMetric::Keep => "keep",
                    MissingMetric::Error => "error",
                },
            })
        });
        let every = self.keep_every.map(|e| match e {
            KeepEvery::Steps(n) => json!({"steps": n}),
            KeepEvery::Epochs(n) => json!({"epochs": n}),
        });
        json!({"keep_last": self.keep_last, "keep_best": best, "keep_every": every})
    }

    /// Rules recorded by [`Retention::to_json`]; `None` when they do not
    /// parse (a newer writer's rules, say).
    pub(crate) fn from_json(v: &serde_json::Value) -> Option<Retention> {
        let keep_best = match v.get("keep_best")? {
            serde_json::Value::Null => None,
            b => Some(KeepBest {
                metric: b.get("metric")?.as_str()?.to_owned(),
                mode: match b.get("mode")?.as_str()? {
                    "min" => MetricMode::Min,
                    "max" => MetricMode::Max,
                    _ => return None,
                },
                k: usize::try_from(b.get("k")?.as_u64()?).ok()?,
                missing: match b.get("missing")?.as_str()? {
                    "ignore" => MissingMetric::Ignore,
                    "keep" => MissingMetric::Keep,
                    "error" => MissingMetric::Error,
                    _ => return None,
                },
            }),
        };
        let keep_every = match v.get("keep_every")? {
            serde_json::Value::Null => None,
            e => match (e.get("steps"), e.get("epochs")) {
                (Some(n), None) => Some(KeepEvery::Steps(n.as_u64()?)),
                (None, Some(n)) => Some(KeepEvery::Epochs(n.as_u64()?)),
                _ => return None,
            },
        };
        Some(Retention {
            keep_last: usize::try_from(v.get("keep_last")?.as_u64()?).ok()?,
            keep_best,
            keep_every,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;
    use proptest::prelude::*;

    fn step(step: u64, epoch: i64, loss: Option<f64>) -> StepInfo {
        let mut metrics = IndexMap::new();
        if let Some(l) = loss {
            metrics.insert("loss".to_string(), l);
        }
        StepInfo {
            step,
            epoch,
            metrics,
            time: 0.0,
            bytes: 0,
            written: None,
            file: "c.safetensors".into(),
            meta_hash: String::new(),
        }
    }

    fn best(k: usize, missing: MissingMetric) -> KeepBest {
        KeepBest {
            metric: "loss".into(),
            mode: MetricMode::Min,
            k,
            missing,
        }
    }

    #[test]
    fn union_of_last_best_and_every() {
        let steps: Vec<_> = (1..=10)
            .map(|i| {
                step(
                    i * 10,
                    (i / 3) as i64,
                    Some([5.0, 1.0, 4.0, 0.5, 3.0, 9.0, 8.0, 7.0, 6.0, 2.0][i as usize - 1]),
                )
            })
            .collect();
        let rules = Retention::default()
            .keep_last(2)
            .keep_best(best(2, MissingMetric::Ignore))
            .keep_every(KeepEvery::Steps(50));
        let kept: Vec<u64> = rules
            .reasons(&steps)
            .iter()
            .zip(&steps)
            .filter(|(r, _)| !r.is_empty())
            .map(|(_, s)| s.step)
            .collect();
        assert_eq!(kept, [20, 40, 50, 90, 100]);
        assert_eq!(rules.best(&steps).unwrap().step, 40);
        assert_eq!(rules.reasons(&steps)[3], [Reason::Best(1)]);
        assert_eq!(
            rules.reasons(&steps)[9],
            [Reason::Latest, Reason::Last, Reason::Every]
        );
    }

    #[test]
    fn missing_metrics_by_policy_and_epoch_periods() {
        let steps = vec![
            step(1, 0, None),
            step(2, 0, Some(1.0)),
            step(3, 1, Some(0.5)),
            step(4, 2, None),
        ];
        let keep = Retention::default()
            .keep_last(1)
            .keep_best(best(1, MissingMetric::Keep));
        let r = keep.reasons(&steps);
        assert_eq!(r[0], [Reason::MissingMetric]);
        assert!(r[1].is_empty());
        assert_eq!(r[2], [Reason::Best(1)]);
        let ignore = Retention::default()
            .keep_last(1)
            .keep_best(best(1, MissingMetric::Ignore));
        assert!(ignore.reasons(&steps)[0].is_empty());
        let err = Retention::default().keep_best(best(1, MissingMetric::Error));
        assert!(err
            .check(5, &IndexMap::new())
            .unwrap_err()
            .to_string()
            .contains("loss"));
        let epochs = Retention::default()
            .keep_last(0)
            .keep_every(KeepEvery::Epochs(2));
        let r = epochs.reasons(&steps);
        assert_eq!(r[1], [Reason::Every]); // last step of epoch 0
        assert!(r[0].is_empty() && r[2].is_empty());
        assert_eq!(r[3], [Reason::Latest, Reason::Every]);
    }

    #[test]
    fn rules_round_trip_through_json() {
        let rules = Retention::default()
            .keep_last(4)
            .keep_best(best(2, MissingMetric::Keep))
            .keep_every(KeepEvery::Epochs(3));
        assert_eq!(Retention::from_json(&rules.to_json()), Some(rules));
        assert_eq!(
            Retention::from_json(&Retention::default().to_json()),
            Some(Retention::default())
        );
        assert_eq!(
            Retention::from_json(&serde_json::json!({"keep_last": "x"})),
            None
        );
    }

    proptest! {
        /// Exactly the union of the rules survives, checked against a
        /// direct definition of each rule.
        #[test]
        fn kept_is_exactly_the_union(
            losses in proptest::collection::vec(proptest::option::of(0u8..20), 1..40),
            last in 0usize..5,
            k in 0usize..4,
            every in 0u64..6,
            max in any::<bool>(),
        ) {
            let steps: Vec<StepInfo> = losses
                .iter()
                .enumerate()
                .map(|(i, l)| step(i as u64 + 1, i as i64 / 3, l.map(f64::from)))
                .collect();
            let mode = if max { MetricMode::Max } else { MetricMode::Min };
            let rules = Retention::default()
                .keep_last(last)
                .keep_best(KeepBest { metric: "loss".into(), mode, k, missing: MissingMetric::Ignore })
                .keep_every(KeepEvery::Steps(every));
            let reasons = rules.reasons(&steps);
            let n = steps.len();
            // The k best values (by value; ties broken towards newer steps).
            let mut with: Vec<(f64, u64)> = steps.iter().filter_map(|s| s.metric("loss").map(|v| (v, s.step))).collect();
            with.sort_by(|a, b| {
                let o = if max { b.0.total_cmp(&a.0) } else { a.0.total_cmp(&b.0) };
                o.then(b.1.cmp(&a.1))
            });
            let best: Vec<u64> = with.iter().take(k).map(|p| p.1).collect();
            for (i, s) in steps.iter().enumerate() {
                let expect = i == n - 1
                    || i + last >= n
                    || best.contains(&s.step)
                    || (every > 0 && s.step % every == 0);
                prop_assert_eq!(!reasons[i].is_empty(), expect, "step {}", s.step);
            }
        }
    }
}
