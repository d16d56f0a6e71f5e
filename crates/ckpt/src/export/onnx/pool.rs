//! Pools: `MaxPool`, `AveragePool` (zero padding counted), and
//! AdaptiveAvgPool2d as `GlobalAveragePool`, an `AveragePool` when the
//! windows are even, or else one `Slice` + `ReduceMean` per output cell.

use super::builder::{attr_int, attr_ints, i64s, unsupported, Builder};
use super::conv::pads;
use super::Site;
use crate::{LayerKind, Result};

/// The most output cells an uneven AdaptiveAvgPool2d is exported with
/// (five nodes each).
const MAX_UNEVEN_CELLS: usize = 4096;

pub(super) fn lower(b: &mut Builder, kind: &LayerKind, s: &Site) -> Result<String> {
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
            let mut attrs = vec![
                attr_ints("kernel_shape", &i64s(kernel_size)),
                attr_ints("strides", &i64s(stride)),
                attr_ints("pads", &pads(padding)),
            ];
            let op = if matches!(kind, LayerKind::MaxPool2d { .. }) {
                "MaxPool"
            } else {
                attrs.push(attr_int("count_include_pad", 1));
                "AveragePool"
            };
            Ok(b.node(s.name, op, &[s.x], attrs))
        }
        LayerKind::AdaptiveAvgPool2d { output_size } => adaptive(b, s, *output_size),
        _ => unreachable!("dispatched by family"),
    }
}

fn adaptive(b: &mut Builder, s: &Site, output_size: [usize; 2]) -> Result<String> {
    let (name, x) = (s.name, s.x);
    let (h, w) = (s.shape[1], s.shape[2]);
    if output_size == [1, 1] {
        return Ok(b.node(name, "GlobalAveragePool", &[x], vec![]));
    }
    if h % output_size[0] == 0 && w % output_size[1] == 0 {
        let k = [h / output_size[0], w / output_size[1]];
        return Ok(b.node(
            name,
            "AveragePool",
            &[x],
            vec![
                attr_ints("kernel_shape", &i64s(&k)),
                attr_ints("strides", &i64s(&k)),
            ],
        ));
    }
    // Uneven windows: each output cell is the mean of its own slice
    // (PyTorch's floor/ceil bounds), concatenated back.
    let cells = output_size[0] * output_size[1];
    if cells > MAX_UNEVEN_CELLS {
        return Err(unsupported(
            name,
            format!("an uneven AdaptiveAvgPool2d to {output_size:?} needs {cells} slices (at most {MAX_UNEVEN_CELLS}); choose an output size that divides the input {:?}", [h, w]),
        ));
    }
    let window = |i: usize, n: usize, out: usize| (i * n / out, ((i + 1) * n).div_ceil(out));
    let mut rows = Vec::new();
    for r in 0..output_size[0] {
        let mut cells = Vec::new();
        for c in 0..output_size[1] {
            let bounds = [window(r, h, output_size[0]), window(c, w, output_size[1])];
            cells.push(cell_mean(b, s, r, c, bounds));
        }
        let refs: Vec<&str> = cells.iter().map(String::as_str).collect();
        rows.push(b.node(name, "Concat", &refs, vec![attr_int("axis", 3)]));
    }
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    Ok(b.node(name, "Concat", &refs, vec![attr_int("axis", 2)]))
}

/// The mean of output cell (`r`, `c`): rows `bounds[0]` and columns
/// `bounds[1]` (start, end) of the input.
fn cell_mean(b: &mut Builder, s: &Site, r: usize, c: usize, bounds: [(usize, usize); 2]) -> String {
    let name = s.name;
    let [(h0, h1), (w0, w1)] = bounds;
    let cell = format!("{name}.cell{r}_{c}");
    let starts = b.constant_i64(&format!("{cell}.starts"), &[h0 as i64, w0 as i64]);
    let ends = b.constant_i64(&format!("{cell}.ends"), &[h1 as i64, w1 as i64]);
    let axes = b.constant_i64(&format!("{cell}.axes"), &[2, 3]);
    let slice = b.node(name, "Slice", &[s.x, &starts, &ends, &axes], vec![]);
    if b.opset >= 18 {
        b.node(
            name,
            "ReduceMean",
            &[&slice, &axes],
            vec![attr_int("keepdims", 1)],
        )
    } else {
        b.node(
            name,
            "ReduceMean",
            &[&slice],
            vec![attr_ints("axes", &[2, 3]), attr_int("keepdims", 1)],
        )
    }
}
