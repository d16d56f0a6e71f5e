//! The `torch.nn` settings of a traced module, from the one aten call its
//! `forward` makes (`torch.jit.trace` records no constants): the call
//! bound to the operator's schema, with the defaults a trace leaves out,
//! its tensors checked to be the module's own, and the shapes of those
//! tensors (`in_features` from a Linear's weight).

use std::collections::HashMap;

use super::source::{Arg, Args, Literal};
use crate::{Dict, Key, Value};

/// An operator's arguments: each name, and the default a trace leaves
/// out (as a literal) when it has one.
type Schema = &'static [(&'static str, Option<&'static str>)];

/// The operators a traced `torch.nn` module calls, and their schemas.
const SCHEMAS: &[(&str, Schema)] = &[
    (
        "linear",
        &[("input", None), ("weight", None), ("bias", Some("None"))],
    ),
    (
        "_convolution",
        &[
            ("input", None),
            ("weight", None),
            ("bias", None),
            ("stride", None),
            ("padding", None),
            ("dilation", None),
            ("transposed", None),
            ("output_padding", None),
            ("groups", None),
        ],
    ),
    (
        "batch_norm",
        &[
            ("input", None),
            ("weight", None),
            ("bias", None),
            ("running_mean", None),
            ("running_var", None),
            ("training", None),
            ("momentum", None),
            ("eps", None),
        ],
    ),
    (
        "layer_norm",
        &[
            ("input", None),
            ("normalized_shape", None),
            ("weight", Some("None")),
            ("bias", Some("None")),
            ("eps", Some("1e-05")),
        ],
    ),
    (
        "embedding",
        &[
            ("weight", None),
            ("indices", None),
            ("padding_idx", Some("-1")),
        ],
    ),
    ("relu", &[("input", None)]),
    (
        "gelu",
        &[("input", None), ("approximate", Some("\"none\""))],
    ),
    ("silu", &[("input", None)]),
    ("sigmoid", &[("input", None)]),
    ("tanh", &[("input", None)]),
    (
        "softmax",
        &[("input", None), ("dim", None), ("dtype", Some("None"))],
    ),
    ("dropout", &[("input", None), ("p", None), ("train", None)]),
    (
        "flatten",
        &[
            ("input", None),
            ("start_dim", Some("0")),
            ("end_dim", Some("-1")),
        ],
    ),
    (
        "max_pool2d",
        &[
            ("input", None),
            ("kernel_size", None),
            ("stride", Some("[]")),
            ("padding", Some("[0, 0]")),
            ("dilation", Some("[1, 1]")),
            ("ceil_mode", Some("False")),
        ],
    ),
    (
        "avg_pool2d",
        &[
            ("input", None),
            ("kernel_size", None),
            ("stride", Some("[]")),
            ("padding", Some("[0, 0]")),
            ("ceil_mode", Some("False")),
            ("count_include_pad", Some("True")),
            ("divisor_override", Some("None")),
        ],
    ),
    (
        "adaptive_avg_pool2d",
        &[("input", None), ("output_size", None)],
    ),
];

/// The tensors each operator takes from its module, by argument name.
const TENSORS: &[(&str, &[&str])] = &[
    ("linear", &["weight", "bias"]),
    ("_convolution", &["weight", "bias"]),
    (
        "batch_norm",
        &["weight", "bias", "running_mean", "running_var"],
    ),
    ("layer_norm", &["weight", "bias"]),
    ("embedding", &["weight"]),
];

