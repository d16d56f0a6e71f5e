//! Blocks: a nested `Sequential`'s layers lowered in turn; a `Residual`
//! block's too, then `Add` of the block's input.

use super::builder::Builder;
use super::{lower_layer, Site};
use crate::{LayerKind, Result};

pub(super) fn lower(b: &mut Builder, kind: &LayerKind, s: &Site) -> Result<String> {
    let (mut inner, mut inner_shape) = (s.x.to_owned(), s.shape.to_vec());
    for l in crate::spec::block_layers(kind) {
        (inner, inner_shape) = lower_layer(
            b,
            l,
            &format!("{}.{}", s.name, l.name),
            &inner,
            &inner_shape,
        )?;
    }
    match kind {
        LayerKind::Residual { .. } => Ok(b.node(s.name, "Add", &[s.x, &inner], vec![])),
        _ => Ok(inner),
    }
}
