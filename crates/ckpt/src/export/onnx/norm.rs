//! Batch norms as `BatchNormalization`, `LayerNorm` as
//! `LayerNormalization` (opset 17 and up).

use super::builder::{attr_float, attr_int, i64s, unsupported, Builder};
use super::Site;
use crate::{LayerKind, Result};

pub(super) fn lower(b: &mut Builder, kind: &LayerKind, s: &Site) -> Result<String> {
    let name = s.name;
    match kind {
        LayerKind::BatchNorm1d { eps, momentum, .. }
        | LayerKind::BatchNorm2d { eps, momentum, .. } => {
            let (scale, bias, mean, var) = (
                b.param(name, "weight")?,
                b.param(name, "bias")?,
                b.param(name, "running_mean")?,
                b.param(name, "running_var")?,
            );
            let attrs = vec![
                attr_float("epsilon", *eps as f32),
                attr_float("momentum", 1.0 - *momentum as f32),
            ];
            Ok(b.node(
                name,
                "BatchNormalization",
                &[s.x, &scale, &bias, &mean, &var],
                attrs,
            ))
        }
        LayerKind::LayerNorm {
            normalized_shape,
            eps,
            elementwise_affine,
        } => layer_norm(b, s, normalized_shape, *eps, *elementwise_affine),
        _ => unreachable!("dispatched by family"),
    }
}

fn layer_norm(
    b: &mut Builder,
    s: &Site,
    normalized_shape: &[usize],
    eps: f64,
    elementwise_affine: bool,
) -> Result<String> {
    let name = s.name;
    if b.opset < 17 {
        return Err(unsupported(
            name,
            format!(
                "LayerNorm needs opset 17 (LayerNormalization); asked for {}",
                b.opset
            ),
        ));
    }
    let n: usize = normalized_shape.iter().product();
    let (scale, bias) = if elementwise_affine {
        (b.param(name, "weight")?, b.param(name, "bias")?)
    } else {
        let dims = i64s(normalized_shape);
        (
            b.constant_f32(&format!("{name}.ones"), &vec![1.0; n], &dims),
            b.constant_f32(&format!("{name}.zeros"), &vec![0.0; n], &dims),
        )
    };
    let attrs = vec![
        attr_int("axis", -(normalized_shape.len() as i64)),
        attr_float("epsilon", eps as f32),
    ];
    Ok(b.node(name, "LayerNormalization", &[s.x, &scale, &bias], attrs))
}
