//! Model packages: one file holding a model's spec, its weights and its
//! metadata, so it loads and runs with no user code; versioning with
//! registered migrations.
//!
//! As a value tree (in `.safetensors`, the tree rides in the metadata; in
//! `.pth`, it is the pickled dict):
//!
//! ```text
//! {"ckpt_package": {"format_version", "model_version", "architecture", "created",
//!                   "library", "classes", "input_shape", "metrics", "user", "migrations"},
//!  "spec": "<ModelSpec JSON>",
//!  "model_state_dict": {...},
//!  "optimizer_state_dict": {...}}      (training packages only)
//! ```
//!
//! A quantized package (format 2) also records `ckpt_package.quantization`
//! ([`Quantization`]); its quantized weights are `int8` with a `NAME_scale`
//! beside each.
//!
//! The metadata lives in `info`, model versions and migrations in
//! `migrations`, quantized packages in `quantized`.

mod info;
mod migrations;
mod quantized;
#[cfg(test)]
mod tests;

use std::path::Path;

use crate::compress::quantize::Quantization;
use crate::format::pytorch::PickledModule;
use crate::{
    match_state_dict, Dict, Error, Expected, Key, LoadRules, ModelSpec, Result, SaveOptions,
    StateDict, Value,
};
pub use info::PackageInfo;
pub use migrations::{MigrationStep, Migrations, PackageOptions, TensorChange, VersionPolicy};

/// The newest package layout this library reads: 1 for float packages,
/// 2 for quantized ones (which older readers refuse by their version).
pub const PACKAGE_FORMAT: i64 = 2;

/// The layout version a package of plain float weights is written with.
const FLOAT_FORMAT: i64 = 1;

const ROOT: &str = "ckpt_package";

