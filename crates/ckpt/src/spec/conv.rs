//! `Conv2d`: its JSON form, output shape and parameters.

use serde_json::{json, Map, Value as Json};

use super::pool::pooled;
use super::{bad, need_rank, Fields, LayerKind, Params};
use crate::Result;

pub(super) fn parse(f: &Fields) -> Result<LayerKind> {
    Ok(LayerKind::Conv2d {
        in_channels: f.usize("in_channels")?,
        out_channels: f.usize("out_channels")?,
        kernel_size: f.pair("kernel_size", None)?,
        stride: f.pair("stride", Some([1, 1]))?,
        padding: f.pair("padding", Some([0, 0]))?,
        dilation: f.pair("dilation", Some([1, 1]))?,
        groups: f.usize_or("groups", 1)?,
        bias: f.bool_or("bias", true)?,
    })
}

pub(super) fn to_json(kind: &LayerKind, m: &mut Map<String, Json>) {
    let LayerKind::Conv2d {
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        groups,
        bias,
    } = kind
    else {
        unreachable!("dispatched by family")
    };
    m.insert("in_channels".into(), json!(in_channels));
    m.insert("out_channels".into(), json!(out_channels));
    m.insert("kernel_size".into(), json!(kernel_size));
    m.insert("stride".into(), json!(stride));
    m.insert("padding".into(), json!(padding));
    m.insert("dilation".into(), json!(dilation));
    m.insert("groups".into(), json!(groups));
    m.insert("bias".into(), json!(bias));
}

pub(super) fn output(kind: &LayerKind, shape: &[usize], at: &str) -> Result<Vec<usize>> {
    let LayerKind::Conv2d {
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        groups,
        ..
    } = kind
    else {
        unreachable!("dispatched by family")
    };
    need_rank(shape, 3, "Conv2d", at)?;
    if shape[0] != *in_channels {
        return Err(bad(
            at,
            format!(
                "Conv2d expects {in_channels} input channels, gets {}",
                shape[0]
            ),
        ));
    }
    if *groups == 0 || in_channels % groups != 0 || out_channels % groups != 0 {
        return Err(bad(
            at,
            format!("groups {groups} must divide {in_channels} and {out_channels} channels"),
        ));
    }
    if kernel_size.contains(&0) {
        return Err(bad(at, "kernel_size must be positive"));
    }
    let axis = |i: usize| {
        pooled(
            shape[i + 1],
            kernel_size[i],
            stride[i],
            padding[i],
            dilation[i],
            at,
        )
    };
    Ok(vec![*out_channels, axis(0)?, axis(1)?])
}

pub(super) fn params(kind: &LayerKind, p: &mut Params) {
    let LayerKind::Conv2d {
        in_channels,
        out_channels,
        kernel_size,
        groups,
        bias,
        ..
    } = kind
    else {
        unreachable!("dispatched by family")
    };
    p.weight(
        "weight",
        vec![
            *out_channels,
            in_channels / groups.max(&1),
            kernel_size[0],
            kernel_size[1],
        ],
    );
    if *bias {
        p.weight("bias", vec![*out_channels]);
    }
}
