//! `Flatten`: its JSON form and output shape.

use serde_json::{json, Map, Value as Json};

use super::budget::elements;
use super::{bad, sample_dim, Fields, LayerKind};
use crate::Result;

pub(super) fn parse(f: &Fields) -> Result<LayerKind> {
    Ok(LayerKind::Flatten {
        start_dim: f.i64_or("start_dim", 1)?,
        end_dim: f.i64_or("end_dim", -1)?,
    })
}

pub(super) fn to_json(kind: &LayerKind, m: &mut Map<String, Json>) {
    let LayerKind::Flatten { start_dim, end_dim } = kind else {
        unreachable!("dispatched by family")
    };
    m.insert("start_dim".into(), json!(start_dim));
    m.insert("end_dim".into(), json!(end_dim));
}

pub(super) fn output(kind: &LayerKind, shape: &[usize], at: &str) -> Result<Vec<usize>> {
    let LayerKind::Flatten { start_dim, end_dim } = kind else {
        unreachable!("dispatched by family")
    };
    let s = sample_dim(*start_dim, shape.len(), at, "start_dim")?;
    let e = sample_dim(*end_dim, shape.len(), at, "end_dim")?;
    if s > e {
        return Err(bad(at, "start_dim comes after end_dim"));
    }
    let mut out = shape[..s].to_vec();
    out.push(elements(&shape[s..=e], at)?);
    out.extend_from_slice(&shape[e + 1..]);
    Ok(out)
}
