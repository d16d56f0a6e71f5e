//! `Embedding`: its JSON form, output shape and table.

use serde_json::{json, Map, Value as Json};

use super::{bad, Fields, LayerKind, Params};
use crate::Result;

pub(super) fn parse(f: &Fields) -> Result<LayerKind> {
    Ok(LayerKind::Embedding {
        num_embeddings: f.usize("num_embeddings")?,
        embedding_dim: f.usize("embedding_dim")?,
    })
}

pub(super) fn to_json(kind: &LayerKind, m: &mut Map<String, Json>) {
    let LayerKind::Embedding {
        num_embeddings,
        embedding_dim,
    } = kind
    else {
        unreachable!("dispatched by family")
    };
    m.insert("num_embeddings".into(), json!(num_embeddings));
    m.insert("embedding_dim".into(), json!(embedding_dim));
}

pub(super) fn output(kind: &LayerKind, shape: &[usize], at: &str) -> Result<Vec<usize>> {
    let LayerKind::Embedding {
        num_embeddings,
        embedding_dim,
    } = kind
    else {
        unreachable!("dispatched by family")
    };
    if *num_embeddings == 0 {
        return Err(bad(at, "an Embedding needs at least one entry"));
    }
    let mut out = shape.to_vec();
    out.push(*embedding_dim);
    Ok(out)
}

pub(super) fn params(kind: &LayerKind, p: &mut Params) {
    let LayerKind::Embedding {
        num_embeddings,
        embedding_dim,
    } = kind
    else {
        unreachable!("dispatched by family")
    };
    p.weight("weight", vec![*num_embeddings, *embedding_dim]);
}
