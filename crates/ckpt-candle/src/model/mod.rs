//! [`Model`]: a runnable candle model built from a [`ModelSpec`], with
//! PyTorch's initialisation, parameter names and forward semantics, that
//! can be trained (dropout and batch statistics in training mode) and
//! saved as a state dict.
//!
//! Each family of layer kinds (as in `ckpt::spec`) builds and runs in its
//! own file: `linear` (with the int8 Linear of quantized packages),
//! `conv`, `norm`, `embedding`, `activation` (element-wise layers and
//! dropout), `pool`; `Flatten`, `Residual` and `Sequential` blocks, one
//! line each, are built and run here.

mod activation;
mod conv;
mod embedding;
mod linear;
mod norm;
mod pool;

use candle_core::{DType, Device, Tensor};
use candle_nn::init::Init;
use candle_nn::var_builder::VarBuilder;
use candle_nn::Module;
use ckpt::compress::quantize::Activations;
use ckpt::{
    LayerKind, LoadReport, LoadRules, ModelSpec, Package, PackageInfo, PackageOptions, StateDict,
};

use crate::quantized::QLinear;
use crate::{Error, ParamStore, Result, Rng};

/// A model built from a spec: its variables live in a [`ParamStore`]
/// (buffers included, in PyTorch's state-dict order).
///
/// ```
/// use candle_core::{Device, Tensor};
/// let spec = ckpt::ModelSpec::from_json(r#"{"name": "mlp", "input_shape": [4], "layers": [
///     {"name": "fc1", "type": "Linear", "in_features": 4, "out_features": 8},
///     {"type": "ReLU"},
///     {"name": "fc2", "type": "Linear", "in_features": 8, "out_features": 3}]}"#).unwrap();
/// let model = ckpt_candle::Model::new(spec, &Device::Cpu, 0).unwrap();
/// let y = model.forward(&Tensor::zeros((5, 4), candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
/// assert_eq!(y.dims(), [5, 3]);
/// assert_eq!(model.state_dict().unwrap().keys().collect::<Vec<_>>(), ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
/// ```
pub struct Model {
    spec: ModelSpec,
    store: ParamStore,
    layers: Vec<Built>,
    device: Device,
    info: Option<PackageInfo>,
    warnings: Vec<String>,
}

/// A built layer.
enum Built {
    Linear(candle_nn::Linear),
    /// A Linear layer of a quantized package run with int8 arithmetic.
    QLinear(QLinear),
    Conv2d(conv::Conv2d),
    BatchNorm(norm::BatchNorm),
    LayerNorm(norm::LayerNorm),
    /// An embedding's table.
    Embedding(Tensor),
    Activation(activation::Activation),
    /// `Flatten(start_dim, end_dim)`.
    Flatten(i64, i64),
    Pool(pool::Pool),
    Residual(Vec<Built>),
    Sequential(Vec<Built>),
}

impl Model {
    /// A freshly initialised model (PyTorch's schemes: uniform ±1/√fan_in
    /// for Linear and Conv2d, ones and zeros for norms, N(0, 1) for
    /// embeddings), drawn from a generator seeded with `seed`.
    pub fn new(spec: ModelSpec, device: &Device, seed: u64) -> Result<Model> {
        let store = ParamStore::new(seed);
        let layers = build_all(&spec.layers, "", &store, device)?;
        Ok(Model {
            spec,
            store,
            layers,
            device: device.clone(),
            info: None,
            warnings: Vec::new(),
        })
    }

    /// A runnable model from a model package (`.safetensors` or `.pth`):
    /// no user code, nothing executed from the file.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("model.safetensors");
    /// use candle_core::Device;
    /// let spec = ckpt::ModelSpec::from_json(r#"{"name": "lin", "input_shape": [3], "layers": [
    ///     {"name": "fc", "type": "Linear", "in_features": 3, "out_features": 2}]}"#).unwrap();
    /// let trained = ckpt_candle::Model::new(spec, &Device::Cpu, 7).unwrap();
    /// trained.package("1.0.0").unwrap().save(&path).unwrap();
    ///
    /// let model = ckpt_candle::Model::load(&path, &Device::Cpu).unwrap();
    /// assert_eq!(model.info().unwrap().model_version, "1.0.0");
    /// assert_eq!(model.state_dict().unwrap(), trained.state_dict().unwrap());
    /// ```
    pub fn load(path: impl AsRef<std::path::Path>, device: &Device) -> Result<Model> {
        Model::load_with(path, device, &PackageOptions::default())
    }

