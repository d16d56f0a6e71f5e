//! ONNX export: a [`ModelSpec`] and its weights to an ONNX `ModelProto`,
//! weights as initializers (or external data past 2 GiB), every layer
//! kind mapped to standard operators of the chosen opset (13 and up,
//! default 17), a dynamic batch dimension unless fixed.
//!
//! Quantized packages ([`OnnxOptions::quantization`]) keep their int8
//! weights: Linear layers of a dynamic package become
//! `DynamicQuantizeLinear` + `MatMulInteger` (then `Cast`, the two scales
//! multiplied, the bias added: ckpt-candle's arithmetic), and every other
//! quantized weight a `DequantizeLinear` of its int8 initializer.

use std::collections::BTreeMap;
use std::path::Path;

use indexmap::IndexMap;
use prost::Message;

use super::proto::*;
use crate::compress::quantize::{Activations, Granularity, Quantization, SCALE_SUFFIX};
use crate::{
    match_state_dict, Error, LayerKind, LoadRules, ModelSpec, Result, StateDict, TensorData,
};

/// The opset written by default.
pub const DEFAULT_OPSET: i64 = 17;
/// The oldest opset ckpt writes.
pub const MIN_OPSET: i64 = 13;
/// The newest opset ckpt knows.
pub const MAX_OPSET: i64 = 21;
/// Initializers beyond this many bytes go to a `.data` file beside the
/// model (protobuf messages cannot exceed 2 GiB).
pub const EXTERNAL_DATA_THRESHOLD: u64 = 1 << 30;

/// How to export.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OnnxOptions {
    /// The opset (13 ..= 21; 17 by default).
    pub opset: i64,
    /// A fixed batch size; `None` (the default) leaves the batch dimension
    /// dynamic (`batch`).
    pub batch: Option<usize>,
    /// The graph input's name.
    pub input_name: String,
    /// The graph output's name.
    pub output_name: String,
    /// Metadata properties (model version, classes, ...).
    pub metadata: IndexMap<String, String>,
    /// The model's doc string.
    pub doc_string: String,
    /// Write the weights to external data even when small.
    pub external_data: bool,
    /// The weights' quantization, for a quantized package (the weights
    /// then hold the int8 tensors and their scales).
    pub quantization: Option<Quantization>,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        OnnxOptions {
            opset: DEFAULT_OPSET,
            batch: None,
            input_name: "input".into(),
            output_name: "output".into(),
            metadata: IndexMap::new(),
            doc_string: String::new(),
            external_data: false,
            quantization: None,
        }
    }
}

/// What an export produced.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OnnxReport {
    /// Operators used and how often.
    pub operators: BTreeMap<String, usize>,
    /// Trainable parameters.
    pub parameters: u64,
    /// The `.onnx` file's size.
    pub bytes: u64,
    /// The external data file and its size, when one was written.
    pub external: Option<(std::path::PathBuf, u64)>,
}

/// The most output cells an uneven AdaptiveAvgPool2d is exported with
/// (five nodes each).
const MAX_UNEVEN_CELLS: usize = 4096;

fn unsupported(layer: &str, reason: impl Into<String>) -> Error {
    Error::Unsupported {
        layer: layer.to_owned(),
        reason: reason.into(),
    }
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f,
        ..Default::default()
    }
}

fn i64s(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&d| d as i64).collect()
}

/// The graph under construction.
struct Builder {
    opset: i64,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    weights: StateDict,
    operators: BTreeMap<String, usize>,
    counter: usize,
    quantization: Option<Quantization>,
}

