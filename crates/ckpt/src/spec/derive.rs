//! A spec read out of a pickled model (`torch.save(model)` of an
//! `nn.Sequential`): each module's class and attributes mapped to the
//! spec's layer JSON, never run. A module whose `forward` is user code (a
//! class outside `torch.nn`), or a `torch.nn` option the spec cannot
//! express, is refused with the module and the reason named; nothing is
//! guessed.

use serde_json::{json, Map, Value as Json};

use super::{bad, ModelSpec};
use crate::format::pytorch::PickledModule;
use crate::report::to_json;
use crate::{Key, Result};

const NN: &str = "torch.nn.modules.";
const SEQUENTIAL: &str = "torch.nn.modules.container.Sequential";

impl ModelSpec {
    /// The spec of a pickled `nn.Sequential` whose modules are all spec
    /// layer kinds, named `name`.
    /// `input_shape` (per sample) is needed unless the file records it
    /// (a ckpt TorchScript export's metadata) or the first layer tells (a
    /// Linear's `in_features`, a BatchNorm1d's `num_features`).
    pub fn from_module(
        module: &PickledModule,
        name: &str,
        input_shape: Option<&[usize]>,
    ) -> Result<ModelSpec> {
        let mut layers = Vec::new();
        sequential(module, &mut layers)?;
        let input_shape = match input_shape.or(module.input_shape.as_deref()) {
            Some(shape) => shape.to_vec(),
            None => inferred_input(&layers).ok_or_else(|| {
                bad(
                    "spec",
                    "the model does not say its input shape (its first layer is not a Linear or \
                     BatchNorm1d): give it with --input-shape (ckpt run, export, convert --package)",
                )
            })?,
        };
        ModelSpec::from_json_value(&json!({
            "name": name,
            "input_shape": input_shape,
            "layers": layers,
        }))
    }
}

/// The children of a Sequential as layers; a nested Sequential becomes a
/// `Sequential` block (its parameters keep their dotted names).
fn sequential(module: &PickledModule, out: &mut Vec<Json>) -> Result<()> {
    if module.class != SEQUENTIAL {
        return Err(refused("model", &module.class));
    }
    hooks(module, "model")?;
    children(module, "", 0, out)
}

/// The block type of a container class: torch's `nn.Sequential`, or the
/// residual block of ckpt's own TorchScript exports.
fn block_type(class: &str) -> Option<&'static str> {
    match class {
        SEQUENTIAL => Some("Sequential"),
        "__torch__.ckpt.modules.Residual" => Some("Residual"),
        _ => None,
    }
}

/// The layers of the Sequential `module` (named `prefix` + name in
/// errors), nested ones no deeper than a spec allows.
fn children(module: &PickledModule, prefix: &str, depth: usize, out: &mut Vec<Json>) -> Result<()> {
    for (name, child) in &module.children {
        let at = format!("{prefix}{name}");
        let Some(kind) = block_type(&child.class) else {
            out.push(layer(child, name, &at)?);
            continue;
        };
        if depth >= super::MAX_DEPTH {
            return Err(bad(
                &at,
                format!("Sequentials nested deeper than {}", super::MAX_DEPTH),
            ));
        }
        hooks(child, &at)?;
        let mut inner = Vec::new();
        children(child, &format!("{at}."), depth + 1, &mut inner)?;
        out.push(json!({"name": name, "type": kind, "layers": inner}));
    }
    Ok(())
}

fn refused(at: &str, class: &str) -> crate::Error {
    let why = match class.strip_prefix(NN) {
        Some(_) => "a torch.nn module the spec has no layer kind for",
        None => "its forward is user code, which ckpt never runs or guesses: write a spec (--spec)",
    };
    bad(at, format!("cannot derive a spec from {class}: {why}"))
}

/// Refuses a module with forward hooks, or TorchScript code that is not
/// its class's: its output is not its class's.
fn hooks(m: &PickledModule, at: &str) -> Result<()> {
    if m.foreign_forward {
        return Err(bad(
            at,
            format!(
                "the TorchScript code of {} is not torch.nn's for its class (a traced forward \
                 that is not the class's one operator), which ckpt never runs or guesses: \
                 write a spec (--spec)",
                m.class
            ),
        ));
    }
    match m.hooks {
        true => Err(bad(
            at,
            format!(
                "{} has forward hooks registered, which are user code ckpt never runs: \
                 write a spec (--spec)",
                m.class
            ),
        )),
        false => Ok(()),
    }
}

