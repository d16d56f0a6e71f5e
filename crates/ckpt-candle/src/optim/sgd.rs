//! SGD with momentum, dampening, Nesterov and weight decay, as
//! `torch.optim.SGD`.

use candle_core::{Tensor, Var};
use ckpt::{Dict, Value};

use super::{Optim, UpdateRule};
use crate::convert::from_candle;
use crate::state::{flag, number_at, tensor_state, Part};
use crate::{Error, Result};

/// `torch.optim.SGD`.
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use ckpt_candle::{Optimizer, Sgd, SgdConfig};
/// let w = Var::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
/// let mut opt = Sgd::new(vec![w.clone()], SgdConfig { lr: 0.1, momentum: 0.9, ..Default::default() }).unwrap();
/// let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
/// opt.step(&loss.backward().unwrap()).unwrap();
/// assert_eq!(w.as_tensor().to_vec1::<f32>().unwrap(), [0.8, 1.6]);
/// ```
pub type Sgd = Optim<SgdConfig>;

/// SGD's hyper-parameters, with PyTorch's defaults (`lr` has none there;
/// 0.001 here).
#[derive(Debug, Clone, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0 keeps no state).
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Maximise the objective instead.
    pub maximize: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
        }
    }
}

/// SGD's state for one parameter.
#[derive(Debug, Clone)]
pub struct SgdState {
    /// The momentum buffer.
    pub momentum_buffer: Tensor,
}

impl UpdateRule for SgdConfig {
    type State = SgdState;

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn update(&self, param: &Var, grad: &Tensor, state: &mut Option<SgdState>) -> Result<()> {
        let p = param.as_tensor();
        let mut grad = if self.maximize {
            grad.neg()?
        } else {
            grad.clone()
        };
        if self.weight_decay != 0.0 {
            grad = (grad + p.affine(self.weight_decay, 0.0)?)?;
        }
        if self.momentum != 0.0 {
            let buf = match state.take() {
                None => grad.copy()?,
                Some(s) => {
                    (s.momentum_buffer.affine(self.momentum, 0.0)?
                        + grad.affine(1.0 - self.dampening, 0.0)?)?
                }
            };
            grad = if self.nesterov {
                (grad + buf.affine(self.momentum, 0.0)?)?
            } else {
                buf.clone()
            };
            *state = Some(SgdState {
                momentum_buffer: buf,
            });
        }
        param.set(&(p + grad.affine(-self.lr, 0.0)?)?)?;
        Ok(())
    }

    fn write_group(&self, g: &mut Dict) {
        g.insert("lr".into(), Value::Float(self.lr));
        g.insert("momentum".into(), Value::Float(self.momentum));
        g.insert("dampening".into(), Value::Float(self.dampening));
        g.insert("weight_decay".into(), Value::Float(self.weight_decay));
        g.insert("nesterov".into(), Value::Bool(self.nesterov));
        g.insert("maximize".into(), Value::Bool(self.maximize));
        g.insert("foreach".into(), Value::None);
        g.insert("differentiable".into(), Value::Bool(false));
        g.insert("fused".into(), Value::None);
    }

    fn read_group(&self, g: &Dict, at: &str) -> Result<Self> {
        let config = SgdConfig {
            lr: number_at(Part::Optimizer, g, "lr", at)?,
            momentum: number_at(Part::Optimizer, g, "momentum", at)?,
            dampening: number_at(Part::Optimizer, g, "dampening", at)?,
            weight_decay: number_at(Part::Optimizer, g, "weight_decay", at)?,
            nesterov: flag(Part::Optimizer, g, "nesterov", at, self.nesterov)?,
            maximize: flag(Part::Optimizer, g, "maximize", at, self.maximize)?,
        };
        if config.nesterov && (config.momentum <= 0.0 || config.dampening != 0.0) {
            return Err(Error::optimizer(
                at,
                "Nesterov momentum needs momentum > 0 and no dampening",
            ));
        }
        Ok(config)
    }

    fn write_state(&self, state: &SgdState, out: &mut Dict) -> Result<()> {
        let buf = from_candle(&state.momentum_buffer, "momentum_buffer")?;
        out.insert("momentum_buffer".into(), Value::Tensor(buf));
        Ok(())
    }

    fn read_state(&self, state: &Dict, param: &Var, at: &str) -> Result<SgdState> {
        Ok(SgdState {
            momentum_buffer: tensor_state(Part::Optimizer, state, "momentum_buffer", param, at)?,
        })
    }
}
