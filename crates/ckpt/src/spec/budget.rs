//! The spec's budgets: elements per shape, activations per sample,
//! parameters per model and multiply-adds per layer, so that a spec of a
//! few bytes cannot ask for gigabytes or hours.

use super::{bad, Layer, LayerKind};
use crate::Result;

/// The most elements one sample or one parameter may have.
const MAX_ELEMENTS: u128 = 1 << 40;

/// The most elements one sample's input or any layer's output may have:
/// 2^28, 1 GiB of float32 per sample, well past real models (ResNet-50's
/// largest activation has 0.8 million), so that a spec of a few bytes
/// cannot ask for a run or an export of gigabytes.
pub const MAX_ACTIVATION: usize = 1 << 28;

/// The most parameter and buffer elements a spec may declare: 2^32,
/// 16 GiB of float32, past every model the spec's layer kinds build.
pub const MAX_PARAMETERS: u128 = 1 << 32;

/// The most multiply-adds one layer may take per sample: 2^38, about 60
/// times ResNet-50's whole forward pass (a 4096 x 11008 Linear over 2,048
/// positions takes a third of it), so that a spec of a few bytes cannot
/// ask a run for hours of work.
pub const MAX_WORK: u128 = 1 << 38;

/// What one tensor operation counts as in [`MAX_WORK`], in multiply-adds.
const OP_COST: u128 = 1 << 16;

/// The product of sizes, refused past [`MAX_ELEMENTS`].
pub(super) fn elements(dims: &[usize], at: &str) -> Result<usize> {
    let n = dims
        .iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128))
        .unwrap_or(u128::MAX);
    if n > MAX_ELEMENTS {
        return Err(bad(at, format!("{dims:?} holds more than 2^40 elements")));
    }
    Ok(n as usize)
}

/// Refuses a layer whose work per sample passes [`MAX_WORK`].
pub(super) fn check_work(layer: &Layer, input: &[usize], output: &[usize], at: &str) -> Result<()> {
    let n = |shape: &[usize]| shape.iter().map(|&d| d as u128).product::<u128>();
    let (inputs, outputs) = (n(input), n(output));
    let work = match &layer.kind {
        LayerKind::Linear { in_features, .. } => outputs * *in_features as u128,
        LayerKind::Conv2d {
            in_channels,
            kernel_size,
            groups,
            ..
        } => outputs * (in_channels / groups.max(&1)) as u128 * n(kernel_size),
        LayerKind::MaxPool2d { kernel_size, .. } | LayerKind::AvgPool2d { kernel_size, .. } => {
            outputs * n(kernel_size)
        }
        // Each cell averages at most ceil(H / h) + 1 by ceil(W / w) + 1
        // inputs; an uneven axis costs an operation per window.
        LayerKind::AdaptiveAvgPool2d { output_size } => {
            let window = |i: usize, o: usize| (i.div_ceil(o) + 1) as u128;
            let ops = |i: usize, o: usize| if i.is_multiple_of(o) { 0 } else { o as u128 };
            outputs * window(input[1], output_size[0]) * window(input[2], output_size[1])
                + (ops(input[1], output_size[0]) + ops(input[2], output_size[1])) * OP_COST
        }
        _ => inputs.max(outputs),
    };
    if work > MAX_WORK {
        return Err(bad(
            at,
            format!(
                "{} takes {work} multiply-adds per sample; ckpt accepts at most 2^38 per layer",
                layer.kind.type_name()
            ),
        ));
    }
    Ok(())
}

/// Refuses a shape past [`MAX_ACTIVATION`] elements.
pub(super) fn check_activation(shape: &[usize], at: &str, what: &str) -> Result<()> {
    let n = elements(shape, at)?;
    if n > MAX_ACTIVATION {
        return Err(bad(
            at,
            format!("{what} of shape {shape:?} holds {n} elements per sample; ckpt accepts at most 2^28"),
        ));
    }
    Ok(())
}

/// Refuses a model whose parameters and buffers pass [`MAX_PARAMETERS`]
/// elements, naming the first one past it.
pub(super) fn check_parameters(params: &[super::Param]) -> Result<()> {
    let mut total: u128 = 0;
    for p in params {
        total += elements(&p.shape, &p.name)? as u128;
        if total > MAX_PARAMETERS {
            return Err(bad(
                &p.name,
                format!("the model's parameters pass 2^32 elements here ({total}); ckpt accepts at most 2^32"),
            ));
        }
    }
    Ok(())
}
