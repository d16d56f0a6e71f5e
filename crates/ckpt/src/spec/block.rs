//! Blocks of layers: `Sequential` (`nn.Sequential` nested in the model:
//! its layers in order) and `Residual` (`x + body(x)`). Their JSON form
//! (the layers inside, parsed with a depth limit), output shape and
//! parameters (named `block.0.weight`, as PyTorch names a submodule's).

use serde_json::{Map, Value as Json};

use super::{bad, layer_json, layer_output, parse_layers, Fields, Layer, LayerKind, Params};
use crate::Result;

pub(super) fn parse(
    type_name: &str,
    f: &Fields,
    depth: usize,
    count: &mut usize,
) -> Result<LayerKind> {
    let Some(Json::Array(inner)) = f.get("layers") else {
        return Err(bad(
            f.at,
            format!("a {type_name} block needs a list \"layers\""),
        ));
    };
    let layers = parse_layers(inner, &format!("{}.", f.at), depth + 1, count)?;
    Ok(match type_name {
        "Residual" => LayerKind::Residual { layers },
        _ => LayerKind::Sequential { layers },
    })
}

pub(super) fn to_json(kind: &LayerKind, m: &mut Map<String, Json>) {
    m.insert(
        "layers".into(),
        Json::Array(inner(kind).iter().map(layer_json).collect()),
    );
}

pub(super) fn output(kind: &LayerKind, shape: &[usize], at: &str) -> Result<Vec<usize>> {
    let mut inner = shape.to_vec();
    for l in self::inner(kind) {
        inner = layer_output(l, &inner, &format!("{at}.{}", l.name))?;
    }
    if matches!(kind, LayerKind::Residual { .. }) && inner != shape {
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
pub(crate) fn inner(kind: &LayerKind) -> &[Layer] {
    match kind {
        LayerKind::Residual { layers } | LayerKind::Sequential { layers } => layers,
        _ => unreachable!("dispatched by family"),
    }
}
