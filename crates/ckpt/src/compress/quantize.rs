//! Int8 weight quantization: symmetric, per output channel (dim 0) by
//! default or per tensor, with the scales stored beside the weights.
//!
//! Layout in a state dict: a quantized `fc1.weight` becomes an `int8`
//! tensor of the same shape under the same name, followed by
//! `fc1.weight_scale`, `float32` of shape `[out]` (per channel) or `[]`
//! (per tensor). The float weight is `int8 × scale` (zero point 0);
//! values round half to even and clamp to −127…127.
//!
//! A quantized model package records which tensors are quantized, how,
//! and how its Linear layers compute ([`Quantization`], under
//! `ckpt_package.quantization`).

use crate::{DType, Dict, Error, Expected, Key, Result, StateDict, TensorData, Value};

/// The suffix of a quantized weight's scale tensor.
pub const SCALE_SUFFIX: &str = "_scale";

/// One scale per output channel (the default) or one per tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    /// One scale per slice along dimension 0.
    #[default]
    PerChannel,
    /// One scale for the whole tensor.
    PerTensor,
}

impl Granularity {
    /// Its name in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Granularity::PerChannel => "per_channel",
            Granularity::PerTensor => "per_tensor",
        }
    }
}

/// How a quantized model's Linear layers compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activations {
    /// Int8 weights times activations quantized per call to uint8 (affine,
    /// range from the batch's own minimum and maximum, zero included), the
    /// products summed as integers and scaled back: PyTorch's dynamic
    /// quantization and ONNX's `DynamicQuantizeLinear` + `MatMulInteger`.
    #[default]
    Dynamic,
    /// Weights dequantized to float, float activations.
    WeightOnly,
}

impl Activations {
    /// Its name in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Activations::Dynamic => "dynamic",
            Activations::WeightOnly => "weight_only",
        }
    }
}

/// What a quantized package records: which tensors are int8 (each with
/// its `NAME_scale`), with what granularity, and how Linear layers compute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantization {
    /// Per channel or per tensor.
    pub granularity: Granularity,
    /// How Linear layers compute.
    pub activations: Activations,
    /// The quantized tensors, in state-dict order.
    pub tensors: Vec<String>,
}

