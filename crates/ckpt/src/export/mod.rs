//! Export to formats that serving stacks run: [`onnx`] and
//! [`torchscript`]. Both take a spec and its weights, fitted here.

pub mod onnx;
mod proto;
pub mod torchscript;

use crate::compress::quantize::Quantization;
use crate::{match_state_dict, Error, LoadRules, ModelSpec, Result, StateDict};

/// The weights fitted to the spec, in its order; floats are exported as
/// float32, a quantized package's weights as int8 with their scales.
pub(crate) fn fit_weights(
    spec: &ModelSpec,
    weights: StateDict,
    quantization: Option<&Quantization>,
) -> Result<StateDict> {
    let expected: Vec<crate::Expected> = spec
        .expected()
        .into_iter()
        .map(|mut e| {
            if e.dtype.is_float() {
                e.dtype = crate::DType::F32;
            }
            e
        })
        .collect();
    let expected = match quantization {
        Some(q) => q.expected(&expected)?,
        None => expected,
    };
    let matched = match_state_dict(weights, &expected, &LoadRules::default())?;
    Ok(matched
        .tensors
        .into_iter()
        .map(|(i, t)| (expected[i].name.clone(), t))
        .collect())
}

/// An export that cannot express `layer` (its dotted name, or `model`).
pub(crate) fn unsupported(layer: &str, reason: impl Into<String>) -> Error {
    Error::Unsupported {
        layer: layer.to_owned(),
        reason: reason.into(),
    }
}
