//! [`ModelSpec`]: a model's architecture as data — a sequence of named
//! layers (with nested blocks) and their hyper-parameters, serialised as
//! JSON — so a model loads and runs with no user code. Parameter names and
//! shapes are those the same model built in PyTorch has (`fc1.weight`
//! `[out, in]`; a residual block is an `nn.Sequential` whose output is
//! added to its input, so its layers are `block.0.weight`, ...).

//!
//! Each family of layer kinds has a file holding its JSON form, output
//! shape and parameters: `linear`, `conv`, `norm` (batch and layer
//! norms), `embedding`, `activation` (element-wise layers and dropout),
//! `flatten`, `pool` and `block` (nested Sequentials and residual
//! blocks). This file holds the types, the walk
//! over the layers and the dispatch to the families; `budget` holds the
//! limits a spec is held to, `fields` the typed access to JSON fields.

mod activation;
mod block;
mod budget;
mod conv;
mod derive;
mod embedding;
mod fields;
mod flatten;
mod linear;
mod norm;
mod pool;
#[cfg(test)]
mod tests;

use serde_json::{json, Map, Value as Json};

use crate::{DType, Error, Expected, Result};
pub(crate) use block::inner as block_layers;
use budget::{check_activation, check_parameters, check_work, elements};
pub use budget::{MAX_ACTIVATION, MAX_PARAMETERS, MAX_WORK};
use fields::Fields;
pub use fields::MAX_SIZE;

/// The spec format this library writes and reads.
pub const SPEC_VERSION: u64 = 1;

/// An architecture: the per-sample input shape and the layers in order.
///
/// ```
/// let spec = ckpt::ModelSpec::from_json(r#"{
///     "name": "mlp", "input_shape": [64],
///     "layers": [
///         {"name": "fc1", "type": "Linear", "in_features": 64, "out_features": 32},
///         {"name": "act", "type": "ReLU"},
///         {"name": "fc2", "type": "Linear", "in_features": 32, "out_features": 10}
///     ]}"#).unwrap();
/// assert_eq!(spec.output_shape().unwrap(), [10]);
/// let names: Vec<_> = spec.parameters().into_iter().map(|p| p.name).collect();
/// assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ModelSpec {
    /// The architecture's name (`mlp-64-32-10`).
    pub name: String,
    /// One sample's shape, without the batch dimension (`[64]`,
    /// `[1, 28, 28]`, or `[seq]` of token ids for an embedding).
    pub input_shape: Vec<usize>,
    /// The layers, applied in order.
    pub layers: Vec<Layer>,
}

/// A named layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Its name: the prefix of its parameters (`fc1`), as PyTorch's
    /// attribute or `nn.Sequential` index.
    pub name: String,
    /// What it is.
    pub kind: LayerKind,
}

/// Every layer kind a spec can hold, with PyTorch's hyper-parameters and
/// defaults.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
#[non_exhaustive]
pub enum LayerKind {
    /// `nn.Linear`.
    Linear {
        in_features: usize,
        out_features: usize,
        bias: bool,
    },
    /// `nn.Conv2d` (zero padding).
    Conv2d {
        in_channels: usize,
        out_channels: usize,
        kernel_size: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
        bias: bool,
    },
    /// `nn.BatchNorm1d` over `[N, C]` or `[N, C, L]`.
    BatchNorm1d {
        num_features: usize,
        eps: f64,
        momentum: f64,
    },
    /// `nn.BatchNorm2d` over `[N, C, H, W]`.
    BatchNorm2d {
        num_features: usize,
        eps: f64,
        momentum: f64,
    },
    /// `nn.LayerNorm` over the last dimensions.
    LayerNorm {
        normalized_shape: Vec<usize>,
        eps: f64,
        elementwise_affine: bool,
    },
    /// `nn.Embedding`: integer ids to vectors.
    Embedding {
        num_embeddings: usize,
        embedding_dim: usize,
    },
    /// `nn.ReLU`.
    ReLU,
    /// `nn.GELU` (`approximate = "tanh"` when `tanh`).
    GELU { tanh: bool },
    /// `nn.SiLU`.
    SiLU,
    /// `nn.Sigmoid`.
    Sigmoid,
    /// `nn.Tanh`.
    Tanh,
    /// `nn.Softmax(dim)`; `dim` counts the batch dimension, as in PyTorch.
    Softmax { dim: i64 },
    /// `nn.Dropout(p)`: identity at inference.
    Dropout { p: f64 },
    /// `nn.Flatten(start_dim, end_dim)`.
    Flatten { start_dim: i64, end_dim: i64 },
    /// `nn.MaxPool2d` (padding with −∞).
    MaxPool2d {
        kernel_size: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    },
    /// `nn.AvgPool2d` (zero padding counted, as PyTorch's default).
    AvgPool2d {
        kernel_size: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    },
    /// `nn.AdaptiveAvgPool2d(output_size)`.
    AdaptiveAvgPool2d { output_size: [usize; 2] },
    /// `x + body(x)`: the layers inside run in order and their output is
    /// added to the block's input (shapes must agree).
    Residual { layers: Vec<Layer> },
    /// `nn.Sequential` inside the model: the layers inside run in order
    /// (their parameters are `block.0.weight`, ...).
    Sequential { layers: Vec<Layer> },
}

