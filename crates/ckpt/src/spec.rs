//! [`ModelSpec`]: a model's architecture as data — a sequence of named
//! layers (with residual blocks) and their hyper-parameters, serialised as
//! JSON — so a model loads and runs with no user code. Parameter names and
//! shapes are those the same model built in PyTorch has (`fc1.weight`
//! `[out, in]`; a residual block is an `nn.Sequential` whose output is
//! added to its input, so its layers are `block.0.weight`, ...).

use serde_json::{json, Map, Value as Json};

use crate::{DType, Error, Expected, Result};

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
        }
    }
}

fn bad(at: &str, reason: impl Into<String>) -> Error {
    Error::BadSpec {
        at: at.to_owned(),
        reason: reason.into(),
    }
}

/// Typed access to a layer's JSON fields, with errors naming the layer.
struct Fields<'a> {
    map: &'a Map<String, Json>,
    at: &'a str,
}

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Json> {
        self.map.get(key)
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.get(key)
            .ok_or_else(|| bad(self.at, format!("missing field {key:?}")))
            .and_then(|v| as_usize(v, self.at, key))
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        self.get(key)
            .map_or(Ok(default), |v| as_usize(v, self.at, key))
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad(self.at, format!("{key:?} is not a number"))),
        }
    }

    fn i64_or(&self, key: &str, default: i64) -> Result<i64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| bad(self.at, format!("{key:?} is not an integer"))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| bad(self.at, format!("{key:?} is not true or false"))),
        }
    }

    /// A size given as one number or a pair, as PyTorch accepts.
    fn pair(&self, key: &str, default: Option<[usize; 2]>) -> Result<[usize; 2]> {
        match self.get(key) {
            None => default.ok_or_else(|| bad(self.at, format!("missing field {key:?}"))),
            Some(Json::Array(items)) if items.len() == 2 => Ok([
                as_usize(&items[0], self.at, key)?,
                as_usize(&items[1], self.at, key)?,
            ]),
            Some(v) => {
                let n = as_usize(v, self.at, key)?;
                Ok([n, n])
            }
        }
    }

    fn list(&self, key: &str) -> Result<Vec<usize>> {
        match self.get(key) {
            Some(Json::Array(items)) => items.iter().map(|v| as_usize(v, self.at, key)).collect(),
            Some(v) => Ok(vec![as_usize(v, self.at, key)?]),
            None => Err(bad(self.at, format!("missing field {key:?}"))),
        }
    }
}

/// The largest size any field may hold (features, channels, kernel
/// sizes, shapes): larger values are refused before any arithmetic.
pub const MAX_SIZE: usize = 1 << 24;

/// The most elements one sample or one parameter may have.
const MAX_ELEMENTS: u128 = 1 << 40;

fn as_usize(v: &Json, at: &str, key: &str) -> Result<usize> {
    let n = v
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| bad(at, format!("{key:?} is not a non-negative integer")))?;
    if n > MAX_SIZE {
        return Err(bad(
            at,
            format!("{key:?} is {n}, more than the {MAX_SIZE} ckpt accepts"),
        ));
    }
    Ok(n)
}