impl Builder {
    fn node(
        &mut self,
        layer: &str,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> String {
        self.node_n(layer, op, inputs, attrs, 1).remove(0)
    }

    /// A node with `outputs` outputs.
    fn node_n(
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
    fn is_quantized(&self, name: &str) -> bool {
        self.quantization
            .as_ref()
            .is_some_and(|q| q.tensors.iter().any(|t| t == name))
    }

    /// A weight of the model as an initializer, under its state-dict name
    /// (an int8 one behind a `DequantizeLinear`).
    fn weight(&mut self, name: &str) -> Result<String> {
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
    fn int8_weight(&mut self, name: &str) -> Result<(String, String, String)> {
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
    fn constant_f32(&mut self, name: &str, values: &[f32], dims: &[i64]) -> String {
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: data_type::FLOAT,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.to_owned()
    }

    fn constant_i64(&mut self, name: &str, values: &[i64]) -> String {
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
        crate::DType::F32 => data_type::FLOAT,
        crate::DType::I64 => data_type::INT64,
        crate::DType::I8 => data_type::INT8,
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

/// Builds the `ModelProto` (without writing it).
fn build(
    spec: &ModelSpec,
    weights: StateDict,
    options: &OnnxOptions,
) -> Result<(ModelProto, BTreeMap<String, usize>)> {
    if !(MIN_OPSET..=MAX_OPSET).contains(&options.opset) {
        return Err(unsupported(
            "model",
            format!(
                "opset {} (ckpt writes {MIN_OPSET} to {MAX_OPSET})",
                options.opset
            ),
        ));
    }
    // Weights must fit the spec; floats are exported as float32.
    let expected: Vec<crate::Expected> = spec
        .expected()
        .into_iter()
        .map(|mut e| {
            if e.dtype.is_float() {
                e.dtype = crate::DType::F32;
            }
            e
        })
        .collect();
    let expected = match &options.quantization {
        Some(q) => q.expected(&expected)?,
        None => expected,
    };
    let matched = match_state_dict(weights, &expected, &LoadRules::default())?;
    let weights: StateDict = matched
        .tensors
        .into_iter()
        .map(|(i, t)| (expected[i].name.clone(), t))
        .collect();
    let mut b = Builder {
        opset: options.opset,
        nodes: Vec::new(),
        initializers: Vec::new(),
        weights,
        operators: BTreeMap::new(),
        counter: 0,
        quantization: options.quantization.clone(),
    };
    let mut x = options.input_name.clone();
    let mut shape = spec.input_shape.clone();
    for layer in &spec.layers {
        (x, shape) = lower(&mut b, layer, &layer.name, &x, &shape)?;
    }
    b.nodes.push(NodeProto {
        input: vec![x],
        output: vec![options.output_name.clone()],
        name: "output".into(),
        op_type: "Identity".into(),
        ..Default::default()
    });
    *b.operators.entry("Identity".into()).or_default() += 1;

    let batch = match options.batch {
        Some(n) => DimensionValue::DimValue(n as i64),
        None => DimensionValue::DimParam("batch".into()),
    };
    let value_info = |name: &str, elem: i32, dims: &[usize]| {
        let mut dim = vec![Dimension {
            value: Some(batch.clone()),
        }];
        dim.extend(dims.iter().map(|&d| Dimension {
            value: Some(DimensionValue::DimValue(d as i64)),
        }));
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                tensor_type: Some(TypeProtoTensor {
                    elem_type: elem,
                    shape: Some(TensorShapeProto { dim }),
                }),
            }),
        }
    };
    let input_type = if spec.takes_ids() {
        data_type::INT64
    } else {
        data_type::FLOAT
    };
    let graph = GraphProto {
        node: b.nodes,
        name: spec.name.clone(),
        initializer: b.initializers,
        doc_string: String::new(),
        input: vec![value_info(
            &options.input_name,
            input_type,
            &spec.input_shape,
        )],
        output: vec![value_info(
            &options.output_name,
            data_type::FLOAT,
            &spec.output_shape()?,
        )],
    };
    let model = ModelProto {
        ir_version: if options.opset <= 14 {
            7
        } else if options.opset <= 18 {
            8
        } else {
            9
        },
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: options.opset,
        }],
        producer_name: "ckpt".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string: options.doc_string.clone(),
        graph: Some(graph),
        metadata_props: options
            .metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
    };
    Ok((model, b.operators))
}

/// Lowers one layer; returns its output's name and per-sample shape.
fn lower(
    b: &mut Builder,
    layer: &crate::Layer,
    name: &str,
    x: &str,
    shape: &[usize],
) -> Result<(String, Vec<usize>)> {
    let out_shape = crate::spec::layer_output(layer, shape, name)?;
    let w = |b: &mut Builder, p: &str| b.weight(&format!("{name}.{p}"));
    let rank = shape.len() + 1;
    let dynamic = b
        .quantization
        .as_ref()
        .is_some_and(|q| q.activations == Activations::Dynamic);
    let y = match &layer.kind {
        LayerKind::Linear { bias, .. } if dynamic && b.is_quantized(&format!("{name}.weight")) => {
            // ckpt-candle's dynamic int8 Linear, operator for operator.
            let (q, scale, _) = b.int8_weight(&format!("{name}.weight"))?;
            let xq = b.node_n(name, "DynamicQuantizeLinear", &[x], vec![], 3);
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
            if *bias {
                let bias = w(b, "bias")?;
                b.node(name, "Add", &[&y, &bias], vec![])
            } else {
                y
            }
        }
        LayerKind::Linear { bias, .. } => {
            let weight = w(b, "weight")?;
            if rank == 2 {
                let mut inputs = vec![x.to_owned(), weight];
                if *bias {
                    inputs.push(w(b, "bias")?);
                }
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                b.node(name, "Gemm", &inputs, vec![attr_int("transB", 1)])
            } else {
                let wt = b.node(
                    name,
                    "Transpose",
                    &[&weight],
                    vec![attr_ints("perm", &[1, 0])],
                );
                let y = b.node(name, "MatMul", &[x, &wt], vec![]);
                if *bias {
                    let bias = w(b, "bias")?;
                    b.node(name, "Add", &[&y, &bias], vec![])
                } else {
                    y
                }
            }
        }
        LayerKind::Conv2d {
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            ..
        } => {
            let mut inputs = vec![x.to_owned(), w(b, "weight")?];
            if *bias {
                inputs.push(w(b, "bias")?);
            }
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            let attrs = vec![
                attr_ints("kernel_shape", &i64s(kernel_size)),
                attr_ints("strides", &i64s(stride)),
                attr_ints(
                    "pads",
                    &i64s(&[padding[0], padding[1], padding[0], padding[1]]),
                ),
                attr_ints("dilations", &i64s(dilation)),
                attr_int("group", *groups as i64),
            ];
            b.node(name, "Conv", &inputs, attrs)
        }
        LayerKind::BatchNorm1d { eps, momentum, .. }
        | LayerKind::BatchNorm2d { eps, momentum, .. } => {
            let (s, bias, m, v) = (
                w(b, "weight")?,
                w(b, "bias")?,
                w(b, "running_mean")?,
                w(b, "running_var")?,
            );
            let attrs = vec![
                attr_float("epsilon", *eps as f32),
                attr_float("momentum", 1.0 - *momentum as f32),
            ];
            b.node(name, "BatchNormalization", &[x, &s, &bias, &m, &v], attrs)
        }
        LayerKind::LayerNorm {
            normalized_shape,
            eps,
            elementwise_affine,
        } => {
            if b.opset < 17 {
                return Err(unsupported(
                    name,
                    format!(
                        "LayerNorm needs opset 17 (LayerNormalization); asked for {}",
                        b.opset
                    ),
                ));
            }
            let n: usize = normalized_shape.iter().product();
            let (scale, bias) = if *elementwise_affine {
                (w(b, "weight")?, w(b, "bias")?)
            } else {
                let dims = i64s(normalized_shape);
                (
                    b.constant_f32(&format!("{name}.ones"), &vec![1.0; n], &dims),
                    b.constant_f32(&format!("{name}.zeros"), &vec![0.0; n], &dims),
                )
            };
            let attrs = vec![
                attr_int("axis", -(normalized_shape.len() as i64)),
                attr_float("epsilon", *eps as f32),
            ];
            b.node(name, "LayerNormalization", &[x, &scale, &bias], attrs)
        }
        LayerKind::Embedding { .. } => {
            let weight = w(b, "weight")?;
            b.node(name, "Gather", &[&weight, x], vec![attr_int("axis", 0)])
        }
        LayerKind::ReLU => b.node(name, "Relu", &[x], vec![]),
        LayerKind::Sigmoid => b.node(name, "Sigmoid", &[x], vec![]),
        LayerKind::Tanh => b.node(name, "Tanh", &[x], vec![]),
        LayerKind::SiLU => {
            let s = b.node(name, "Sigmoid", &[x], vec![]);
            b.node(name, "Mul", &[x, &s], vec![])
        }
        LayerKind::GELU { tanh } => {
            let half = b.constant_f32(&format!("{name}.half"), &[0.5], &[]);
            let one = b.constant_f32(&format!("{name}.one"), &[1.0], &[]);
            let inner = if *tanh {
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
                let root2 =
                    b.constant_f32(&format!("{name}.sqrt2"), &[std::f32::consts::SQRT_2], &[]);
                let scaled = b.node(name, "Div", &[x, &root2], vec![]);
                b.node(name, "Erf", &[&scaled], vec![])
            };
            let plus = b.node(name, "Add", &[&inner, &one], vec![]);
            let times = b.node(name, "Mul", &[x, &plus], vec![]);
            b.node(name, "Mul", &[&times, &half], vec![])
        }
        LayerKind::Softmax { dim } => b.node(name, "Softmax", &[x], vec![attr_int("axis", *dim)]),
        LayerKind::Dropout { .. } => b.node(name, "Identity", &[x], vec![]),
        LayerKind::Flatten { .. } => {
            let mut target = vec![0i64]; // 0 copies the batch dimension
            target.extend(i64s(&out_shape));
            let s = b.constant_i64(&format!("{name}.shape"), &target);
            b.node(name, "Reshape", &[x, &s], vec![])
        }
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
                attr_ints(
                    "pads",
                    &i64s(&[padding[0], padding[1], padding[0], padding[1]]),
                ),
            ];
            let op = if matches!(layer.kind, LayerKind::MaxPool2d { .. }) {
                "MaxPool"
            } else {
                attrs.push(attr_int("count_include_pad", 1));
                "AveragePool"
            };
            b.node(name, op, &[x], attrs)
        }
        LayerKind::AdaptiveAvgPool2d { output_size } => {
            let (h, w_) = (shape[1], shape[2]);
            if *output_size == [1, 1] {
                b.node(name, "GlobalAveragePool", &[x], vec![])
            } else if h % output_size[0] == 0 && w_ % output_size[1] == 0 {
                let k = [h / output_size[0], w_ / output_size[1]];
                b.node(
                    name,
                    "AveragePool",
                    &[x],
                    vec![
                        attr_ints("kernel_shape", &i64s(&k)),
                        attr_ints("strides", &i64s(&k)),
                    ],
                )
            } else {
                // Uneven windows: each output cell is the mean of its own
                // slice (PyTorch's floor/ceil bounds), concatenated back.
                let cells = output_size[0] * output_size[1];
                if cells > MAX_UNEVEN_CELLS {
                    return Err(unsupported(
                        name,
                        format!("an uneven AdaptiveAvgPool2d to {output_size:?} needs {cells} slices (at most {MAX_UNEVEN_CELLS}); choose an output size that divides the input {:?}", [h, w_]),
                    ));
                }
                let mut rows = Vec::new();
                for r in 0..output_size[0] {
                    let (h0, h1) = (
                        r * h / output_size[0],
                        ((r + 1) * h).div_ceil(output_size[0]),
                    );
                    let mut cells = Vec::new();
                    for c in 0..output_size[1] {
                        let (w0, w1) = (
                            c * w_ / output_size[1],
                            ((c + 1) * w_).div_ceil(output_size[1]),
                        );
                        let cell = format!("{name}.cell{r}_{c}");
                        let starts =
                            b.constant_i64(&format!("{cell}.starts"), &[h0 as i64, w0 as i64]);
                        let ends = b.constant_i64(&format!("{cell}.ends"), &[h1 as i64, w1 as i64]);
                        let axes = b.constant_i64(&format!("{cell}.axes"), &[2, 3]);
                        let slice = b.node(name, "Slice", &[x, &starts, &ends, &axes], vec![]);
                        let mean = if b.opset >= 18 {
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
                        };
                        cells.push(mean);
                    }
                    let refs: Vec<&str> = cells.iter().map(String::as_str).collect();
                    rows.push(b.node(name, "Concat", &refs, vec![attr_int("axis", 3)]));
                }
                let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
                b.node(name, "Concat", &refs, vec![attr_int("axis", 2)])
            }
        }
        LayerKind::Residual { layers } => {
            let (mut inner, mut inner_shape) = (x.to_owned(), shape.to_vec());
            for l in layers {
                (inner, inner_shape) =
                    lower(b, l, &format!("{name}.{}", l.name), &inner, &inner_shape)?;
            }
            b.node(name, "Add", &[x, &inner], vec![])
        }
    };
    Ok((y, out_shape))
}