/// The `torch.nn` attributes of a traced module of `class` whose forward
/// calls `op` with `args` (`locals` naming the attributes of `self` its
/// locals hold); `None` when the call is not its class's, or not with the
/// module's own tensors.
pub(super) fn attributes(
    class: &str,
    op: &str,
    args: &Args,
    locals: &HashMap<String, String>,
    tensors: &[(&str, Vec<u64>)],
) -> Option<Dict> {
    let (_, schema) = SCHEMAS.iter().find(|(name, _)| *name == op)?;
    let bound = bind(schema, args)?;
    own_tensors(op, &bound, locals, tensors)?;
    let kind = class.strip_prefix("torch.nn.modules.")?;
    let call = Call {
        bound: &bound,
        tensors,
    };
    let mut a = Dict::new();
    let mut set = |k: &str, v: Value| {
        a.insert(Key::Str(k.to_owned()), v);
    };
    match (kind, op) {
        ("linear.Linear", "linear") => {
            let w = call.shape("weight", 2)?;
            set("in_features", int(w[1]));
            set("out_features", int(w[0]));
        }
        ("conv.Conv2d", "_convolution") => conv(&call, &mut set)?,
        ("batchnorm.BatchNorm1d" | "batchnorm.BatchNorm2d", "batch_norm") => {
            let n = call
                .shape("running_mean", 1)
                .or_else(|| call.shape("weight", 1))?;
            set("num_features", int(n[0]));
            set("eps", call.lit("eps")?);
            set("momentum", call.lit("momentum")?);
            set("affine", Value::Bool(call.given("weight")));
            set(
                "track_running_stats",
                Value::Bool(call.given("running_mean")),
            );
        }
        ("normalization.LayerNorm", "layer_norm") => {
            set("normalized_shape", call.lit("normalized_shape")?);
            set("eps", call.lit("eps")?);
            set("elementwise_affine", Value::Bool(call.given("weight")));
        }
        ("sparse.Embedding", "embedding") => {
            let w = call.shape("weight", 2)?;
            set("num_embeddings", int(w[0]));
            set("embedding_dim", int(w[1]));
            set("max_norm", Value::None);
        }
        ("activation.ReLU", "relu")
        | ("activation.SiLU", "silu")
        | ("activation.Sigmoid", "sigmoid")
        | ("activation.Tanh", "tanh") => {}
        ("activation.GELU", "gelu") => set("approximate", call.lit("approximate")?),
        ("activation.Softmax", "softmax") if call.lit("dtype")? == Value::None => {
            set("dim", call.lit("dim")?)
        }
        // Traced in training mode, dropout is random in torch.
        ("dropout.Dropout", "dropout") if call.lit("train")? == Value::Bool(false) => {
            set("p", call.lit("p")?)
        }
        ("flatten.Flatten", "flatten") => {
            set("start_dim", call.lit("start_dim")?);
            set("end_dim", call.lit("end_dim")?);
        }
        ("pooling.MaxPool2d", "max_pool2d") | ("pooling.AvgPool2d", "avg_pool2d") => {
            pool(&call, op, &mut set)?
        }
        ("pooling.AdaptiveAvgPool2d", "adaptive_avg_pool2d") => {
            set("output_size", call.lit("output_size")?)
        }
        _ => return None,
    }
    Some(a)
}

/// A bound call and the module's tensors.
struct Call<'a> {
    bound: &'a HashMap<&'static str, Arg>,
    tensors: &'a [(&'a str, Vec<u64>)],
}

impl Call<'_> {
    /// A literal argument.
    fn lit(&self, name: &str) -> Option<Value> {
        match self.bound.get(name) {
            Some(Arg::Literal(v)) => Some(v.clone()),
            _ => None,
        }
    }

    /// True when the argument is given (not `None`).
    fn given(&self, name: &str) -> bool {
        !matches!(self.bound.get(name), Some(Arg::Literal(Value::None)) | None)
    }

    /// The shape of the module's tensor `name`, of `rank` dimensions.
    fn shape(&self, name: &str, rank: usize) -> Option<&[u64]> {
        self.tensors
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, s)| s.as_slice())
            .filter(|s| s.len() == rank)
    }
}

fn int(v: u64) -> Value {
    Value::Int(v as i64)
}

/// `_convolution(input, weight, bias, stride, padding, dilation,
/// transposed, output_padding, groups, ...)` as Conv2d's settings.
fn conv(call: &Call, set: &mut impl FnMut(&str, Value)) -> Option<()> {
    let w = call.shape("weight", 4)?;
    let groups = match call.lit("groups")? {
        Value::Int(g) if g > 0 => g as u64,
        _ => return None,
    };
    if call.lit("transposed")? != Value::Bool(false) {
        return None;
    }
    set("in_channels", int(w[1].checked_mul(groups)?));
    set("out_channels", int(w[0]));
    set("kernel_size", Value::Tuple(vec![int(w[2]), int(w[3])]));
    for k in ["stride", "padding", "dilation"] {
        set(k, call.lit(k)?);
    }
    set("groups", int(groups));
    set("padding_mode", Value::Str("zeros".into()));
    Some(())
}

/// `max_pool2d`/`avg_pool2d` as their modules' settings (an empty stride
/// is the kernel's).
fn pool(call: &Call, op: &str, set: &mut impl FnMut(&str, Value)) -> Option<()> {
    let kernel = call.lit("kernel_size")?;
    let stride = match call.lit("stride")? {
        Value::List(items) if items.is_empty() => kernel.clone(),
        other => other,
    };
    set("kernel_size", kernel);
    set("stride", stride);
    set("padding", call.lit("padding")?);
    set("ceil_mode", call.lit("ceil_mode")?);
    if op == "max_pool2d" {
        set("dilation", call.lit("dilation")?);
    } else {
        set("count_include_pad", call.lit("count_include_pad")?);
        set("divisor_override", call.lit("divisor_override")?);
    }
    Some(())
}

