//! `ckpt._ckpt.Manager`: the run store ([`ckpt::store::CheckpointManager`])
//! for a Python training loop. Every method waits for the manager's lock
//! with the GIL released (a save in flight holds it), so other Python
//! threads run meanwhile; a background save snapshots the tensors (one
//! copy) before it returns.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ckpt::store::{
    AsyncPolicy, AsyncSave, CheckpointManager, KeepBest, KeepEvery, MetricMode, MissingMetric,
    Retention, SaveReport, StepInfo, StoreOptions,
};
use ckpt::Format;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error;
use crate::tree::{from_py, to_py};

/// A run directory (or `s3://bucket/prefix`) open for writing.
#[pyclass(module = "ckpt._ckpt")]
pub struct Manager {
    inner: Mutex<Option<CheckpointManager>>,
}

/// The run's retention rules and options, as the Python side names them.
#[derive(FromPyObject)]
pub struct Settings {
    keep_last: usize,
    keep_best: usize,
    metric: Option<String>,
    mode: String,
    missing: String,
    keep_every: Option<u64>,
    keep_every_epochs: Option<u64>,
    format: String,
    incremental: bool,
    durable: bool,
    verify: bool,
    skip_if_busy: bool,
}

impl Settings {
    fn options(&self) -> PyResult<StoreOptions> {
        let format =
            Format::from_path(Path::new(&format!("checkpoint.{}", self.format))).map_err(|_| {
                PyValueError::new_err(format!(
                    "format is safetensors, pth or ckptz, not {:?}",
                    self.format
                ))
            })?;
        Ok(StoreOptions::default()
            .retention(self.retention()?)
            .format(format)
            .incremental(self.incremental)
            .durable(self.durable)
            .verify(self.verify)
            .writable(true)
            .async_policy(match self.skip_if_busy {
                true => AsyncPolicy::Skip,
                false => AsyncPolicy::Wait,
            }))
    }

    fn retention(&self) -> PyResult<Retention> {
        let mut retention = Retention::default().keep_last(self.keep_last);
        if self.keep_best > 0 {
            let Some(metric) = self.metric.clone() else {
                return Err(PyValueError::new_err("keep_best needs metric=NAME"));
            };
            let mode = match self.mode.as_str() {
                "min" => MetricMode::Min,
                "max" => MetricMode::Max,
                m => {
                    return Err(PyValueError::new_err(format!(
                        "mode is \"min\" or \"max\", not {m:?}"
                    )))
                }
            };
            let missing = match self.missing.as_str() {
                "ignore" => MissingMetric::Ignore,
                "keep" => MissingMetric::Keep,
                "error" => MissingMetric::Error,
                m => {
                    return Err(PyValueError::new_err(format!(
                        "missing is \"ignore\", \"keep\" or \"error\", not {m:?}"
                    )))
                }
            };
            retention = retention.keep_best(KeepBest {
                metric,
                mode,
                k: self.keep_best,
                missing,
            });
        }
        retention = match (self.keep_every, self.keep_every_epochs) {
            (Some(_), Some(_)) => {
                return Err(PyValueError::new_err(
                    "give keep_every or keep_every_epochs, not both",
                ))
            }
            (Some(0), _) | (_, Some(0)) => {
                return Err(PyValueError::new_err("keep_every must be at least 1"))
            }
            (Some(n), None) => retention.keep_every(KeepEvery::Steps(n)),
            (None, Some(n)) => retention.keep_every(KeepEvery::Epochs(n)),
            (None, None) => retention,
        };
        Ok(retention)
    }
}

#[pymethods]
impl Manager {
    /// Opens (creating) the run at `dir`: takes its writer lock, reads the
    /// manifest and removes what interrupted saves left.
    #[new]
    fn new(py: Python<'_>, dir: PathBuf, settings: Settings) -> PyResult<Self> {
        let options = settings.options()?;
        let manager = py
            .detach(|| CheckpointManager::open(&dir, options))
            .map_err(error)?;
        Ok(Manager {
            inner: Mutex::new(Some(manager)),
        })
    }

    /// Saves `tree` as `step` and commits it; a dict of what the save did.
    fn save(
        &self,
        py: Python<'_>,
        step: u64,
        tree: &Bound<'_, PyAny>,
        metrics: Vec<(String, f64)>,
        epoch: i64,
    ) -> PyResult<Py<PyDict>> {
        let value = from_py(tree, 0)?;
        let report = py.detach(|| {
            let metrics = borrow(&metrics);
            self.with(|m| m.save_value(step, &value, epoch, &metrics))
        })?;
        report_dict(py, &report)
    }

