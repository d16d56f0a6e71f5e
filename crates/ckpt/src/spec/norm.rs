//! Normalisation layers, `BatchNorm1d`, `BatchNorm2d` and `LayerNorm`:
//! their JSON form, output shape and parameters (with the batch norms'
//! running statistics as buffers).

use serde_json::{json, Map, Value as Json};

use super::{bad, need_rank, Fields, LayerKind, Params};
use crate::{DType, Result};

pub(super) fn parse(type_name: &str, f: &Fields) -> Result<LayerKind> {
    if type_name == "LayerNorm" {
        return Ok(LayerKind::LayerNorm {
            normalized_shape: f.list("normalized_shape")?,
            eps: f.f64_or("eps", 1e-5)?,
            elementwise_affine: f.bool_or("elementwise_affine", true)?,
        });
    }
    let (num_features, eps, momentum) = (
        f.usize("num_features")?,
        f.f64_or("eps", 1e-5)?,
        f.f64_or("momentum", 0.1)?,
    );
    Ok(if type_name == "BatchNorm1d" {
        LayerKind::BatchNorm1d {
            num_features,
            eps,
            momentum,
        }
    } else {
        LayerKind::BatchNorm2d {
            num_features,
            eps,
            momentum,
        }
    })
}

pub(super) fn to_json(kind: &LayerKind, m: &mut Map<String, Json>) {
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
        } => {
            m.insert("num_features".into(), json!(num_features));
            m.insert("eps".into(), json!(eps));
            m.insert("momentum".into(), json!(momentum));
        }
        LayerKind::LayerNorm {
            normalized_shape,
            eps,
            elementwise_affine,
        } => {
            m.insert("normalized_shape".into(), json!(normalized_shape));
            m.insert("eps".into(), json!(eps));
            m.insert("elementwise_affine".into(), json!(elementwise_affine));
        }
        _ => unreachable!("dispatched by family"),
    }
}

pub(super) fn output(kind: &LayerKind, shape: &[usize], at: &str) -> Result<Vec<usize>> {
    match kind {
        LayerKind::BatchNorm1d { num_features, .. } => {
            if !(shape.len() == 1 || shape.len() == 2) || shape[0] != *num_features {
                return Err(bad(at, format!("BatchNorm1d({num_features}) expects samples of shape [{num_features}] or [{num_features}, L], gets {shape:?}")));
            }
        }
        LayerKind::BatchNorm2d { num_features, .. } => {
            need_rank(shape, 3, "BatchNorm2d", at)?;
            if shape[0] != *num_features {
                return Err(bad(
                    at,
                    format!(
                        "BatchNorm2d expects {num_features} channels, gets {}",
                        shape[0]
                    ),
                ));
            }
        }
        LayerKind::LayerNorm {
            normalized_shape, ..
        } => {
            if normalized_shape.is_empty() || !shape.ends_with(normalized_shape) {
                return Err(bad(at, format!("LayerNorm over {normalized_shape:?} does not fit samples of shape {shape:?}")));
            }
        }
        _ => unreachable!("dispatched by family"),
    }
    Ok(shape.to_vec())
}

pub(super) fn params(kind: &LayerKind, p: &mut Params) {
    match kind {
        LayerKind::BatchNorm1d { num_features, .. }
        | LayerKind::BatchNorm2d { num_features, .. } => {
            p.weight("weight", vec![*num_features]);
            p.weight("bias", vec![*num_features]);
            p.buffer("running_mean", vec![*num_features], DType::F32);
            p.buffer("running_var", vec![*num_features], DType::F32);
            p.buffer("num_batches_tracked", vec![], DType::I64);
        }
        LayerKind::LayerNorm {
            normalized_shape,
            elementwise_affine: true,
            ..
        } => {
            p.weight("weight", normalized_shape.clone());
            p.weight("bias", normalized_shape.clone());
        }
        LayerKind::LayerNorm { .. } => {}
        _ => unreachable!("dispatched by family"),
    }
}
