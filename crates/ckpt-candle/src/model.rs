//! [`Model`]: a runnable candle model built from a [`ModelSpec`], with
//! PyTorch's initialisation, parameter names and forward semantics, that
//! can be trained (dropout and batch statistics in training mode) and
//! saved as a state dict.

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::init::Init;
use candle_nn::Module;
use ckpt::compress::quantize::{Activations, SCALE_SUFFIX};
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

enum Built {
    Linear(candle_nn::Linear),
    /// A Linear layer of a quantized package run with int8 arithmetic.
    QLinear(QLinear),
    Conv2d {
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        padding: [usize; 2],
        dilation: usize,
        groups: usize,
    },
    BatchNorm {
        weight: Tensor,
        bias: Tensor,
        mean: Var,
        var: Var,
        count: Var,
        eps: f64,
        momentum: f64,
    },
    LayerNorm {
        weight: Option<Tensor>,
        bias: Option<Tensor>,
        dims: usize,
        eps: f64,
    },
    Embedding(Tensor),
    Relu,
    Gelu(bool),
    Silu,
    Sigmoid,
    Tanh,
    Softmax(i64),
    Dropout(f64),
    Flatten(i64, i64),
    MaxPool([usize; 2], [usize; 2], [usize; 2]),
    AvgPool([usize; 2], [usize; 2], [usize; 2]),
    AdaptiveAvgPool([usize; 2]),
    Residual(Vec<Built>),
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
            model.layers = to_int8(
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

/// Replaces the Linear layers whose weights are quantized (`tensors`) by
/// int8 ones.
fn to_int8(
    built: Vec<Built>,
    layers: &[ckpt::Layer],
    prefix: &str,
    tensors: &[String],
    weights: &StateDict,
    device: &Device,
) -> Result<Vec<Built>> {
    built
        .into_iter()
        .zip(layers)
        .map(|(b, layer)| {
            let name = format!("{prefix}{}", layer.name);
            let weight = format!("{name}.weight");
            Ok(match (b, &layer.kind) {
                (Built::Linear(l), _) if tensors.contains(&weight) => {
                    let scale = format!("{weight}{SCALE_SUFFIX}");
                    let (Some(w), Some(s)) = (weights.get(&weight), weights.get(&scale)) else {
                        return Err(Error::InvalidArgument(format!(
                            "{weight}: the quantized weight or its scale is missing"
                        )));
                    };
                    Built::QLinear(QLinear::new(&name, w, s, l.bias().cloned(), device)?)
                }
                (Built::Residual(inner), LayerKind::Residual { layers }) => Built::Residual(
                    to_int8(inner, layers, &format!("{name}."), tensors, weights, device)?,
                ),
                (b, _) => b,
            })
        })
        .collect()
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

fn build(layer: &ckpt::Layer, name: &str, store: &ParamStore, device: &Device) -> Result<Built> {
    let vb = store.var_builder(DType::F32, device).pp(name);
    Ok(match &layer.kind {
        LayerKind::Linear {
            in_features,
            out_features,
            bias,
        } => {
            let bound = 1.0 / (*in_features as f64).sqrt();
            let w = vb.get_with_hints((*out_features, *in_features), "weight", uniform(bound))?;
            let b = if *bias {
                Some(vb.get_with_hints(*out_features, "bias", uniform(bound))?)
            } else {
                None
            };
            Built::Linear(candle_nn::Linear::new(w, b))
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
            if stride[0] != stride[1] || dilation[0] != dilation[1] {
                return Err(Error::InvalidArgument(format!(
                    "{name}: candle's conv2d needs the same stride and dilation in both dimensions, not {stride:?} and {dilation:?}"
                )));
            }
            let fan_in = in_channels / groups * kernel_size[0] * kernel_size[1];
            let bound = 1.0 / (fan_in as f64).sqrt();
            let shape = (
                *out_channels,
                in_channels / groups,
                kernel_size[0],
                kernel_size[1],
            );
            let weight = vb.get_with_hints(shape, "weight", uniform(bound))?;
            let bias = if *bias {
                Some(vb.get_with_hints(*out_channels, "bias", uniform(bound))?)
            } else {
                None
            };
            Built::Conv2d {
                weight,
                bias,
                stride: stride[0],
                padding: *padding,
                dilation: dilation[0],
                groups: *groups,
            }
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
            let n = *num_features;
            let weight = vb.get_with_hints(n, "weight", Init::Const(1.0))?;
            let bias = vb.get_with_hints(n, "bias", Init::Const(0.0))?;
            let mean = store.buffer(
                &format!("{name}.running_mean"),
                &Tensor::zeros(n, DType::F32, device)?,
            )?;
            let var = store.buffer(
                &format!("{name}.running_var"),
                &Tensor::ones(n, DType::F32, device)?,
            )?;
            let count = store.buffer(
                &format!("{name}.num_batches_tracked"),
                &Tensor::new(0i64, device)?,
            )?;
            Built::BatchNorm {
                weight,
                bias,
                mean,
                var,
                count,
                eps: *eps,
                momentum: *momentum,
            }
        }
        LayerKind::LayerNorm {
            normalized_shape,
            eps,
            elementwise_affine,
        } => {
            let (weight, bias) = if *elementwise_affine {
                (
                    Some(vb.get_with_hints(
                        normalized_shape.as_slice(),
                        "weight",
                        Init::Const(1.0),
                    )?),
                    Some(vb.get_with_hints(
                        normalized_shape.as_slice(),
                        "bias",
                        Init::Const(0.0),
                    )?),
                )
            } else {
                (None, None)
            };
            Built::LayerNorm {
                weight,
                bias,
                dims: normalized_shape.len(),
                eps: *eps,
            }
        }
        LayerKind::Embedding {
            num_embeddings,
            embedding_dim,
        } => Built::Embedding(vb.get_with_hints(
            (*num_embeddings, *embedding_dim),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?),
        LayerKind::ReLU => Built::Relu,
        LayerKind::GELU { tanh } => Built::Gelu(*tanh),
        LayerKind::SiLU => Built::Silu,
        LayerKind::Sigmoid => Built::Sigmoid,
        LayerKind::Tanh => Built::Tanh,
        LayerKind::Softmax { dim } => Built::Softmax(*dim),
        LayerKind::Dropout { p } => Built::Dropout(*p),
        LayerKind::Flatten { start_dim, end_dim } => Built::Flatten(*start_dim, *end_dim),
        LayerKind::MaxPool2d {
            kernel_size,
            stride,
            padding,
        } => Built::MaxPool(*kernel_size, *stride, *padding),
        LayerKind::AvgPool2d {
            kernel_size,
            stride,
            padding,
        } => Built::AvgPool(*kernel_size, *stride, *padding),
        LayerKind::AdaptiveAvgPool2d { output_size } => Built::AdaptiveAvgPool(*output_size),
        LayerKind::Residual { layers } => {
            Built::Residual(build_all(layers, &format!("{name}."), store, device)?)
        }
        other => {
            return Err(Error::InvalidArgument(format!(
                "{name}: no candle implementation of {}",
                other.type_name()
            )));
        }
    })
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

/// PyTorch's adaptive average of dimension `d` into `out` windows
/// (`floor(i n / out) .. ceil((i + 1) n / out)`): one reshape when they
/// divide evenly, else one mean per window — never a product with zeros,
/// so an inf or NaN stays in its own windows as in torch.
fn pool_axis(x: &Tensor, d: usize, out: usize) -> Result<Tensor> {
    let n = x.dim(d)?;
    if n % out == 0 {
        let mut shape = x.dims().to_vec();
        shape[d] = out;
        shape.insert(d + 1, n / out);
        return Ok(x.reshape(shape)?.mean(d + 1)?);
    }
    let windows = (0..out)
        .map(|i| {
            let (start, end) = (i * n / out, ((i + 1) * n).div_ceil(out));
            x.narrow(d, start, end - start)?.mean_keepdim(d)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&windows, d)?)
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

fn run(layers: &[Built], x: &Tensor, mut rng: Option<&mut Rng>) -> Result<Tensor> {
    let mut x = x.clone();
    for layer in layers {
        x = apply(layer, &x, rng.as_deref_mut())?;
    }
    Ok(x)
}

fn apply(layer: &Built, x: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
    let rank = x.rank();
    Ok(match layer {
        Built::Linear(l) => l.forward(x)?,
        Built::QLinear(l) => l.forward(x)?,
        Built::Conv2d {
            weight,
            bias,
            stride,
            padding,
            dilation,
            groups,
        } => {
            let y = pad2d(x, *padding, 0.0)?.conv2d(weight, 0, *stride, *dilation, *groups)?;
            match bias {
                Some(b) => y.broadcast_add(&per_channel(b, 4)?)?,
                None => y,
            }
        }
        Built::BatchNorm {
            weight,
            bias,
            mean,
            var,
            count,
            eps,
            momentum,
        } => {
            // Reduce over every dimension but the channels (dim 1).
            let reduce: Vec<usize> = (0..rank).filter(|&d| d != 1).collect();
            let (m, v) = if let Some(_rng) = rng {
                let n = (x.elem_count() / x.dim(1)?) as f64;
                let mut mu = x.clone();
                let mut sq = x.sqr()?;
                for &d in reduce.iter().rev() {
                    mu = mu.sum_keepdim(d)?;
                    sq = sq.sum_keepdim(d)?;
                }
                let mu = (mu / n)?.flatten_all()?;
                let biased = ((sq / n)?.flatten_all()? - mu.sqr()?)?;
                let unbiased = (&biased * (n / (n - 1.0).max(1.0)))?;
                mean.set(&((mean.as_tensor() * (1.0 - momentum))? + (&mu * *momentum)?)?)?;
                var.set(&((var.as_tensor() * (1.0 - momentum))? + (unbiased * *momentum)?)?)?;
                count.set(&(count.as_tensor() + 1.0)?)?;
                (mu, biased)
            } else {
                (mean.as_tensor().clone(), var.as_tensor().clone())
            };
            let denom = (v + *eps)?.sqrt()?;
            x.broadcast_sub(&per_channel(&m, rank)?)?
                .broadcast_div(&per_channel(&denom, rank)?)?
                .broadcast_mul(&per_channel(weight, rank)?)?
                .broadcast_add(&per_channel(bias, rank)?)?
        }
        Built::LayerNorm {
            weight,
            bias,
            dims,
            eps,
        } => {
            let shape = x.dims().to_vec();
            let keep = rank - dims;
            let flat = x.flatten_from(keep)?;
            let mean = flat.mean_keepdim(D::Minus1)?;
            let centred = flat.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
            let mut y = centred
                .broadcast_div(&(var + *eps)?.sqrt()?)?
                .reshape(shape)?;
            if let (Some(w), Some(b)) = (weight, bias) {
                y = y.broadcast_mul(w)?.broadcast_add(b)?;
            }
            y
        }
        Built::Embedding(w) => {
            let ids = x.to_dtype(DType::U32)?;
            let mut shape = ids.dims().to_vec();
            shape.push(w.dim(1)?);
            w.index_select(&ids.flatten_all()?, 0)?.reshape(shape)?
        }
        Built::Relu => x.relu()?,
        Built::Gelu(tanh) => {
            if *tanh {
                x.gelu()?
            } else {
                x.gelu_erf()?
            }
        }
        Built::Silu => x.silu()?,
        Built::Sigmoid => candle_nn::ops::sigmoid(x)?,
        Built::Tanh => x.tanh()?,
        Built::Softmax(d) => candle_nn::ops::softmax(x, dim(*d, rank))?,
        Built::Dropout(p) => match rng {
            Some(rng) if *p > 0.0 => rng.dropout(x, *p)?,
            _ => x.clone(),
        },
        Built::Flatten(s, e) => x.flatten(dim(*s, rank), dim(*e, rank))?,
        Built::MaxPool(k, s, p) => {
            pad2d(x, *p, f64::NEG_INFINITY)?.max_pool2d_with_stride((k[0], k[1]), (s[0], s[1]))?
        }
        Built::AvgPool(k, s, p) => {
            pad2d(x, *p, 0.0)?.avg_pool2d_with_stride((k[0], k[1]), (s[0], s[1]))?
        }
        Built::AdaptiveAvgPool([oh, ow]) => {
            // One axis, then the other, the smaller intermediate first: it
            // holds no more than the larger of input and output.
            let (_, c, h, w) = x.dims4()?;
            if c * h * ow <= c * oh * w {
                pool_axis(&pool_axis(x, 3, *ow)?, 2, *oh)?
            } else {
                pool_axis(&pool_axis(x, 2, *oh)?, 3, *ow)?
            }
        }
        Built::Residual(inner) => (x + run(inner, x, rng)?)?,
    })
}
