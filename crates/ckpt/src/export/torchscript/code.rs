//! The classes of an export, collected into TorchScript source files, and
//! the module objects that use them. Classes with the same source are
//! written once; another class of the same name gets torch's
//! `___torch_mangle_N` qualifier.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::layers::{define, Def, Site};
use crate::compress::quantize::Quantization;
use crate::export::unsupported;
use crate::{Layer, LayerKind, ModelSpec, Result, StateDict};

/// A module object to pickle: its class, tensors and children.
pub(super) struct Object {
    /// Its qualified class (`__torch__.torch.nn.modules.linear.Linear`).
    pub class: String,
    /// Tensor attributes: name, state-dict key, trainable parameter.
    pub tensors: Vec<(String, String, bool)>,
    /// Submodules by attribute name.
    pub children: Vec<(String, Object)>,
}

/// The classes written so far.
#[derive(Default)]
pub(super) struct Code {
    /// Qualified name, the qualifier it is written under, its source.
    classes: Vec<(String, String, String)>,
    /// (module, name, source) to its index in `classes`.
    seen: HashMap<(String, String, String), usize>,
    /// The qualified names taken.
    taken: HashSet<String>,
    /// Objects per class name (`Linear`).
    counts: BTreeMap<String, usize>,
}

/// Stands for the class's own qualified name in its source.
const SELF: &str = "{SELF}";

impl Code {
    /// The model: a `Sequential` of the spec's layers.
    pub(super) fn model(
        &mut self,
        spec: &ModelSpec,
        weights: &StateDict,
        quantization: Option<&Quantization>,
    ) -> Result<Object> {
        self.block(&spec.layers, "", false, weights, quantization)
    }

    /// A `Sequential` (or, with `residual`, a `Residual`) of `layers`,
    /// whose tensors are named under `prefix`.
    fn block(
        &mut self,
        layers: &[Layer],
        prefix: &str,
        residual: bool,
        weights: &StateDict,
        quantization: Option<&Quantization>,
    ) -> Result<Object> {
        let mut children = Vec::new();
        let mut lines = vec!["x = input".to_owned()];
        let mut declarations = Vec::new();
        for layer in layers {
            let name = &layer.name;
            let at = format!("{prefix}{name}");
            check_name(name, &at)?;
            let child = match &layer.kind {
                LayerKind::Residual { layers } | LayerKind::Sequential { layers } => {
                    let residual = matches!(layer.kind, LayerKind::Residual { .. });
                    self.block(layers, &format!("{at}."), residual, weights, quantization)?
                }
                kind => {
                    let site = Site {
                        prefix: &at,
                        weights,
                        quantization,
                    };
                    self.leaf(define(kind, &site)?)
                }
            };
            declarations.push(format!("__annotations__[\"{name}\"] = {}", child.class));
            lines.push(format!("x = (getattr(self, \"{name}\")).forward(x, )"));
            children.push((name.clone(), child));
        }
        lines.push(match residual {
            true => "return torch.add(input, x)".to_owned(),
            false => "return x".to_owned(),
        });
        let (module, name) = match residual {
            true => ("ckpt.modules", "Residual"),
            false => ("torch.nn.modules.container", "Sequential"),
        };
        let source = source(name, &[], &[], &declarations, &lines);
        Ok(Object {
            class: self.intern(module, name, source),
            tensors: Vec::new(),
            children,
        })
    }

    /// A layer's object, its class interned.
    fn leaf(&mut self, def: Def) -> Object {
        let parameters: Vec<&str> = def
            .tensors
            .iter()
            .filter(|t| t.2)
            .map(|t| t.0.as_str())
            .collect();
        let buffers: Vec<&str> = def
            .tensors
            .iter()
            .filter(|t| !t.2)
            .map(|t| t.0.as_str())
            .collect();
        let source = source(
            def.name,
            &parameters,
            &buffers,
            &def.constants,
            &def.forward,
        );
        Object {
            class: self.intern(def.module, def.name, source),
            tensors: def.tensors,
            children: Vec::new(),
        }
    }

    /// The qualified name of the class `module.name` with `source`,
    /// adding it when new.
    fn intern(&mut self, module: &str, name: &str, source: String) -> String {
        *self.counts.entry(name.to_owned()).or_default() += 1;
        let key = (module.to_owned(), name.to_owned(), source);
        if let Some(&i) = self.seen.get(&key) {
            return self.classes[i].0.clone();
        }
        let taken = self.taken.contains(&format!("__torch__.{module}.{name}"));
        let qualifier = match taken {
            false => format!("__torch__.{module}"),
            true => format!("__torch__.{module}.___torch_mangle_{}", self.classes.len()),
        };
        let qualified = format!("{qualifier}.{name}");
        let text = key.2.replace(SELF, &qualified);
        self.seen.insert(key, self.classes.len());
        self.taken.insert(qualified.clone());
        self.classes.push((qualified.clone(), qualifier, text));
        qualified
    }

    /// The source files: `__torch__/torch/nn/modules/linear.py`, each with
    /// the classes of its qualifier, in first-use order.
    pub(super) fn files(&self) -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (_, qualifier, text) in &self.classes {
            match index.get(qualifier.as_str()) {
                Some(&i) => files[i].1.push_str(text),
                None => {
                    index.insert(qualifier, files.len());
                    files.push((format!("{}.py", qualifier.replace('.', "/")), text.clone()));
                }
            }
        }
        files
    }

    /// Objects per class name.
    pub(super) fn counts(&self) -> BTreeMap<String, usize> {
        self.counts.clone()
    }
}

/// A class's TorchScript source, `forward`'s `self` typed as [`SELF`].
fn source(
    name: &str,
    parameters: &[&str],
    buffers: &[&str],
    declarations: &[String],
    forward: &[String],
) -> String {
    let quoted =
        |names: &[&str]| -> String { names.iter().map(|n| format!("\"{n}\", ")).collect() };
    let mut s = format!("class {name}(Module):\n");
    s += &format!("  __parameters__ = [{}]\n", quoted(parameters));
    s += &format!("  __buffers__ = [{}]\n", quoted(buffers));
    for t in parameters.iter().chain(buffers) {
        s += &format!("  {t} : Tensor\n");
    }
    s += "  training : bool\n";
    for d in declarations {
        s += &format!("  {d}\n");
    }
    s += &format!("  def forward(self: {SELF},\n    input: Tensor) -> Tensor:\n");
    for line in forward {
        s += &format!("    {line}\n");
    }
    s
}

/// Refuses a layer name TorchScript source could not hold as an
/// attribute: letters, digits and `_` only, and none of a module's own.
fn check_name(name: &str, at: &str) -> Result<()> {
    let plain = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plain || name.starts_with("__") || ["training", "forward"].contains(&name) {
        return Err(unsupported(
            at,
            format!(
                "the layer name {name:?} cannot be a TorchScript attribute \
                 (letters, digits and _, not starting with __, not training or forward)"
            ),
        ));
    }
    Ok(())
}
