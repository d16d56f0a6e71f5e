//! `Residual` blocks (`x + body(x)`): their JSON form (the layers
//! inside, parsed with a depth limit), output shape and parameters.

use serde_json::{Map, Value as Json};

use super::{bad, layer_json, layer_output, parse_layers, Fields, Layer, LayerKind, Params};
use crate::Result;

pub(super) fn parse(f: &Fields, depth: usize, count: &mut usize) -> Result<LayerKind> {
    match f.get("layers") {
        Some(Json::Array(inner)) => Ok(LayerKind::Residual {
            layers: parse_layers(inner, &format!("{}.", f.at), depth + 1, count)?,
        }),
        _ => Err(bad(f.at, "a Residual block needs a list \"layers\"")),
    }
}

pub(super) fn to_json(kind: &LayerKind, m: &mut Map<String, Json>) {
    let layers = inner(kind);
    m.insert(
        "layers".into(),
        Json::Array(layers.iter().map(layer_json).collect()),
    );
}

pub(super) fn output(kind: &LayerKind, shape: &[usize], at: &str) -> Result<Vec<usize>> {
    let mut inner = shape.to_vec();
    for l in self::inner(kind) {
        inner = layer_output(l, &inner, &format!("{at}.{}", l.name))?;
    }
    if inner != shape {
        return Err(bad(
            at,
            format!("a residual block must keep the shape {shape:?}, its layers make {inner:?}"),
        ));
    }
    Ok(inner)
}

pub(super) fn params(kind: &LayerKind, p: &mut Params) {
    for l in inner(kind) {
        p.nested(l);
    }
}

/// The block's layers.
fn inner(kind: &LayerKind) -> &[Layer] {
    let LayerKind::Residual { layers } = kind else {
        unreachable!("dispatched by family")
    };
    layers
}
