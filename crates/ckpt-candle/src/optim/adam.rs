//! Adam and AdamW (with AMSGrad), as `torch.optim.Adam` and
//! `torch.optim.AdamW`.

use candle_core::{Tensor, Var};
use ckpt::{Dict, TensorData, Value};

use super::{Optim, UpdateRule};
use crate::convert::from_candle;
use crate::state::{entry, flag, join, number, number_at, tensor_state, Part};
use crate::{Error, Result};

/// `torch.optim.Adam`, and `torch.optim.AdamW` with
/// [`AdamConfig::adamw`] (decoupled weight decay).
///
/// ```
/// use candle_core::{Device, Var};
/// use ckpt_candle::{Adam, AdamConfig, Optimizer};
/// let w = Var::new(&[1.0f32, -1.0], &Device::Cpu).unwrap();
/// let mut opt = Adam::new(vec![w.clone()], AdamConfig { lr: 0.1, ..Default::default() }).unwrap();
/// let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
/// opt.step(&loss.backward().unwrap()).unwrap();
/// // Adam's first step moves every weight by about lr (as torch: 0.90000004).
/// assert_eq!(w.as_tensor().to_vec1::<f32>().unwrap(), [0.90000004, -0.90000004]);
/// ```
pub type Adam = Optim<AdamConfig>;

/// Adam's hyper-parameters, with PyTorch's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay rates of the first and second moment averages.
    pub betas: (f64, f64),
    /// Added to the denominator for stability.
    pub eps: f64,
    /// Weight decay: an L2 penalty on the gradient (Adam), or a decay of
    /// the weights themselves when `decoupled_weight_decay` (AdamW).
    pub weight_decay: f64,
    /// The AMSGrad variant (keeps the maximum second moment).
    pub amsgrad: bool,
    /// Maximise the objective instead.
    pub maximize: bool,
    /// AdamW's decoupled weight decay.
    pub decoupled_weight_decay: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            maximize: false,
            decoupled_weight_decay: false,
        }
    }
}

impl AdamConfig {
    /// `torch.optim.AdamW`'s defaults: decoupled weight decay of 0.01.
    pub fn adamw() -> AdamConfig {
        AdamConfig {
            weight_decay: 1e-2,
            decoupled_weight_decay: true,
            ..AdamConfig::default()
        }
    }
}

/// Adam's state for one parameter.
#[derive(Debug, Clone)]
pub struct AdamState {
    /// Steps taken (PyTorch keeps it as a float32 scalar tensor).
    pub step: f32,
    /// First moment average.
    pub exp_avg: Tensor,
    /// Second moment average.
    pub exp_avg_sq: Tensor,
    /// The largest second moment seen (AMSGrad only).
    pub max_exp_avg_sq: Option<Tensor>,
}

impl UpdateRule for AdamConfig {
    type State = AdamState;

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// PyTorch's `_single_tensor_adam`, operation for operation.
    fn update(&self, param: &Var, grad: &Tensor, state: &mut Option<AdamState>) -> Result<()> {
        let p = param.as_tensor();
        let s = match state {
            Some(s) => s,
            None => state.insert(AdamState {
                step: 0.0,
                exp_avg: p.zeros_like()?,
                exp_avg_sq: p.zeros_like()?,
                max_exp_avg_sq: if self.amsgrad {
                    Some(p.zeros_like()?)
                } else {
                    None
                },
            }),
        };
        let (beta1, beta2) = self.betas;
        let mut grad = if self.maximize {
            grad.neg()?
        } else {
            grad.clone()
        };
        s.step += 1.0;
        let mut p = p.clone();
        if self.weight_decay != 0.0 {
            if self.decoupled_weight_decay {
                p = p.affine(1.0 - self.lr * self.weight_decay, 0.0)?;
            } else {
                grad = (grad + p.affine(self.weight_decay, 0.0)?)?;
            }
        }
        // exp_avg.lerp_(grad, 1 - beta1)
        s.exp_avg = (&s.exp_avg + (&grad - &s.exp_avg)?.affine(1.0 - beta1, 0.0)?)?;
        // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        s.exp_avg_sq =
            (s.exp_avg_sq.affine(beta2, 0.0)? + grad.affine(1.0 - beta2, 0.0)?.mul(&grad)?)?;
        let step = f64::from(s.step);
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        let step_size = self.lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.powf(0.5);
        let second = match &mut s.max_exp_avg_sq {
            Some(max) => {
                *max = max.maximum(&s.exp_avg_sq)?;
                &*max
            }
            None => &s.exp_avg_sq,
        };
        let divisor = Tensor::new(bias_correction2_sqrt, p.device())?.to_dtype(p.dtype())?;
        let denom = second
            .sqrt()?
            .broadcast_div(&divisor)?
            .affine(1.0, self.eps)?;
        // param.addcdiv_(exp_avg, denom, value=-step_size)
        let update = s.exp_avg.div(&denom)?.affine(-step_size, 0.0)?;
        param.set(&(p + update)?)?;
        Ok(())
    }