    /// [`Model::load`] with version expectations and migrations (see
    /// [`Model::warnings`]).
    pub fn load_with(
        path: impl AsRef<std::path::Path>,
        device: &Device,
        options: &PackageOptions,
    ) -> Result<Model> {
        Model::from_package(Package::load(path, options)?, device)
    }

    /// A runnable model from a package already loaded. A quantized
    /// package runs as its record says: its int8 Linear layers with
    /// dynamically quantized activations ([`Activations::Dynamic`]) or on
    /// the dequantized weights ([`Activations::WeightOnly`]).
    pub fn from_package(package: Package, device: &Device) -> Result<Model> {
        let activations = package.quantization.as_ref().map(|q| q.activations);
        Model::from_package_as(package, device, activations.unwrap_or_default())
    }

    /// [`Model::from_package`] choosing how a quantized package's Linear
    /// layers compute (float packages ignore `activations`).
    ///
    /// The variables ([`Model::state_dict`], [`Model::store`]) hold the
    /// dequantized weights (`int8 × scale`); in dynamic mode the Linear
    /// layers also keep their int8 weights (a byte each) and compute with
    /// them.
    pub fn from_package_as(
        package: Package,
        device: &Device,
        activations: Activations,
    ) -> Result<Model> {
        let quantized = package.weights.clone();
        let record = package.quantization.clone();
        let float = package.dequantize()?;
        let mut model = Model::from_state_dict(float.spec, float.weights, device)?;
        if let (Some(q), Activations::Dynamic) = (&record, activations) {
            let layers = std::mem::take(&mut model.layers);
            model.layers = linear::to_int8(
                layers,
                &model.spec.layers,
                "",
                &q.tensors,
                &quantized,
                device,
            )?;
        }
        model.info = Some(float.info);
        model.warnings = float.warnings;
        Ok(model)
    }

    /// The package metadata, for a model loaded from a package.
    pub fn info(&self) -> Option<&PackageInfo> {
        self.info.as_ref()
    }

    /// What loading the package warned about (another model version).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// An inference package of this model's current weights at
    /// `model_version` (add classes, metrics and user entries to its
    /// `info` before saving).
    pub fn package(&self, model_version: &str) -> Result<Package> {
        let mut info = PackageInfo::new(&self.spec, model_version);
        if let Some(loaded) = &self.info {
            info.classes = loaded.classes.clone();
        }
        Ok(Package::new(self.spec.clone(), self.state_dict()?, info)?)
    }

    /// A model with the weights of `state_dict`, which must fit the spec
    /// exactly (every name, shape and dtype); float tensors are cast.
    pub fn from_state_dict(
        spec: ModelSpec,
        state_dict: StateDict,
        device: &Device,
    ) -> Result<Model> {
        // Check the weights against the spec before allocating anything the
        // spec alone claims.
        ckpt::match_state_dict(state_dict.clone(), &spec.expected(), &LoadRules::default())?;
        let model = Model::new(spec, device, 0)?;
        model.load_state_dict(state_dict, &LoadRules::default())?;
        Ok(model)
    }

    /// The spec.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The variables (for [`crate::Training`] and optimizers:
    /// `model.store().vars()` are the trainable ones, in PyTorch's order).
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The device the model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The state dict, as PyTorch's `model.state_dict()`.
    pub fn state_dict(&self) -> Result<StateDict> {
        self.store.state_dict()
    }

    /// Loads weights under `rules`; on error nothing changes.
    pub fn load_state_dict(&self, state_dict: StateDict, rules: &LoadRules) -> Result<LoadReport> {
        self.store.load_state_dict(state_dict, rules)
    }

    /// Inference: dropout off, batch norms on their running statistics.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        run(&self.layers, x, None)
    }

    /// Training mode: dropout draws from `rng`; batch norms use the batch's
    /// statistics and update their running ones.
    pub fn forward_train(&self, x: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        run(&self.layers, x, Some(rng))
    }
}

fn build_all(
    layers: &[ckpt::Layer],
    prefix: &str,
    store: &ParamStore,
    device: &Device,
) -> Result<Vec<Built>> {
    layers
        .iter()
        .map(|l| build(l, &format!("{prefix}{}", l.name), store, device))
        .collect()
}

fn uniform(bound: f64) -> Init {
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// Where a layer creates its variables: under its name in the store.
struct Vars<'a> {
    name: &'a str,
    vb: VarBuilder<'static>,
    store: &'a ParamStore,
    device: &'a Device,
}