/// The product of sizes, refused past [`MAX_ELEMENTS`].
fn elements(dims: &[usize], at: &str) -> Result<usize> {
    let n = dims
        .iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128))
        .unwrap_or(u128::MAX);
    if n > MAX_ELEMENTS {
        return Err(bad(at, format!("{dims:?} holds more than 2^40 elements")));
    }
    Ok(n as usize)
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
        let mut total: u128 = 0;
        for p in spec.parameters() {
            total += elements(&p.shape, &p.name)? as u128;
            if total > MAX_PARAMETERS {
                return Err(bad(
                    &p.name,
                    format!("the model's parameters pass 2^32 elements here ({total}); ckpt accepts at most 2^32"),
                ));
            }
        }
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
        self.parameters()
            .iter()
            .filter(|p| !p.buffer)
            .map(|p| {
                p.shape
                    .iter()
                    .fold(1u64, |acc, &d| acc.saturating_mul(d as u64))
            })
            .fold(0u64, u64::saturating_add)
    }

    /// One row per layer (residual blocks, then their layers, with dotted
    /// names): the output shape per sample and the parameters it holds.
    pub fn summary(&self) -> Result<Vec<LayerSummary>> {
        let mut rows = Vec::new();
        summarise(&self.layers, "", &self.input_shape, &mut rows)?;
        Ok(rows)
    }

    /// True when the model takes integer ids (its first layer is an
    /// embedding).
    pub fn takes_ids(&self) -> bool {
        matches!(
            self.layers.first().map(|l| &l.kind),
            Some(LayerKind::Embedding { .. })
        )
    }
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
    /// Trainable parameters (a residual block counts its layers').
    pub params: u64,
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
            params: params
                .iter()
                .filter(|p| !p.buffer)
                .map(|p| {
                    p.shape
                        .iter()
                        .fold(1u64, |acc, &d| acc.saturating_mul(d as u64))
                })
                .sum(),
        });
        if let LayerKind::Residual { layers: inner } = &layer.kind {
            summarise(inner, &format!("{name}."), &shape, rows)?;
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
            format!("residual blocks nested deeper than {MAX_DEPTH}"),
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
        let name = match map.get("name") {
            None => i.to_string(),
            Some(Json::String(s)) if !s.is_empty() && !s.contains('.') && !s.contains('/') => {
                s.clone()
            }
            Some(_) => {
                return Err(bad(
                    &format!("{prefix}layers[{i}]"),
                    "name must be a non-empty string without '.' or '/'",
                ))
            }
        };
        let at = format!("{prefix}{name}");
        if layers.iter().any(|l: &Layer| l.name == name) {
            return Err(bad(&at, "two layers have this name"));
        }
        let f = Fields { map, at: &at };
        let kind = match map.get("type").and_then(Json::as_str) {
            None => return Err(bad(&at, "missing field \"type\"")),
            Some("Linear") => LayerKind::Linear {
                in_features: f.usize("in_features")?,
                out_features: f.usize("out_features")?,
                bias: f.bool_or("bias", true)?,
            },
            Some("Conv2d") => LayerKind::Conv2d {
                in_channels: f.usize("in_channels")?,
                out_channels: f.usize("out_channels")?,
                kernel_size: f.pair("kernel_size", None)?,
                stride: f.pair("stride", Some([1, 1]))?,
                padding: f.pair("padding", Some([0, 0]))?,
                dilation: f.pair("dilation", Some([1, 1]))?,
                groups: f.usize_or("groups", 1)?,
                bias: f.bool_or("bias", true)?,
            },
            Some(t @ ("BatchNorm1d" | "BatchNorm2d")) => {
                let (num_features, eps, momentum) =
                    (f.usize("num_features")?, f.f64_or("eps", 1e-5)?, f.f64_or("momentum", 0.1)?);
                if t == "BatchNorm1d" {
                    LayerKind::BatchNorm1d { num_features, eps, momentum }
                } else {
                    LayerKind::BatchNorm2d { num_features, eps, momentum }
                }
            }
            Some("LayerNorm") => LayerKind::LayerNorm {
                normalized_shape: f.list("normalized_shape")?,
                eps: f.f64_or("eps", 1e-5)?,
                elementwise_affine: f.bool_or("elementwise_affine", true)?,
            },
            Some("Embedding") => LayerKind::Embedding {
                num_embeddings: f.usize("num_embeddings")?,
                embedding_dim: f.usize("embedding_dim")?,
            },
            Some("ReLU") => LayerKind::ReLU,
            Some("GELU") => LayerKind::GELU {
                tanh: match map.get("approximate").and_then(Json::as_str).unwrap_or("none") {
                    "none" => false,
                    "tanh" => true,
                    other => return Err(bad(&at, format!("approximate must be \"none\" or \"tanh\", not {other:?}"))),
                },
            },
            Some("SiLU") => LayerKind::SiLU,
            Some("Sigmoid") => LayerKind::Sigmoid,
            Some("Tanh") => LayerKind::Tanh,
            Some("Softmax") => LayerKind::Softmax { dim: f.i64_or("dim", -1)? },
            Some("Dropout") => {
                let p = f.f64_or("p", 0.5)?;
                if !(0.0..1.0).contains(&p) {
                    return Err(bad(&at, format!("dropout probability {p} is not in [0, 1)")));
                }
                LayerKind::Dropout { p }
            }
            Some("Flatten") => LayerKind::Flatten {
                start_dim: f.i64_or("start_dim", 1)?,
                end_dim: f.i64_or("end_dim", -1)?,
            },
            Some(t @ ("MaxPool2d" | "AvgPool2d")) => {
                let kernel_size = f.pair("kernel_size", None)?;
                let stride = f.pair("stride", Some(kernel_size))?;
                let padding = f.pair("padding", Some([0, 0]))?;
                if t == "MaxPool2d" {
                    LayerKind::MaxPool2d { kernel_size, stride, padding }
                } else {
                    LayerKind::AvgPool2d { kernel_size, stride, padding }
                }
            }
            Some("AdaptiveAvgPool2d") => LayerKind::AdaptiveAvgPool2d {
                output_size: f.pair("output_size", None)?,
            },
            Some("Residual") => match map.get("layers") {
                Some(Json::Array(inner)) => LayerKind::Residual {
                    layers: parse_layers(inner, &format!("{at}."), depth + 1, count)?,
                },
                _ => return Err(bad(&at, "a Residual block needs a list \"layers\"")),
            },
            Some(other) => {
                return Err(bad(
                    &at,
                    format!(
                        "unknown layer type {other:?} (known: Linear, Conv2d, BatchNorm1d, BatchNorm2d, LayerNorm, \
                         Embedding, ReLU, GELU, SiLU, Sigmoid, Tanh, Softmax, Dropout, Flatten, MaxPool2d, \
                         AvgPool2d, AdaptiveAvgPool2d, Residual)"
                    ),
                ))
            }
        };
        layers.push(Layer { name, kind });
    }
    Ok(layers)
}

