//! Element-wise layers: `Relu`, `Sigmoid`, `Tanh`, `Softmax`; SiLU as
//! `x * Sigmoid(x)`, GELU from `Erf` (or its tanh approximation), and
//! `Dropout` as `Identity`.

use super::builder::{attr_int, Builder};
use super::Site;
use crate::LayerKind;

pub(super) fn lower(b: &mut Builder, kind: &LayerKind, s: &Site) -> String {
    let (name, x) = (s.name, s.x);
    match kind {
        LayerKind::ReLU => b.node(name, "Relu", &[x], vec![]),
        LayerKind::Sigmoid => b.node(name, "Sigmoid", &[x], vec![]),
        LayerKind::Tanh => b.node(name, "Tanh", &[x], vec![]),
        LayerKind::SiLU => {
            let sigmoid = b.node(name, "Sigmoid", &[x], vec![]);
            b.node(name, "Mul", &[x, &sigmoid], vec![])
        }
        LayerKind::GELU { tanh } => gelu(b, s, *tanh),
        LayerKind::Softmax { dim } => b.node(name, "Softmax", &[x], vec![attr_int("axis", *dim)]),
        LayerKind::Dropout { .. } => b.node(name, "Identity", &[x], vec![]),
        _ => unreachable!("dispatched by family"),
    }
}

/// `x * (1 + erf(x / √2)) / 2`, or with `tanh(√(2/π) (x + 0.044715 x³))`.
fn gelu(b: &mut Builder, s: &Site, tanh: bool) -> String {
    let (name, x) = (s.name, s.x);
    let half = b.constant_f32(&format!("{name}.half"), &[0.5], &[]);
    let one = b.constant_f32(&format!("{name}.one"), &[1.0], &[]);
    let inner = if tanh {
        let c = b.constant_f32(&format!("{name}.c"), &[0.044715], &[]);
        let k = b.constant_f32(
            &format!("{name}.k"),
            &[(2.0 / std::f32::consts::PI).sqrt()],
            &[],
        );
        let x2 = b.node(name, "Mul", &[x, x], vec![]);
        let x3 = b.node(name, "Mul", &[&x2, x], vec![]);
        let cx3 = b.node(name, "Mul", &[&x3, &c], vec![]);
        let sum = b.node(name, "Add", &[x, &cx3], vec![]);
        let arg = b.node(name, "Mul", &[&sum, &k], vec![]);
        b.node(name, "Tanh", &[&arg], vec![])
    } else {
        let root2 = b.constant_f32(&format!("{name}.sqrt2"), &[std::f32::consts::SQRT_2], &[]);
        let scaled = b.node(name, "Div", &[x, &root2], vec![]);
        b.node(name, "Erf", &[&scaled], vec![])
    };
    let plus = b.node(name, "Add", &[&inner, &one], vec![]);
    let times = b.node(name, "Mul", &[x, &plus], vec![]);
    b.node(name, "Mul", &[&times, &half], vec![])
}
