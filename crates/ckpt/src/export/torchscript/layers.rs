//! Each spec layer kind as the TorchScript class `torch.jit.script` would
//! write for its `torch.nn` module: torch's qualified name, its
//! hyper-parameters as `Final` constants, its tensors, and a `forward`
//! calling the same aten operator ckpt's own inference computes.

use crate::compress::quantize::Quantization;
use crate::export::unsupported;
use crate::spec::Family;
use crate::{LayerKind, Result, StateDict};

/// A module class being defined, and the tensors its objects hold.
pub(super) struct Def {
    /// The qualified module (`torch.nn.modules.linear`).
    pub module: &'static str,
    /// The class name (`Linear`).
    pub name: &'static str,
    /// Tensor attributes: name, state-dict key, trainable parameter.
    pub tensors: Vec<(String, String, bool)>,
    /// `name : Final[type] = literal` lines.
    pub constants: Vec<String>,
    /// The lines of `forward(self, input)`.
    pub forward: Vec<String>,
}

/// What a layer's tensors are looked up in.
pub(super) struct Site<'a> {
    /// The layer's state-dict prefix (`fc1`, `block.0`).
    pub prefix: &'a str,
    /// The fitted weights.
    pub weights: &'a StateDict,
    /// A quantized package's quantization.
    pub quantization: Option<&'a Quantization>,
}

impl Def {
    fn new(module: &'static str, name: &'static str) -> Def {
        Def {
            module,
            name,
            tensors: Vec::new(),
            constants: Vec::new(),
            forward: Vec::new(),
        }
    }

    fn constant(&mut self, name: &str, ty: &str, literal: String) {
        self.constants
            .push(format!("{name} : Final[{ty}] = {literal}"));
    }

    fn ret(&mut self, expr: String) {
        self.forward.push(format!("return {expr}"));
    }

    /// Parameter `name` of the layer, as an expression: `self.weight`, or
    /// for an int8 weight, `int8 × scale` (its scales reshaped to
    /// broadcast along dimension 0, as ckpt dequantizes).
    fn tensor(&mut self, site: &Site, name: &str) -> Result<String> {
        self.attribute(site, name, true)
    }

    /// Buffer `name` (running statistics), as [`Def::tensor`].
    fn buffer(&mut self, site: &Site, name: &str) -> Result<String> {
        self.attribute(site, name, false)
    }

    fn attribute(&mut self, site: &Site, name: &str, trainable: bool) -> Result<String> {
        let key = format!("{}.{name}", site.prefix);
        let quantized = site.quantization.is_some_and(|q| q.tensors.contains(&key));
        if !quantized {
            self.tensors.push((name.into(), key, trainable));
            return Ok(format!("self.{name}"));
        }
        let rank = site
            .weights
            .get(&key)
            .map(|t| t.shape().len())
            .ok_or_else(|| unsupported(&key, "missing weight"))?;
        let scale = format!("{name}{}", crate::compress::quantize::SCALE_SUFFIX);
        self.tensors.push((name.into(), key.clone(), false));
        self.tensors
            .push((scale.clone(), format!("{}.{scale}", site.prefix), false));
        let mut dims = vec!["-1".to_owned()];
        dims.extend((1..rank).map(|_| "1".to_owned()));
        Ok(format!(
            "torch.mul(torch.to(self.{name}, 6), torch.reshape(self.{scale}, [{}]))",
            dims.join(", ")
        ))
    }
}

/// The class of a layer kind other than a block.
pub(super) fn define(kind: &LayerKind, site: &Site) -> Result<Def> {
    match kind.family() {
        Family::Linear | Family::Conv | Family::Embedding => weighted(kind, site),
        Family::Norm => norm(kind, site),
        Family::Activation | Family::Flatten => elementwise(kind, site.prefix),
        Family::Pool => Ok(pool(kind)),
        Family::Block => unreachable!("blocks are built from their layers"),
    }
}

