//! [`TrainingCheckpoint`]: everything needed to continue training, under
//! the key names PyTorch's tutorial code uses, so a checkpoint written by
//! ckpt and one written by `torch.save({...})` have the same shape.

use std::path::Path;

use crate::{Dict, Error, Key, Result, SaveOptions, StateDict, TensorData, Value};

/// The state of a training run at one point: epoch and step, the model,
/// the optimizer and scheduler states, the loss, metrics, the random
/// generator's state and free-form extra entries.
///
/// As a [`Value`] (and so in a file) it is a dict with PyTorch's keys:
/// `epoch`, `step`, `model_state_dict`, `optimizer_state_dict`,
/// `scheduler_state_dict`, `loss`, `metrics`, `rng_state`, then the extra
/// entries. Absent parts are left out, and a checkpoint written by the
/// PyTorch tutorial (`epoch`, `model_state_dict`, `optimizer_state_dict`,
/// `loss`) reads back with everything else empty.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("ckpt.pth");
/// use ckpt::{StateDict, TensorData, TrainingCheckpoint};
/// let mut model = StateDict::new();
/// model.insert("fc.weight".into(), TensorData::from_f32(&[1, 2], &[0.5, 1.5]).unwrap());
/// let mut ckpt = TrainingCheckpoint::new(model);
/// ckpt.epoch = 3;
/// ckpt.loss = Some(0.25);
/// ckpt.set_metric("accuracy", 0.9);
/// ckpt.save(&path).unwrap();
/// let back = TrainingCheckpoint::load(&path).unwrap();
/// assert_eq!(back, ckpt);
/// assert_eq!(back.metric("accuracy"), Some(0.9));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TrainingCheckpoint {
    /// Epochs completed.
    pub epoch: i64,
    /// Optimizer steps taken.
    pub step: i64,
    /// The model's state dict.
    pub model: StateDict,
    /// The optimizer's state dict (`optimizer.state_dict()`).
    pub optimizer: Option<Value>,
    /// The learning-rate scheduler's state dict.
    pub scheduler: Option<Value>,
    /// The last loss.
    pub loss: Option<f64>,
    /// Metrics by name (numbers, or any value such as a history list).
    pub metrics: Dict,
    /// The random generator's state, so data order and dropout continue
    /// exactly.
    pub rng_state: Option<TensorData>,
    /// Any other entries, kept in order.
    pub extra: Dict,
}

const KEYS: [&str; 8] = [
    "epoch",
    "step",
    "model_state_dict",
    "optimizer_state_dict",
    "scheduler_state_dict",
    "loss",
    "metrics",
    "rng_state",
];

impl TrainingCheckpoint {
    /// A checkpoint at epoch 0, step 0 holding only `model`.
    pub fn new(model: StateDict) -> TrainingCheckpoint {
        TrainingCheckpoint {
            epoch: 0,
            step: 0,
            model,
            optimizer: None,
            scheduler: None,
            loss: None,
            metrics: Dict::new(),
            rng_state: None,
            extra: Dict::new(),
        }
    }

