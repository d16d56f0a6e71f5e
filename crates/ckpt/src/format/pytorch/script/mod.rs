//! The module tree of a TorchScript archive, read without running
//! anything: each module object's class (torch's qualified name, its
//! `___torch_mangle_N` qualifier dropped), its parameters, and its
//! hyper-parameters, from the class's `Final` constants
//! (`torch.jit.script`, and ckpt's own exports) or from the one aten call
//! its traced `forward` makes (`torch.jit.trace`, see `traced`).
//! `source` reads the classes' source files.
//!
//! Each class is parsed once, and every visit of an object is charged to
//! a budget by the attributes, constants and call arguments it copies, so
//! objects sharing a large class cannot make the walk quadratic.

mod source;
mod traced;

use std::collections::HashMap;
use std::rc::Rc;

use super::module::PickledModule;
use super::pickle::{Id, Obj, Unpickled};
use crate::Key;
use source::{parse_file, Body, Class};

/// The class name of ckpt's residual blocks in its TorchScript exports.
pub(crate) const RESIDUAL: &str = "__torch__.ckpt.modules.Residual";
const SEQUENTIAL: &str = "torch.nn.modules.container.Sequential";

/// The module tree at the root of `u`, the classes' sources read by
/// `source` (the text of `code/__torch__/a/b.py` for the qualifier
/// `__torch__.a.b`); `None` when the root is not a module object or the
/// tree is too large or deep to describe.
pub(crate) fn tree(
    u: &Unpickled,
    source: impl FnMut(&str) -> Option<String>,
) -> Option<PickledModule> {
    let mut walk = Walk {
        u,
        source,
        files: HashMap::new(),
        budget: u.arena.len().saturating_mul(8).saturating_add(1 << 16),
    };
    walk.node(u.root, 0)
}

struct Walk<'a, F> {
    u: &'a Unpickled,
    source: F,
    /// Parsed files by qualifier (`None`: missing, not text, or not a
    /// qualifier of identifiers).
    files: HashMap<String, Option<HashMap<String, Rc<Class>>>>,
    /// Entries that may still be copied.
    budget: usize,
}