/// Linear, Conv2d and Embedding: a weight (and bias) and one operator.
fn weighted(kind: &LayerKind, site: &Site) -> Result<Def> {
    Ok(match kind {
        LayerKind::Linear {
            in_features,
            out_features,
            bias,
        } => {
            let mut d = Def::new("torch.nn.modules.linear", "Linear");
            let w = d.tensor(site, "weight")?;
            let b = optional(&mut d, site, *bias, "bias")?;
            d.constant("in_features", "int", in_features.to_string());
            d.constant("out_features", "int", out_features.to_string());
            d.ret(format!("torch.linear(input, {w}, {b})"));
            d
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
            let mut d = Def::new("torch.nn.modules.conv", "Conv2d");
            let w = d.tensor(site, "weight")?;
            let b = optional(&mut d, site, *bias, "bias")?;
            d.constant("in_channels", "int", in_channels.to_string());
            d.constant("out_channels", "int", out_channels.to_string());
            d.constant("kernel_size", "Tuple[int, int]", tuple(kernel_size));
            d.constant("stride", "Tuple[int, int]", tuple(stride));
            d.constant("padding", "Tuple[int, int]", tuple(padding));
            d.constant("dilation", "Tuple[int, int]", tuple(dilation));
            d.constant("groups", "int", groups.to_string());
            d.constant("padding_mode", "str", "\"zeros\"".into());
            d.ret(format!(
                "torch.conv2d(input, {w}, {b}, {}, {}, {}, {groups})",
                list(stride),
                list(padding),
                list(dilation)
            ));
            d
        }
        LayerKind::Embedding {
            num_embeddings,
            embedding_dim,
        } => {
            let mut d = Def::new("torch.nn.modules.sparse", "Embedding");
            let w = d.tensor(site, "weight")?;
            d.constant("num_embeddings", "int", num_embeddings.to_string());
            d.constant("embedding_dim", "int", embedding_dim.to_string());
            d.ret(format!("torch.embedding({w}, input, -1, False, False)"));
            d
        }
        _ => unreachable!("dispatched by family"),
    })
}

/// `self.NAME` when the layer has it, else `None`.
fn optional(d: &mut Def, site: &Site, has: bool, name: &str) -> Result<String> {
    match has {
        true => d.tensor(site, name),
        false => Ok("None".into()),
    }
}

/// Batch and layer norms.
fn norm(kind: &LayerKind, site: &Site) -> Result<Def> {
    Ok(match kind {
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
            let name = kind.type_name();
            let mut d = Def::new("torch.nn.modules.batchnorm", name);
            let w = d.tensor(site, "weight")?;
            let b = d.tensor(site, "bias")?;
            let mean = d.buffer(site, "running_mean")?;
            let var = d.buffer(site, "running_var")?;
            d.buffer(site, "num_batches_tracked")?;
            d.constant("num_features", "int", num_features.to_string());
            d.constant("eps", "float", float(*eps, site.prefix)?);
            d.constant("momentum", "float", float(*momentum, site.prefix)?);
            d.constant("affine", "bool", "True".into());
            d.constant("track_running_stats", "bool", "True".into());
            d.forward.extend([
                "training = self.training".to_owned(),
                "if training:".to_owned(),
                "  _0 = torch.add_(self.num_batches_tracked, 1)".to_owned(),
            ]);
            d.ret(format!(
                "torch.batch_norm(input, {w}, {b}, {mean}, {var}, training, {}, {}, True)",
                float(*momentum, site.prefix)?,
                float(*eps, site.prefix)?
            ));
            d
        }
        LayerKind::LayerNorm {
            normalized_shape,
            eps,
            elementwise_affine,
        } => {
            let mut d = Def::new("torch.nn.modules.normalization", "LayerNorm");
            let w = optional(&mut d, site, *elementwise_affine, "weight")?;
            let b = optional(&mut d, site, *elementwise_affine, "bias")?;
            let ty = vec!["int"; normalized_shape.len()].join(", ");
            d.constant(
                "normalized_shape",
                &format!("Tuple[{ty}]"),
                tuple(normalized_shape),
            );
            d.constant("eps", "float", float(*eps, site.prefix)?);
            let affine = if *elementwise_affine { "True" } else { "False" };
            d.constant("elementwise_affine", "bool", affine.into());
            d.ret(format!(
                "torch.layer_norm(input, {}, {w}, {b}, {}, True)",
                list(normalized_shape),
                float(*eps, site.prefix)?
            ));
            d
        }
        _ => unreachable!("dispatched by family"),
    })
}

