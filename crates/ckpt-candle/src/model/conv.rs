//! `Conv2d` (uniform ±1/√fan_in initialisation; asymmetric padding done
//! by padding first, as candle takes one padding for both dimensions).

use candle_core::Tensor;
use ckpt::LayerKind;

use super::{pad2d, per_channel, uniform, Vars};
use crate::{Error, Result};

/// A built `Conv2d`.
pub(super) struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: [usize; 2],
    dilation: usize,
    groups: usize,
}

impl Conv2d {
    pub(super) fn build(kind: &LayerKind, v: &Vars) -> Result<Conv2d> {
        let LayerKind::Conv2d {
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
        } = kind
        else {
            unreachable!("dispatched by kind")
        };
        if stride[0] != stride[1] || dilation[0] != dilation[1] {
            return Err(Error::InvalidArgument(format!(
                "{}: candle's conv2d needs the same stride and dilation in both dimensions, not {stride:?} and {dilation:?}",
                v.name
            )));
        }
        let fan_in = in_channels / groups * kernel_size[0] * kernel_size[1];
        let bound = 1.0 / (fan_in as f64).sqrt();
        let shape = (
            *out_channels,
            in_channels / groups,
            kernel_size[0],
            kernel_size[1],
        );
        let weight = v.vb.get_with_hints(shape, "weight", uniform(bound))?;
        let bias = if *bias {
            Some(v.vb.get_with_hints(*out_channels, "bias", uniform(bound))?)
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            bias,
            stride: stride[0],
            padding: *padding,
            dilation: dilation[0],
            groups: *groups,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = pad2d(x, self.padding, 0.0)?.conv2d(
            &self.weight,
            0,
            self.stride,
            self.dilation,
            self.groups,
        )?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(&per_channel(b, 4)?)?,
            None => y,
        })
    }
}