fn layer_json(layer: &Layer) -> Json {
    let mut m = Map::new();
    m.insert("name".into(), json!(layer.name));
    m.insert("type".into(), json!(layer.kind.type_name()));
    let mut put = |k: &str, v: Json| {
        m.insert(k.into(), v);
    };
    match &layer.kind {
        LayerKind::Linear {
            in_features,
            out_features,
            bias,
        } => {
            put("in_features", json!(in_features));
            put("out_features", json!(out_features));
            put("bias", json!(bias));
        }
        LayerKind::Conv2d {
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
        } => {
            put("in_channels", json!(in_channels));
            put("out_channels", json!(out_channels));
            put("kernel_size", json!(kernel_size));
            put("stride", json!(stride));
            put("padding", json!(padding));
            put("dilation", json!(dilation));
            put("groups", json!(groups));
            put("bias", json!(bias));
        }
        LayerKind::BatchNorm1d {
            num_features,
            eps,
            momentum,
        }
        | LayerKind::BatchNorm2d {
            num_features,
            eps,
            momentum,
        } => {
            put("num_features", json!(num_features));
            put("eps", json!(eps));
            put("momentum", json!(momentum));
        }
        LayerKind::LayerNorm {
            normalized_shape,
            eps,
            elementwise_affine,
        } => {
            put("normalized_shape", json!(normalized_shape));
            put("eps", json!(eps));
            put("elementwise_affine", json!(elementwise_affine));
        }
        LayerKind::Embedding {
            num_embeddings,
            embedding_dim,
        } => {
            put("num_embeddings", json!(num_embeddings));
            put("embedding_dim", json!(embedding_dim));
        }
        LayerKind::GELU { tanh } => put("approximate", json!(if *tanh { "tanh" } else { "none" })),
        LayerKind::Softmax { dim } => put("dim", json!(dim)),
        LayerKind::Dropout { p } => put("p", json!(p)),
        LayerKind::Flatten { start_dim, end_dim } => {
            put("start_dim", json!(start_dim));
            put("end_dim", json!(end_dim));
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
            put("kernel_size", json!(kernel_size));
            put("stride", json!(stride));
            put("padding", json!(padding));
        }
        LayerKind::AdaptiveAvgPool2d { output_size } => put("output_size", json!(output_size)),
        LayerKind::Residual { layers } => put(
            "layers",
            Json::Array(layers.iter().map(layer_json).collect()),
        ),
        LayerKind::ReLU | LayerKind::SiLU | LayerKind::Sigmoid | LayerKind::Tanh => {}
    }
    Json::Object(m)
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

fn pooled(
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

/// Refuses a layer whose work per sample passes [`MAX_WORK`].
fn check_work(layer: &Layer, input: &[usize], output: &[usize], at: &str) -> Result<()> {
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
fn check_activation(shape: &[usize], at: &str, what: &str) -> Result<()> {
    let n = elements(shape, at)?;
    if n > MAX_ACTIVATION {
        return Err(bad(
            at,
            format!("{what} of shape {shape:?} holds {n} elements per sample; ckpt accepts at most 2^28"),
        ));
    }
    Ok(())
}

/// One sample's output shape of `layer` given one sample's input shape,
/// within the activation budget.
pub(crate) fn layer_output(layer: &Layer, shape: &[usize], at: &str) -> Result<Vec<usize>> {
    let out = shape_after(layer, shape, at)?;
    check_activation(&out, at, "the output")?;
    check_work(layer, shape, &out, at)?;
    Ok(out)
}

fn shape_after(layer: &Layer, shape: &[usize], at: &str) -> Result<Vec<usize>> {
    let need_rank = |rank: usize, what: &str| -> Result<()> {
        if shape.len() != rank {
            return Err(bad(
                at,
                format!(
                    "{what} expects inputs of shape {}, gets {:?} per sample",
                    describe_rank(rank),
                    shape
                ),
            ));
        }
        Ok(())
    };
    Ok(match &layer.kind {
        LayerKind::Linear {
            in_features,
            out_features,
            ..
        } => {
            match shape.last() {
                Some(&n) if n == *in_features => {}
                _ => {
                    return Err(bad(
                        at,
                        format!("Linear expects {in_features} input features, gets a sample of shape {shape:?}"),
                    ))
                }
            }
            let mut out = shape.to_vec();
            *out.last_mut().expect("checked") = *out_features;
            out
        }
        LayerKind::Conv2d {
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            ..
        } => {
            need_rank(3, "Conv2d")?;
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
                    format!(
                        "groups {groups} must divide {in_channels} and {out_channels} channels"
                    ),
                ));
            }
            if kernel_size.contains(&0) {
                return Err(bad(at, "kernel_size must be positive"));
            }
            vec![
                *out_channels,
                pooled(
                    shape[1],
                    kernel_size[0],
                    stride[0],
                    padding[0],
                    dilation[0],
                    at,
                )?,
                pooled(
                    shape[2],
                    kernel_size[1],
                    stride[1],
                    padding[1],
                    dilation[1],
                    at,
                )?,
            ]
        }
        LayerKind::BatchNorm1d { num_features, .. } => {
            if !(shape.len() == 1 || shape.len() == 2) || shape[0] != *num_features {
                return Err(bad(at, format!("BatchNorm1d({num_features}) expects samples of shape [{num_features}] or [{num_features}, L], gets {shape:?}")));
            }
            shape.to_vec()
        }
        LayerKind::BatchNorm2d { num_features, .. } => {
            need_rank(3, "BatchNorm2d")?;
            if shape[0] != *num_features {
                return Err(bad(
                    at,
                    format!(
                        "BatchNorm2d expects {num_features} channels, gets {}",
                        shape[0]
                    ),
                ));
            }
            shape.to_vec()
        }
        LayerKind::LayerNorm {
            normalized_shape, ..
        } => {
            if normalized_shape.is_empty() || !shape.ends_with(normalized_shape) {
                return Err(bad(at, format!("LayerNorm over {normalized_shape:?} does not fit samples of shape {shape:?}")));
            }
            shape.to_vec()
        }
        LayerKind::Embedding {
            embedding_dim,
            num_embeddings,
        } => {
            if *num_embeddings == 0 {
                return Err(bad(at, "an Embedding needs at least one entry"));
            }
            let mut out = shape.to_vec();
            out.push(*embedding_dim);
            out
        }
        LayerKind::ReLU
        | LayerKind::GELU { .. }
        | LayerKind::SiLU
        | LayerKind::Sigmoid
        | LayerKind::Tanh
        | LayerKind::Dropout { .. } => shape.to_vec(),
        LayerKind::Softmax { dim } => {
            sample_dim(*dim, shape.len(), at, "dim")?;
            shape.to_vec()
        }
        LayerKind::Flatten { start_dim, end_dim } => {
            let s = sample_dim(*start_dim, shape.len(), at, "start_dim")?;
            let e = sample_dim(*end_dim, shape.len(), at, "end_dim")?;
            if s > e {
                return Err(bad(at, "start_dim comes after end_dim"));
            }
            let mut out = shape[..s].to_vec();
            out.push(elements(&shape[s..=e], at)?);
            out.extend_from_slice(&shape[e + 1..]);
            out
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
            need_rank(3, layer.kind.type_name())?;
            if kernel_size.contains(&0)
                || padding[0] * 2 > kernel_size[0]
                || padding[1] * 2 > kernel_size[1]
            {
                return Err(bad(
                    at,
                    "padding must be at most half the kernel size, and the kernel positive",
                ));
            }
            vec![
                shape[0],
                pooled(shape[1], kernel_size[0], stride[0], padding[0], 1, at)?,
                pooled(shape[2], kernel_size[1], stride[1], padding[1], 1, at)?,
            ]
        }
        LayerKind::AdaptiveAvgPool2d { output_size } => {
            need_rank(3, "AdaptiveAvgPool2d")?;
            if output_size.contains(&0) {
                return Err(bad(at, "output_size must be positive"));
            }
            vec![shape[0], output_size[0], output_size[1]]
        }
        LayerKind::Residual { layers } => {
            let mut inner = shape.to_vec();
            for l in layers {
                inner = layer_output(l, &inner, &format!("{at}.{}", l.name))?;
            }
            if inner != shape {
                return Err(bad(
                    at,
                    format!(
                        "a residual block must keep the shape {shape:?}, its layers make {inner:?}"
                    ),
                ));
            }
            inner
        }
    })
}