/// One parameter or buffer a spec's model holds, in `state_dict()` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Its state-dict name.
    pub name: String,
    /// Its dtype (float32, or int64 for `num_batches_tracked`).
    pub dtype: DType,
    /// Its shape.
    pub shape: Vec<usize>,
    /// A buffer (running statistics), not trained.
    pub buffer: bool,
}

impl LayerKind {
    /// The PyTorch class name (`Linear`, `BatchNorm2d`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            LayerKind::Linear { .. } => "Linear",
            LayerKind::Conv2d { .. } => "Conv2d",
            LayerKind::BatchNorm1d { .. } => "BatchNorm1d",
            LayerKind::BatchNorm2d { .. } => "BatchNorm2d",
            LayerKind::LayerNorm { .. } => "LayerNorm",
            LayerKind::Embedding { .. } => "Embedding",
            LayerKind::ReLU => "ReLU",
            LayerKind::GELU { .. } => "GELU",
            LayerKind::SiLU => "SiLU",
            LayerKind::Sigmoid => "Sigmoid",
            LayerKind::Tanh => "Tanh",
            LayerKind::Softmax { .. } => "Softmax",
            LayerKind::Dropout { .. } => "Dropout",
            LayerKind::Flatten { .. } => "Flatten",
            LayerKind::MaxPool2d { .. } => "MaxPool2d",
            LayerKind::AvgPool2d { .. } => "AvgPool2d",
            LayerKind::AdaptiveAvgPool2d { .. } => "AdaptiveAvgPool2d",
            LayerKind::Residual { .. } => "Residual",
            LayerKind::Sequential { .. } => "Sequential",
        }
    }

    /// The family file that implements this kind.
    pub(crate) fn family(&self) -> Family {
        family_of(self.type_name()).expect("every layer kind's type is in TYPES")
    }
}

/// The families of layer kinds, one file each (here, in the ONNX export
/// and in ckpt-candle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Linear,
    Conv,
    Norm,
    Embedding,
    Activation,
    Flatten,
    Pool,
    Block,
}

/// Every layer type a spec may name, in the order errors list them, with
/// its family.
const TYPES: [(&str, Family); 19] = [
    ("Linear", Family::Linear),
    ("Conv2d", Family::Conv),
    ("BatchNorm1d", Family::Norm),
    ("BatchNorm2d", Family::Norm),
    ("LayerNorm", Family::Norm),
    ("Embedding", Family::Embedding),
    ("ReLU", Family::Activation),
    ("GELU", Family::Activation),
    ("SiLU", Family::Activation),
    ("Sigmoid", Family::Activation),
    ("Tanh", Family::Activation),
    ("Softmax", Family::Activation),
    ("Dropout", Family::Activation),
    ("Flatten", Family::Flatten),
    ("MaxPool2d", Family::Pool),
    ("AvgPool2d", Family::Pool),
    ("AdaptiveAvgPool2d", Family::Pool),
    ("Residual", Family::Block),
    ("Sequential", Family::Block),
];

fn family_of(type_name: &str) -> Option<Family> {
    TYPES
        .iter()
        .find(|(name, _)| *name == type_name)
        .map(|&(_, family)| family)
}

