//! What a file holds and how two checkpoints differ, as data: the reports
//! behind `ckpt inspect --json` and `ckpt diff`, which the CLI prints and
//! the Python package returns ([`Inspection`], [`diff`]), and the
//! non-tensor values of a tree by path.

use std::collections::BTreeSet;

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::{json, Value as Json};

use crate::{Loaded, Result, StateDict, TensorData, Value};

/// The parts of a tree that hold no tensor, by path (`epoch`, `loss`,
/// `optimizer_state_dict/param_groups/0/betas`), in order.
pub fn values(value: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    collect_values(value, "", &mut out);
    out
}

fn collect_values(value: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    if !value.has_tensors() {
        if !path.is_empty() {
            out.push((path.to_owned(), value.clone()));
        }
        return;
    }
    let join = |label: &dyn std::fmt::Display| {
        if path.is_empty() {
            label.to_string()
        } else {
            format!("{path}{}{label}", crate::SEPARATOR)
        }
    };
    match value {
        Value::List(items) | Value::Tuple(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_values(v, &join(&i), out);
            }
        }
        Value::Dict(dict) => {
            for (k, v) in dict {
                collect_values(v, &join(k), out);
            }
        }
        Value::Object(o) => collect_values(&o.to_plain(), path, out),
        _ => {}
    }
}

/// The classes of every Python object in a tree, sorted, each once.
pub fn object_classes(value: &Value) -> BTreeSet<String> {
    fn walk(value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(o) => {
                out.insert(o.class.clone());
                o.args.iter().for_each(|v| walk(v, out));
                walk(&o.state, out);
            }
            Value::List(items) | Value::Tuple(items) => items.iter().for_each(|v| walk(v, out)),
            Value::Dict(d) => d.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(value, &mut out);
    out
}

/// A JSON rendering of a value (non-finite floats as strings, tensors as
/// `<tensor F32 [2, 3]>`).
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::None => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => finite_or_string(*f),
        Value::Str(s) => json!(s),
        Value::Bytes(b) => json!(b),
        Value::List(items) | Value::Tuple(items) => {
            Json::Array(items.iter().map(to_json).collect())
        }
        Value::Dict(dict) => Json::Object(
            dict.iter()
                .map(|(k, v)| (k.to_string(), to_json(v)))
                .collect(),
        ),
        Value::Tensor(t) => json!(format!("<tensor {} {:?}>", t.dtype(), t.shape())),
        Value::Object(o) => to_json(&o.to_plain()),
    }
}

fn finite_or_string(v: f64) -> Json {
    match v.is_finite() {
        true => json!(v),
        false => json!(format!("{v:?}")),
    }
}

/// What a loaded file holds, as `ckpt inspect --json` prints it: its
/// format, every tensor (flattened name, dtype, shape, bytes), the
/// non-tensor values by path, the file's metadata, the Python classes it
/// names and, for pickles, what opening it in torch would take. It
/// serialises from its own fields (a million tensors stay a million small
/// structs, never a JSON tree).
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct Inspection {
    /// The format's short id (`"pytorch"`, `"safetensors"`).
    pub format: &'static str,
    /// Every tensor, in order.
    pub tensors: Vec<TensorLine>,
    /// The non-tensor values by path, as JSON.
    pub values: serde_json::Map<String, Json>,
    /// The file's own string metadata.
    pub metadata: IndexMap<String, String>,
    /// The Python classes the file names (inert here).
    pub objects: BTreeSet<String>,
    /// For pickles: `weights_only`, `needs_weights_only_false`, `verdict`.
    pub python: Option<Json>,
    /// Elements in all tensors.
    pub total_params: u64,
    /// Bytes in all tensors.
    pub total_bytes: u64,
}

/// One tensor of an [`Inspection`].
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct TensorLine {
    /// The flattened name (`model_state_dict/fc.weight`).
    pub name: String,
    /// torch's name for the dtype.
    pub dtype: &'static str,
    /// The shape.
    pub shape: Vec<usize>,
    /// The tensor's bytes.
    pub bytes: usize,
}