impl Quantization {
    /// What a state dict quantized this way holds, given what the float
    /// model holds: each quantized tensor as `int8`, its scale after it.
    pub fn expected(&self, float: &[Expected]) -> Result<Vec<Expected>> {
        for name in &self.tensors {
            match float.iter().find(|e| e.name == *name) {
                Some(e) if e.dtype.is_float() => {}
                Some(e) => {
                    return Err(Error::BadQuantization(format!(
                        "{name} is {}, not a float weight",
                        e.dtype
                    )))
                }
                None => {
                    return Err(Error::BadQuantization(format!(
                        "{name} is not a weight of the model"
                    )))
                }
            }
        }
        let mut out = Vec::with_capacity(float.len() + self.tensors.len());
        for e in float {
            if self.tensors.contains(&e.name) {
                out.push(Expected {
                    name: e.name.clone(),
                    dtype: DType::I8,
                    shape: e.shape.clone(),
                });
                out.push(Expected {
                    name: format!("{}{SCALE_SUFFIX}", e.name),
                    dtype: DType::F32,
                    shape: scale_shape(self.granularity, &e.shape),
                });
            } else {
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    /// As a value tree: `{"scheme": "int8_symmetric", "granularity",
    /// "activations", "tensors"}`.
    pub fn to_value(&self) -> Value {
        let mut d = Dict::new();
        d.insert("scheme".into(), Value::Str("int8_symmetric".into()));
        d.insert(
            "granularity".into(),
            Value::Str(self.granularity.name().into()),
        );
        d.insert(
            "activations".into(),
            Value::Str(self.activations.name().into()),
        );
        d.insert(
            "tensors".into(),
            Value::List(self.tensors.iter().cloned().map(Value::Str).collect()),
        );
        Value::Dict(d)
    }

    /// Reads [`Quantization::to_value`]'s form; the error says which entry
    /// is wrong.
    pub fn from_value(value: &Value) -> Result<Quantization> {
        let bad = |what: &str| Error::BadQuantization(format!("quantization record: {what}"));
        let Value::Dict(d) = value else {
            return Err(bad("not a dict"));
        };
        let text = |k: &str| match d.get(&Key::from(k)) {
            Some(Value::Str(s)) => Ok(s.as_str()),
            _ => Err(bad(&format!("{k} is missing or not a string"))),
        };
        if text("scheme")? != "int8_symmetric" {
            return Err(bad(&format!(
                "scheme {:?} is not int8_symmetric",
                text("scheme")?
            )));
        }
        let granularity = match text("granularity")? {
            "per_channel" => Granularity::PerChannel,
            "per_tensor" => Granularity::PerTensor,
            other => return Err(bad(&format!("unknown granularity {other:?}"))),
        };
        let activations = match text("activations")? {
            "dynamic" => Activations::Dynamic,
            "weight_only" => Activations::WeightOnly,
            other => return Err(bad(&format!("unknown activations {other:?}"))),
        };
        let tensors = match d.get(&Key::from("tensors")) {
            Some(Value::List(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Ok(s.clone()),
                    _ => Err(bad("tensors holds a non-string")),
                })
                .collect::<Result<Vec<_>>>()?,
            _ => return Err(bad("tensors is missing or not a list")),
        };
        Ok(Quantization {
            granularity,
            activations,
            tensors,
        })
    }
}

/// The shape of the scales of a tensor of `shape`: `[shape[0]]` per
/// channel, `[]` per tensor (and for tensors with no channels).
pub fn scale_shape(granularity: Granularity, shape: &[usize]) -> Vec<usize> {
    match (granularity, shape.first()) {
        (Granularity::PerChannel, Some(&out)) if out > 0 => vec![out],
        _ => vec![],
    }
}

/// Quantizes a float tensor; returns the `int8` values and the scales.
///
/// ```
/// use ckpt::compress::quantize::{dequantize, quantize, Granularity};
/// let w = ckpt::TensorData::from_f32(&[2, 2], &[1.0, -0.5, 0.02, 0.04]).unwrap();
/// let (q, scale) = quantize(&w, Granularity::PerChannel, "w").unwrap();
/// assert_eq!(q.dtype(), ckpt::DType::I8);
/// assert_eq!(scale.shape(), [2]);
/// let back = dequantize(&q, &scale, "w").unwrap();
/// for (a, b) in back.values_f64().zip(w.values_f64()) {
///     assert!((a - b).abs() <= 1.0 / 127.0 / 2.0 + 1e-7);
/// }
/// ```
pub fn quantize(
    t: &TensorData,
    granularity: Granularity,
    name: &str,
) -> Result<(TensorData, TensorData)> {
    if !t.dtype().is_float() {
        return Err(Error::BadQuantization(format!(
            "{name} is {}, not a float tensor",
            t.dtype()
        )));
    }
    let v: Vec<f64> = t.values_f64().collect();
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::BadQuantization(format!(
            "{name} holds NaN or infinite values"
        )));
    }
    let scale_shape = scale_shape(granularity, t.shape());
    let groups = scale_shape.first().copied().unwrap_or(1);
    let per = v.len() / groups.max(1);
    let scales: Vec<f32> = (0..groups)
        .map(|g| {
            let max = v[g * per..(g + 1) * per]
                .iter()
                .fold(0.0f64, |m, x| m.max(x.abs()));
            if max == 0.0 {
                1.0
            } else {
                (max / 127.0) as f32
            }
        })
        .collect();
    let q: Vec<u8> = v
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let s = f64::from(scales[i.checked_div(per).unwrap_or(0)]);
            ((x / s).round_ties_even().clamp(-127.0, 127.0) as i8) as u8
        })
        .collect();
    Ok((
        TensorData::new(DType::I8, t.shape().to_vec(), q)?,
        TensorData::from_f32(&scale_shape, &scales)?,
    ))
}

/// The float32 tensor an `int8` tensor and its scales stand for.
pub fn dequantize(q: &TensorData, scale: &TensorData, name: &str) -> Result<TensorData> {
    if q.dtype() != DType::I8 {
        return Err(Error::BadQuantization(format!(
            "{name} is {}, not int8",
            q.dtype()
        )));
    }
    dequantize_affine(q, scale, None, 0, name)
}

/// The suffix of a quantized tensor's zero points (absent when all 0).
pub const ZERO_POINT_SUFFIX: &str = "_zero_point";
/// The suffix of the dimension a quantized tensor's channels run along
/// (absent for dimension 0).
pub const AXIS_SUFFIX: &str = "_axis";