fn describe_rank(rank: usize) -> &'static str {
    match rank {
        3 => "[C, H, W]",
        2 => "[C, L]",
        _ => "of another rank",
    }
}

fn layer_params(layer: &Layer, prefix: &str, out: &mut Vec<Param>) {
    let mut add = |name: &str, shape: Vec<usize>, dtype: DType, buffer: bool| {
        out.push(Param {
            name: format!("{prefix}.{name}"),
            dtype,
            shape,
            buffer,
        })
    };
    match &layer.kind {
        LayerKind::Linear {
            in_features,
            out_features,
            bias,
        } => {
            add(
                "weight",
                vec![*out_features, *in_features],
                DType::F32,
                false,
            );
            if *bias {
                add("bias", vec![*out_features], DType::F32, false);
            }
        }
        LayerKind::Conv2d {
            in_channels,
            out_channels,
            kernel_size,
            groups,
            bias,
            ..
        } => {
            add(
                "weight",
                vec![
                    *out_channels,
                    in_channels / groups.max(&1),
                    kernel_size[0],
                    kernel_size[1],
                ],
                DType::F32,
                false,
            );
            if *bias {
                add("bias", vec![*out_channels], DType::F32, false);
            }
        }
        LayerKind::BatchNorm1d { num_features, .. }
        | LayerKind::BatchNorm2d { num_features, .. } => {
            add("weight", vec![*num_features], DType::F32, false);
            add("bias", vec![*num_features], DType::F32, false);
            add("running_mean", vec![*num_features], DType::F32, true);
            add("running_var", vec![*num_features], DType::F32, true);
            add("num_batches_tracked", vec![], DType::I64, true);
        }
        LayerKind::LayerNorm {
            normalized_shape,
            elementwise_affine: true,
            ..
        } => {
            add("weight", normalized_shape.clone(), DType::F32, false);
            add("bias", normalized_shape.clone(), DType::F32, false);
        }
        LayerKind::Embedding {
            num_embeddings,
            embedding_dim,
        } => {
            add(
                "weight",
                vec![*num_embeddings, *embedding_dim],
                DType::F32,
                false,
            );
        }
        LayerKind::Residual { layers } => {
            for l in layers {
                layer_params(l, &format!("{prefix}.{}", l.name), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_torch_refuses_and_specs_that_ask_for_the_moon_are_errors() {
        let conv = |extra: &str| {
            format!(
                r#"{{"name": "c", "type": "Conv2d", "in_channels": 2, "out_channels": 2, "kernel_size": 3{extra}}}"#
            )
        };
        for (layers, input, needle) in [
            (
                conv(r#", "dilation": 0"#),
                "[2, 8, 8]",
                "dilation must be positive",
            ),
            (
                conv(r#", "stride": 0"#),
                "[2, 8, 8]",
                "stride must be positive",
            ),
            (
                conv(r#", "groups": 3"#),
                "[2, 8, 8]",
                "groups 3 must divide",
            ),
            (
                conv("").replace(r#""kernel_size": 3"#, r#""kernel_size": 0"#),
                "[2, 8, 8]",
                "kernel_size must be positive",
            ),
            (
                r#"{"name": "p", "type": "MaxPool2d", "kernel_size": 2, "stride": 0}"#.into(),
                "[2, 8, 8]",
                "stride must be positive",
            ),
            (
                r#"{"name": "a", "type": "AdaptiveAvgPool2d", "output_size": [16384, 16384]}"#
                    .into(),
                "[3, 8, 8]",
                "at most 2^28",
            ),
            (
                r#"{"name": "r", "type": "ReLU"}"#.into(),
                "[4096, 4096, 64]",
                "at most 2^28",
            ),
            (
                r#"{"name": "w", "type": "Conv2d", "in_channels": 128, "out_channels": 128, "kernel_size": 31, "padding": 15}"#.into(),
                "[128, 256, 256]",
                "w: Conv2d takes 1031865892864 multiply-adds per sample; ckpt accepts at most 2^38",
            ),
            (
                r#"{"name": "l", "type": "Linear", "in_features": 65536, "out_features": 65536}"#.into(),
                "[65536]",
                "l.bias: the model's parameters pass 2^32",
            ),
        ] {
            let err = spec(&layers, input).unwrap_err().to_string();
            assert!(err.contains(needle), "{layers}: {err}");
        }
        assert!(spec(&conv(""), "[2, 8, 8]").is_ok());
    }

    fn spec(layers: &str, input: &str) -> Result<ModelSpec> {
        ModelSpec::from_json(&format!(
            r#"{{"name": "t", "input_shape": {input}, "layers": [{layers}]}}"#
        ))
    }

    #[test]
    fn a_cnn_infers_shapes_and_names_like_torch() {
        let s = spec(
            r#"{"name": "conv", "type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
               {"name": "bn", "type": "BatchNorm2d", "num_features": 4},
               {"type": "ReLU"},
               {"name": "pool", "type": "MaxPool2d", "kernel_size": 2},
               {"name": "res", "type": "Residual", "layers": [
                   {"type": "Conv2d", "in_channels": 4, "out_channels": 4, "kernel_size": 3, "padding": 1},
                   {"type": "GELU"}]},
               {"name": "gap", "type": "AdaptiveAvgPool2d", "output_size": 1},
               {"name": "flat", "type": "Flatten"},
               {"name": "head", "type": "Linear", "in_features": 4, "out_features": 10}"#,
            "[1, 8, 8]",
        )
        .unwrap();
        assert_eq!(s.output_shape().unwrap(), [10]);
        let names: Vec<String> = s.parameters().into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "conv.weight",
                "conv.bias",
                "bn.weight",
                "bn.bias",
                "bn.running_mean",
                "bn.running_var",
                "bn.num_batches_tracked",
                "res.0.weight",
                "res.0.bias",
                "head.weight",
                "head.bias"
            ]
        );
        assert_eq!(s.parameters()[0].shape, [4, 1, 3, 3]);
        assert_eq!(s.parameter_count(), 40 + 8 + 148 + 50);
        let again = ModelSpec::from_json(&s.to_json().to_string()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn clear_errors_for_bad_specs() {
        let err = |layers: &str, input: &str| spec(layers, input).unwrap_err().to_string();
        assert_eq!(
            err(
                r#"{"name": "fc", "type": "Linear", "in_features": 3, "out_features": 2}"#,
                "[4]"
            ),
            "model spec: fc: Linear expects 3 input features, gets a sample of shape [4]"
        );
        assert_eq!(
            err(
                r#"{"name": "fc", "type": "Linear", "in_features": 3}"#,
                "[3]"
            ),
            "model spec: fc: missing field \"out_features\""
        );
        assert!(err(r#"{"name": "x", "type": "Transformer"}"#, "[3]")
            .starts_with("model spec: x: unknown layer type \"Transformer\""));
        assert!(err(
            r#"{"type": "Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 5}"#,
            "[1, 3, 3]"
        )
        .contains("does not fit an input of 3"));
        assert!(err(r#"{"name": "r", "type": "Residual", "layers": [{"type": "Linear", "in_features": 3, "out_features": 2}]}"#, "[3]").contains("must keep the shape"));
        assert!(err(
            r#"{"type": "ReLU", "name": "a"}, {"type": "ReLU", "name": "a"}"#,
            "[3]"
        )
        .contains("two layers have this name"));
        let newer =
            ModelSpec::from_json(r#"{"spec_version": 9, "input_shape": [1], "layers": []}"#)
                .unwrap_err();
        assert!(
            newer.to_string().contains("newer than this ckpt reads"),
            "{newer}"
        );
        assert!(ModelSpec::from_json("{")
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
    }
}