/// One module as a spec layer named `name` (`at` in errors).
fn layer(m: &PickledModule, name: &str, at: &str) -> Result<Json> {
    let kind = m
        .class
        .strip_prefix(NN)
        .ok_or_else(|| refused(at, &m.class))?;
    if !m.is_module {
        return Err(bad(at, format!("{} is not a pickled nn.Module", m.class)));
    }
    hooks(m, at)?;
    let (kind, fields, defaults): (&str, &[&str], &[(&str, Json)]) = match kind {
        "linear.Linear" => ("Linear", &["in_features", "out_features"], &[]),
        "conv.Conv2d" => (
            "Conv2d",
            &[
                "in_channels",
                "out_channels",
                "kernel_size",
                "stride",
                "padding",
                "dilation",
                "groups",
            ],
            &[("padding_mode", json!("zeros"))],
        ),
        "batchnorm.BatchNorm1d" | "batchnorm.BatchNorm2d" => (
            kind.trim_start_matches("batchnorm."),
            &["num_features", "eps", "momentum"],
            &[
                ("affine", json!(true)),
                ("track_running_stats", json!(true)),
            ],
        ),
        "normalization.LayerNorm" => (
            "LayerNorm",
            &["normalized_shape", "eps", "elementwise_affine"],
            &[],
        ),
        "sparse.Embedding" => (
            "Embedding",
            &["num_embeddings", "embedding_dim"],
            &[("max_norm", Json::Null)],
        ),
        "activation.ReLU" => ("ReLU", &[], &[]),
        "activation.GELU" => ("GELU", &["approximate"], &[]),
        "activation.SiLU" => ("SiLU", &[], &[]),
        "activation.Sigmoid" => ("Sigmoid", &[], &[]),
        "activation.Tanh" => ("Tanh", &[], &[]),
        "activation.Softmax" => ("Softmax", &["dim"], &[]),
        "dropout.Dropout" => ("Dropout", &["p"], &[]),
        "flatten.Flatten" => ("Flatten", &["start_dim", "end_dim"], &[]),
        "pooling.MaxPool2d" => (
            "MaxPool2d",
            &["kernel_size", "stride", "padding"],
            &[
                ("dilation", json!(1)),
                ("ceil_mode", json!(false)),
                ("return_indices", json!(false)),
            ],
        ),
        "pooling.AvgPool2d" => (
            "AvgPool2d",
            &["kernel_size", "stride", "padding"],
            &[
                ("ceil_mode", json!(false)),
                ("count_include_pad", json!(true)),
                ("divisor_override", Json::Null),
            ],
        ),
        "pooling.AdaptiveAvgPool2d" => ("AdaptiveAvgPool2d", &["output_size"], &[]),
        _ => return Err(refused(at, &m.class)),
    };
    let attr = |key: &str| match (key, m.attributes.get(&Key::from(key))) {
        // Pickles of torch before 1.12 have no `approximate`; torch's
        // __setstate__ then sets "none".
        ("approximate", None) => Some(json!("none")),
        (_, found) => found.map(to_json),
    };
    for (key, default) in defaults {
        if let Some(found) = attr(key).filter(|v| !same(v, default)) {
            return Err(bad(
                at,
                format!(
                    "{} with {key}={found}: the spec has no such option",
                    m.class
                ),
            ));
        }
    }
    let mut map = Map::new();
    map.insert("name".into(), json!(name));
    map.insert("type".into(), json!(kind));
    for key in fields {
        match attr(key) {
            Some(v) => map.insert((*key).into(), v),
            None => return Err(bad(at, format!("{} without its {key}", m.class))),
        };
    }
    let has = |p: &str| m.parameters.iter().any(|n| n == p);
    match kind {
        "Linear" | "Conv2d" => {
            map.insert("bias".into(), json!(has("bias")));
        }
        "LayerNorm" if map.get("elementwise_affine") == Some(&json!(true)) && !has("bias") => {
            return Err(bad(
                at,
                "LayerNorm with bias=False: the spec has no such option",
            ));
        }
        "Softmax" if map.get("dim") == Some(&Json::Null) => {
            return Err(bad(
                at,
                "Softmax without dim (an implicit dimension): give a spec",
            ));
        }
        _ => {}
    }
    // torch keeps a pool's default stride as None or []: the kernel size.
    if let Some(stride) = map.get("stride") {
        if stride.is_null() || stride.as_array().is_some_and(Vec::is_empty) {
            map.remove("stride");
        }
    }
    Ok(Json::Object(map))
}