fn bad(at: &str, reason: impl Into<String>) -> Error {
    Error::BadSpec {
        at: at.to_owned(),
        reason: reason.into(),
    }
}

const MAX_LAYERS: usize = 10_000;
const MAX_DEPTH: usize = 16;

impl ModelSpec {
    /// A spec from its JSON text (see the type's example). Unknown layer
    /// types, missing or mistyped fields, and specs whose shapes do not fit
    /// together are errors naming the layer.
    pub fn from_json(text: &str) -> Result<ModelSpec> {
        let json: Json =
            crate::json::parse_str(text).map_err(|e| bad("spec", format!("not JSON ({e})")))?;
        ModelSpec::from_json_value(&json)
    }

    /// A spec from a parsed JSON value.
    pub fn from_json_value(json: &Json) -> Result<ModelSpec> {
        let Json::Object(map) = json else {
            return Err(bad("spec", "not a JSON object"));
        };
        check_version(map)?;
        let name = map
            .get("name")
            .and_then(Json::as_str)
            .unwrap_or("model")
            .to_owned();
        let fields = Fields { map, at: "spec" };
        let input_shape = fields.list("input_shape")?;
        let Some(Json::Array(layers)) = map.get("layers") else {
            return Err(bad("spec", "missing list \"layers\""));
        };
        let mut count = 0;
        let layers = parse_layers(layers, "", 0, &mut count)?;
        let spec = ModelSpec {
            name,
            input_shape,
            layers,
        };
        elements(&spec.input_shape, "input_shape")?;
        spec.output_shape()?;
        check_parameters(&spec.parameters())?;
        Ok(spec)
    }

    /// The spec as JSON (what [`ModelSpec::from_json`] reads back).
    pub fn to_json(&self) -> Json {
        json!({
            "spec_version": SPEC_VERSION,
            "name": self.name,
            "input_shape": self.input_shape,
            "layers": self.layers.iter().map(layer_json).collect::<Vec<_>>(),
        })
    }

    /// The shape of one sample's output, checking every layer against the
    /// shape it receives.
    pub fn output_shape(&self) -> Result<Vec<usize>> {
        check_activation(&self.input_shape, "input_shape", "a sample")?;
        let mut shape = self.input_shape.clone();
        for layer in &self.layers {
            shape = layer_output(layer, &shape, &layer.name)?;
        }
        Ok(shape)
    }

    /// Every parameter and buffer, in PyTorch's `state_dict()` order.
    pub fn parameters(&self) -> Vec<Param> {
        let mut out = Vec::new();
        for layer in &self.layers {
            layer_params(layer, &layer.name, &mut out);
        }
        out
    }

    /// What a state dict for this spec must hold (for
    /// [`crate::match_state_dict`]).
    pub fn expected(&self) -> Vec<Expected> {
        self.parameters()
            .into_iter()
            .map(|p| Expected {
                name: p.name,
                dtype: p.dtype,
                shape: p.shape,
            })
            .collect()
    }

    /// The number of trainable parameters.
    pub fn parameter_count(&self) -> u64 {
        trainable(&self.parameters())
    }

    /// One row per layer (blocks, then their layers, with dotted
    /// names): the output shape per sample and the parameters it holds.
    pub fn summary(&self) -> Result<Vec<LayerSummary>> {
        let mut rows = Vec::new();
        summarise(&self.layers, "", &self.input_shape, &mut rows)?;
        Ok(rows)
    }

    /// True when the model takes integer ids (its first layer, or the
    /// first of a leading `Sequential` block, is an embedding).
    pub fn takes_ids(&self) -> bool {
        first_is_embedding(&self.layers)
    }
}

fn first_is_embedding(layers: &[Layer]) -> bool {
    match layers.first().map(|l| &l.kind) {
        Some(LayerKind::Embedding { .. }) => true,
        Some(LayerKind::Sequential { layers }) => first_is_embedding(layers),
        _ => false,
    }
}

/// Refuses a spec written in a newer format than [`SPEC_VERSION`].
fn check_version(map: &Map<String, Json>) -> Result<()> {
    if let Some(v) = map.get("spec_version") {
        let v = v
            .as_u64()
            .ok_or_else(|| bad("spec", "spec_version is not a number"))?;
        if v > SPEC_VERSION {
            return Err(bad(
                "spec",
                format!("spec format {v} is newer than this ckpt reads ({SPEC_VERSION})"),
            ));
        }
    }
    Ok(())
}

