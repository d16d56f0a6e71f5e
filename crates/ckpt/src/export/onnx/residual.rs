//! A `Residual` block: its layers lowered in turn, then `Add` of the
//! block's input.

use super::builder::Builder;
use super::{lower_layer, Site};
use crate::{LayerKind, Result};

pub(super) fn lower(b: &mut Builder, kind: &LayerKind, s: &Site) -> Result<String> {
    let LayerKind::Residual { layers } = kind else {
        unreachable!("dispatched by family")
    };
    let (mut inner, mut inner_shape) = (s.x.to_owned(), s.shape.to_vec());
    for l in layers {
        (inner, inner_shape) = lower_layer(
            b,
            l,
            &format!("{}.{}", s.name, l.name),
            &inner,
            &inner_shape,
        )?;
    }
    Ok(b.node(s.name, "Add", &[s.x, &inner], vec![]))
}
