//! Models as state dicts: [`ParamStore`], an ordered, seedable store of a
//! model's variables that candle's `VarBuilder` builds models from, and the
//! same state-dict operations on a plain candle [`VarMap`].

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use ckpt::{match_state_dict, Expected, LoadReport, LoadRules, StateDict};
use indexmap::IndexMap;

use crate::convert::{ckpt_dtype, from_candle, to_candle};
use crate::{Result, Rng};

/// A model's variables in the order the model created them, which for
/// layers built with `candle_nn` (`linear` asks for `weight`, then `bias`)
/// is PyTorch's `state_dict()` order, under PyTorch's names
/// (`fc1.weight` of shape `[out, in]`). Random initialisation draws from a
/// seeded [`Rng`], so a model built twice from the same seed is the same
/// model.
///
/// ```
/// use candle_core::{DType, Device};
/// let store = ckpt_candle::ParamStore::new(0);
/// let vb = store.var_builder(DType::F32, &Device::Cpu);
/// let _fc1 = candle_nn::linear(4, 3, vb.pp("fc1")).unwrap();
/// let _fc2 = candle_nn::linear(3, 2, vb.pp("fc2")).unwrap();
/// let sd = store.state_dict().unwrap();
/// assert_eq!(sd.keys().collect::<Vec<_>>(), ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
/// assert_eq!(sd["fc1.weight"].shape(), [3, 4]);
/// ```
#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    vars: IndexMap<String, Var>,
    /// Names of buffers (running statistics): in the state dict, not
    /// trained.
    buffers: std::collections::HashSet<String>,
    rng: Rng,
}

impl ParamStore {
    /// An empty store whose random initialisation is seeded with `seed`.
    pub fn new(seed: u64) -> ParamStore {
        ParamStore {
            inner: Arc::new(Mutex::new(Inner {
                vars: IndexMap::new(),
                buffers: Default::default(),
                rng: Rng::new(seed),
            })),
        }
    }