/// The float32 tensor an affine-quantized tensor stands for, exactly as
/// torch's `dequantize()` computes it: `(q - zero_point) * scale`, in
/// float32 for one scale (a scale of shape `[]`) and for float32 scales
/// per slice along `axis`, in float64 rounded to float32 for float64
/// scales per slice (torch's `per_channel_affine`). `q` is int8, uint8 or
/// int32; zero points are integers or floats (torch's float qparams).
pub fn dequantize_affine(
    q: &TensorData,
    scale: &TensorData,
    zero_point: Option<&TensorData>,
    axis: usize,
    name: &str,
) -> Result<TensorData> {
    let bad = |problem: String| Error::BadQuantization(format!("{name}: {problem}"));
    let ints: Vec<i64> = match q.dtype() {
        DType::I8 => q.bytes().iter().map(|&b| i64::from(b as i8)).collect(),
        DType::U8 => q.bytes().iter().map(|&b| i64::from(b)).collect(),
        DType::I32 => q
            .bytes()
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        other => return Err(bad(format!("{other} is not a quantized integer dtype"))),
    };
    let scales: Vec<f64> = scale.values_f64().collect();
    let zeros: Vec<f64> = match zero_point {
        Some(z) => z.values_f64().collect(),
        None => vec![0.0; scales.len()],
    };
    if zeros.len() != scales.len() {
        return Err(bad(format!(
            "{} scales but {} zero points",
            scales.len(),
            zeros.len()
        )));
    }
    if q.numel() == 0 {
        return TensorData::new(DType::F32, q.shape().to_vec(), Vec::new());
    }
    let channels = q.shape().get(axis).copied().unwrap_or(0);
    // One scale: per tensor (also a scale of shape [1], as some writers
    // store it, unless there is exactly one channel).
    let per_tensor = scale.shape().is_empty() || (scales.len() == 1 && channels != 1);
    let values: Vec<f32> = if per_tensor {
        let (s, z) = (scales[0] as f32, zeros[0]);
        ints.iter().map(|&v| (v as f64 - z) as f32 * s).collect()
    } else {
        if scales.len() != channels || channels == 0 {
            return Err(bad(format!(
                "{} scales for {channels} channels (dimension {axis} of {:?})",
                scales.len(),
                q.shape()
            )));
        }
        let inner: usize = q.shape()[axis + 1..].iter().product();
        let channel = |i: usize| (i / inner.max(1)) % channels;
        if scale.dtype() == DType::F64 {
            ints.iter()
                .enumerate()
                .map(|(i, &v)| ((v as f64 - zeros[channel(i)]) * scales[channel(i)]) as f32)
                .collect()
        } else {
            // float32 scales (torch's float qparams, ckpt's int8 layout).
            ints.iter()
                .enumerate()
                .map(|(i, &v)| (v as f32 - zeros[channel(i)] as f32) * scales[channel(i)] as f32)
                .collect()
        }
    };
    TensorData::from_f32(q.shape(), &values)
}

/// Quantizes the tensors `select` picks (by name and tensor), each
/// followed by its scale tensor.
pub fn quantize_state_dict(
    sd: &StateDict,
    granularity: Granularity,
    select: impl Fn(&str, &TensorData) -> bool,
) -> Result<StateDict> {
    let mut out = StateDict::new();
    for (name, t) in sd.iter() {
        if select(name, t) {
            let (q, scale) = quantize(t, granularity, name)?;
            out.insert(name.clone(), q);
            out.insert(format!("{name}{SCALE_SUFFIX}"), scale);
        } else {
            out.insert(name.clone(), t.clone());
        }
    }
    Ok(out)
}

/// Back to floats: every int8, uint8 or int32 tensor with a `_scale`
/// beside it (and its `_zero_point` and `_axis` when present).
pub fn dequantize_state_dict(sd: &StateDict) -> Result<StateDict> {
    let flat: Dict = sd
        .iter()
        .map(|(n, t)| (Key::Str(n.clone()), Value::Tensor(t.clone())))
        .collect();
    StateDict::flatten(&Value::Dict(dequantize_dict(&flat)?))
}