impl Inspection {
    /// The inspection of `loaded`.
    pub fn of(loaded: &Loaded) -> Result<Inspection> {
        let tensors = StateDict::flatten(&loaded.value)?;
        let (total_params, total_bytes) = (tensors.total_params(), tensors.total_bytes());
        Ok(Inspection {
            format: loaded.format.id(),
            tensors: tensors
                .iter()
                .map(|(name, t)| TensorLine {
                    name: name.clone(),
                    dtype: t.dtype().torch_name(),
                    shape: t.shape().to_vec(),
                    bytes: t.bytes().len(),
                })
                .collect(),
            values: values(&loaded.value)
                .iter()
                .map(|(path, v)| (path.clone(), to_json(v)))
                .collect(),
            metadata: loaded.metadata.clone(),
            objects: object_classes(&loaded.value),
            python: loaded.pickle.as_ref().map(|p| {
                json!({
                    "weights_only": p.needs_weights_only_false.is_empty(),
                    "needs_weights_only_false": p.needs_weights_only_false,
                    "verdict": p.verdict(),
                })
            }),
            total_params,
            total_bytes,
        })
    }
}

/// How two checkpoints differ ([`diff`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct Diff {
    /// Equal within the tolerances: the same tensor names, every pair
    /// within them, and the same non-tensor values.
    pub equal: bool,
    /// The absolute tolerance.
    pub atol: f64,
    /// The relative tolerance.
    pub rtol: f64,
    /// Tensors only the first holds.
    pub only_in_a: Vec<String>,
    /// Tensors only the second holds.
    pub only_in_b: Vec<String>,
    /// Every tensor both hold, compared.
    pub tensors: Vec<TensorDiff>,
    /// Non-tensor values that differ: path, the first's, the second's
    /// (`None` where absent).
    pub values: Vec<(String, Option<Value>, Option<Value>)>,
}

/// How two tensors of the same name compare.
#[derive(Debug)]
#[non_exhaustive]
pub struct TensorDiff {
    /// The flattened name.
    pub name: String,
    /// `dtype [shape]` of each side, when they differ.
    pub changed: Option<(String, String)>,
    /// Largest |a - b|; `None` when the shapes differ.
    pub max_abs: Option<f64>,
    /// Largest |a - b| / |b|; `None` when the shapes differ.
    pub max_rel: Option<f64>,
    /// Within the tolerances (and of the same dtype and shape).
    pub equal: bool,
}

/// Compares two trees: every tensor element by element as f64 (equal when
/// the bits match, so NaN equals NaN, or |a - b| <= atol + rtol * |b|),
/// and every non-tensor value.
pub fn diff(a: &Value, b: &Value, atol: f64, rtol: f64) -> Result<Diff> {
    let (ta, tb) = (StateDict::flatten(a)?, StateDict::flatten(b)?);
    let only_in_a = ta
        .keys()
        .filter(|k| !tb.contains_key(*k))
        .cloned()
        .collect();
    let only_in_b = tb
        .keys()
        .filter(|k| !ta.contains_key(*k))
        .cloned()
        .collect();
    let tensors: Vec<TensorDiff> = ta
        .iter()
        .filter_map(|(name, x)| tb.get(name).map(|y| compare(name, x, y, atol, rtol)))
        .collect();
    let values = value_changes(a, b);
    let mut d = Diff {
        equal: false,
        atol,
        rtol,
        only_in_a,
        only_in_b,
        tensors,
        values,
    };
    d.equal = d.only_in_a.is_empty()
        && d.only_in_b.is_empty()
        && d.tensors.iter().all(|t| t.equal)
        && d.values.is_empty();
    Ok(d)
}

impl Diff {
    /// The report as `ckpt diff --json` prints it.
    pub fn to_json(&self) -> Json {
        json!({
            "equal": self.equal,
            "atol": self.atol,
            "rtol": self.rtol,
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
            "tensors": self.tensors.iter().map(|d| json!({
                "name": d.name,
                "equal": d.equal,
                "max_abs": d.max_abs.map(finite_or_string),
                "max_rel": d.max_rel.map(finite_or_string),
                "a": d.changed.as_ref().map(|c| &c.0),
                "b": d.changed.as_ref().map(|c| &c.1),
            })).collect::<Vec<_>>(),
            "values": self.values.iter().map(|(path, x, y)| json!({
                "path": path,
                "a": x.as_ref().map(to_json),
                "b": y.as_ref().map(to_json),
            })).collect::<Vec<_>>(),
        })
    }
}