    /// A store holding a candle [`VarMap`]'s variables (shared, not
    /// copied), in name order with numbers compared as numbers
    /// (`layers.2` before `layers.10`); a `VarMap` does not remember the
    /// order the model created them in.
    pub fn from_varmap(varmap: &VarMap, seed: u64) -> ParamStore {
        let store = ParamStore::new(seed);
        store.lock().vars = sorted_vars(varmap).into_iter().collect();
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the map itself consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A `VarBuilder` that creates the model's variables in this store.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// The trainable variables in creation order, for an optimizer
    /// (buffers are left out, as `model.parameters()` leaves them out).
    pub fn vars(&self) -> Vec<Var> {
        let inner = self.lock();
        inner
            .vars
            .iter()
            .filter(|(name, _)| !inner.buffers.contains(*name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Registers a buffer (a running statistic such as BatchNorm's
    /// `running_mean`): part of the state dict, in creation order, but not
    /// among [`ParamStore::vars`], so optimizers leave it alone. An existing
    /// buffer of that name is returned as it is.
    pub fn buffer(&self, name: &str, initial: &Tensor) -> Result<Var> {
        let mut inner = self.lock();
        if let Some(var) = inner.vars.get(name) {
            return Ok(var.clone());
        }
        let var = Var::from_tensor(initial)?;
        inner.vars.insert(name.to_owned(), var.clone());
        inner.buffers.insert(name.to_owned());
        Ok(var)
    }

    /// Every variable and buffer with its name, in creation order.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.lock()
            .vars
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    /// A copy of every variable, as PyTorch's `model.state_dict()`.
    pub fn state_dict(&self) -> Result<StateDict> {
        vars_state_dict(&self.named_vars())
    }

    /// Loads `state_dict` into the variables under `rules`, casting to each
    /// variable's dtype and moving to its device. Either everything the
    /// report lists as loaded is set, or (on error) nothing is.
    pub fn load_state_dict(&self, state_dict: StateDict, rules: &LoadRules) -> Result<LoadReport> {
        load_into_vars(&self.named_vars(), state_dict, rules)
    }
}

/// A [`VarMap`]'s variables as a state dict, in name order with numbers
/// compared as numbers.
pub fn varmap_state_dict(varmap: &VarMap) -> Result<StateDict> {
    vars_state_dict(&sorted_vars(varmap))
}

/// Loads a state dict into a [`VarMap`]'s variables under `rules`; nothing
/// is changed when it fails.
pub fn load_varmap(
    varmap: &VarMap,
    state_dict: StateDict,
    rules: &LoadRules,
) -> Result<LoadReport> {
    load_into_vars(&sorted_vars(varmap), state_dict, rules)
}

fn sorted_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut vars: Vec<(String, Var)> = data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    vars.sort_by(|a, b| natural_key(&a.0).cmp(&natural_key(&b.0)));
    vars
}

/// `layers.10.weight` sorts after `layers.2.weight`.
fn natural_key(name: &str) -> Vec<(u64, &str)> {
    name.split('.')
        .map(|part| match part.parse::<u64>() {
            Ok(n) => (n, ""),
            Err(_) => (u64::MAX, part),
        })
        .collect()
}

fn vars_state_dict(vars: &[(String, Var)]) -> Result<StateDict> {
    vars.iter()
        .map(|(name, var)| Ok((name.clone(), from_candle(var.as_tensor(), name)?)))
        .collect()
}

fn load_into_vars(
    vars: &[(String, Var)],
    state_dict: StateDict,
    rules: &LoadRules,
) -> Result<LoadReport> {
    let prepared = prepare(vars.to_vec(), state_dict, rules)?;
    let report = prepared.report.clone();
    prepared.apply()?;
    Ok(report)
}

/// A load that has been checked and whose tensors are already on their
/// devices; [`Prepared::apply`] only assigns them.
pub(crate) struct Prepared {
    sets: Vec<(Var, Tensor)>,
    pub(crate) report: LoadReport,
}

impl Prepared {
    pub(crate) fn apply(self) -> Result<()> {
        for (var, tensor) in self.sets {
            var.set(&tensor)?;
        }
        Ok(())
    }
}

/// Matches and builds every tensor, changing nothing.
pub(crate) fn prepare(
    vars: Vec<(String, Var)>,
    state_dict: StateDict,
    rules: &LoadRules,
) -> Result<Prepared> {
    let expected = vars
        .iter()
        .map(|(name, var)| {
            Ok(Expected {
                name: name.clone(),
                dtype: ckpt_dtype(var.dtype(), name)?,
                shape: var.dims().to_vec(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let matched = match_state_dict(state_dict, &expected, rules)?;
    let sets = matched
        .tensors
        .iter()
        .map(|(i, t)| {
            let (name, var) = &vars[*i];
            Ok((var.clone(), to_candle(t, var.device(), name)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Prepared {
        sets,
        report: matched.report,
    })
}

impl SimpleBackend for ParamStore {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut inner = self.lock();
        if let Some(var) = inner.vars.get(name) {
            if var.shape() != &shape {
                candle_core::bail!(
                    "{name} exists with shape {:?}, the model asks for {:?}",
                    var.dims(),
                    shape.dims()
                );
            }
            return Ok(var.as_tensor().clone());
        }
        let values = initial_values(&init, &shape, &mut inner.rng);
        let tensor = Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&tensor)?;
        inner.vars.insert(name.to_owned(), var.clone());
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.lock().vars.get(name) {
            Some(var) => Ok(var.as_tensor().clone()),
            None => {
                candle_core::bail!("{name} is not in the store and has no shape to create it with")
            }
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.lock().vars.contains_key(name)
    }
}

/// Draws a variable's first values, following candle's `Init` rules but
/// from our seeded generator.
fn initial_values(init: &Init, shape: &Shape, rng: &mut Rng) -> Vec<f64> {
    let n = shape.elem_count();
    let uniform =
        |rng: &mut Rng, lo: f64, up: f64| (0..n).map(|_| lo + (up - lo) * rng.uniform()).collect();
    let normal =
        |rng: &mut Rng, mean: f64, std: f64| (0..n).map(|_| mean + std * rng.normal()).collect();
    match *init {
        Init::Const(c) => vec![c; n],
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
                NormalOrUniform::Normal => normal(rng, 0.0, std),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt::{KeyRule, OnMismatch, TensorData};

    fn mlp(seed: u64) -> ParamStore {
        let store = ParamStore::new(seed);
        let vb = store.var_builder(DType::F32, &Device::Cpu);
        candle_nn::linear(4, 3, vb.pp("fc1")).unwrap();
        candle_nn::linear(3, 2, vb.pp("fc2")).unwrap();
        store
    }

    #[test]
    fn same_seed_same_model_and_state_dicts_round_trip() {
        let a = mlp(1).state_dict().unwrap();
        assert_eq!(a, mlp(1).state_dict().unwrap());
        let b = mlp(2);
        assert_ne!(a, b.state_dict().unwrap());
        let report = b.load_state_dict(a.clone(), &LoadRules::default()).unwrap();
        assert_eq!(report.loaded.len(), 4);
        assert_eq!(b.state_dict().unwrap(), a);
    }

    #[test]
    fn a_failed_strict_load_changes_nothing() {
        let store = mlp(1);
        let before = store.state_dict().unwrap();
        let mut other = mlp(2).state_dict().unwrap();
        other.insert(
            "fc2.weight".into(),
            TensorData::from_f32(&[1], &[0.0]).unwrap(),
        );
        other.shift_remove("fc2.bias");
        let err = store
            .load_state_dict(other.clone(), &LoadRules::default())
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("missing keys: fc2.bias")
                && msg.contains("fc2.weight: the model has shape [2, 3]"),
            "{msg}"
        );
        assert_eq!(store.state_dict().unwrap(), before);

        let rules = LoadRules::default()
            .strict(false)
            .on_mismatch(OnMismatch::Skip);
        let report = store.load_state_dict(other, &rules).unwrap();
        assert_eq!(report.loaded, ["fc1.weight", "fc1.bias"]);
        assert_ne!(
            store.state_dict().unwrap()["fc1.weight"],
            before["fc1.weight"]
        );
        assert_eq!(store.state_dict().unwrap()["fc2.bias"], before["fc2.bias"]);
    }

    #[test]
    fn loads_cast_to_the_model_dtype_and_strip_data_parallel_prefixes() {
        let store = ParamStore::new(0);
        let vb = store.var_builder(DType::BF16, &Device::Cpu);
        candle_nn::linear(2, 1, vb.pp("fc")).unwrap();
        let mut sd = StateDict::new();
        sd.insert(
            "module.fc.weight".into(),
            TensorData::from_f32(&[1, 2], &[0.5, 2.0]).unwrap(),
        );
        sd.insert(
            "module.fc.bias".into(),
            TensorData::from_f32(&[1], &[-1.0]).unwrap(),
        );
        let rules = LoadRules::default().rule(KeyRule::StripPrefix("module.".into()));
        let report = store.load_state_dict(sd, &rules).unwrap();
        assert_eq!(report.cast.len(), 2);
        let w = store.state_dict().unwrap()["fc.weight"]
            .cast(ckpt::DType::F32)
            .unwrap();
        assert_eq!(w, TensorData::from_f32(&[1, 2], &[0.5, 2.0]).unwrap());
    }

    #[test]
    fn varmaps_sort_numbers_as_numbers() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        for i in [10, 2, 1] {
            candle_nn::linear(1, 1, vb.pp(format!("layers.{i}"))).unwrap();
        }
        let sd = varmap_state_dict(&varmap).unwrap();
        let names: Vec<_> = sd.keys().map(String::as_str).collect();
        assert_eq!(
            names[..3],
            ["layers.1.bias", "layers.1.weight", "layers.2.bias"]
        );
        assert_eq!(names[5], "layers.10.weight");
        let zeros: StateDict = sd
            .iter()
            .map(|(n, t)| (n.clone(), TensorData::from_f32(t.shape(), &[0.0]).unwrap()))
            .collect();
        load_varmap(&varmap, zeros.clone(), &LoadRules::default()).unwrap();
        assert_eq!(varmap_state_dict(&varmap).unwrap(), zeros);
        assert_eq!(
            ParamStore::from_varmap(&varmap, 0).state_dict().unwrap(),
            zeros
        );
    }
}