/// The exported model as bytes (weights inline; fails past 2 GiB).
///
/// ```
/// let spec = ckpt::ModelSpec::from_json(r#"{"name": "lin", "input_shape": [2], "layers": [
///     {"name": "fc", "type": "Linear", "in_features": 2, "out_features": 1}]}"#).unwrap();
/// let mut w = ckpt::StateDict::new();
/// w.insert("fc.weight".into(), ckpt::TensorData::from_f32(&[1, 2], &[1.0, 2.0]).unwrap());
/// w.insert("fc.bias".into(), ckpt::TensorData::from_f32(&[1], &[0.5]).unwrap());
/// let bytes = ckpt::export::onnx::to_bytes(&spec, w, &Default::default()).unwrap();
/// assert!(bytes.len() > 100);
/// ```
pub fn to_bytes(spec: &ModelSpec, weights: StateDict, options: &OnnxOptions) -> Result<Vec<u8>> {
    let (model, _) = build(spec, weights, options)?;
    if model.encoded_len() as u64 >= (2u64 << 30) {
        return Err(unsupported(
            "model",
            "over 2 GiB: export to a file, which moves the weights to external data",
        ));
    }
    Ok(model.encode_to_vec())
}

/// Exports to `path` (atomically). Weights over [`EXTERNAL_DATA_THRESHOLD`]
/// (or all, with `options.external_data`) go to `PATH.data` beside it,
/// as ONNX external data.
pub fn export(
    spec: &ModelSpec,
    weights: StateDict,
    options: &OnnxOptions,
    path: &Path,
) -> Result<OnnxReport> {
    let (mut model, operators) = build(spec, weights, options)?;
    let graph = model.graph.as_mut().expect("built with a graph");
    let total: u64 = graph
        .initializer
        .iter()
        .map(|t| t.raw_data.len() as u64)
        .sum();
    let mut external = None;
    if options.external_data || total > EXTERNAL_DATA_THRESHOLD {
        let data_path = path.with_extension("onnx.data");
        let location = data_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("model.onnx.data")
            .to_owned();
        let mut offset = 0u64;
        let mut blobs = Vec::new();
        for t in &mut graph.initializer {
            let bytes = std::mem::take(&mut t.raw_data);
            // Keep each tensor 64-byte aligned, as onnx's own writer does.
            let pad = (64 - offset % 64) % 64;
            offset += pad;
            t.external_data = vec![
                StringStringEntryProto {
                    key: "location".into(),
                    value: location.clone(),
                },
                StringStringEntryProto {
                    key: "offset".into(),
                    value: offset.to_string(),
                },
                StringStringEntryProto {
                    key: "length".into(),
                    value: bytes.len().to_string(),
                },
            ];
            t.data_location = 1;
            offset += bytes.len() as u64;
            blobs.push((pad, bytes));
        }
        crate::storage::write_atomic(&data_path, false, |out| {
            for (pad, bytes) in &blobs {
                out.write_all(&vec![0u8; *pad as usize])?;
                out.write_all(bytes)?;
            }
            Ok(())
        })?;
        external = Some((data_path, offset));
    }
    let bytes = model.encode_to_vec();
    crate::storage::write_atomic(path, false, |out| out.write_all(&bytes))?;
    Ok(OnnxReport {
        operators,
        parameters: spec.parameter_count(),
        bytes: bytes.len() as u64,
        external,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uneven_adaptive_pool_of_millions_of_cells_is_refused_not_built() {
        let spec = ModelSpec::from_json(
            r#"{"name": "p", "input_shape": [3, 7, 7], "layers": [
                {"name": "a", "type": "AdaptiveAvgPool2d", "output_size": [4096, 4096]}]}"#,
        )
        .unwrap();
        let err = to_bytes(&spec, StateDict::new(), &OnnxOptions::default()).unwrap_err();
        assert!(err.to_string().contains("16777216 slices"), "{err}");
        // Small uneven pools still export.
        let small = ModelSpec::from_json(
            r#"{"name": "p", "input_shape": [3, 7, 7], "layers": [
                {"name": "a", "type": "AdaptiveAvgPool2d", "output_size": [3, 2]}]}"#,
        )
        .unwrap();
        assert!(to_bytes(&small, StateDict::new(), &OnnxOptions::default()).is_ok());
    }
}