/// A model package: spec, weights, metadata, and (for a training package)
/// the optimizer state.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Package {
    /// The architecture.
    pub spec: ModelSpec,
    /// The weights, fitting the spec exactly.
    pub weights: StateDict,
    /// The metadata.
    pub info: PackageInfo,
    /// The optimizer state, in a training package.
    pub optimizer: Option<Value>,
    /// How the weights are quantized, in a quantized package.
    pub quantization: Option<Quantization>,
    /// What loading had to say (another model version, say); libraries do
    /// not print, so the caller shows these.
    pub warnings: Vec<String>,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadPackage {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// `weights` checked against `expected` (names, shapes and dtypes
/// exactly), in its order.
fn fit(weights: StateDict, expected: &[Expected]) -> Result<StateDict> {
    let matched = match_state_dict(weights, expected, &LoadRules::default().cast(false))?;
    Ok(matched
        .tensors
        .into_iter()
        .map(|(i, t)| (expected[i].name.clone(), t))
        .collect())
}

impl Package {
    /// A package of `spec` and `weights`, which must fit the spec exactly.
    pub fn new(spec: ModelSpec, weights: StateDict, info: PackageInfo) -> Result<Package> {
        let weights = fit(weights, &spec.expected())?;
        Ok(Package {
            spec,
            weights,
            info,
            optimizer: None,
            quantization: None,
            warnings: Vec::new(),
        })
    }

    /// What the weights must be: the spec's parameters, with the quantized
    /// ones as `int8` followed by their scales.
    pub fn expected(&self) -> Result<Vec<Expected>> {
        expected(&self.spec, self.quantization.as_ref())
    }

    /// The package as a value tree (module docs).
    pub fn to_value(&self) -> Value {
        let mut meta = self.info.to_dict();
        if let Some(q) = &self.quantization {
            meta.insert("quantization".into(), q.to_value());
        }
        let mut d = Dict::new();
        d.insert(ROOT.into(), Value::Dict(meta));
        d.insert("spec".into(), Value::Str(self.spec.to_json().to_string()));
        d.insert("model_state_dict".into(), self.weights.clone().into());
        if let Some(o) = &self.optimizer {
            d.insert("optimizer_state_dict".into(), o.clone());
        }
        Value::Dict(d)
    }

    /// True when `value` is a package (it has the `ckpt_package` entry).
    pub fn is_package(value: &Value) -> bool {
        value.get(ROOT).is_some()
    }

    /// Saves the package (`.safetensors` or `.pth`), atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::save_with(path, &self.to_value(), &SaveOptions::default())
    }

    /// The same package without optimizer state: what inference needs.
    pub fn inference(&self) -> Package {
        Package {
            optimizer: None,
            ..self.clone()
        }
    }

    /// Loads a package, checking its format version, its spec, that the
    /// weights fit the spec, and its model version against `options`
    /// (running registered migrations, recorded in `info.migrations`).
    pub fn load(path: impl AsRef<Path>, options: &PackageOptions) -> Result<Package> {
        let path = path.as_ref();
        let loaded = crate::read(path, &crate::LoadOptions::default())?;
        match &loaded.module {
            Some(module) if !Package::is_package(&loaded.value) => {
                // Through the package's own reading: versions, migrations.
                let shape = options.input_shape.as_deref();
                let package = Package::from_module(module, &loaded.value, path, shape)?;
                Package::from_value(&package.to_value(), path, options)
            }
            _ => Package::from_value(&loaded.value, path, options),
        }
    }

    /// A package of a whole pickled model (`torch.save(model)` of an
    /// `nn.Sequential` of spec layer kinds, read as `module` and `weights`
    /// from `path`): the spec derived from its modules' attributes
    /// ([`ModelSpec::from_module`], the input shape from its first layer
    /// unless given), its weights, model version 0.0.0.
    pub fn from_module(
        module: &PickledModule,
        weights: &Value,
        path: &Path,
        input_shape: Option<&[usize]>,
    ) -> Result<Package> {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
        let spec = ModelSpec::from_module(module, name, input_shape).map_err(|e| {
            bad(
                path,
                format!("a whole pickled model, but its spec cannot be derived: {e}"),
            )
        })?;
        let weights = StateDict::try_from(weights).map_err(|e| bad(path, e.to_string()))?;
        let info = PackageInfo::new(&spec, "0.0.0");
        Package::from_state_dict(spec, weights, info)
    }

    /// [`Package::load`] from a value tree already read; `path` names it
    /// in errors.
    pub fn from_value(value: &Value, path: &Path, options: &PackageOptions) -> Result<Package> {
        let Some(Value::Dict(meta)) = value.get(ROOT) else {
            return Err(bad(path, "not a model package (no ckpt_package entry)"));
        };
        let format_version = format_version(meta, path)?;
        let Some(Value::Str(spec_json)) = value.get("spec") else {
            return Err(bad(path, "the package has no spec"));
        };
        let spec = ModelSpec::from_json(spec_json).map_err(|e| bad(path, e.to_string()))?;
        let mut info = PackageInfo::from_dict(meta, path, format_version, &spec)?;
        let mut quantization = meta
            .get(&Key::from("quantization"))
            .map(Quantization::from_value)
            .transpose()
            .map_err(|e| bad(path, e.to_string()))?;
        let weights = match value.get("model_state_dict") {
            Some(v) => {
                StateDict::try_from(v).map_err(|e| bad(path, format!("model_state_dict: {e}")))?
            }
            None => return Err(bad(path, "the package has no model_state_dict")),
        };
        let (weights, spec, warnings) = migrations::to_expected_version(
            weights,
            spec,
            &mut info,
            quantization.as_mut(),
            path,
            options,
        )?;
        let expected =
            expected(&spec, quantization.as_ref()).map_err(|e| bad(path, e.to_string()))?;
        let weights = fit(weights, &expected).map_err(|e| {
            bad(
                path,
                format!("the weights do not fit the package's spec: {e}"),
            )
        })?;
        Ok(Package {
            spec,
            weights,
            info,
            optimizer: value.get("optimizer_state_dict").cloned(),
            quantization,
            warnings,
        })
    }
}

/// The `ckpt_package` entry's format version, refused when newer than
/// [`PACKAGE_FORMAT`].
fn format_version(meta: &Dict, path: &Path) -> Result<i64> {
    let format_version = match meta.get(&Key::from("format_version")) {
        Some(Value::Int(v)) => *v,
        _ => return Err(bad(path, "ckpt_package.format_version is missing")),
    };
    if format_version > PACKAGE_FORMAT {
        return Err(bad(
            path,
            format!("package format {format_version} is newer than this ckpt reads ({PACKAGE_FORMAT}); upgrade ckpt"),
        ));
    }
    Ok(format_version)
}

fn expected(spec: &ModelSpec, quantization: Option<&Quantization>) -> Result<Vec<Expected>> {
    match quantization {
        Some(q) => q.expected(&spec.expected()),
        None => Ok(spec.expected()),
    }
}
