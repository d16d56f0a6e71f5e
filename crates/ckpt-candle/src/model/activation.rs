//! Element-wise layers without parameters: ReLU, GELU, SiLU, Sigmoid,
//! Tanh, Softmax, and Dropout (drawn from the training `Rng`, identity at
//! inference).

use candle_core::Tensor;
use ckpt::LayerKind;

use super::dim;
use crate::{Result, Rng};

/// A built element-wise layer.
pub(super) enum Activation {
    Relu,
    /// GELU, with the tanh approximation when true.
    Gelu(bool),
    Silu,
    Sigmoid,
    Tanh,
    /// Softmax over PyTorch's `dim`.
    Softmax(i64),
    /// Dropout with probability `p`.
    Dropout(f64),
}

impl Activation {
    pub(super) fn build(kind: &LayerKind) -> Activation {
        match kind {
            LayerKind::ReLU => Activation::Relu,
            LayerKind::GELU { tanh } => Activation::Gelu(*tanh),
            LayerKind::SiLU => Activation::Silu,
            LayerKind::Sigmoid => Activation::Sigmoid,
            LayerKind::Tanh => Activation::Tanh,
            LayerKind::Softmax { dim } => Activation::Softmax(*dim),
            LayerKind::Dropout { p } => Activation::Dropout(*p),
            _ => unreachable!("dispatched by kind"),
        }
    }

    pub(super) fn forward(&self, x: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        Ok(match self {
            Activation::Relu => x.relu()?,
            Activation::Gelu(tanh) => {
                if *tanh {
                    x.gelu()?
                } else {
                    x.gelu_erf()?
                }
            }
            Activation::Silu => x.silu()?,
            Activation::Sigmoid => candle_nn::ops::sigmoid(x)?,
            Activation::Tanh => x.tanh()?,
            Activation::Softmax(d) => candle_nn::ops::softmax(x, dim(*d, x.rank()))?,
            Activation::Dropout(p) => match rng {
                Some(rng) if *p > 0.0 => rng.dropout(x, *p)?,
                _ => x.clone(),
            },
        })
    }
}