/// Back to floats anywhere in a tree: in every dict, the quantized tensors
/// with their scales beside them, as ckpt lays out its own int8 weights
/// and torch's quantized tensors. Other values are unchanged.
pub fn dequantize_value(value: &Value) -> Result<Value> {
    Ok(match value {
        Value::Dict(dict) => Value::Dict(dequantize_dict(dict)?),
        Value::List(items) => {
            Value::List(items.iter().map(dequantize_value).collect::<Result<_>>()?)
        }
        Value::Tuple(items) => {
            Value::Tuple(items.iter().map(dequantize_value).collect::<Result<_>>()?)
        }
        other => other.clone(),
    })
}

fn dequantize_dict(dict: &Dict) -> Result<Dict> {
    let by_name: std::collections::HashMap<String, &TensorData> = dict
        .iter()
        .filter_map(|(k, v)| match v {
            Value::Tensor(t) => Some((k.to_string(), t)),
            _ => None,
        })
        .collect();
    let quantized = |name: &str| {
        by_name
            .get(name)
            .filter(|t| matches!(t.dtype(), DType::I8 | DType::U8 | DType::I32))
            .is_some()
            && by_name
                .get(&format!("{name}{SCALE_SUFFIX}"))
                .is_some_and(|s| s.dtype().is_float())
    };
    let mut out = Dict::new();
    for (key, v) in dict {
        let name = key.to_string();
        if quantized(&name) {
            let side = |suffix: &str| by_name.get(&format!("{name}{suffix}")).copied();
            let axis = side(AXIS_SUFFIX)
                .and_then(|a| a.values_f64().next())
                .map_or(0, |a| a as usize);
            let scale = side(SCALE_SUFFIX).expect("checked above");
            let t = dequantize_affine(by_name[&name], scale, side(ZERO_POINT_SUFFIX), axis, &name)?;
            out.insert(key.clone(), Value::Tensor(t));
            continue;
        }
        let is_side = [SCALE_SUFFIX, ZERO_POINT_SUFFIX, AXIS_SUFFIX]
            .iter()
            .any(|suffix| name.strip_suffix(suffix).is_some_and(quantized));
        if !is_side {
            out.insert(key.clone(), dequantize_value(v)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_at_most_half_a_step_per_channel_and_per_tensor() {
        let values: Vec<f32> = (0..600)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * if i < 300 { 0.01 } else { 1.0 })
            .collect();
        let w = TensorData::from_f32(&[2, 300], &values).unwrap();
        for g in [Granularity::PerChannel, Granularity::PerTensor] {
            let (q, s) = quantize(&w, g, "w").unwrap();
            let back = dequantize(&q, &s, "w").unwrap();
            let scales: Vec<f64> = s.values_f64().collect();
            for (i, (a, b)) in back.values_f64().zip(w.values_f64()).enumerate() {
                let step = scales[if scales.len() == 1 { 0 } else { i / 300 }];
                assert!(
                    (a - b).abs() <= step / 2.0 * (1.0 + 1e-6),
                    "{g:?} {i}: {a} vs {b}"
                );
            }
        }
        // Quantizing what was dequantized gives the same int8 values.
        let (q, s) = quantize(&w, Granularity::PerChannel, "w").unwrap();
        let (q2, _) = quantize(
            &dequantize(&q, &s, "w").unwrap(),
            Granularity::PerChannel,
            "w",
        )
        .unwrap();
        assert_eq!(q, q2);
    }

    #[test]
    fn state_dicts_keep_order_and_round_trip_names() {
        let w = TensorData::from_f32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        let b = TensorData::from_f32(&[2], &[0.5, 0.5]).unwrap();
        let sd: StateDict = [("fc.weight".to_string(), w), ("fc.bias".to_string(), b)]
            .into_iter()
            .collect();
        let q = quantize_state_dict(&sd, Granularity::PerChannel, |n, _| n.ends_with(".weight"))
            .unwrap();
        assert_eq!(
            q.keys().collect::<Vec<_>>(),
            ["fc.weight", "fc.weight_scale", "fc.bias"]
        );
        let back = dequantize_state_dict(&q).unwrap();
        assert_eq!(back.keys().collect::<Vec<_>>(), ["fc.weight", "fc.bias"]);
        assert!(quantize(
            &TensorData::from_f32(&[1], &[f32::NAN]).unwrap(),
            Granularity::PerTensor,
            "x"
        )
        .is_err());
    }
}
