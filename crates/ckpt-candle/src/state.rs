//! Reading optimizer and scheduler state dicts: typed access to `Value`
//! entries, with errors that name the part and the key.

use candle_core::{Tensor, Var};
use ckpt::{Dict, Key, Value};

use crate::convert::to_candle;
use crate::{Error, Result};

/// Which kind of state is being read, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part {
    Optimizer,
    Scheduler,
}

impl Part {
    pub(crate) fn err(self, key: impl Into<String>, message: impl Into<String>) -> Error {
        match self {
            Part::Optimizer => Error::optimizer(key, message),
            Part::Scheduler => Error::scheduler(key, message),
        }
    }
}

/// The entry `key` of `dict`, or an error naming `at/key`.
pub(crate) fn entry<'a>(part: Part, dict: &'a Dict, key: &str, at: &str) -> Result<&'a Value> {
    dict.get(&Key::from(key))
        .ok_or_else(|| part.err(join(at, key), "missing"))
}

/// A number written by Python as an int or a float (or a 0-dim tensor).
pub(crate) fn number(part: Part, value: &Value, at: &str) -> Result<f64> {
    match value {
        Value::Int(i) => Ok(*i as f64),
        Value::Float(f) => Ok(*f),
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        Value::Tensor(t) if t.shape().is_empty() => Ok(t.values_f64().next().unwrap_or(f64::NAN)),
        other => Err(part.err(at, format!("is {}, not a number", other.kind()))),
    }
}

/// `dict[key]` as a number.
pub(crate) fn number_at(part: Part, dict: &Dict, key: &str, at: &str) -> Result<f64> {
    number(part, entry(part, dict, key, at)?, &join(at, key))
}

/// `dict[key]` as a bool; `default` when absent.
pub(crate) fn flag(part: Part, dict: &Dict, key: &str, at: &str, default: bool) -> Result<bool> {
    match dict.get(&Key::from(key)) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(part.err(join(at, key), format!("is {}, not a bool", other.kind()))),
    }
}

/// A state tensor of `param`'s shape, placed on its device and dtype.
pub(crate) fn tensor_state(
    part: Part,
    dict: &Dict,
    key: &str,
    param: &Var,
    at: &str,
) -> Result<Tensor> {
    let value = entry(part, dict, key, at)?;
    let at = join(at, key);
    let Value::Tensor(t) = value else {
        return Err(part.err(at, "is not a tensor"));
    };
    if t.shape() != param.dims() {
        return Err(part.err(
            at,
            format!(
                "has shape {:?}, its parameter {:?}",
                t.shape(),
                param.dims()
            ),
        ));
    }
    if !t.dtype().is_float() {
        return Err(part.err(at, format!("has dtype {}, not a float", t.dtype())));
    }
    Ok(to_candle(t, param.device(), &at)?.to_dtype(param.dtype())?)
}

pub(crate) fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}/{key}")
    }
}

/// `dict[key]` as an integer.
pub(crate) fn int_at(part: Part, dict: &Dict, key: &str, at: &str) -> Result<i64> {
    match entry(part, dict, key, at)? {
        Value::Int(i) => Ok(*i),
        other => Err(part.err(
            join(at, key),
            format!("is {}, not an integer", other.kind()),
        )),
    }
}

/// `dict[key]` as a list of numbers.
pub(crate) fn numbers_at(part: Part, dict: &Dict, key: &str, at: &str) -> Result<Vec<f64>> {
    let value = entry(part, dict, key, at)?;
    let at = join(at, key);
    match value {
        Value::List(items) | Value::Tuple(items) => {
            items.iter().map(|v| number(part, v, &at)).collect()
        }
        other => Err(part.err(at, format!("is {}, not a list", other.kind()))),
    }
}
