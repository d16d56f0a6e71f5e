//! [`PackageInfo`]: what a package says about its model, and its
//! `ckpt_package` entry in the value tree.

use std::path::Path;

use indexmap::IndexMap;

use super::{bad, FLOAT_FORMAT};
use crate::{Dict, Key, ModelSpec, Result, Value};

/// What a package says about its model.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PackageInfo {
    /// The package layout version (see [`PACKAGE_FORMAT`](super::PACKAGE_FORMAT)).
    pub format_version: i64,
    /// The model's own version, `MAJOR.MINOR.PATCH`.
    pub model_version: String,
    /// The architecture's name (the spec's name by default).
    pub architecture: String,
    /// When the package was made, RFC 3339 UTC.
    pub created: String,
    /// The library that made it (`ckpt 0.1.0`).
    pub library: String,
    /// The output classes' names, in output order.
    pub classes: Vec<String>,
    /// One sample's input shape.
    pub input_shape: Vec<usize>,
    /// Metrics (accuracy, loss) measured for this model.
    pub metrics: IndexMap<String, f64>,
    /// Anything else the user adds.
    pub user: IndexMap<String, String>,
    /// Migrations applied when this package was loaded, in order.
    pub migrations: Vec<String>,
}

impl PackageInfo {
    /// Metadata for a new package of `spec` at version `model_version`.
    pub fn new(spec: &ModelSpec, model_version: &str) -> PackageInfo {
        PackageInfo {
            format_version: FLOAT_FORMAT,
            model_version: model_version.to_owned(),
            architecture: spec.name.clone(),
            created: now_rfc3339(),
            library: concat!("ckpt ", env!("CARGO_PKG_VERSION")).to_owned(),
            classes: Vec::new(),
            input_shape: spec.input_shape.clone(),
            metrics: IndexMap::new(),
            user: IndexMap::new(),
            migrations: Vec::new(),
        }
    }

    /// The `ckpt_package` entry (without the quantization record).
    pub(super) fn to_dict(&self) -> Dict {
        let i = self;
        let strs = |v: &[String]| Value::List(v.iter().map(|s| Value::Str(s.clone())).collect());
        let mut meta = Dict::new();
        meta.insert("format_version".into(), Value::Int(i.format_version));
        meta.insert("model_version".into(), Value::Str(i.model_version.clone()));
        meta.insert("architecture".into(), Value::Str(i.architecture.clone()));
        meta.insert("created".into(), Value::Str(i.created.clone()));
        meta.insert("library".into(), Value::Str(i.library.clone()));
        meta.insert("classes".into(), strs(&i.classes));
        meta.insert(
            "input_shape".into(),
            Value::List(
                i.input_shape
                    .iter()
                    .map(|&d| Value::Int(d as i64))
                    .collect(),
            ),
        );
        meta.insert(
            "metrics".into(),
            Value::Dict(
                i.metrics
                    .iter()
                    .map(|(k, v)| (Key::from(k.as_str()), Value::Float(*v)))
                    .collect(),
            ),
        );
        meta.insert(
            "user".into(),
            Value::Dict(
                i.user
                    .iter()
                    .map(|(k, v)| (Key::from(k.as_str()), Value::Str(v.clone())))
                    .collect(),
            ),
        );
        meta.insert("migrations".into(), strs(&i.migrations));
        meta
    }

    /// The info of the `ckpt_package` entry `meta`, whose format version
    /// was read and checked, for `spec` (its input shape); `path` names
    /// the file in errors.
    pub(super) fn from_dict(
        meta: &Dict,
        path: &Path,
        format_version: i64,
        spec: &ModelSpec,
    ) -> Result<PackageInfo> {
        let get = |k: &str| meta.get(&Key::from(k));
        let text = |k: &str| match get(k) {
            Some(Value::Str(s)) => Ok(s.clone()),
            _ => Err(bad(
                path,
                format!("ckpt_package.{k} is missing or not a string"),
            )),
        };
        let strings = |k: &str| -> Result<Vec<String>> {
            match get(k) {
                None => Ok(Vec::new()),
                Some(Value::List(items)) => items
                    .iter()
                    .map(|v| match v {
                        Value::Str(s) => Ok(s.clone()),
                        _ => Err(bad(path, format!("ckpt_package.{k} holds a non-string"))),
                    })
                    .collect(),
                Some(_) => Err(bad(path, format!("ckpt_package.{k} is not a list"))),
            }
        };
        let metrics = match get("metrics") {
            Some(Value::Dict(d)) => d
                .iter()
                .filter_map(|(k, v)| match v {
                    Value::Float(f) => Some((k.to_string(), *f)),
                    Value::Int(i) => Some((k.to_string(), *i as f64)),
                    _ => None,
                })
                .collect(),
            _ => IndexMap::new(),
        };
        let user = match get("user") {
            Some(Value::Dict(d)) => d
                .iter()
                .filter_map(|(k, v)| match v {
                    Value::Str(s) => Some((k.to_string(), s.clone())),
                    _ => None,
                })
                .collect(),
            _ => IndexMap::new(),
        };
        Ok(PackageInfo {
            format_version,
            model_version: text("model_version")?,
            architecture: text("architecture")?,
            created: text("created").unwrap_or_default(),
            library: text("library").unwrap_or_default(),
            classes: strings("classes")?,
            input_shape: spec.input_shape.clone(),
            metrics,
            user,
            migrations: strings("migrations")?,
        })
    }
}

/// The current time as RFC 3339 UTC (`2026-11-29T05:40:47Z`), without a
/// date library.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
