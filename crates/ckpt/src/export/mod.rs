//! Export to formats that serving stacks run: [`onnx`] and
//! [`torchscript`]. Both take a spec and its weights, fitted here.

pub mod onnx;
mod proto;
pub mod torchscript;

use crate::compress::quantize::Quantization;
use crate::{match_state_dict, Error, Layer, LayerKind, LoadRules, ModelSpec, Result, StateDict};

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

/// Refuses an Embedding anywhere but at the model's input (first, or
/// first in leading Sequentials): an embedding (`torch.embedding`, ONNX
/// `Gather`) takes integer ids, which only the input holds.
pub(crate) fn ids_only_at_input(layers: &[Layer], at_input: bool, prefix: &str) -> Result<()> {
    for (i, l) in layers.iter().enumerate() {
        let first = at_input && i == 0;
        let at = format!("{prefix}{}", l.name);
        match &l.kind {
            LayerKind::Embedding { .. } if !first => {
                return Err(unsupported(
                    &at,
                    "an Embedding takes integer ids, which only the model's input holds",
                ))
            }
            LayerKind::Sequential { layers } => {
                ids_only_at_input(layers, first, &format!("{at}."))?
            }
            LayerKind::Residual { layers } => ids_only_at_input(layers, false, &format!("{at}."))?,
            _ => {}
        }
    }
    Ok(())
}