    /// A metric as a number, when it is one.
    pub fn metric(&self, name: &str) -> Option<f64> {
        match self.metrics.get(&Key::from(name))? {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// Sets a numeric metric.
    pub fn set_metric(&mut self, name: &str, value: f64) {
        self.metrics.insert(name.into(), Value::Float(value));
    }

    /// The checkpoint as a value tree with PyTorch's key names.
    pub fn to_value(&self) -> Value {
        let mut d = Dict::new();
        d.insert("epoch".into(), Value::Int(self.epoch));
        d.insert("step".into(), Value::Int(self.step));
        d.insert("model_state_dict".into(), self.model.clone().into());
        if let Some(o) = &self.optimizer {
            d.insert("optimizer_state_dict".into(), o.clone());
        }
        if let Some(s) = &self.scheduler {
            d.insert("scheduler_state_dict".into(), s.clone());
        }
        if let Some(loss) = self.loss {
            d.insert("loss".into(), Value::Float(loss));
        }
        if !self.metrics.is_empty() {
            d.insert("metrics".into(), Value::Dict(self.metrics.clone()));
        }
        if let Some(rng) = &self.rng_state {
            d.insert("rng_state".into(), Value::Tensor(rng.clone()));
        }
        for (k, v) in &self.extra {
            d.insert(k.clone(), v.clone());
        }
        Value::Dict(d)
    }

    /// Reads a checkpoint from a value tree (from ckpt, or from
    /// `torch.save` of the tutorial's dict). `model_state_dict` is
    /// required; `loss` may be a number or a 0-dim tensor.
    pub fn from_value(value: &Value) -> Result<TrainingCheckpoint> {
        let bad = |key: &str, reason: String| Error::BadCheckpoint {
            key: key.to_owned(),
            reason,
        };
        let Value::Dict(d) = value else {
            return Err(bad("", format!("is {}, not a dict", value.kind())));
        };
        let get = |key: &str| d.get(&Key::from(key));
        let int = |key: &str| match get(key) {
            None => Ok(0),
            Some(Value::Int(i)) => Ok(*i),
            Some(other) => Err(bad(key, format!("is {}, not an integer", other.kind()))),
        };
        let model = match get("model_state_dict") {
            None => return Err(bad("model_state_dict", "missing".into())),
            Some(v) => {
                StateDict::try_from(v).map_err(|e| bad("model_state_dict", e.to_string()))?
            }
        };
        let loss = match get("loss") {
            None | Some(Value::None) => None,
            Some(Value::Float(f)) => Some(*f),
            Some(Value::Int(i)) => Some(*i as f64),
            Some(Value::Tensor(t)) if t.shape().is_empty() || t.shape() == [1] => {
                t.values_f64().next()
            }
            Some(other) => return Err(bad("loss", format!("is {}, not a number", other.kind()))),
        };
        let metrics = match get("metrics") {
            None => Dict::new(),
            Some(Value::Dict(m)) => m.clone(),
            Some(other) => return Err(bad("metrics", format!("is {}, not a dict", other.kind()))),
        };
        let rng_state = match get("rng_state") {
            None => None,
            Some(Value::Tensor(t)) => Some(t.clone()),
            Some(other) => {
                return Err(bad(
                    "rng_state",
                    format!("is {}, not a tensor", other.kind()),
                ))
            }
        };
        let extra = d
            .iter()
            .filter(|(k, _)| !matches!(k, Key::Str(s) if KEYS.contains(&s.as_str())))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(TrainingCheckpoint {
            epoch: int("epoch")?,
            step: int("step")?,
            model,
            optimizer: get("optimizer_state_dict").cloned(),
            scheduler: get("scheduler_state_dict").cloned(),
            loss,
            metrics,
            rng_state,
            extra,
        })
    }

    /// Saves to `path` in the format its extension names (`.safetensors`
    /// keeps the tree in its metadata; `.pth` loads in
    /// `torch.load(weights_only=True)`). Written to a temporary file and
    /// renamed, so a crash leaves the previous file whole.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.save_with(path, &SaveOptions::default())
    }

    /// [`TrainingCheckpoint::save`] with options (durability, metadata,
    /// progress).
    pub fn save_with(&self, path: impl AsRef<Path>, options: &SaveOptions) -> Result<()> {
        crate::save_with(path, &self.to_value(), options)
    }

    /// Loads a checkpoint saved by ckpt or by `torch.save`.
    pub fn load(path: impl AsRef<Path>) -> Result<TrainingCheckpoint> {
        let path = path.as_ref();
        TrainingCheckpoint::from_value(&crate::load(path)?).map_err(|e| match e {
            Error::BadCheckpoint { key, reason } => Error::BadCheckpoint {
                key: format!("{}: {key}", path.display()),
                reason,
            },
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tutorial_shape_reads_and_extra_keys_survive() {
        let mut d = Dict::new();
        d.insert("epoch".into(), Value::Int(5));
        d.insert(
            "model_state_dict".into(),
            StateDict::from_iter([("w".to_string(), TensorData::from_f32(&[1], &[1.0]).unwrap())])
                .into(),
        );
        d.insert(
            "loss".into(),
            Value::Tensor(TensorData::from_f32(&[], &[0.5]).unwrap()),
        );
        d.insert("note".into(), Value::Str("hi".into()));
        let c = TrainingCheckpoint::from_value(&Value::Dict(d)).unwrap();
        assert_eq!((c.epoch, c.step, c.loss), (5, 0, Some(0.5)));
        assert_eq!(
            c.extra.get(&Key::from("note")),
            Some(&Value::Str("hi".into()))
        );
        let again = TrainingCheckpoint::from_value(&c.to_value()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn a_checkpoint_without_a_model_is_refused_by_key() {
        let mut d = Dict::new();
        d.insert("epoch".into(), Value::Str("three".into()));
        let err = TrainingCheckpoint::from_value(&Value::Dict(d.clone())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a training checkpoint: model_state_dict: missing"
        );
        d.insert("model_state_dict".into(), Value::Dict(Dict::new()));
        let err = TrainingCheckpoint::from_value(&Value::Dict(d)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a training checkpoint: epoch: is str, not an integer"
        );
    }
}
