//! Element-wise layers without parameters, which keep the sample's
//! shape: `ReLU`, `GELU`, `SiLU`, `Sigmoid`, `Tanh`, `Softmax` and
//! `Dropout` (identity at inference). Their JSON form and output shape.

use serde_json::{json, Map, Value as Json};

use super::{bad, sample_dim, Fields, LayerKind};
use crate::Result;

pub(super) fn parse(type_name: &str, f: &Fields) -> Result<LayerKind> {
    Ok(match type_name {
        "ReLU" => LayerKind::ReLU,
        "GELU" => LayerKind::GELU {
            tanh: match f
                .get("approximate")
                .and_then(Json::as_str)
                .unwrap_or("none")
            {
                "none" => false,
                "tanh" => true,
                other => {
                    return Err(bad(
                        f.at,
                        format!("approximate must be \"none\" or \"tanh\", not {other:?}"),
                    ))
                }
            },
        },
        "SiLU" => LayerKind::SiLU,
        "Sigmoid" => LayerKind::Sigmoid,
        "Tanh" => LayerKind::Tanh,
        "Softmax" => LayerKind::Softmax {
            dim: f.i64_or("dim", -1)?,
        },
        "Dropout" => {
            let p = f.f64_or("p", 0.5)?;
            if !(0.0..1.0).contains(&p) {
                return Err(bad(
                    f.at,
                    format!("dropout probability {p} is not in [0, 1)"),
                ));
            }
            LayerKind::Dropout { p }
        }
        other => unreachable!("{other} is not an activation"),
    })
}

pub(super) fn to_json(kind: &LayerKind, m: &mut Map<String, Json>) {
    match kind {
        LayerKind::GELU { tanh } => {
            m.insert(
                "approximate".into(),
                json!(if *tanh { "tanh" } else { "none" }),
            );
        }
        LayerKind::Softmax { dim } => {
            m.insert("dim".into(), json!(dim));
        }
        LayerKind::Dropout { p } => {
            m.insert("p".into(), json!(p));
        }
        _ => {}
    }
}

pub(super) fn output(kind: &LayerKind, shape: &[usize], at: &str) -> Result<Vec<usize>> {
    if let LayerKind::Softmax { dim } = kind {
        sample_dim(*dim, shape.len(), at, "dim")?;
    }
    Ok(shape.to_vec())
}