    /// Copies `tree`'s tensors into the snapshot buffer and commits them as
    /// `step` in the background; False when a save was still running and
    /// the manager skips when busy.
    fn save_async(
        &self,
        py: Python<'_>,
        step: u64,
        tree: &Bound<'_, PyAny>,
        metrics: Vec<(String, f64)>,
        epoch: i64,
    ) -> PyResult<bool> {
        let value = from_py(tree, 0)?;
        let started = py.detach(|| {
            let metrics = borrow(&metrics);
            self.with(|m| m.save_value_async(step, &value, epoch, &metrics))
        })?;
        Ok(started == AsyncSave::Started)
    }

    /// Waits for the background save; its report, or None when none ran.
    fn wait(&self, py: Python<'_>) -> PyResult<Option<Py<PyDict>>> {
        let report = py.detach(|| self.with(|m| m.wait()))?;
        report.map(|r| report_dict(py, &r)).transpose()
    }

    /// The committed steps, oldest first, as dicts.
    fn steps(&self, py: Python<'_>) -> PyResult<Vec<Py<PyDict>>> {
        let steps = py.detach(|| self.with(|m| Ok(m.steps())))?;
        steps.iter().map(|s| step_dict(py, s)).collect()
    }

    /// The newest committed step's number.
    fn latest(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        py.detach(|| self.with(|m| Ok(m.latest().map(|s| s.step))))
    }

    /// The best committed step's number by the keep-best metric.
    fn best(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        py.detach(|| self.with(|m| Ok(m.best().map(|s| s.step))))
    }

    /// The tree saved as `step`, its hashes checked.
    fn load(&self, py: Python<'_>, step: u64) -> PyResult<Py<PyAny>> {
        let value = py.detach(|| self.with(|m| m.load_value(step)))?;
        to_py(py, &value)
    }

    /// (step, tree, skipped) of the newest step that loads, where skipped
    /// lists the newer steps that did not, with why; None for an empty run.
    #[allow(clippy::type_complexity)]
    fn restore_latest(
        &self,
        py: Python<'_>,
    ) -> PyResult<Option<(u64, Py<PyAny>, Vec<(u64, String)>)>> {
        let restored = py.detach(|| self.with(|m| m.restore_latest_value()))?;
        restored
            .map(|r| Ok((r.step, to_py(py, &r.checkpoint)?, r.skipped)))
            .transpose()
    }

    /// Applies the retention rules now; the steps deleted (with
    /// `dry_run`, that would be).
    fn gc(&self, py: Python<'_>, dry_run: bool) -> PyResult<Vec<u64>> {
        py.detach(|| {
            self.with(|m| {
                let retention = m.options().retention.clone();
                m.gc(&retention, dry_run)
            })
        })
    }

    /// The run's directory or URL.
    fn dir(&self, py: Python<'_>) -> PyResult<PathBuf> {
        py.detach(|| self.with(|m| Ok(m.dir().to_owned())))
    }

    /// What opening the run removed (leftovers of interrupted saves), and
    /// why the manifest was rebuilt, if it was.
    fn opened(&self, py: Python<'_>) -> PyResult<(Vec<String>, Option<String>)> {
        py.detach(|| self.with(|m| Ok((m.opened().removed.clone(), m.opened().rebuilt.clone()))))
    }

    /// Finishes the background save and releases the run's lock; the
    /// background save's error, if any, is raised.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            let mut guard = self.lock();
            let result = match guard.as_mut() {
                Some(m) => m.wait().map(drop).map_err(error),
                None => Ok(()),
            };
            *guard = None;
            result
        })
    }
}

impl Manager {
    fn lock(&self) -> MutexGuard<'_, Option<CheckpointManager>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the open manager.
    fn with<T>(&self, f: impl FnOnce(&mut CheckpointManager) -> ckpt::Result<T>) -> PyResult<T> {
        match self.lock().as_mut() {
            Some(m) => f(m).map_err(error),
            None => Err(PyRuntimeError::new_err("the CheckpointManager is closed")),
        }
    }
}

fn borrow(metrics: &[(String, f64)]) -> Vec<(&str, f64)> {
    metrics.iter().map(|(k, v)| (k.as_str(), *v)).collect()
}

fn report_dict(py: Python<'_>, r: &SaveReport) -> PyResult<Py<PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("step", r.step)?;
    dict.set_item("bytes", r.bytes)?;
    dict.set_item("written", r.written)?;
    dict.set_item("deleted", r.deleted.clone())?;
    dict.set_item("seconds", r.seconds)?;
    Ok(dict.unbind())
}

fn step_dict(py: Python<'_>, s: &StepInfo) -> PyResult<Py<PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("step", s.step)?;
    dict.set_item("epoch", s.epoch)?;
    let metrics = PyDict::new(py);
    for (k, v) in &s.metrics {
        metrics.set_item(k, v)?;
    }
    dict.set_item("metrics", metrics)?;
    dict.set_item("time", s.time)?;
    dict.set_item("bytes", s.bytes)?;
    Ok(dict.unbind())
}