fn describe(t: &TensorData) -> String {
    format!("{} {:?}", t.dtype(), t.shape())
}

fn compare(name: &str, a: &TensorData, b: &TensorData, atol: f64, rtol: f64) -> TensorDiff {
    let changed =
        (a.dtype() != b.dtype() || a.shape() != b.shape()).then(|| (describe(a), describe(b)));
    let mut d = TensorDiff {
        name: name.to_owned(),
        equal: changed.is_none(),
        changed,
        max_abs: None,
        max_rel: None,
    };
    if a.shape() != b.shape() {
        d.equal = false;
        return d;
    }
    let (mut max_abs, mut max_rel) = (0f64, 0f64);
    if a.dtype() != b.dtype() || a.bytes() != b.bytes() {
        for (x, y) in a.values_f64().zip(b.values_f64()) {
            if x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()) {
                continue;
            }
            let abs = match x.is_nan() || y.is_nan() {
                true => f64::INFINITY,
                false => (x - y).abs(),
            };
            let rel = match y == 0.0 {
                true => f64::INFINITY,
                false => abs / y.abs(),
            };
            max_abs = max_abs.max(abs);
            max_rel = max_rel.max(rel);
            // Infinities (and NaN against a number) are only equal bit for bit.
            d.equal &= x.is_finite() && y.is_finite() && abs <= atol + rtol * y.abs();
        }
    }
    d.max_abs = Some(max_abs);
    d.max_rel = Some(max_rel);
    d
}

/// Non-tensor values that differ, by path: the first's in order, then
/// those only the second holds.
fn value_changes(a: &Value, b: &Value) -> Vec<(String, Option<Value>, Option<Value>)> {
    let va = values(a);
    let vb: IndexMap<String, Value> = values(b).into_iter().collect();
    let in_a: std::collections::HashSet<&str> = va.iter().map(|(p, _)| p.as_str()).collect();
    let mut changes: Vec<_> = va
        .iter()
        .filter_map(|(path, x)| {
            let y = vb.get(path);
            (y != Some(x)).then(|| (path.clone(), Some(x.clone()), y.cloned()))
        })
        .collect();
    changes.extend(
        vb.iter()
            .filter(|(path, _)| !in_a.contains(path.as_str()))
            .map(|(path, y)| (path.clone(), None, Some(y.clone()))),
    );
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dict;

    fn tree(w: &[f32], epoch: i64, extra: Option<&str>) -> Value {
        let mut d = Dict::new();
        d.insert(
            "w".into(),
            Value::Tensor(TensorData::from_f32(&[w.len()], w).unwrap()),
        );
        d.insert("epoch".into(), Value::Int(epoch));
        if let Some(e) = extra {
            d.insert(e.into(), Value::Float(f64::NAN));
        }
        Value::Dict(d)
    }

    #[test]
    fn diff_compares_tensors_within_tolerance_and_values_by_path() {
        let a = tree(&[1.0, 2.0, f32::NAN], 3, None);
        assert!(diff(&a, &a, 0.0, 0.0).unwrap().equal);
        let b = tree(&[1.0, 2.001, f32::NAN], 4, Some("new"));
        let d = diff(&a, &b, 0.0, 0.0).unwrap();
        assert!(!d.equal && !d.tensors[0].equal);
        assert!((d.tensors[0].max_abs.unwrap() - 0.001).abs() < 1e-4);
        assert_eq!(d.values.len(), 2);
        assert_eq!(
            d.values[0],
            ("epoch".into(), Some(Value::Int(3)), Some(Value::Int(4)))
        );
        assert_eq!(d.values[1].0, "new");
        assert!(
            diff(&a, &tree(&[1.0, 2.001, f32::NAN], 3, None), 0.01, 0.0)
                .unwrap()
                .equal
        );
        let json = d.to_json();
        assert_eq!(json["values"][1]["b"], json!("NaN"));
    }
}