/// A row of [`ModelSpec::summary`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LayerSummary {
    /// The dotted name (`res.0`).
    pub name: String,
    /// The layer.
    pub kind: LayerKind,
    /// One sample's output shape.
    pub output_shape: Vec<usize>,
    /// Trainable parameters (a block counts its layers').
    pub params: u64,
}

/// The number of trainable elements among `params`.
fn trainable(params: &[Param]) -> u64 {
    params
        .iter()
        .filter(|p| !p.buffer)
        .map(|p| {
            p.shape
                .iter()
                .fold(1u64, |acc, &d| acc.saturating_mul(d as u64))
        })
        .fold(0u64, u64::saturating_add)
}

fn summarise(
    layers: &[Layer],
    prefix: &str,
    input: &[usize],
    rows: &mut Vec<LayerSummary>,
) -> Result<Vec<usize>> {
    let mut shape = input.to_vec();
    for layer in layers {
        let name = format!("{prefix}{}", layer.name);
        let output = layer_output(layer, &shape, &name)?;
        let mut params = Vec::new();
        layer_params(layer, &name, &mut params);
        rows.push(LayerSummary {
            name: name.clone(),
            kind: layer.kind.clone(),
            output_shape: output.clone(),
            params: trainable(&params),
        });
        if layer.kind.family() == Family::Block {
            summarise(block::inner(&layer.kind), &format!("{name}."), &shape, rows)?;
        }
        shape = output;
    }
    Ok(shape)
}

fn parse_layers(
    items: &[Json],
    prefix: &str,
    depth: usize,
    count: &mut usize,
) -> Result<Vec<Layer>> {
    if depth > MAX_DEPTH {
        return Err(bad(
            prefix,
            format!("blocks nested deeper than {MAX_DEPTH}"),
        ));
    }
    let mut layers = Vec::with_capacity(items.len().min(MAX_LAYERS));
    for (i, item) in items.iter().enumerate() {
        *count += 1;
        if *count > MAX_LAYERS {
            return Err(bad("spec", format!("more than {MAX_LAYERS} layers")));
        }
        let Json::Object(map) = item else {
            return Err(bad(&format!("{prefix}layers[{i}]"), "not a JSON object"));
        };
        let name = layer_name(map, prefix, i)?;
        let at = format!("{prefix}{name}");
        if layers.iter().any(|l: &Layer| l.name == name) {
            return Err(bad(&at, "two layers have this name"));
        }
        let kind = parse_kind(&Fields { map, at: &at }, depth, count)?;
        layers.push(Layer { name, kind });
    }
    Ok(layers)
}

/// The `i`th layer's name: its own, or its index.
fn layer_name(map: &Map<String, Json>, prefix: &str, i: usize) -> Result<String> {
    match map.get("name") {
        None => Ok(i.to_string()),
        Some(Json::String(s)) if !s.is_empty() && !s.contains('.') && !s.contains('/') => {
            Ok(s.clone())
        }
        Some(_) => Err(bad(
            &format!("{prefix}layers[{i}]"),
            "name must be a non-empty string without '.' or '/'",
        )),
    }
}

/// A layer's kind from its `type` and its family's fields.
fn parse_kind(f: &Fields, depth: usize, count: &mut usize) -> Result<LayerKind> {
    let Some(type_name) = f.get("type").and_then(Json::as_str) else {
        return Err(bad(f.at, "missing field \"type\""));
    };
    let Some(family) = family_of(type_name) else {
        let known: Vec<&str> = TYPES.iter().map(|(name, _)| *name).collect();
        return Err(bad(
            f.at,
            format!(
                "unknown layer type {type_name:?} (known: {})",
                known.join(", ")
            ),
        ));
    };
    match family {
        Family::Linear => linear::parse(f),
        Family::Conv => conv::parse(f),
        Family::Norm => norm::parse(type_name, f),
        Family::Embedding => embedding::parse(f),
        Family::Activation => activation::parse(type_name, f),
        Family::Flatten => flatten::parse(f),
        Family::Pool => pool::parse(type_name, f),
        Family::Block => block::parse(type_name, f, depth, count),
    }
}