impl<F: FnMut(&str) -> Option<String>> Walk<'_, F> {
    fn node(&mut self, id: Id, depth: usize) -> Option<PickledModule> {
        if depth > 128 {
            return None;
        }
        let u = self.u;
        let Obj::Object { class, state, .. } = &u.arena[id] else {
            return None;
        };
        let (qualifier, name) = (&class.0, &class.1);
        let attrs = match state.map(|s| &u.arena[s]) {
            Some(Obj::Dict(pairs)) => pairs.as_slice(),
            _ => &[],
        };
        let source = self.class(qualifier, name);
        let cost = source.as_ref().map_or(0, |c| c.cost());
        self.budget = self.budget.checked_sub(attrs.len() + 1 + cost)?;
        let mut module = PickledModule {
            class: normalized(qualifier, name),
            is_module: true,
            ..Default::default()
        };
        let mut tensors = Vec::new();
        for &(k, v) in attrs {
            let Obj::Str(key) = &u.arena[k] else { continue };
            match &u.arena[v] {
                Obj::Tensor(t) => tensors.push((key.as_str(), t.shape.clone())),
                Obj::Object { .. } => {
                    let child = self.node(v, depth + 1)?;
                    module.children.push((key.clone(), child));
                }
                _ => {}
            }
        }
        match source {
            Some(source) => describe(&mut module, &source, &tensors),
            None => module.foreign_forward = true,
        }
        Some(module)
    }

    /// The source of class `name` in the file of `qualifier`.
    fn class(&mut self, qualifier: &str, name: &str) -> Option<Rc<Class>> {
        if !self.files.contains_key(qualifier) {
            let plain = qualifier.split('.').all(|part| {
                !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
            let parsed = match plain {
                true => (self.source)(qualifier).map(|text| parse_file(&text)),
                false => None,
            };
            self.files.insert(qualifier.to_owned(), parsed);
        }
        self.files.get(qualifier)?.as_ref()?.get(name).cloned()
    }
}

/// A module's parameters, hooks and settings from its class's source: a
/// scripted class's `Final` constants, a container's children (its
/// forward calling nothing else), or a traced class's one aten call.
fn describe(module: &mut PickledModule, source: &Class, tensors: &[(&str, Vec<u64>)]) {
    module.parameters = tensors
        .iter()
        .filter(|(k, _)| source.parameters.contains(*k))
        .map(|(k, _)| (*k).to_owned())
        .collect();
    module.hooks = source.hooks;
    let class = module.class.as_str();
    module.foreign_forward = match &source.body {
        _ if class == SEQUENTIAL => !matches!(source.body, Body::Plain),
        _ if class == RESIDUAL => !matches!(source.body, Body::Residual),
        _ if !source.constants.is_empty() => {
            for (k, v) in &source.constants {
                module.attributes.insert(Key::Str(k.clone()), v.clone());
            }
            false
        }
        Body::Call { op, args, locals } => {
            match traced::attributes(class, op, args, locals, tensors) {
                Some(attributes) => {
                    module.attributes = attributes;
                    false
                }
                None => true,
            }
        }
        _ => true,
    };
}

/// torch's class name without `__torch__.` and mangling
/// (`torch.nn.modules.linear.Linear`); a class outside `torch.nn` keeps
/// its full TorchScript name (`__torch__.Residual`,
/// `__torch__.ckpt.modules.Residual`).
fn normalized(qualifier: &str, name: &str) -> String {
    let parts: Vec<&str> = qualifier
        .split('.')
        .filter(|p| !p.starts_with("___torch_mangle_"))
        .collect();
    let full = format!("{}.{name}", parts.join("."));
    match full.strip_prefix("__torch__.") {
        Some(torch) if torch.starts_with("torch.nn.modules.") => torch.to_owned(),
        _ => full,
    }
}

#[cfg(test)]
mod tests {
    use super::super::pickle::unpickle;
    use super::*;

    #[test]
    fn objects_sharing_a_huge_class_exhaust_the_budget_not_the_machine() {
        // A root whose 2,000 attributes are one object (memoised) of a
        // class with 200,000 constants: each visit would copy them all.
        let mut p = b"\x80\x02c__torch__.m\nR\n)\x81}(".to_vec();
        for i in 0..2000 {
            let key = format!("a{i}");
            p.push(b'X');
            p.extend((key.len() as u32).to_le_bytes());
            p.extend(key.as_bytes());
            if i == 0 {
                p.extend(b"c__torch__.m\nC\n)\x81}bq\x00");
            } else {
                p.extend(b"h\x00");
            }
        }
        p.extend(b"ub.");
        let u = unpickle(&p, p.len(), std::path::Path::new("m.pt"), "data.pkl").unwrap();
        let mut class = String::from("class C(Module):\n");
        for i in 0..200_000 {
            class += &format!("  c{i} : Final[int] = {i}\n");
        }
        let mut reads = 0;
        let start = std::time::Instant::now();
        let tree = tree(&u, |q| {
            reads += 1;
            (q == "__torch__.m").then(|| format!("class R(Module):\n  training : bool\n{class}"))
        });
        assert!(tree.is_none());
        assert_eq!(reads, 1, "each file is read once");
        assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
    }

    #[test]
    fn names_lose_torchs_prefix_and_mangling_only_for_torch_nn() {
        assert_eq!(
            normalized(
                "__torch__.torch.nn.modules.linear.___torch_mangle_3",
                "Linear"
            ),
            "torch.nn.modules.linear.Linear"
        );
        assert_eq!(normalized("__torch__", "Residual"), "__torch__.Residual");
        assert_eq!(normalized("__torch__.ckpt.modules", "Residual"), RESIDUAL);
    }
}
