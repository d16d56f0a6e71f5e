//! Pools: max (padding with −∞), average (zero padding counted) and
//! PyTorch's adaptive average.

use candle_core::Tensor;
use ckpt::LayerKind;

use super::pad2d;
use crate::Result;

/// A built pool: kernel, stride and padding, or the output size.
pub(super) enum Pool {
    Max([usize; 2], [usize; 2], [usize; 2]),
    Avg([usize; 2], [usize; 2], [usize; 2]),
    Adaptive([usize; 2]),
}

impl Pool {
    pub(super) fn build(kind: &LayerKind) -> Pool {
        match kind {
            LayerKind::MaxPool2d {
                kernel_size,
                stride,
                padding,
            } => Pool::Max(*kernel_size, *stride, *padding),
            LayerKind::AvgPool2d {
                kernel_size,
                stride,
                padding,
            } => Pool::Avg(*kernel_size, *stride, *padding),
            LayerKind::AdaptiveAvgPool2d { output_size } => Pool::Adaptive(*output_size),
            _ => unreachable!("dispatched by kind"),
        }
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Pool::Max(k, s, p) => pad2d(x, *p, f64::NEG_INFINITY)?
                .max_pool2d_with_stride((k[0], k[1]), (s[0], s[1]))?,
            Pool::Avg(k, s, p) => {
                pad2d(x, *p, 0.0)?.avg_pool2d_with_stride((k[0], k[1]), (s[0], s[1]))?
            }
            Pool::Adaptive([oh, ow]) => {
                // One axis, then the other, the smaller intermediate first:
                // it holds no more than the larger of input and output.
                let (_, c, h, w) = x.dims4()?;
                if c * h * ow <= c * oh * w {
                    pool_axis(&pool_axis(x, 3, *ow)?, 2, *oh)?
                } else {
                    pool_axis(&pool_axis(x, 2, *oh)?, 3, *ow)?
                }
            }
        })
    }
}

/// PyTorch's adaptive average of dimension `d` into `out` windows
/// (`floor(i n / out) .. ceil((i + 1) n / out)`): one reshape when they
/// divide evenly, else one mean per window — never a product with zeros,
/// so an inf or NaN stays in its own windows as in torch.
fn pool_axis(x: &Tensor, d: usize, out: usize) -> Result<Tensor> {
    let n = x.dim(d)?;
    if n % out == 0 {
        let mut shape = x.dims().to_vec();
        shape[d] = out;
        shape.insert(d + 1, n / out);
        return Ok(x.reshape(shape)?.mean(d + 1)?);
    }
    let windows = (0..out)
        .map(|i| {
            let (start, end) = (i * n / out, ((i + 1) * n).div_ceil(out));
            x.narrow(d, start, end - start)?.mean_keepdim(d)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&windows, d)?)
}
