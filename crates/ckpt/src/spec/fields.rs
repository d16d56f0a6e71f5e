//! Typed access to a layer's JSON fields, with errors naming the layer,
//! and the size limit every field is held to.

use serde_json::{Map, Value as Json};

use super::bad;
use crate::Result;

/// The largest size any field may hold (features, channels, kernel
/// sizes, shapes): larger values are refused before any arithmetic.
pub const MAX_SIZE: usize = 1 << 24;

/// A layer's (or the spec's) JSON object and the name errors give it.
pub(super) struct Fields<'a> {
    pub(super) map: &'a Map<String, Json>,
    pub(super) at: &'a str,
}

impl Fields<'_> {
    pub(super) fn get(&self, key: &str) -> Option<&Json> {
        self.map.get(key)
    }

    pub(super) fn usize(&self, key: &str) -> Result<usize> {
        self.get(key)
            .ok_or_else(|| bad(self.at, format!("missing field {key:?}")))
            .and_then(|v| as_usize(v, self.at, key))
    }

    pub(super) fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        self.get(key)
            .map_or(Ok(default), |v| as_usize(v, self.at, key))
    }

    pub(super) fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad(self.at, format!("{key:?} is not a number"))),
        }
    }

    pub(super) fn i64_or(&self, key: &str, default: i64) -> Result<i64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| bad(self.at, format!("{key:?} is not an integer"))),
        }
    }

    pub(super) fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| bad(self.at, format!("{key:?} is not true or false"))),
        }
    }

    /// A size given as one number or a pair, as PyTorch accepts.
    pub(super) fn pair(&self, key: &str, default: Option<[usize; 2]>) -> Result<[usize; 2]> {
        match self.get(key) {
            None => default.ok_or_else(|| bad(self.at, format!("missing field {key:?}"))),
            Some(Json::Array(items)) if items.len() == 2 => Ok([
                as_usize(&items[0], self.at, key)?,
                as_usize(&items[1], self.at, key)?,
            ]),
            Some(v) => {
                let n = as_usize(v, self.at, key)?;
                Ok([n, n])
            }
        }
    }

    pub(super) fn list(&self, key: &str) -> Result<Vec<usize>> {
        match self.get(key) {
            Some(Json::Array(items)) => items.iter().map(|v| as_usize(v, self.at, key)).collect(),
            Some(v) => Ok(vec![as_usize(v, self.at, key)?]),
            None => Err(bad(self.at, format!("missing field {key:?}"))),
        }
    }
}

fn as_usize(v: &Json, at: &str, key: &str) -> Result<usize> {
    let n = v
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| bad(at, format!("{key:?} is not a non-negative integer")))?;
    if n > MAX_SIZE {
        return Err(bad(
            at,
            format!("{key:?} is {n}, more than the {MAX_SIZE} ckpt accepts"),
        ));
    }
    Ok(n)
}
