//! `Linear` as `Gemm` (one dimension per sample) or `Transpose` +
//! `MatMul` (+ `Add`); a quantized package's dynamic int8 Linear as
//! `DynamicQuantizeLinear` + `MatMulInteger`.

use super::builder::{attr_int, attr_ints, Builder};
use super::Site;
use crate::export::proto::data_type;
use crate::{LayerKind, Result};

pub(super) fn lower(b: &mut Builder, kind: &LayerKind, s: &Site) -> Result<String> {
    let LayerKind::Linear { bias, .. } = kind else {
        unreachable!("dispatched by family")
    };
    let name = s.name;
    if b.dynamic() && b.is_quantized(&format!("{name}.weight")) {
        return dynamic(b, s, *bias);
    }
    let weight = b.param(name, "weight")?;
    if s.shape.len() + 1 == 2 {
        let mut inputs = vec![s.x.to_owned(), weight];
        if *bias {
            inputs.push(b.param(name, "bias")?);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(b.node(name, "Gemm", &inputs, vec![attr_int("transB", 1)]))
    } else {
        let wt = b.node(
            name,
            "Transpose",
            &[&weight],
            vec![attr_ints("perm", &[1, 0])],
        );
        let y = b.node(name, "MatMul", &[s.x, &wt], vec![]);
        add_bias(b, name, y, *bias)
    }
}

/// ckpt-candle's dynamic int8 Linear, operator for operator.
fn dynamic(b: &mut Builder, s: &Site, bias: bool) -> Result<String> {
    let name = s.name;
    let (q, scale, _) = b.int8_weight(&format!("{name}.weight"))?;
    let xq = b.node_n(name, "DynamicQuantizeLinear", &[s.x], vec![], 3);
    let wt = b.node(name, "Transpose", &[&q], vec![attr_ints("perm", &[1, 0])]);
    let sums = b.node(name, "MatMulInteger", &[&xq[0], &wt, &xq[2]], vec![]);
    let sums = b.node(
        name,
        "Cast",
        &[&sums],
        vec![attr_int("to", i64::from(data_type::FLOAT))],
    );
    let scales = b.node(name, "Mul", &[&scale, &xq[1]], vec![]);
    let y = b.node(name, "Mul", &[&sums, &scales], vec![]);
    add_bias(b, name, y, bias)
}

/// `y + bias` when the layer has a bias.
fn add_bias(b: &mut Builder, name: &str, y: String, bias: bool) -> Result<String> {
    if !bias {
        return Ok(y);
    }
    let bias = b.param(name, "bias")?;
    Ok(b.node(name, "Add", &[&y, &bias], vec![]))
}
