//! Int8 Linear layers with dynamically quantized activations: what
//! PyTorch's dynamic quantization and ONNX's `DynamicQuantizeLinear` +
//! `MatMulInteger` compute, so a quantized package gives the same outputs
//! here and in onnxruntime.
//!
//! Per call, the input is quantized to uint8 with a scale and zero point
//! from its own range (zero included), `scale = (max(0, hi) − min(0, lo)) /
//! 255`, `zero_point = round(−min(0, lo) / scale)`, `q = clamp(round(x /
//! scale) + zero_point, 0, 255)`, rounding half to even. The products
//! `(q − zero_point) · w` are summed exactly (in `f32` while the sum cannot
//! pass 2^24, in `f64` beyond), converted to `f32`, multiplied by
//! `x_scale · w_scale` and the bias added.

use candle_core::{DType, Device, Tensor};
use ckpt::TensorData;

use crate::{Error, Result};

/// The largest |(q − zp) · w| term: 255 · 127.
const TERM: usize = 255 * 127;

/// An int8 weight (kept as `u8 = w + 128`, a byte per weight) and its
/// scales.
pub(crate) struct QLinear {
    weight: Tensor,
    scale: Tensor,
    bias: Option<Tensor>,
    in_features: usize,
}

impl QLinear {
    /// From the package's `int8` weight `[out, in]`, its scales (`[out]` or
    /// `[]`) and the float bias.
    pub(crate) fn new(
        name: &str,
        weight: &TensorData,
        scale: &TensorData,
        bias: Option<Tensor>,
        device: &Device,
    ) -> Result<QLinear> {
        let &[out, in_features] = weight.shape() else {
            return Err(Error::InvalidArgument(format!(
                "{name}: a quantized Linear weight must be 2-d, not {:?}",
                weight.shape()
            )));
        };
        if weight.dtype() != ckpt::DType::I8 {
            return Err(Error::InvalidArgument(format!(
                "{name}: quantized weight is {}, not int8",
                weight.dtype()
            )));
        }
        let shifted: Vec<u8> = weight.bytes().iter().map(|&b| b ^ 0x80).collect();
        let scales: Vec<f32> = scale.values_f64().map(|v| v as f32).collect();
        if scales.len() != 1 && scales.len() != out {
            return Err(Error::InvalidArgument(format!(
                "{name}: {} scales for {out} output channels",
                scales.len()
            )));
        }
        Ok(QLinear {
            weight: Tensor::from_vec(shifted, (out, in_features), device)?,
            scale: Tensor::from_vec(scales.clone(), scales.len(), device)?,
            bias,
            in_features,
        })
    }

    /// `x · wᵀ + b` with `x` quantized per call (module docs).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let Some((&last, batch)) = dims.split_last() else {
            return Err(Error::InvalidArgument(
                "a Linear input needs at least one dimension".into(),
            ));
        };
        if last != self.in_features {
            return Err(Error::InvalidArgument(format!(
                "Linear input has {last} features, the layer takes {}",
                self.in_features
            )));
        }
        let rows: usize = batch.iter().product();
        let values: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let (x_scale, centred) = quantize_activations(&values);
        // Exact integer sums: f32 holds integers up to 2^24.
        let exact = if self.in_features.saturating_mul(TERM) < 1 << 24 {
            DType::F32
        } else {
            DType::F64
        };
        let q = Tensor::from_vec(centred, (rows, last), x.device())?.to_dtype(exact)?;
        let w = (self.weight.to_dtype(exact)? - 128.0)?;
        let sums = q.matmul(&w.t()?)?.to_dtype(DType::F32)?;
        let scale = (&self.scale * f64::from(x_scale))?;
        let mut y = sums.broadcast_mul(&scale)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        let mut shape = batch.to_vec();
        shape.push(y.dim(1)?);
        Ok(y.reshape(shape)?)
    }
}

/// The activations' scale and `q − zero_point` for each value (as `f32`,
/// exact small integers), ONNX `DynamicQuantizeLinear`'s rules.
fn quantize_activations(values: &[f32]) -> (f32, Vec<f32>) {
    let (lo, hi) = values
        .iter()
        .fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let scale = (hi - lo) / 255.0;
    if !(scale > 0.0 && scale.is_finite()) {
        // All zeros (or not finite): nothing to multiply.
        return (scale, vec![0.0; values.len()]);
    }
    let zero_point = (-lo / scale).round_ties_even().clamp(0.0, 255.0);
    let centred = values
        .iter()
        .map(|&v| ((v / scale).round_ties_even() + zero_point).clamp(0.0, 255.0) - zero_point)
        .collect();
    (scale, centred)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_follow_dynamic_quantize_linear() {
        // ONNX's example: x = [0, 2, -3, -2.5, 1.34, 0.5] → scale 5/255,
        // zero point 153, q = [153, 255, 0, 26, 221, 179].
        let (scale, centred) = quantize_activations(&[0.0, 2.0, -3.0, -2.5, 1.34, 0.5]);
        assert!((scale - 0.019_607_844).abs() < 1e-9);
        let q: Vec<f32> = centred.iter().map(|c| c + 153.0).collect();
        assert_eq!(q, [153.0, 255.0, 0.0, 26.0, 221.0, 179.0]);
        assert_eq!(quantize_activations(&[0.0, 0.0]).1, [0.0, 0.0]);
    }

    #[test]
    fn outputs_are_within_the_quantization_error_of_the_float_layer() {
        let dev = Device::Cpu;
        let w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 7.0).collect();
        let wt = TensorData::from_f32(&[3, 4], &w).unwrap();
        let (q, s) = ckpt::compress::quantize::quantize(
            &wt,
            ckpt::compress::quantize::Granularity::PerChannel,
            "w",
        )
        .unwrap();
        let bias = Tensor::new(&[0.1f32, -0.2, 0.3], &dev).unwrap();
        let layer = QLinear::new("fc", &q, &s, Some(bias.clone()), &dev).unwrap();
        let x = Tensor::new(&[[0.5f32, -1.0, 2.0, 0.25], [1.5, 0.0, -0.75, 1.0]], &dev).unwrap();
        let y: Vec<Vec<f32>> = layer.forward(&x).unwrap().to_vec2().unwrap();
        let wf = Tensor::from_vec(w, (3, 4), &dev).unwrap();
        let exact: Vec<Vec<f32>> = x
            .matmul(&wf.t().unwrap())
            .unwrap()
            .broadcast_add(&bias)
            .unwrap()
            .to_vec2()
            .unwrap();
        for (a, b) in y.iter().flatten().zip(exact.iter().flatten()) {
            // Half a step of x (2.75/255/2) times Σ|w| plus half a step of
            // w times Σ|x|: well under 0.05 here.
            assert!((a - b).abs() < 0.05, "{a} vs {b}");
        }
        assert!(layer
            .forward(&Tensor::zeros((2, 5), DType::F32, &dev).unwrap())
            .is_err());
    }
}
