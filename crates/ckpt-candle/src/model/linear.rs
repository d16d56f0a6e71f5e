//! `Linear` (uniform ±1/√in_features initialisation), and the int8
//! Linear layers of a quantized package in dynamic mode.

use candle_core::Device;
use ckpt::compress::quantize::SCALE_SUFFIX;
use ckpt::{LayerKind, StateDict};

use super::{uniform, Built, Vars};
use crate::quantized::QLinear;
use crate::{Error, Result};

pub(super) fn build(kind: &LayerKind, v: &Vars) -> Result<Built> {
    let LayerKind::Linear {
        in_features,
        out_features,
        bias,
    } = kind
    else {
        unreachable!("dispatched by kind")
    };
    let bound = 1.0 / (*in_features as f64).sqrt();
    let w =
        v.vb.get_with_hints((*out_features, *in_features), "weight", uniform(bound))?;
    let b = if *bias {
        Some(v.vb.get_with_hints(*out_features, "bias", uniform(bound))?)
    } else {
        None
    };
    Ok(Built::Linear(candle_nn::Linear::new(w, b)))
}

/// Replaces the Linear layers whose weights are quantized (`tensors`) by
/// int8 ones.
pub(super) fn to_int8(
    built: Vec<Built>,
    layers: &[ckpt::Layer],
    prefix: &str,
    tensors: &[String],
    weights: &StateDict,
    device: &Device,
) -> Result<Vec<Built>> {
    built
        .into_iter()
        .zip(layers)
        .map(|(b, layer)| {
            let name = format!("{prefix}{}", layer.name);
            let weight = format!("{name}.weight");
            Ok(match (b, &layer.kind) {
                (Built::Linear(l), _) if tensors.contains(&weight) => {
                    let scale = format!("{weight}{SCALE_SUFFIX}");
                    let (Some(w), Some(s)) = (weights.get(&weight), weights.get(&scale)) else {
                        return Err(Error::InvalidArgument(format!(
                            "{weight}: the quantized weight or its scale is missing"
                        )));
                    };
                    Built::QLinear(QLinear::new(&name, w, s, l.bias().cloned(), device)?)
                }
                (Built::Residual(inner), LayerKind::Residual { layers }) => Built::Residual(
                    to_int8(inner, layers, &format!("{name}."), tensors, weights, device)?,
                ),
                (Built::Sequential(inner), LayerKind::Sequential { layers }) => Built::Sequential(
                    to_int8(inner, layers, &format!("{name}."), tensors, weights, device)?,
                ),
                (b, _) => b,
            })
        })
        .collect()
}