/// Activations, dropout and flatten: one operator on the input.
fn elementwise(kind: &LayerKind, at: &str) -> Result<Def> {
    let activation = "torch.nn.modules.activation";
    let (module, call) = match kind {
        LayerKind::ReLU => (activation, "torch.relu(input)".to_owned()),
        LayerKind::GELU { tanh } => {
            let approximate = if *tanh { "tanh" } else { "none" };
            (
                activation,
                format!("torch.gelu(input, approximate=\"{approximate}\")"),
            )
        }
        LayerKind::SiLU => (activation, "torch.silu(input)".to_owned()),
        LayerKind::Sigmoid => (activation, "torch.sigmoid(input)".to_owned()),
        LayerKind::Tanh => (activation, "torch.tanh(input)".to_owned()),
        LayerKind::Softmax { dim } => (activation, format!("torch.softmax(input, {dim}, None)")),
        LayerKind::Dropout { p } => (
            "torch.nn.modules.dropout",
            format!("torch.dropout(input, {}, self.training)", float(*p, at)?),
        ),
        LayerKind::Flatten { start_dim, end_dim } => (
            "torch.nn.modules.flatten",
            format!("torch.flatten(input, {start_dim}, {end_dim})"),
        ),
        _ => unreachable!("dispatched by family"),
    };
    let mut d = Def::new(module, kind.type_name());
    match kind {
        LayerKind::GELU { tanh } => {
            let approximate = if *tanh { "\"tanh\"" } else { "\"none\"" };
            d.constant("approximate", "str", approximate.into());
        }
        LayerKind::Softmax { dim } => d.constant("dim", "int", dim.to_string()),
        LayerKind::Dropout { p } => d.constant("p", "float", float(*p, at)?),
        LayerKind::Flatten { start_dim, end_dim } => {
            d.constant("start_dim", "int", start_dim.to_string());
            d.constant("end_dim", "int", end_dim.to_string());
        }
        _ => {}
    }
    d.ret(call);
    Ok(d)
}

/// The 2-D pools.
fn pool(kind: &LayerKind) -> Def {
    let module = "torch.nn.modules.pooling";
    let mut d = Def::new(module, kind.type_name());
    match kind {
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
            d.constant("kernel_size", "Tuple[int, int]", tuple(kernel_size));
            d.constant("stride", "Tuple[int, int]", tuple(stride));
            d.constant("padding", "Tuple[int, int]", tuple(padding));
            d.constant("ceil_mode", "bool", "False".into());
            let (k, s, p) = (list(kernel_size), list(stride), list(padding));
            d.ret(match kind {
                LayerKind::MaxPool2d { .. } => {
                    format!("torch.max_pool2d(input, {k}, {s}, {p}, [1, 1], False)")
                }
                _ => format!("torch.avg_pool2d(input, {k}, {s}, {p}, False, True, None)"),
            });
        }
        LayerKind::AdaptiveAvgPool2d { output_size } => {
            d.constant("output_size", "Tuple[int, int]", tuple(output_size));
            d.ret(format!(
                "torch.adaptive_avg_pool2d(input, {})",
                list(output_size)
            ));
        }
        _ => unreachable!("dispatched by family"),
    }
    d
}

/// `[a, b]`.
fn list(items: &[usize]) -> String {
    let items: Vec<String> = items.iter().map(usize::to_string).collect();
    format!("[{}]", items.join(", "))
}

/// `(a, b)`, or `(a,)` for one item.
fn tuple(items: &[usize]) -> String {
    match items {
        [one] => format!("({one},)"),
        _ => {
            let items: Vec<String> = items.iter().map(usize::to_string).collect();
            format!("({})", items.join(", "))
        }
    }
}

/// A float literal that reads back as the same f64 (`0.1`, `1e-5`).
fn float(v: f64, at: &str) -> Result<String> {
    if !v.is_finite() {
        return Err(unsupported(at, format!("{v} has no TorchScript literal")));
    }
    Ok(format!("{v:?}"))
}
