//! `Linear`: its JSON form, output shape and parameters.

use serde_json::{json, Map, Value as Json};

use super::{bad, Fields, LayerKind, Params};
use crate::Result;

pub(super) fn parse(f: &Fields) -> Result<LayerKind> {
    Ok(LayerKind::Linear {
        in_features: f.usize("in_features")?,
        out_features: f.usize("out_features")?,
        bias: f.bool_or("bias", true)?,
    })
}

pub(super) fn to_json(kind: &LayerKind, m: &mut Map<String, Json>) {
    let LayerKind::Linear {
        in_features,
        out_features,
        bias,
    } = kind
    else {
        unreachable!("dispatched by family")
    };
    m.insert("in_features".into(), json!(in_features));
    m.insert("out_features".into(), json!(out_features));
    m.insert("bias".into(), json!(bias));
}

pub(super) fn output(kind: &LayerKind, shape: &[usize], at: &str) -> Result<Vec<usize>> {
    let LayerKind::Linear {
        in_features,
        out_features,
        ..
    } = kind
    else {
        unreachable!("dispatched by family")
    };
    match shape.last() {
        Some(&n) if n == *in_features => {}
        _ => {
            return Err(bad(
                at,
                format!(
                    "Linear expects {in_features} input features, gets a sample of shape {shape:?}"
                ),
            ))
        }
    }
    let mut out = shape.to_vec();
    *out.last_mut().expect("checked") = *out_features;
    Ok(out)
}

pub(super) fn params(kind: &LayerKind, p: &mut Params) {
    let LayerKind::Linear {
        in_features,
        out_features,
        bias,
    } = kind
    else {
        unreachable!("dispatched by family")
    };
    p.weight("weight", vec![*out_features, *in_features]);
    if *bias {
        p.weight("bias", vec![*out_features]);
    }
}
