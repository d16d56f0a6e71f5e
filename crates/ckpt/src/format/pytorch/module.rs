//! Weights out of pickled modules, without importing or running anything:
//! `torch.save(model)` files (objects with `_parameters`, `_buffers` and
//! `_modules`) and TorchScript archives (objects whose attributes are the
//! tensors and submodules themselves).

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use super::pickle::{Id, Obj, Unpickled};
use crate::{Dict, Error, Result, Value};

/// The longest tensor name a walk builds.
const MAX_NAME: usize = 4096;

/// The tensors of a pickled module under the names `model.state_dict()`
/// gives them, and every class seen on the way.
pub(crate) struct ModuleWeights {
    /// `(name, tensor object)` in state-dict order.
    pub tensors: Vec<(String, Id)>,
    /// `module.Class` of every object walked.
    pub classes: BTreeSet<String>,
    /// Objects that may still be visited: a module tree that shares
    /// submodules could otherwise be walked exponentially often.
    visits_left: usize,
    /// Tensor names that may still be produced (shared parameter dicts
    /// could otherwise multiply them).
    names_left: usize,
}

impl ModuleWeights {
    fn push(&mut self, name: String, tensor: Id) -> Walk<()> {
        self.names_left = self
            .names_left
            .checked_sub(1)
            .ok_or("the module tree names shared tensors too often")?;
        self.tensors.push((name, tensor));
        Ok(())
    }
}

/// Walks the module object at the root of `u`: a TorchScript module when
/// `torchscript`, otherwise an `nn.Module` (an object with `_parameters`).
/// `None` when the root is neither, so the caller refuses it.
pub(crate) fn weights(
    u: &Unpickled,
    torchscript: bool,
    path: &Path,
    entry: &str,
) -> Result<Option<ModuleWeights>> {
    let Obj::Object { state, .. } = &u.arena[u.root] else {
        return Ok(None);
    };
    let is_module = state.is_some_and(|s| entries(u, s).iter().any(|(k, _)| *k == "_parameters"));
    if !torchscript && !is_module {
        return Ok(None);
    }
    let mut out = ModuleWeights {
        tensors: Vec::new(),
        classes: BTreeSet::new(),
        visits_left: u.arena.len(),
        names_left: u.arena.len().saturating_mul(2),
    };
    walk(u, u.root, "", 0, &mut out).map_err(|problem| Error::Pickle {
        path: path.to_owned(),
        entry: entry.to_owned(),
        offset: 0,
        problem,
    })?;
    Ok(Some(out))
}