fn layer_json(layer: &Layer) -> Json {
    let mut m = Map::new();
    m.insert("name".into(), json!(layer.name));
    m.insert("type".into(), json!(layer.kind.type_name()));
    let kind = &layer.kind;
    match kind.family() {
        Family::Linear => linear::to_json(kind, &mut m),
        Family::Conv => conv::to_json(kind, &mut m),
        Family::Norm => norm::to_json(kind, &mut m),
        Family::Embedding => embedding::to_json(kind, &mut m),
        Family::Activation => activation::to_json(kind, &mut m),
        Family::Flatten => flatten::to_json(kind, &mut m),
        Family::Pool => pool::to_json(kind, &mut m),
        Family::Block => block::to_json(kind, &mut m),
    }
    Json::Object(m)
}

/// One sample's output shape of `layer` given one sample's input shape,
/// within the activation and work budgets.
pub(crate) fn layer_output(layer: &Layer, shape: &[usize], at: &str) -> Result<Vec<usize>> {
    let out = shape_after(&layer.kind, shape, at)?;
    check_activation(&out, at, "the output")?;
    check_work(layer, shape, &out, at)?;
    Ok(out)
}

fn shape_after(kind: &LayerKind, shape: &[usize], at: &str) -> Result<Vec<usize>> {
    match kind.family() {
        Family::Linear => linear::output(kind, shape, at),
        Family::Conv => conv::output(kind, shape, at),
        Family::Norm => norm::output(kind, shape, at),
        Family::Embedding => embedding::output(kind, shape, at),
        Family::Activation => activation::output(kind, shape, at),
        Family::Flatten => flatten::output(kind, shape, at),
        Family::Pool => pool::output(kind, shape, at),
        Family::Block => block::output(kind, shape, at),
    }
}

/// Refuses a sample shape of another rank than `rank`.
fn need_rank(shape: &[usize], rank: usize, what: &str, at: &str) -> Result<()> {
    if shape.len() != rank {
        let expected = match rank {
            3 => "[C, H, W]",
            2 => "[C, L]",
            _ => "of another rank",
        };
        return Err(bad(
            at,
            format!("{what} expects inputs of shape {expected}, gets {shape:?} per sample"),
        ));
    }
    Ok(())
}

/// A dimension index counting the batch (`dim` of PyTorch) as an index
/// into the per-sample shape of `rank` dimensions.
fn sample_dim(dim: i64, rank: usize, at: &str, what: &str) -> Result<usize> {
    let full = rank as i64 + 1;
    let d = if dim < 0 { dim + full } else { dim };
    if d < 1 || d >= full {
        return Err(bad(at, format!("{what} {dim} is out of range for inputs of {full} dimensions (the batch is dimension 0)")));
    }
    Ok(d as usize - 1)
}

/// Collects a layer's parameters under its prefix, in state-dict order.
struct Params<'a> {
    prefix: &'a str,
    out: &'a mut Vec<Param>,
}

impl Params<'_> {
    fn push(&mut self, name: &str, shape: Vec<usize>, dtype: DType, buffer: bool) {
        self.out.push(Param {
            name: format!("{}.{name}", self.prefix),
            dtype,
            shape,
            buffer,
        });
    }

    /// A trainable float32 parameter.
    fn weight(&mut self, name: &str, shape: Vec<usize>) {
        self.push(name, shape, DType::F32, false);
    }

    /// A buffer (running statistics).
    fn buffer(&mut self, name: &str, shape: Vec<usize>, dtype: DType) {
        self.push(name, shape, dtype, true);
    }

    /// The parameters of a layer inside this one.
    fn nested(&mut self, layer: &Layer) {
        layer_params(layer, &format!("{}.{}", self.prefix, layer.name), self.out);
    }
}

fn layer_params(layer: &Layer, prefix: &str, out: &mut Vec<Param>) {
    let p = &mut Params { prefix, out };
    let kind = &layer.kind;
    match kind.family() {
        Family::Linear => linear::params(kind, p),
        Family::Conv => conv::params(kind, p),
        Family::Norm => norm::params(kind, p),
        Family::Embedding => embedding::params(kind, p),
        Family::Block => block::params(kind, p),
        Family::Activation | Family::Flatten | Family::Pool => {}
    }
}
