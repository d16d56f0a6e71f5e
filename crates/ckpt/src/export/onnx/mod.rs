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
//!
//! Each family of layer kinds (as in [`crate::spec`]) is lowered by its own
//! file: `linear` (with the dynamic int8 Linear), `conv`, `norm`,
//! `embedding`, `activation`, `flatten`, `pool`, `block`; `builder`
//! holds the graph under construction.

mod activation;
mod block;
mod builder;
mod conv;
mod embedding;
mod flatten;
mod linear;
mod norm;
mod pool;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use prost::Message;

use super::proto::*;
use crate::compress::quantize::Quantization;
use crate::spec::Family;
use crate::{Layer, ModelSpec, Result, StateDict};
use builder::{unsupported, Builder};

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

/// Refuses an opset ckpt does not write.
fn check_opset(opset: i64) -> Result<()> {
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(unsupported(
            "model",
            format!("opset {opset} (ckpt writes {MIN_OPSET} to {MAX_OPSET})"),
        ));
    }
    Ok(())
}

/// Builds the `ModelProto` (without writing it).
fn build(
    spec: &ModelSpec,
    weights: StateDict,
    options: &OnnxOptions,
) -> Result<(ModelProto, BTreeMap<String, usize>)> {
    check_opset(options.opset)?;
    super::ids_only_at_input(&spec.layers, true, "")?;
    let weights = super::fit_weights(spec, weights, options.quantization.as_ref())?;
    let mut b = Builder::new(options.opset, weights, options.quantization.clone());
    let mut x = options.input_name.clone();
    let mut shape = spec.input_shape.clone();
    for layer in &spec.layers {
        (x, shape) = lower_layer(&mut b, layer, &layer.name, &x, &shape)?;
    }
    b.nodes.push(NodeProto {
        input: vec![x],
        output: vec![options.output_name.clone()],
        name: "output".into(),
        op_type: "Identity".into(),
        ..Default::default()
    });
    *b.operators.entry("Identity".into()).or_default() += 1;
    let graph = GraphProto {
        node: b.nodes,
        name: spec.name.clone(),
        initializer: b.initializers,
        doc_string: String::new(),
        input: vec![value_info(
            &options.input_name,
            if spec.takes_ids() {
                data_type::INT64
            } else {
                data_type::FLOAT
            },
            options.batch,
            &spec.input_shape,
        )],
        output: vec![value_info(
            &options.output_name,
            data_type::FLOAT,
            options.batch,
            &spec.output_shape()?,
        )],
    };
    Ok((model(graph, options), b.operators))
}

/// A graph input's or output's type: `batch` (fixed, or the symbol
/// `batch`) then one sample's `dims`.
fn value_info(name: &str, elem: i32, batch: Option<usize>, dims: &[usize]) -> ValueInfoProto {
    let batch = match batch {
        Some(n) => DimensionValue::DimValue(n as i64),
        None => DimensionValue::DimParam("batch".into()),
    };
    let mut dim = vec![Dimension { value: Some(batch) }];
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
}

/// The model around `graph`: IR version for the opset, producer,
/// doc string and metadata.
fn model(graph: GraphProto, options: &OnnxOptions) -> ModelProto {
    ModelProto {
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
    }
}

/// One layer being lowered: its name, its input's name, and one
/// sample's shape in and out.
struct Site<'a> {
    name: &'a str,
    x: &'a str,
    shape: &'a [usize],
    out_shape: &'a [usize],
}

/// Lowers one layer; returns its output's name and per-sample shape.
fn lower_layer(
    b: &mut Builder,
    layer: &Layer,
    name: &str,
    x: &str,
    shape: &[usize],
) -> Result<(String, Vec<usize>)> {
    let out_shape = crate::spec::layer_output(layer, shape, name)?;
    let s = &Site {
        name,
        x,
        shape,
        out_shape: &out_shape,
    };
    let kind = &layer.kind;
    let y = match kind.family() {
        Family::Linear => linear::lower(b, kind, s)?,
        Family::Conv => conv::lower(b, kind, s)?,
        Family::Norm => norm::lower(b, kind, s)?,
        Family::Embedding => embedding::lower(b, s)?,
        Family::Activation => activation::lower(b, kind, s),
        Family::Flatten => flatten::lower(b, s),
        Family::Pool => pool::lower(b, kind, s)?,
        Family::Block => block::lower(b, kind, s)?,
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
        external = Some(write_external(graph, path)?);
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

/// Moves every initializer's bytes to `PATH.data` beside `path` (each
/// 64-byte aligned, as onnx's own writer does), leaving ONNX external-data
/// references; returns the data file and its size.
fn write_external(graph: &mut GraphProto, path: &Path) -> Result<(PathBuf, u64)> {
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
        let pad = (64 - offset % 64) % 64;
        offset += pad;
        let entry = |key: &str, value: String| StringStringEntryProto {
            key: key.into(),
            value,
        };
        t.external_data = vec![
            entry("location", location.clone()),
            entry("offset", offset.to_string()),
            entry("length", bytes.len().to_string()),
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
    Ok((data_path, offset))
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