/// Checks that every tensor the operator takes is the module's own under
/// the same name (`weight` a local read from `self.weight`), and that an
/// absent one (`None`) is absent from the module too.
fn own_tensors(
    op: &str,
    bound: &HashMap<&'static str, Arg>,
    locals: &HashMap<String, String>,
    tensors: &[(&str, Vec<u64>)],
) -> Option<()> {
    let names = TENSORS
        .iter()
        .find(|(o, _)| *o == op)
        .map_or(&[][..], |(_, n)| *n);
    for name in names {
        let held = tensors.iter().any(|(k, _)| k == name);
        match bound.get(name)? {
            Arg::Literal(Value::None) if !held => {}
            Arg::Name(local) if held && locals.get(local).map(String::as_str) == Some(*name) => {}
            _ => return None,
        }
    }
    Some(())
}

/// The call's arguments by the schema's names, defaults filled in;
/// positional arguments past the schema's (cudnn flags) are ignored.
fn bind(schema: Schema, args: &Args) -> Option<HashMap<&'static str, Arg>> {
    let mut bound = HashMap::new();
    let mut positional = 0;
    for (name, arg) in args {
        let key = match name {
            Some(n) => schema.iter().find(|(s, _)| s == n)?.0,
            None => {
                positional += 1;
                match schema.get(positional - 1) {
                    Some((s, _)) => *s,
                    None => continue,
                }
            }
        };
        bound.insert(key, arg.clone());
    }
    for (name, default) in schema {
        if !bound.contains_key(name) {
            bound.insert(*name, Arg::Literal(Literal::parse((*default)?)?));
        }
    }
    Some(bound)
}

#[cfg(test)]
mod tests {
    use super::super::source::parse_file;
    use super::super::source::Body;
    use super::*;

    /// The attributes of `class` whose traced forward is `forward`.
    fn traced(class: &str, forward: &str, tensors: &[(&str, Vec<u64>)]) -> Option<Dict> {
        let text = format!(
            "class M(Module):\n  def forward(self: X,\n    input: Tensor) -> Tensor:\n{forward}"
        );
        let file = parse_file(&text);
        let Body::Call { op, args, locals } = &file["M"].body else {
            return None;
        };
        attributes(
            &format!("torch.nn.modules.{class}"),
            op,
            args,
            locals,
            tensors,
        )
    }

    #[test]
    fn a_traced_call_binds_with_the_schemas_defaults() {
        let a = traced(
            "pooling.MaxPool2d",
            "    return torch.max_pool2d(input, [3, 3], [2, 2], [1, 1], [1, 1])\n",
            &[],
        )
        .unwrap();
        assert_eq!(a.get(&Key::from("ceil_mode")), Some(&Value::Bool(false)));
        let linear =
            "    weight = self.weight\n    _0 = torch.linear(input, weight)\n    return _0\n";
        let a = traced("linear.Linear", linear, &[("weight", vec![3, 4])]).unwrap();
        assert_eq!(a.get(&Key::from("in_features")), Some(&Value::Int(4)));
    }

    #[test]
    fn calls_that_are_not_the_classes_own_are_refused() {
        let w = [("weight", vec![3, 4]), ("bias", vec![3])];
        for (class, forward) in [
            // Another operator, two calls, another pool, a bias unused.
            ("activation.Tanh", "    return torch.relu(input)\n"),
            ("pooling.MaxPool2d", "    x = torch.constant_pad_nd(input, [1, 1])\n    return torch.max_pool2d(x, [3, 3])\n"),
            ("pooling.MaxPool2d", "    return torch.avg_pool2d(input, [3, 3])\n"),
            ("linear.Linear", "    weight = self.weight\n    return torch.linear(input, weight)\n"),
            // A tensor that is not the module's own, training-mode dropout.
            ("linear.Linear", "    w = self.bias\n    b = self.weight\n    return torch.linear(input, w, b)\n"),
            ("dropout.Dropout", "    return torch.dropout(input, 0.5, True)\n"),
            // Other statements, an unclosed call.
            ("activation.ReLU", "    ops.prim.RaiseException(\"x\")\n    return torch.relu(input)\n"),
            ("activation.GELU", "    return torch.gelu(input, approximate=\"tanh\"\n"),
        ] {
            assert!(traced(class, forward, &w).is_none(), "{class}: {forward}");
        }
    }
}
