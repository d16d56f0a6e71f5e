//! `Conv2d` as `Conv`.

use super::builder::{attr_int, attr_ints, i64s, Builder};
use super::Site;
use crate::{LayerKind, Result};

pub(super) fn lower(b: &mut Builder, kind: &LayerKind, s: &Site) -> Result<String> {
    let LayerKind::Conv2d {
        kernel_size,
        stride,
        padding,
        dilation,
        groups,
        bias,
        ..
    } = kind
    else {
        unreachable!("dispatched by family")
    };
    let mut inputs = vec![s.x.to_owned(), b.param(s.name, "weight")?];
    if *bias {
        inputs.push(b.param(s.name, "bias")?);
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let attrs = vec![
        attr_ints("kernel_shape", &i64s(kernel_size)),
        attr_ints("strides", &i64s(stride)),
        attr_ints("pads", &pads(padding)),
        attr_ints("dilations", &i64s(dilation)),
        attr_int("group", *groups as i64),
    ];
    Ok(b.node(s.name, "Conv", &inputs, attrs))
}

/// ONNX's `pads` (begin of each axis, then end) for PyTorch's symmetric
/// padding.
pub(super) fn pads(padding: &[usize; 2]) -> Vec<i64> {
    i64s(&[padding[0], padding[1], padding[0], padding[1]])
}