    fn write_group(&self, g: &mut Dict) {
        g.insert("lr".into(), Value::Float(self.lr));
        g.insert(
            "betas".into(),
            Value::Tuple(vec![Value::Float(self.betas.0), Value::Float(self.betas.1)]),
        );
        g.insert("eps".into(), Value::Float(self.eps));
        g.insert("weight_decay".into(), Value::Float(self.weight_decay));
        g.insert("amsgrad".into(), Value::Bool(self.amsgrad));
        g.insert("maximize".into(), Value::Bool(self.maximize));
        g.insert("foreach".into(), Value::None);
        g.insert("capturable".into(), Value::Bool(false));
        g.insert("differentiable".into(), Value::Bool(false));
        g.insert("fused".into(), Value::None);
        g.insert(
            "decoupled_weight_decay".into(),
            Value::Bool(self.decoupled_weight_decay),
        );
    }

    fn read_group(&self, g: &Dict, at: &str) -> Result<Self> {
        let betas = match entry(Part::Optimizer, g, "betas", at)? {
            Value::Tuple(b) | Value::List(b) if b.len() == 2 => {
                let at = join(at, "betas");
                (
                    number(Part::Optimizer, &b[0], &at)?,
                    number(Part::Optimizer, &b[1], &at)?,
                )
            }
            _ => {
                return Err(Error::optimizer(
                    join(at, "betas"),
                    "is not a pair of numbers",
                ))
            }
        };
        Ok(AdamConfig {
            lr: number_at(Part::Optimizer, g, "lr", at)?,
            betas,
            eps: number_at(Part::Optimizer, g, "eps", at)?,
            weight_decay: number_at(Part::Optimizer, g, "weight_decay", at)?,
            amsgrad: flag(Part::Optimizer, g, "amsgrad", at, self.amsgrad)?,
            maximize: flag(Part::Optimizer, g, "maximize", at, self.maximize)?,
            decoupled_weight_decay: flag(
                Part::Optimizer,
                g,
                "decoupled_weight_decay",
                at,
                self.decoupled_weight_decay,
            )?,
        })
    }

    fn write_state(&self, s: &AdamState, out: &mut Dict) -> Result<()> {
        let step = TensorData::from_f32(&[], &[s.step])?;
        out.insert("step".into(), Value::Tensor(step));
        out.insert(
            "exp_avg".into(),
            Value::Tensor(from_candle(&s.exp_avg, "exp_avg")?),
        );
        out.insert(
            "exp_avg_sq".into(),
            Value::Tensor(from_candle(&s.exp_avg_sq, "exp_avg_sq")?),
        );
        if let Some(max) = &s.max_exp_avg_sq {
            out.insert(
                "max_exp_avg_sq".into(),
                Value::Tensor(from_candle(max, "max_exp_avg_sq")?),
            );
        }
        Ok(())
    }

    fn read_state(&self, s: &Dict, param: &Var, at: &str) -> Result<AdamState> {
        let step = number_at(Part::Optimizer, s, "step", at)?;
        if !(step >= 0.0 && step.fract() == 0.0 && step < 16_777_216.0) {
            return Err(Error::optimizer(
                join(at, "step"),
                format!("{step} is not a step count"),
            ));
        }
        Ok(AdamState {
            step: step as f32,
            exp_avg: tensor_state(Part::Optimizer, s, "exp_avg", param, at)?,
            exp_avg_sq: tensor_state(Part::Optimizer, s, "exp_avg_sq", param, at)?,
            max_exp_avg_sq: if self.amsgrad {
                Some(tensor_state(
                    Part::Optimizer,
                    s,
                    "max_exp_avg_sq",
                    param,
                    at,
                )?)
            } else {
                None
            },
        })
    }
}
