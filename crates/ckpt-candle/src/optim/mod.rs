//! Optimizers with `torch.optim`'s mathematics and state dicts.
//!
//! [`Optim`] holds the parameter groups and the per-parameter state; an
//! [`UpdateRule`] (the hyper-parameters of one algorithm: [`SgdConfig`],
//! [`AdamConfig`]) says how one parameter moves. The state dict is laid out
//! exactly as PyTorch lays it out — `state` keyed by parameter index,
//! `param_groups` with every hyper-parameter and a `params` list of
//! indices — so `torch.optim.Adam.load_state_dict` takes ckpt's and the
//! reverse.

mod adam;
mod sgd;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use ckpt::{Dict, Key, Value};

use crate::state::{entry, number, Part};
pub use adam::{Adam, AdamConfig, AdamState};
pub use sgd::{Sgd, SgdConfig, SgdState};

use crate::{Error, Result};

/// How one algorithm moves one parameter, and how its hyper-parameters
/// and state appear in a PyTorch state dict. Implemented by the
/// hyper-parameter structs ([`SgdConfig`], [`AdamConfig`]).
pub trait UpdateRule: Clone {
    /// The state kept per parameter (momentum buffers, moments).
    type State;

    /// The learning rate.
    fn lr(&self) -> f64;

    /// Sets the learning rate (schedulers do this).
    fn set_lr(&mut self, lr: f64);

    /// Moves `param` by `grad`, creating `state` on the first step.
    fn update(&self, param: &Var, grad: &Tensor, state: &mut Option<Self::State>) -> Result<()>;

    /// Writes the hyper-parameters into a param group, under PyTorch's
    /// keys and in PyTorch's order (`lr` first; `params` is added after).
    fn write_group(&self, group: &mut Dict);

    /// Reads the hyper-parameters from a param group at `at`; a key PyTorch
    /// did not always write falls back to `self`'s value.
    fn read_group(&self, group: &Dict, at: &str) -> Result<Self>;

    /// Writes one parameter's state.
    fn write_state(&self, state: &Self::State, out: &mut Dict) -> Result<()>;

    /// Reads one parameter's state at `at`, checking every tensor against
    /// `param`'s shape and placing it on `param`'s device and dtype.
    fn read_state(&self, state: &Dict, param: &Var, at: &str) -> Result<Self::State>;
}

/// The operations a learning-rate scheduler needs, object-safe so a
/// scheduler drives any optimizer.
pub trait Optimizer {
    /// One optimisation step from the gradients of a `backward()`;
    /// parameters without a gradient are left alone, as in PyTorch.
    fn step(&mut self, grads: &GradStore) -> Result<()>;

    /// Each group's learning rate.
    fn lrs(&self) -> Vec<f64>;

    /// Sets group `group`'s learning rate.
    fn set_lr(&mut self, group: usize, lr: f64);

    /// Each group's `initial_lr`, set to its current learning rate where it
    /// has none (what creating a PyTorch scheduler does).
    fn init_initial_lrs(&mut self) -> Vec<f64>;

    /// The state dict, as `optimizer.state_dict()`.
    fn state_dict(&self) -> Result<Value>;

    /// Replaces hyper-parameters and state with `state`'s. The state must
    /// have as many groups, each with as many parameters, as this
    /// optimizer, and every tensor must fit its parameter; otherwise
    /// nothing changes.
    fn load_state_dict(&mut self, state: &Value) -> Result<()>;
}

/// A group of parameters sharing hyper-parameters (PyTorch's param group).
#[derive(Debug, Clone)]
pub struct ParamGroup<R> {
    /// The parameters, in order.
    pub params: Vec<Var>,
    /// The hyper-parameters.
    pub config: R,
    /// The learning rate a scheduler started from, once one did.
    pub initial_lr: Option<f64>,
}

/// An optimizer: parameter groups and per-parameter state, moved by the
/// update rule `R`. Use [`Sgd`] or [`Adam`].
pub struct Optim<R: UpdateRule> {
    groups: Vec<ParamGroup<R>>,
    /// Indexed as PyTorch indexes parameters: across groups, in order.
    state: Vec<Option<R::State>>,
}

impl<R: UpdateRule> Optim<R> {
    /// An optimizer over `params` in one group.
    pub fn new(params: Vec<Var>, config: R) -> Result<Self> {
        let mut optim = Optim {
            groups: Vec::new(),
            state: Vec::new(),
        };
        optim.add_param_group(params, config)?;
        Ok(optim)
    }

    /// Adds a group with its own hyper-parameters (a lower learning rate
    /// for a pretrained body, say).
    pub fn add_param_group(&mut self, params: Vec<Var>, config: R) -> Result<()> {
        if config.lr().is_nan() || config.lr() < 0.0 {
            return Err(Error::InvalidArgument(format!(
                "learning rate {} is not a number ≥ 0",
                config.lr()
            )));
        }
        for p in &params {
            if self.all_params().any(|q| q.id() == p.id()) {
                return Err(Error::InvalidArgument(
                    "a parameter appears in more than one group".into(),
                ));
            }
        }
        self.state.extend(params.iter().map(|_| None));
        self.groups.push(ParamGroup {
            params,
            config,
            initial_lr: None,
        });
        Ok(())
    }

    /// The parameter groups.
    pub fn param_groups(&self) -> &[ParamGroup<R>] {
        &self.groups
    }