/// The string-keyed entries of a dict object.
fn entries(u: &Unpickled, id: Id) -> Vec<(&str, Id)> {
    match &u.arena[id] {
        Obj::Dict(pairs) => pairs
            .iter()
            .filter_map(|&(k, v)| match &u.arena[k] {
                Obj::Str(s) => Some((s.as_str(), v)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn strings(u: &Unpickled, id: Id) -> Vec<&str> {
    match &u.arena[id] {
        Obj::List(items) | Obj::Tuple(items) => items
            .iter()
            .filter_map(|&i| match &u.arena[i] {
                Obj::Str(s) => Some(s.as_str()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn named(prefix: &str, name: &str) -> Walk<String> {
    if prefix.len() + name.len() > MAX_NAME {
        return Err("a module path is longer than 4096 bytes");
    }
    Ok(format!("{prefix}{name}"))
}

/// A walk's result: a problem is a short description for the error.
type Walk<T> = std::result::Result<T, &'static str>;

fn walk(u: &Unpickled, id: Id, prefix: &str, depth: usize, out: &mut ModuleWeights) -> Walk<()> {
    // A module tree deeper than this is a cycle or an attack.
    if depth > 128 {
        return Err("the module tree nests too deeply (or refers to itself)");
    }
    out.visits_left = out
        .visits_left
        .checked_sub(1)
        .ok_or("the module tree repeats shared submodules too often")?;
    let Obj::Object { class, state, .. } = &u.arena[id] else {
        return Ok(());
    };
    out.classes.insert(format!("{}.{}", class.0, class.1));
    let Some(state) = *state else {
        return Ok(());
    };
    let attrs = entries(u, state);
    let attr = |name: &str| attrs.iter().find(|(k, _)| *k == name).map(|&(_, v)| v);
    let is_tensor = |v: Id| matches!(u.arena[v], Obj::Tensor(_));

    if let Some(params) = attr("_parameters") {
        // torch.save(model): parameters, then persistent buffers, then
        // submodules, as Module.state_dict() orders them.
        let skip: HashSet<&str> = attr("_non_persistent_buffers_set")
            .map(|s| strings(u, s).into_iter().collect())
            .unwrap_or_default();
        for (name, v) in entries(u, params) {
            if is_tensor(v) {
                out.push(named(prefix, name)?, v)?;
            }
        }
        if let Some(buffers) = attr("_buffers") {
            for (name, v) in entries(u, buffers) {
                if is_tensor(v) && !skip.contains(name) {
                    out.push(named(prefix, name)?, v)?;
                }
            }
        }
        if let Some(modules) = attr("_modules") {
            for (name, v) in entries(u, modules) {
                walk(u, v, &named(prefix, &format!("{name}."))?, depth + 1, out)?;
            }
        }
    } else {
        // TorchScript: attributes are the tensors and submodules.
        for &(name, v) in &attrs {
            if is_tensor(v) {
                out.push(named(prefix, name)?, v)?;
            } else if matches!(u.arena[v], Obj::Object { .. }) {
                walk(u, v, &named(prefix, &format!("{name}."))?, depth + 1, out)?;
            }
        }
    }
    Ok(())
}

/// A pickled `nn.Module` (`torch.save(model)`, or a module object of a
/// TorchScript archive) as data, read without importing or running
/// anything: its class, its plain attributes
/// (`in_features`, `kernel_size`, `eps`, `training`: every entry of its
/// `__dict__` that is not private and holds numbers, strings, booleans,
/// None, or tuples and lists of them), whether forward hooks are
/// registered on it, and its submodules in order. A submodule that is not
/// a pickled `nn.Module` is kept with its class only.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct PickledModule {
    /// The class's dotted name (`torch.nn.modules.linear.Linear`); `None`
    /// for a submodule slot that holds None.
    pub class: String,
    /// The plain attributes, in the pickle's order.
    pub attributes: Dict,
    /// The names of the parameters it holds (`weight`, and `bias` unless
    /// it was made with `bias=False`).
    pub parameters: Vec<String>,
    /// Forward hooks or pre-hooks are registered: `forward` is not the
    /// class's alone.
    pub hooks: bool,
    /// Whether it is a pickled `nn.Module` (with `_parameters` and
    /// `_modules`); when not, only `class` is known.
    pub is_module: bool,
    /// The submodules (`_modules`), by name, in order.
    pub children: Vec<(String, PickledModule)>,
    /// A TorchScript module whose code is not its `torch.nn` class's (a
    /// traced `forward` that is not the class's one aten call, or no
    /// source for the class).
    pub foreign_forward: bool,
    /// The per-sample input shape the file records (the spec in a ckpt
    /// TorchScript export's `extra/ckpt.json`), at the root.
    pub input_shape: Option<Vec<usize>>,
}

/// The hook dicts of an `nn.Module` that change what `forward` computes.
const FORWARD_HOOKS: [&str; 4] = [
    "_forward_hooks",
    "_forward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
];

/// The module tree at the root of `u`, or `None` when the root is not a
/// pickled module or the tree is too large or deep to describe (then the
/// weights still load: the tree only serves to derive a spec). Its work
/// is bounded by a budget of dict entries scanned, a multiple of the
/// pickle's objects, so shared state dicts cannot make it quadratic.
pub(crate) fn tree(u: &Unpickled) -> Option<PickledModule> {
    let mut budget = u.arena.len().saturating_mul(8).saturating_add(1 << 16);
    let root = node(u, u.root, 0, &mut budget)?;
    root.is_module.then_some(root)
}

fn node(u: &Unpickled, id: Id, depth: usize, budget: &mut usize) -> Option<PickledModule> {
    if depth > 128 {
        return None;
    }
    let (class, state) = match &u.arena[id] {
        Obj::Object { class, state, .. } => (format!("{}.{}", class.0, class.1), *state),
        Obj::None => ("None".to_owned(), None),
        _ => ("an object that is not a module".to_owned(), None),
    };
    let opaque = PickledModule {
        class: class.clone(),
        ..Default::default()
    };
    let Some(state) = state else {
        return Some(opaque);
    };
    let attrs = charged(u, state, budget)?;
    let find = |name: &str| attrs.iter().find(|(k, _)| *k == name).map(|&(_, v)| v);
    let (Some(modules), Some(params)) = (find("_modules"), find("_parameters")) else {
        return Some(opaque);
    };
    let parameters = charged(u, params, budget)?
        .into_iter()
        .filter(|&(_, v)| matches!(u.arena[v], Obj::Tensor(_)))
        .map(|(k, _)| k.to_owned())
        .collect();
    let mut hooks = false;
    for name in FORWARD_HOOKS {
        if let Some(h) = find(name) {
            // Hook dicts are keyed by integer handles.
            hooks |= matches!(&u.arena[h], Obj::Dict(pairs) if !pairs.is_empty());
        }
    }
    let mut attributes = Dict::new();
    for &(name, v) in &attrs {
        if name.starts_with('_') {
            continue;
        }
        if let Some(plain) = plain(u, v, 0) {
            attributes.insert(name.into(), plain);
        }
    }
    let mut children = Vec::new();
    for (name, v) in charged(u, modules, budget)? {
        children.push((name.to_owned(), node(u, v, depth + 1, budget)?));
    }
    Some(PickledModule {
        class,
        attributes,
        parameters,
        hooks,
        is_module: true,
        children,
        foreign_forward: false,
        input_shape: None,
    })
}

/// A dict's string-keyed entries, charged to `budget` by its size.
fn charged<'a>(u: &'a Unpickled, id: Id, budget: &mut usize) -> Option<Vec<(&'a str, Id)>> {
    let size = match &u.arena[id] {
        Obj::Dict(pairs) => pairs.len(),
        _ => 0,
    };
    *budget = budget.checked_sub(size.saturating_add(1))?;
    Some(entries(u, id))
}

/// A module attribute as a value, when it is plain data: None, a bool, a
/// number, a string, or a short tuple or list of those (`kernel_size`).
fn plain(u: &Unpickled, id: Id, depth: usize) -> Option<Value> {
    Some(match &u.arena[id] {
        Obj::None => Value::None,
        Obj::Bool(b) => Value::Bool(*b),
        Obj::Int(i) => Value::Int(*i),
        Obj::Float(f) => Value::Float(*f),
        Obj::Str(s) if s.len() <= 256 => Value::Str(s.clone()),
        Obj::Tuple(items) | Obj::List(items) if depth == 0 && items.len() <= 8 => {
            let values = items
                .iter()
                .map(|&i| plain(u, i, 1))
                .collect::<Option<Vec<_>>>()?;
            match &u.arena[id] {
                Obj::Tuple(_) => Value::Tuple(values),
                _ => Value::List(values),
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::pickle::unpickle;
    use super::*;

    #[test]
    fn a_module_that_contains_itself_is_an_error_not_a_hang() {
        // m = M(); m.__dict__ = {'_parameters': {}, '_modules': {'a': m, 'b': m}}
        let bytes = b"\x80\x02c__main__\nM\n)\x81q\x00}(X\x0b\x00\x00\x00_parameters}X\x08\x00\x00\x00_modules}(X\x01\x00\x00\x00ah\x00X\x01\x00\x00\x00bh\x00uub.";
        let u = unpickle(bytes, bytes.len(), Path::new("m.pth"), "data.pkl").unwrap();
        let err = match weights(&u, false, Path::new("m.pth"), "data.pkl") {
            Err(e) => e,
            Ok(_) => panic!("a self-containing module was walked"),
        };
        assert!(
            err.to_string().contains("nests too deeply") || err.to_string().contains("too often"),
            "{err}"
        );
    }
}
