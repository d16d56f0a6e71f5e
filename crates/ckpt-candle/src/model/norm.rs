//! Batch norms (ones and zeros, running statistics as buffers; batch
//! statistics in training mode) and `LayerNorm`.

use candle_core::{DType, Tensor, Var, D};
use candle_nn::init::Init;
use ckpt::LayerKind;

use super::{per_channel, Built, Vars};
use crate::Result;

/// A built `BatchNorm1d` or `BatchNorm2d`.
pub(super) struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    mean: Var,
    var: Var,
    count: Var,
    eps: f64,
    momentum: f64,
}

/// A built `LayerNorm` over the last `dims` dimensions.
pub(super) struct LayerNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    dims: usize,
    eps: f64,
}

pub(super) fn build(kind: &LayerKind, v: &Vars) -> Result<Built> {
    match kind {
        LayerKind::BatchNorm1d {
            num_features,
            eps,
            momentum,
        }
        | LayerKind::BatchNorm2d {
            num_features,
            eps,
            momentum,
        } => Ok(Built::BatchNorm(BatchNorm::build(
            v,
            *num_features,
            *eps,
            *momentum,
        )?)),
        LayerKind::LayerNorm {
            normalized_shape,
            eps,
            elementwise_affine,
        } => {
            let (weight, bias) = if *elementwise_affine {
                let shape = normalized_shape.as_slice();
                (
                    Some(v.vb.get_with_hints(shape, "weight", Init::Const(1.0))?),
                    Some(v.vb.get_with_hints(shape, "bias", Init::Const(0.0))?),
                )
            } else {
                (None, None)
            };
            Ok(Built::LayerNorm(LayerNorm {
                weight,
                bias,
                dims: normalized_shape.len(),
                eps: *eps,
            }))
        }
        _ => unreachable!("dispatched by kind"),
    }
}

impl BatchNorm {
    fn build(v: &Vars, n: usize, eps: f64, momentum: f64) -> Result<BatchNorm> {
        let weight = v.vb.get_with_hints(n, "weight", Init::Const(1.0))?;
        let bias = v.vb.get_with_hints(n, "bias", Init::Const(0.0))?;
        let buffer =
            |name: &str, initial: Tensor| v.store.buffer(&format!("{}.{name}", v.name), &initial);
        let mean = buffer("running_mean", Tensor::zeros(n, DType::F32, v.device)?)?;
        let var = buffer("running_var", Tensor::ones(n, DType::F32, v.device)?)?;
        let count = buffer("num_batches_tracked", Tensor::new(0i64, v.device)?)?;
        Ok(BatchNorm {
            weight,
            bias,
            mean,
            var,
            count,
            eps,
            momentum,
        })
    }

    /// Normalises over every dimension but the channels (dim 1): with the
    /// batch's statistics (updating the running ones) when `training`.
    pub(super) fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let rank = x.rank();
        let (m, v) = if training {
            self.batch_statistics(x)?
        } else {
            (self.mean.as_tensor().clone(), self.var.as_tensor().clone())
        };
        let denom = (v + self.eps)?.sqrt()?;
        Ok(x.broadcast_sub(&per_channel(&m, rank)?)?
            .broadcast_div(&per_channel(&denom, rank)?)?
            .broadcast_mul(&per_channel(&self.weight, rank)?)?
            .broadcast_add(&per_channel(&self.bias, rank)?)?)
    }

    /// The batch's mean and biased variance per channel; the running
    /// statistics move towards them by `momentum` (the unbiased variance,
    /// as PyTorch).
    fn batch_statistics(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let momentum = self.momentum;
        let reduce: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
        let n = (x.elem_count() / x.dim(1)?) as f64;
        let mut mu = x.clone();
        let mut sq = x.sqr()?;
        for &d in reduce.iter().rev() {
            mu = mu.sum_keepdim(d)?;
            sq = sq.sum_keepdim(d)?;
        }
        let mu = (mu / n)?.flatten_all()?;
        let biased = ((sq / n)?.flatten_all()? - mu.sqr()?)?;
        let unbiased = (&biased * (n / (n - 1.0).max(1.0)))?;
        let (mean, var) = (&self.mean, &self.var);
        mean.set(&((mean.as_tensor() * (1.0 - momentum))? + (&mu * momentum)?)?)?;
        var.set(&((var.as_tensor() * (1.0 - momentum))? + (unbiased * momentum)?)?)?;
        self.count.set(&(self.count.as_tensor() + 1.0)?)?;
        Ok((mu, biased))
    }
}

impl LayerNorm {
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let shape = x.dims().to_vec();
        let keep = x.rank() - self.dims;
        let flat = x.flatten_from(keep)?;
        let mean = flat.mean_keepdim(D::Minus1)?;
        let centred = flat.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let mut y = centred
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .reshape(shape)?;
        if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
            y = y.broadcast_mul(w)?.broadcast_add(b)?;
        }
        Ok(y)
    }
}