fn build(layer: &ckpt::Layer, name: &str, store: &ParamStore, device: &Device) -> Result<Built> {
    let v = &Vars {
        name,
        vb: store.var_builder(DType::F32, device).pp(name),
        store,
        device,
    };
    let kind = &layer.kind;
    Ok(match kind {
        LayerKind::Linear { .. } => linear::build(kind, v)?,
        LayerKind::Conv2d { .. } => Built::Conv2d(conv::Conv2d::build(kind, v)?),
        LayerKind::BatchNorm1d { .. }
        | LayerKind::BatchNorm2d { .. }
        | LayerKind::LayerNorm { .. } => norm::build(kind, v)?,
        LayerKind::Embedding { .. } => Built::Embedding(embedding::build(kind, v)?),
        LayerKind::ReLU
        | LayerKind::GELU { .. }
        | LayerKind::SiLU
        | LayerKind::Sigmoid
        | LayerKind::Tanh
        | LayerKind::Softmax { .. }
        | LayerKind::Dropout { .. } => Built::Activation(activation::Activation::build(kind)),
        LayerKind::Flatten { start_dim, end_dim } => Built::Flatten(*start_dim, *end_dim),
        LayerKind::MaxPool2d { .. }
        | LayerKind::AvgPool2d { .. }
        | LayerKind::AdaptiveAvgPool2d { .. } => Built::Pool(pool::Pool::build(kind)),
        LayerKind::Residual { layers } => {
            Built::Residual(build_all(layers, &format!("{name}."), store, device)?)
        }
        LayerKind::Sequential { layers } => {
            Built::Sequential(build_all(layers, &format!("{name}."), store, device)?)
        }
        other => {
            return Err(Error::InvalidArgument(format!(
                "{name}: no candle implementation of {}",
                other.type_name()
            )));
        }
    })
}

fn run(layers: &[Built], x: &Tensor, mut rng: Option<&mut Rng>) -> Result<Tensor> {
    let mut x = x.clone();
    for layer in layers {
        x = apply(layer, &x, rng.as_deref_mut())?;
    }
    Ok(x)
}

fn apply(layer: &Built, x: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
    match layer {
        Built::Linear(l) => Ok(l.forward(x)?),
        Built::QLinear(l) => l.forward(x),
        Built::Conv2d(conv) => conv.forward(x),
        Built::BatchNorm(bn) => bn.forward(x, rng.is_some()),
        Built::LayerNorm(ln) => ln.forward(x),
        Built::Embedding(table) => embedding::forward(table, x),
        Built::Activation(a) => a.forward(x, rng),
        Built::Flatten(s, e) => Ok(x.flatten(dim(*s, x.rank()), dim(*e, x.rank()))?),
        Built::Pool(pool) => pool.forward(x),
        Built::Residual(inner) => Ok((x + run(inner, x, rng)?)?),
        Built::Sequential(inner) => run(inner, x, rng),
    }
}

/// A dimension index of a tensor of `rank` dimensions from PyTorch's
/// (possibly negative) `dim`.
fn dim(d: i64, rank: usize) -> usize {
    if d < 0 {
        (d + rank as i64) as usize
    } else {
        d as usize
    }
}

/// Pads dims 2 and 3 with `value`.
fn pad2d(x: &Tensor, pad: [usize; 2], value: f64) -> Result<Tensor> {
    if pad == [0, 0] {
        return Ok(x.clone());
    }
    if value == 0.0 {
        return Ok(x
            .pad_with_zeros(2, pad[0], pad[0])?
            .pad_with_zeros(3, pad[1], pad[1])?);
    }
    let (n, c, h, w) = x.dims4()?;
    let fill = |shape: (usize, usize, usize, usize)| -> candle_core::Result<Tensor> {
        Tensor::full(value as f32, shape, x.device())?.to_dtype(x.dtype())
    };
    let rows = fill((n, c, pad[0], w))?;
    let x = Tensor::cat(&[&rows, x, &rows], 2)?;
    let cols = fill((n, c, h + 2 * pad[0], pad[1]))?;
    Ok(Tensor::cat(&[&cols, &x, &cols], 3)?)
}

/// Shapes a per-channel vector to broadcast over `[N, C, ...]`.
fn per_channel(v: &Tensor, rank: usize) -> Result<Tensor> {
    let mut shape = vec![1; rank];
    shape[1] = v.dim(0)?;
    Ok(v.reshape(shape)?)
}
