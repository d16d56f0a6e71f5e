//! Weights out of pickled modules, without importing or running anything:
//! `torch.save(model)` files (objects with `_parameters`, `_buffers` and
//! `_modules`) and TorchScript archives (objects whose attributes are the
//! tensors and submodules themselves).

use std::collections::BTreeSet;

use super::pickle::{Id, Obj, Unpickled};

/// The tensors of a pickled module under the names `model.state_dict()`
/// gives them, and every class seen on the way.
pub(crate) struct ModuleWeights {
    /// `(name, tensor object)` in state-dict order.
    pub tensors: Vec<(String, Id)>,
    /// `module.Class` of every object walked.
    pub classes: BTreeSet<String>,
}

/// Walks the module object at the root of `u`: a TorchScript module when
/// `torchscript`, otherwise an `nn.Module` (an object with `_parameters`).
/// `None` when the root is neither, so the caller refuses it.
pub(crate) fn weights(u: &Unpickled, torchscript: bool) -> Option<ModuleWeights> {
    let Obj::Object { state, .. } = &u.arena[u.root] else {
        return None;
    };
    let is_module = state.is_some_and(|s| entries(u, s).iter().any(|(k, _)| *k == "_parameters"));
    if !torchscript && !is_module {
        return None;
    }
    let mut out = ModuleWeights {
        tensors: Vec::new(),
        classes: BTreeSet::new(),
    };
    walk(u, u.root, "", 0, &mut out);
    Some(out)
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

fn walk(u: &Unpickled, id: Id, prefix: &str, depth: usize, out: &mut ModuleWeights) {
    // A module tree deeper than this is a cycle or an attack.
    if depth > 128 {
        return;
    }
    let Obj::Object { class, state } = &u.arena[id] else {
        return;
    };
    out.classes.insert(format!("{}.{}", class.0, class.1));
    let Some(state) = *state else { return };
    let attrs = entries(u, state);
    let attr = |name: &str| attrs.iter().find(|(k, _)| *k == name).map(|&(_, v)| v);
    let is_tensor = |v: Id| matches!(u.arena[v], Obj::Tensor(_));

    if let Some(params) = attr("_parameters") {
        // torch.save(model): parameters, then persistent buffers, then
        // submodules, as Module.state_dict() orders them.
        let skip: Vec<&str> = attr("_non_persistent_buffers_set")
            .map(|s| strings(u, s))
            .unwrap_or_default();
        for (name, v) in entries(u, params) {
            if is_tensor(v) {
                out.tensors.push((format!("{prefix}{name}"), v));
            }
        }
        if let Some(buffers) = attr("_buffers") {
            for (name, v) in entries(u, buffers) {
                if is_tensor(v) && !skip.contains(&name) {
                    out.tensors.push((format!("{prefix}{name}"), v));
                }
            }
        }
        if let Some(modules) = attr("_modules") {
            for (name, v) in entries(u, modules) {
                walk(u, v, &format!("{prefix}{name}."), depth + 1, out);
            }
        }
    } else {
        // TorchScript: attributes are the tensors and submodules.
        for &(name, v) in &attrs {
            if is_tensor(v) {
                out.tensors.push((format!("{prefix}{name}"), v));
            } else if matches!(u.arena[v], Obj::Object { .. }) {
                walk(u, v, &format!("{prefix}{name}."), depth + 1, out);
            }
        }
    }
}
