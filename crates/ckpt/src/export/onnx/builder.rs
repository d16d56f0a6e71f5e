//! The graph under construction: nodes with unique names, initializers
//! (the model's weights, int8 ones with their scales and zero points, and
//! constants), the operators used; and the attribute and tensor messages
//! nodes are made of.

use std::collections::BTreeMap;

use crate::compress::quantize::{Activations, Granularity, Quantization, SCALE_SUFFIX};
use crate::export::proto::*;
use crate::{DType, Result};
use crate::{StateDict, TensorData};

pub(super) use crate::export::unsupported;

pub(super) fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i,
        ..Default::default()
    }
}

pub(super) fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

pub(super) fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f,
        ..Default::default()
    }
}

pub(super) fn i64s(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&d| d as i64).collect()
}

/// The graph under construction.
pub(super) struct Builder {
    pub(super) opset: i64,
    pub(super) nodes: Vec<NodeProto>,
    pub(super) initializers: Vec<TensorProto>,
    weights: StateDict,
    pub(super) operators: BTreeMap<String, usize>,
    counter: usize,
    quantization: Option<Quantization>,
}

impl Builder {
    /// An empty graph over `weights` (already fitted to the spec).
    pub(super) fn new(
        opset: i64,
        weights: StateDict,
        quantization: Option<Quantization>,
    ) -> Builder {
        Builder {
            opset,
            nodes: Vec::new(),
            initializers: Vec::new(),
            weights,
            operators: BTreeMap::new(),
            counter: 0,
            quantization,
        }
    }

    pub(super) fn node(
        &mut self,
        layer: &str,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> String {
        self.node_n(layer, op, inputs, attrs, 1).remove(0)
    }

    /// A node with `outputs` outputs.
    pub(super) fn node_n(
        &mut self,
        layer: &str,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        outputs: usize,
    ) -> Vec<String> {
        self.counter += 1;
        let name = format!("{layer}/{op}_{}", self.counter);
        let output: Vec<String> = match outputs {
            1 => vec![name.clone()],
            n => (0..n).map(|i| format!("{name}:{i}")).collect(),
        };
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: output.clone(),
            name,
            op_type: op.into(),
            domain: String::new(),
            attribute: attrs,
        });
        *self.operators.entry(op.into()).or_default() += 1;
        output
    }

    /// True when `name` is an int8 weight of a quantized package.
    pub(super) fn is_quantized(&self, name: &str) -> bool {
        self.quantization
            .as_ref()
            .is_some_and(|q| q.tensors.iter().any(|t| t == name))
    }

    /// True when the package's activations are quantized dynamically.
    pub(super) fn dynamic(&self) -> bool {
        self.quantization
            .as_ref()
            .is_some_and(|q| q.activations == Activations::Dynamic)
    }

    /// Parameter `param` of layer `layer` (`fc1`, `weight`), as
    /// [`Builder::weight`].
    pub(super) fn param(&mut self, layer: &str, param: &str) -> Result<String> {
        self.weight(&format!("{layer}.{param}"))
    }

    /// A weight of the model as an initializer, under its state-dict name
    /// (an int8 one behind a `DequantizeLinear`).
    pub(super) fn weight(&mut self, name: &str) -> Result<String> {
        if self.is_quantized(name) {
            let (q, scale, zero) = self.int8_weight(name)?;
            let axis = match self.quantization.as_ref().map(|q| q.granularity) {
                Some(Granularity::PerChannel) => vec![attr_int("axis", 0)],
                _ => vec![],
            };
            return Ok(self.node(name, "DequantizeLinear", &[&q, &scale, &zero], axis));
        }
        self.initializer(name)?;
        Ok(name.to_owned())
    }

    /// `name` from the weights as an initializer, once.
    fn initializer(&mut self, name: &str) -> Result<()> {
        if !self.initializers.iter().any(|t| t.name == name) {
            let t = self
                .weights
                .get(name)
                .ok_or_else(|| unsupported(name, "missing weight"))?;
            self.initializers.push(tensor(name, t)?);
        }
        Ok(())
    }

    /// An int8 weight's initializers: the values, its scales and zero
    /// zero points of the scales' shape.
    pub(super) fn int8_weight(&mut self, name: &str) -> Result<(String, String, String)> {
        let scale = format!("{name}{SCALE_SUFFIX}");
        self.initializer(name)?;
        self.initializer(&scale)?;
        let zero = format!("{name}_zero_point");
        if !self.initializers.iter().any(|t| t.name == zero) {
            let dims = i64s(self.weights[&scale].shape());
            let n = self.weights[&scale].numel();
            self.initializers.push(TensorProto {
                dims,
                data_type: data_type::INT8,
                name: zero.clone(),
                raw_data: vec![0; n],
                ..Default::default()
            });
        }
        Ok((name.to_owned(), scale, zero))
    }

    /// A constant float32 scalar or vector.
    pub(super) fn constant_f32(&mut self, name: &str, values: &[f32], dims: &[i64]) -> String {
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: data_type::FLOAT,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.to_owned()
    }

    pub(super) fn constant_i64(&mut self, name: &str, values: &[i64]) -> String {
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: data_type::INT64,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.to_owned()
    }
}

fn tensor(name: &str, t: &TensorData) -> Result<TensorProto> {
    let data_type = match t.dtype() {
        DType::F32 => data_type::FLOAT,
        DType::I64 => data_type::INT64,
        DType::I8 => data_type::INT8,
        other => {
            return Err(unsupported(
                name,
                format!("weights of dtype {other} (export casts floats to float32 first)"),
            ))
        }
    };
    Ok(TensorProto {
        dims: i64s(t.shape()),
        data_type,
        name: name.into(),
        raw_data: t.bytes().to_vec(),
        ..Default::default()
    })
}