    /// The state of parameter `index` (counted across groups), once a step
    /// has created it.
    pub fn param_state(&self, index: usize) -> Option<&R::State> {
        self.state.get(index).and_then(Option::as_ref)
    }

    fn all_params(&self) -> impl Iterator<Item = &Var> {
        self.groups.iter().flat_map(|g| g.params.iter())
    }
}

impl<R: UpdateRule> Optimizer for Optim<R> {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let mut index = 0;
        for group in &self.groups {
            for param in &group.params {
                if let Some(grad) = grads.get(param.as_tensor()) {
                    group.config.update(param, grad, &mut self.state[index])?;
                }
                index += 1;
            }
        }
        Ok(())
    }

    fn lrs(&self) -> Vec<f64> {
        self.groups.iter().map(|g| g.config.lr()).collect()
    }

    fn set_lr(&mut self, group: usize, lr: f64) {
        self.groups[group].config.set_lr(lr);
    }

    fn init_initial_lrs(&mut self) -> Vec<f64> {
        self.groups
            .iter_mut()
            .map(|g| *g.initial_lr.get_or_insert(g.config.lr()))
            .collect()
    }

    fn state_dict(&self) -> Result<Value> {
        let mut state = Dict::new();
        let mut groups = Vec::new();
        let mut index = 0i64;
        for group in &self.groups {
            let mut dict = Dict::new();
            group.config.write_group(&mut dict);
            if let Some(lr) = group.initial_lr {
                dict.insert("initial_lr".into(), Value::Float(lr));
            }
            let mut ids = Vec::new();
            for _ in &group.params {
                if let Some(s) = &self.state[index as usize] {
                    let mut entry = Dict::new();
                    group.config.write_state(s, &mut entry)?;
                    state.insert(Key::Int(index), Value::Dict(entry));
                }
                ids.push(Value::Int(index));
                index += 1;
            }
            dict.insert("params".into(), Value::List(ids));
            groups.push(Value::Dict(dict));
        }
        let mut out = Dict::new();
        out.insert("state".into(), Value::Dict(state));
        out.insert("param_groups".into(), Value::List(groups));
        Ok(Value::Dict(out))
    }

    fn load_state_dict(&mut self, value: &Value) -> Result<()> {
        let Value::Dict(root) = value else {
            return Err(Error::optimizer(
                "",
                format!("is {}, not a dict", value.kind()),
            ));
        };
        let Value::List(groups) = entry(Part::Optimizer, root, "param_groups", "")? else {
            return Err(Error::optimizer("param_groups", "is not a list"));
        };
        let Value::Dict(saved_state) = entry(Part::Optimizer, root, "state", "")? else {
            return Err(Error::optimizer("state", "is not a dict"));
        };
        if groups.len() != self.groups.len() {
            return Err(Error::optimizer(
                "param_groups",
                format!(
                    "the state has {} groups, the optimizer {}",
                    groups.len(),
                    self.groups.len()
                ),
            ));
        }
        // Parse everything first; assign only when all of it fits.
        let mut new_groups = Vec::with_capacity(groups.len());
        let mut position = std::collections::HashMap::new(); // saved id -> our index
        for (g, (saved, ours)) in groups.iter().zip(&self.groups).enumerate() {
            let at = format!("param_groups/{g}");
            let Value::Dict(saved) = saved else {
                return Err(Error::optimizer(at, "is not a dict"));
            };
            let Value::List(ids) = entry(Part::Optimizer, saved, "params", &at)? else {
                return Err(Error::optimizer(format!("{at}/params"), "is not a list"));
            };
            if ids.len() != ours.params.len() {
                return Err(Error::optimizer(
                    format!("{at}/params"),
                    format!(
                        "the state's group has {} parameters, the optimizer's {}",
                        ids.len(),
                        ours.params.len()
                    ),
                ));
            }
            for id in ids {
                let Value::Int(id) = id else {
                    return Err(Error::optimizer(
                        format!("{at}/params"),
                        "holds a non-integer id",
                    ));
                };
                let next = position.len();
                if position.insert(*id, next).is_some() {
                    return Err(Error::optimizer(
                        format!("{at}/params"),
                        format!("id {id} appears twice"),
                    ));
                }
            }
            let config = ours.config.read_group(saved, &at)?;
            let initial_lr = match saved.get(&Key::from("initial_lr")) {
                None => None,
                Some(v) => Some(number(Part::Optimizer, v, &format!("{at}/initial_lr"))?),
            };
            new_groups.push(ParamGroup {
                params: ours.params.clone(),
                config,
                initial_lr,
            });
        }
        let params: Vec<(&Var, &R)> = new_groups
            .iter()
            .flat_map(|g| g.params.iter().map(move |p| (p, &g.config)))
            .collect();
        let mut new_state: Vec<Option<R::State>> = params.iter().map(|_| None).collect();
        for (key, v) in saved_state {
            let at = format!("state/{key}");
            let index = match key {
                Key::Int(id) => position.get(id).copied(),
                _ => None,
            }
            .ok_or_else(|| Error::optimizer(&at, "names no parameter of any group"))?;
            let Value::Dict(s) = v else {
                return Err(Error::optimizer(at, "is not a dict"));
            };
            let (param, config) = params[index];
            new_state[index] = Some(config.read_state(s, param, &at)?);
        }
        self.groups = new_groups;
        self.state = new_state;
        Ok(())
    }
}
