//! Pooling layers, `MaxPool2d`, `AvgPool2d` and `AdaptiveAvgPool2d`:
//! their JSON form and output shape, and the window arithmetic they
//! share with `Conv2d`.

use serde_json::{json, Map, Value as Json};

use super::{bad, need_rank, Fields, LayerKind};
use crate::Result;

pub(super) fn parse(type_name: &str, f: &Fields) -> Result<LayerKind> {
    if type_name == "AdaptiveAvgPool2d" {
        return Ok(LayerKind::AdaptiveAvgPool2d {
            output_size: f.pair("output_size", None)?,
        });
    }
    let kernel_size = f.pair("kernel_size", None)?;
    let stride = f.pair("stride", Some(kernel_size))?;
    let padding = f.pair("padding", Some([0, 0]))?;
    Ok(if type_name == "MaxPool2d" {
        LayerKind::MaxPool2d {
            kernel_size,
            stride,
            padding,
        }
    } else {
        LayerKind::AvgPool2d {
            kernel_size,
            stride,
            padding,
        }
    })
}

pub(super) fn to_json(kind: &LayerKind, m: &mut Map<String, Json>) {
    match kind {
        LayerKind::MaxPool2d {
            kernel_size,
            stride,
            padding,
        }
        | LayerKind::AvgPool2d {
            kernel_size,
            stride,
            padding,
        } => {
            m.insert("kernel_size".into(), json!(kernel_size));
            m.insert("stride".into(), json!(stride));
            m.insert("padding".into(), json!(padding));
        }
        LayerKind::AdaptiveAvgPool2d { output_size } => {
            m.insert("output_size".into(), json!(output_size));
        }
        _ => unreachable!("dispatched by family"),
    }
}

pub(super) fn output(kind: &LayerKind, shape: &[usize], at: &str) -> Result<Vec<usize>> {
    match kind {
        LayerKind::MaxPool2d {
            kernel_size,
            stride,
            padding,
        }
        | LayerKind::AvgPool2d {
            kernel_size,
            stride,
            padding,
        } => {
            need_rank(shape, 3, kind.type_name(), at)?;
            if kernel_size.contains(&0)
                || padding[0] * 2 > kernel_size[0]
                || padding[1] * 2 > kernel_size[1]
            {
                return Err(bad(
                    at,
                    "padding must be at most half the kernel size, and the kernel positive",
                ));
            }
            Ok(vec![
                shape[0],
                pooled(shape[1], kernel_size[0], stride[0], padding[0], 1, at)?,
                pooled(shape[2], kernel_size[1], stride[1], padding[1], 1, at)?,
            ])
        }
        LayerKind::AdaptiveAvgPool2d { output_size } => {
            need_rank(shape, 3, "AdaptiveAvgPool2d", at)?;
            if output_size.contains(&0) {
                return Err(bad(at, "output_size must be positive"));
            }
            Ok(vec![shape[0], output_size[0], output_size[1]])
        }
        _ => unreachable!("dispatched by family"),
    }
}

/// The number of windows of `kernel` (spread by `dilation`) that fit
/// `size` padded by `pad` on both sides, `stride` apart.
pub(super) fn pooled(
    size: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    at: &str,
) -> Result<usize> {
    if stride == 0 {
        return Err(bad(at, "stride must be positive"));
    }
    if dilation == 0 {
        return Err(bad(at, "dilation must be positive"));
    }
    let span = dilation * (kernel - 1) + 1;
    if size + 2 * pad < span {
        return Err(bad(
            at,
            format!("a window of {span} with padding {pad} does not fit an input of {size}"),
        ));
    }
    Ok((size + 2 * pad - span) / stride + 1)
}