/// JSON equality that takes 1 and 1.0 as the same number, and a pair of
/// ones (`dilation=(1, 1)`) as 1.
fn same(a: &Json, b: &Json) -> bool {
    match (a, b.as_f64()) {
        (Json::Array(items), Some(_)) => !items.is_empty() && items.iter().all(|i| same(i, b)),
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

/// The input shape the first layer (or a first Sequential's) tells, when
/// it does.
fn inferred_input(layers: &[Json]) -> Option<Vec<usize>> {
    let first = layers.first()?;
    let size = |key: &str| first.get(key)?.as_u64().map(|n| vec![n as usize]);
    match first.get("type")?.as_str()? {
        "Linear" => size("in_features"),
        "BatchNorm1d" => size("num_features"),
        "Sequential" => inferred_input(first.get("layers")?.as_array()?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dict, Value};

    fn module(class: &str, attrs: &[(&str, Value)], params: &[&str]) -> PickledModule {
        let mut attributes = Dict::new();
        for (k, v) in attrs {
            attributes.insert((*k).into(), v.clone());
        }
        PickledModule {
            class: format!("{NN}{class}"),
            attributes,
            parameters: params.iter().map(|p| p.to_string()).collect(),
            is_module: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_sequential_of_linears_gives_the_spec_and_its_input() {
        let lin = |i, o, p: &[&str]| {
            module(
                "linear.Linear",
                &[
                    ("in_features", Value::Int(i)),
                    ("out_features", Value::Int(o)),
                ],
                p,
            )
        };
        let mut seq = module("container.Sequential", &[], &[]);
        seq.children = vec![
            ("0".into(), lin(4, 3, &["weight", "bias"])),
            (
                "1".into(),
                module("activation.ReLU", &[("inplace", Value::Bool(false))], &[]),
            ),
            ("2".into(), lin(3, 2, &["weight"])),
        ];
        let spec = ModelSpec::from_module(&seq, "m", None).unwrap();
        assert_eq!(spec.input_shape, [4]);
        let names: Vec<String> = spec.parameters().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["0.weight", "0.bias", "2.weight"]);
    }

    #[test]
    fn user_classes_and_unsupported_options_are_refused_by_name() {
        let mut seq = module("container.Sequential", &[], &[]);
        let mut custom = module("x", &[], &[]);
        custom.class = "__main__.Residual".into();
        seq.children = vec![("0".into(), custom)];
        let err = ModelSpec::from_module(&seq, "m", Some(&[4]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("__main__.Residual") && err.contains("user code"),
            "{err}"
        );
        seq.children = vec![(
            "0".into(),
            module(
                "pooling.MaxPool2d",
                &[
                    ("kernel_size", Value::Int(2)),
                    ("ceil_mode", Value::Bool(true)),
                ],
                &[],
            ),
        )];
        let err = ModelSpec::from_module(&seq, "m", Some(&[1, 4, 4]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ceil_mode=true"), "{err}");
        let err = ModelSpec::from_module(&seq.children[0].1, "m", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("torch.nn.modules.pooling.MaxPool2d"), "{err}");
        // Forward hooks, and children that are not pickled modules.
        let mut relu = module("activation.ReLU", &[], &[]);
        relu.hooks = true;
        seq.children = vec![("0".into(), relu.clone())];
        let err = ModelSpec::from_module(&seq, "m", Some(&[4]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("forward hooks"), "{err}");
        relu.hooks = false;
        relu.is_module = false;
        seq.children = vec![("0".into(), relu)];
        let err = ModelSpec::from_module(&seq, "m", Some(&[4]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a pickled nn.Module"), "{err}");
        // A pair of ones is the default dilation.
        let ones = Value::Tuple(vec![Value::Int(1), Value::Int(1)]);
        let attrs = [
            ("kernel_size", Value::Int(2)),
            ("stride", Value::None),
            ("padding", Value::Int(0)),
            ("dilation", ones),
        ];
        seq.children = vec![("0".into(), module("pooling.MaxPool2d", &attrs, &[]))];
        assert!(ModelSpec::from_module(&seq, "m", Some(&[1, 4, 4])).is_ok());
    }
}
