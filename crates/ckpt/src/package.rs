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

use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;

use crate::compress::quantize::{self, Activations, Granularity, Quantization};
use crate::{
    match_state_dict, Dict, Error, Expected, Key, KeyRule, LoadRules, ModelSpec, Result,
    SaveOptions, StateDict, TensorData, Value,
};

/// The newest package layout this library reads: 1 for float packages,
/// 2 for quantized ones (which older readers refuse by their version).
pub const PACKAGE_FORMAT: i64 = 2;

/// The layout version a package of plain float weights is written with.
const FLOAT_FORMAT: i64 = 1;

const ROOT: &str = "ckpt_package";

/// What a package says about its model.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PackageInfo {
    /// The package layout version (see [`PACKAGE_FORMAT`]).
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
}

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

/// What to do when a package's model version is not the expected one and
/// no migration leads there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionPolicy {
    /// Load it and add a warning naming both versions (the default).
    #[default]
    Warn,
    /// Refuse it.
    Error,
}

/// A function from one tensor to its migrated form.
pub type TensorChange = Arc<dyn Fn(&TensorData) -> Result<TensorData> + Send + Sync>;

/// One step of a migration.
#[derive(Clone)]
pub enum MigrationStep {
    /// Rename weights (see [`KeyRule`]).
    Rename(KeyRule),
    /// The new version's architecture (when layers were renamed or
    /// changed); the migrated weights must fit it.
    Spec(ModelSpec),
    /// Replace one weight by a function of it (a transpose, a new shape).
    Transform {
        /// The weight's name (after earlier renames).
        name: String,
        /// The change.
        change: TensorChange,
    },
}

impl std::fmt::Debug for MigrationStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MigrationStep::Rename(rule) => write!(f, "Rename({rule:?})"),
            MigrationStep::Spec(spec) => write!(f, "Spec({})", spec.name),
            MigrationStep::Transform { name, .. } => write!(f, "Transform({name})"),
        }
    }
}

/// Registered migrations from one model version to another.
///
/// ```
/// use ckpt::package::{Migrations, MigrationStep};
/// let mut m = Migrations::default();
/// m.add("1.0.0", "1.1.0", vec![MigrationStep::Rename(ckpt::KeyRule::rename(r"^out\.", "head.").unwrap())]);
/// assert_eq!(m.path("1.0.0", "1.1.0").unwrap().len(), 1);
/// assert!(m.path("1.1.0", "1.0.0").is_none());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Migrations {
    edges: Vec<(String, String, Vec<MigrationStep>)>,
}

impl Migrations {
    /// Registers a migration from version `from` to version `to`.
    pub fn add(&mut self, from: &str, to: &str, steps: Vec<MigrationStep>) -> &mut Self {
        self.edges.push((from.to_owned(), to.to_owned(), steps));
        self
    }

    /// The chain of migrations from `from` to `to` (shortest), if any.
    pub fn path(&self, from: &str, to: &str) -> Option<Vec<usize>> {
        // Breadth-first over versions; a handful of edges.
        let mut queue = std::collections::VecDeque::from([(from.to_owned(), Vec::new())]);
        let mut seen = vec![from.to_owned()];
        while let Some((at, path)) = queue.pop_front() {
            if at == to {
                return Some(path);
            }
            for (i, (a, b, _)) in self.edges.iter().enumerate() {
                if *a == at && !seen.contains(b) {
                    seen.push(b.clone());
                    let mut next = path.clone();
                    next.push(i);
                    queue.push_back((b.clone(), next));
                }
            }
        }
        None
    }
}

/// How to load a package.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PackageOptions {
    /// The model version the caller expects; `None` accepts any.
    pub expect_version: Option<String>,
    /// When the version differs and no migration leads to it.
    pub on_version_mismatch: VersionPolicy,
    /// Migrations to run when the versions differ.
    pub migrations: Migrations,
}

impl PackageOptions {
    /// Expects model version `version`.
    pub fn expect_version(mut self, version: &str) -> Self {
        self.expect_version = Some(version.to_owned());
        self
    }

    /// Sets [`PackageOptions::on_version_mismatch`].
    pub fn on_version_mismatch(mut self, policy: VersionPolicy) -> Self {
        self.on_version_mismatch = policy;
        self
    }

    /// Sets [`PackageOptions::migrations`].
    pub fn migrations(mut self, migrations: Migrations) -> Self {
        self.migrations = migrations;
        self
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadPackage {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

impl Package {
    /// A package of `spec` and `weights`, which must fit the spec exactly.
    pub fn new(spec: ModelSpec, weights: StateDict, info: PackageInfo) -> Result<Package> {
        let matched =
            match_state_dict(weights, &spec.expected(), &LoadRules::default().cast(false))?;
        let weights = matched
            .tensors
            .into_iter()
            .map(|(i, t)| (spec.expected()[i].name.clone(), t))
            .collect();
        Ok(Package {
            spec,
            weights,
            info,
            optimizer: None,
            quantization: None,
            warnings: Vec::new(),
        })
    }

    /// A package of `spec` and a state dict as PyTorch users have it: plain
    /// float weights ([`Package::new`]), or the state dict of
    /// `torch.ao.quantization.quantize_dynamic(model)`, whose Linear layers
    /// `P` hold `P._packed_params._packed_params` (int8 weight and bias, as
    /// ckpt reads them: `…/0`, `…/0_scale`, `…/1`) beside unused `P.scale`
    /// and `P.zero_point`. The latter becomes a quantized package (format 2,
    /// dynamic activations) with the weights as torch stored them.
    pub fn from_state_dict(
        spec: ModelSpec,
        weights: StateDict,
        info: PackageInfo,
    ) -> Result<Package> {
        const PACKED: &str = "._packed_params._packed_params/";
        if !weights.keys().any(|n| n.contains(PACKED)) {
            return Package::new(spec, weights, info);
        }
        let bad = |problem: String| Error::BadQuantization(problem);
        let layers: Vec<String> = weights
            .keys()
            .filter_map(|n| n.strip_suffix(&format!("{PACKED}0")).map(str::to_owned))
            .collect();
        let mut renamed = StateDict::new();
        let mut granularity = None;
        for (name, t) in weights.iter() {
            let (layer, part) = match name.split_once(PACKED) {
                Some((layer, part)) => (layer, part),
                None => {
                    let owner = name.rsplit_once('.').map_or("", |(o, _)| o);
                    let unused = matches!(name.rsplit_once('.'), Some((_, "scale" | "zero_point")));
                    if !(unused && layers.iter().any(|l| l == owner)) {
                        renamed.insert(name.clone(), t.clone());
                    }
                    continue;
                }
            };
            let target = match part {
                "0" => format!("{layer}.weight"),
                "0_scale" => {
                    let g = if t.shape().is_empty() {
                        Granularity::PerTensor
                    } else {
                        Granularity::PerChannel
                    };
                    if granularity.replace(g).is_some_and(|before| before != g) {
                        return Err(bad("layers quantized both per tensor and per channel".into()));
                    }
                    renamed.insert(format!("{layer}.weight_scale"), t.cast(crate::DType::F32)?);
                    continue;
                }
                "1" => format!("{layer}.bias"),
                other => {
                    return Err(bad(format!(
                        "{layer}: weight part {other:?}: ckpt's int8 layout is symmetric int8 with scales along dimension 0 (torch's default qconfig)"
                    )))
                }
            };
            renamed.insert(target, t.clone());
        }
        let quantization = Quantization {
            granularity: granularity.unwrap_or_default(),
            activations: Activations::Dynamic,
            tensors: layers.iter().map(|l| format!("{l}.weight")).collect(),
        };
        let expected = quantization.expected(&spec.expected())?;
        let matched = match_state_dict(renamed, &expected, &LoadRules::default().cast(false))?;
        let mut info = info;
        info.format_version = PACKAGE_FORMAT;
        Ok(Package {
            weights: matched
                .tensors
                .into_iter()
                .map(|(i, t)| (expected[i].name.clone(), t))
                .collect(),
            spec,
            info,
            optimizer: None,
            quantization: Some(quantization),
            warnings: Vec::new(),
        })
    }

    /// What the weights must be: the spec's parameters, with the quantized
    /// ones as `int8` followed by their scales.
    pub fn expected(&self) -> Result<Vec<Expected>> {
        expected(&self.spec, self.quantization.as_ref())
    }

    /// The package with the weights `select` picks quantized to int8
    /// (see [`crate::compress::quantize`]); already quantized packages are
    /// refused. The result is package format 2.
    ///
    /// ```
    /// use ckpt::compress::quantize::{Activations, Granularity};
    /// let spec = ckpt::ModelSpec::from_json(r#"{"name": "lin", "input_shape": [2], "layers": [
    ///     {"name": "fc", "type": "Linear", "in_features": 2, "out_features": 1}]}"#).unwrap();
    /// let mut w = ckpt::StateDict::new();
    /// // Values on the int8 grid come back exactly.
    /// w.insert("fc.weight".into(), ckpt::TensorData::from_f32(&[1, 2], &[12.7, -6.4]).unwrap());
    /// w.insert("fc.bias".into(), ckpt::TensorData::from_f32(&[1], &[0.5]).unwrap());
    /// let info = ckpt::PackageInfo::new(&spec, "1.0.0");
    /// let package = ckpt::Package::new(spec, w, info).unwrap();
    /// let q = package
    ///     .quantize(Granularity::PerChannel, Activations::Dynamic, |name, _| name == "fc.weight")
    ///     .unwrap();
    /// assert_eq!(q.weights.keys().collect::<Vec<_>>(), ["fc.weight", "fc.weight_scale", "fc.bias"]);
    /// assert_eq!(q.dequantize().unwrap().weights["fc.weight"].values_f64().collect::<Vec<_>>(), [12.7f32 as f64, -6.4f32 as f64]);
    /// ```
    pub fn quantize(
        &self,
        granularity: Granularity,
        activations: Activations,
        select: impl Fn(&str, &TensorData) -> bool,
    ) -> Result<Package> {
        if self.quantization.is_some() {
            return Err(Error::BadQuantization(
                "the package is already quantized".into(),
            ));
        }
        let tensors: Vec<String> = self
            .weights
            .iter()
            .filter(|(n, t)| t.dtype().is_float() && select(n, t))
            .map(|(n, _)| n.clone())
            .collect();
        let weights = quantize::quantize_state_dict(&self.weights, granularity, |n, _| {
            tensors.iter().any(|t| t == n)
        })?;
        let mut info = self.info.clone();
        info.format_version = PACKAGE_FORMAT;
        Ok(Package {
            weights,
            info,
            quantization: Some(Quantization {
                granularity,
                activations,
                tensors,
            }),
            ..self.clone()
        })
    }

    /// The package with float weights again (`int8 × scale`), format 1.
    pub fn dequantize(&self) -> Result<Package> {
        if self.quantization.is_none() {
            return Ok(self.clone());
        }
        let mut info = self.info.clone();
        info.format_version = FLOAT_FORMAT;
        Ok(Package {
            weights: quantize::dequantize_state_dict(&self.weights)?,
            info,
            quantization: None,
            ..self.clone()
        })
    }

    /// The package as a value tree (module docs).
    pub fn to_value(&self) -> Value {
        let i = &self.info;
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
        Package::from_value(&crate::load(path)?, path, options)
    }

    /// [`Package::load`] from a value tree already read; `path` names it
    /// in errors.
    pub fn from_value(value: &Value, path: &Path, options: &PackageOptions) -> Result<Package> {
        let Some(Value::Dict(meta)) = value.get(ROOT) else {
            return Err(bad(path, "not a model package (no ckpt_package entry)"));
        };
        let get = |k: &str| meta.get(&Key::from(k));
        let text = |k: &str| match get(k) {
            Some(Value::Str(s)) => Ok(s.clone()),
            _ => Err(bad(
                path,
                format!("ckpt_package.{k} is missing or not a string"),
            )),
        };
        let format_version = match get("format_version") {
            Some(Value::Int(v)) => *v,
            _ => return Err(bad(path, "ckpt_package.format_version is missing")),
        };
        if format_version > PACKAGE_FORMAT {
            return Err(bad(
                path,
                format!("package format {format_version} is newer than this ckpt reads ({PACKAGE_FORMAT}); upgrade ckpt"),
            ));
        }
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
        let Some(Value::Str(spec_json)) = value.get("spec") else {
            return Err(bad(path, "the package has no spec"));
        };
        let mut spec = ModelSpec::from_json(spec_json).map_err(|e| bad(path, e.to_string()))?;
        let mut info = PackageInfo {
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
        };
        let mut quantization = get("quantization")
            .map(Quantization::from_value)
            .transpose()
            .map_err(|e| bad(path, e.to_string()))?;
        let mut weights = match value.get("model_state_dict") {
            Some(v) => {
                StateDict::try_from(v).map_err(|e| bad(path, format!("model_state_dict: {e}")))?
            }
            None => return Err(bad(path, "the package has no model_state_dict")),
        };
        let mut warnings = Vec::new();
        if let Some(want) = &options.expect_version {
            if *want != info.model_version {
                match options.migrations.path(&info.model_version, want) {
                    Some(chain) => {
                        for i in chain {
                            let (from, to, steps) = &options.migrations.edges[i];
                            (weights, spec) = migrate(weights, spec, quantization.as_mut(), steps)
                                .map_err(|e| bad(path, format!("migration {from} -> {to}: {e}")))?;
                            info.migrations.push(format!("{from} -> {to}"));
                        }
                        info.model_version = want.clone();
                    }
                    None if options.on_version_mismatch == VersionPolicy::Error => {
                        return Err(bad(
                            path,
                            format!("model version {} is not the expected {want}, and no migration leads there", info.model_version),
                        ))
                    }
                    None => warnings.push(format!(
                        "{}: model version {} is not the expected {want} (no migration registered)",
                        path.display(),
                        info.model_version
                    )),
                }
            }
        }
        let expected =
            expected(&spec, quantization.as_ref()).map_err(|e| bad(path, e.to_string()))?;
        let matched = match_state_dict(weights, &expected, &LoadRules::default().cast(false))
            .map_err(|e| {
                bad(
                    path,
                    format!("the weights do not fit the package's spec: {e}"),
                )
            })?;
        let weights = matched
            .tensors
            .into_iter()
            .map(|(i, t)| (expected[i].name.clone(), t))
            .collect();
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

fn expected(spec: &ModelSpec, quantization: Option<&Quantization>) -> Result<Vec<Expected>> {
    match quantization {
        Some(q) => q.expected(&spec.expected()),
        None => Ok(spec.expected()),
    }
}

/// Runs migration steps; renames apply to the quantized tensors' names too.
fn migrate(
    weights: StateDict,
    spec: ModelSpec,
    mut quantization: Option<&mut Quantization>,
    steps: &[MigrationStep],
) -> Result<(StateDict, ModelSpec)> {
    let (mut weights, mut spec) = (weights, spec);
    for step in steps {
        weights = match step {
            MigrationStep::Spec(new) => {
                spec = new.clone();
                weights
            }
            MigrationStep::Rename(rule) => {
                if let Some(q) = quantization.as_deref_mut() {
                    for t in &mut q.tensors {
                        *t = rule.apply(t);
                    }
                }
                let mut out = StateDict::new();
                for (name, t) in weights {
                    let renamed = rule.apply(&name);
                    if out.contains_key(&renamed) {
                        return Err(Error::DuplicateName { name: renamed });
                    }
                    out.insert(renamed, t);
                }
                out
            }
            MigrationStep::Transform { name, change } => {
                let Some(t) = weights.get(name).cloned() else {
                    return Err(Error::NotATensor {
                        path: name.into(),
                        found: "nothing",
                    });
                };
                weights.insert(name.clone(), change(&t)?);
                weights
            }
        };
    }
    Ok((weights, spec))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ModelSpec {
        ModelSpec::from_json(
            r#"{"name": "tiny", "input_shape": [2], "layers": [
                {"name": "head", "type": "Linear", "in_features": 2, "out_features": 1}]}"#,
        )
        .unwrap()
    }

    fn weights(prefix: &str) -> StateDict {
        let mut sd = StateDict::new();
        sd.insert(
            format!("{prefix}.weight"),
            TensorData::from_f32(&[1, 2], &[1.0, 2.0]).unwrap(),
        );
        sd.insert(
            format!("{prefix}.bias"),
            TensorData::from_f32(&[1], &[0.5]).unwrap(),
        );
        sd
    }

    #[test]
    fn packages_round_trip_in_both_formats_and_check_their_weights() {
        let dir = tempfile::tempdir().unwrap();
        let mut info = PackageInfo::new(&spec(), "1.2.0");
        info.classes = vec!["yes".into()];
        info.metrics.insert("accuracy".into(), 0.97);
        info.user.insert("dataset".into(), "digits".into());
        let package = Package::new(spec(), weights("head"), info).unwrap();
        for ext in ["safetensors", "pth"] {
            let path = dir.path().join(format!("m.{ext}"));
            package.save(&path).unwrap();
            let back = Package::load(&path, &PackageOptions::default()).unwrap();
            assert_eq!(back, package, "{ext}");
        }
        assert!(Package::new(spec(), weights("out"), PackageInfo::new(&spec(), "1.0.0")).is_err());
        assert!(
            package.info.created.ends_with('Z') && package.info.created.len() == 20,
            "{}",
            package.info.created
        );
    }

    #[test]
    fn versions_warn_error_or_migrate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.safetensors");
        // A 1.0.0 package whose head was called "out".
        let old_spec =
            ModelSpec::from_json(&spec().to_json().to_string().replace("\"head\"", "\"out\""))
                .unwrap();
        Package::new(old_spec, weights("out"), PackageInfo::new(&spec(), "1.0.0"))
            .unwrap()
            .save(&path)
            .unwrap();

        let warned =
            Package::load(&path, &PackageOptions::default().expect_version("2.0.0")).unwrap();
        assert_eq!(warned.warnings.len(), 1);
        assert!(warned.warnings[0].contains("model version 1.0.0 is not the expected 2.0.0"));
        let err = Package::load(
            &path,
            &PackageOptions::default()
                .expect_version("2.0.0")
                .on_version_mismatch(VersionPolicy::Error),
        )
        .unwrap_err();
        assert!(err.to_string().contains(
            "model version 1.0.0 is not the expected 2.0.0, and no migration leads there"
        ));

        let mut migrations = Migrations::default();
        migrations.add(
            "1.0.0",
            "1.1.0",
            vec![
                MigrationStep::Rename(KeyRule::rename(r"^out\.", "head.").unwrap()),
                MigrationStep::Spec(spec()),
            ],
        );
        migrations.add(
            "1.1.0",
            "2.0.0",
            vec![MigrationStep::Transform {
                name: "head.bias".into(),
                change: Arc::new(|t| {
                    TensorData::from_f32(t.shape(), &[t.values_f64().next().unwrap() as f32 * 2.0])
                }),
            }],
        );
        let options = PackageOptions::default()
            .expect_version("2.0.0")
            .migrations(migrations.clone());
        let migrated = Package::load(&path, &options).unwrap();
        assert_eq!(
            migrated.info.migrations,
            ["1.0.0 -> 1.1.0", "1.1.0 -> 2.0.0"]
        );
        assert_eq!(migrated.info.model_version, "2.0.0");
        assert!(migrated.warnings.is_empty());
        assert_eq!(migrated.weights["head.bias"].values_f64().next(), Some(1.0));
        assert_eq!(migrated.spec, spec());

        // Without the spec step, the renamed weights do not fit the old spec.
        migrations.edges[0].2.pop();
        let err = Package::load(
            &path,
            &PackageOptions::default()
                .expect_version("2.0.0")
                .migrations(migrations),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("do not fit the package's spec"),
            "{err}"
        );
    }

    #[test]
    fn quantized_packages_round_trip_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let package =
            Package::new(spec(), weights("head"), PackageInfo::new(&spec(), "1.0.0")).unwrap();
        let q = package
            .quantize(Granularity::PerTensor, Activations::WeightOnly, |n, _| {
                n == "head.weight"
            })
            .unwrap();
        assert_eq!(q.info.format_version, 2);
        assert_eq!(q.weights["head.weight_scale"].shape(), [0usize; 0]);
        assert!(q
            .quantize(Granularity::PerTensor, Activations::Dynamic, |_, _| true)
            .is_err());
        for ext in ["safetensors", "pth"] {
            let path = dir.path().join(format!("q.{ext}"));
            q.save(&path).unwrap();
            let back = Package::load(&path, &PackageOptions::default()).unwrap();
            assert_eq!(back, q, "{ext}");
        }
        let back = q.dequantize().unwrap();
        assert_eq!(back.info.format_version, 1);
        assert!(back.quantization.is_none());
        // A quantized weight without its scale, or a scale of the wrong
        // shape, does not fit.
        let path = dir.path().join("broken.safetensors");
        let mut broken = q.clone();
        broken.weights.shift_remove("head.weight_scale");
        broken.save(&path).unwrap();
        let err = Package::load(&path, &PackageOptions::default()).unwrap_err();
        assert!(err.to_string().contains("head.weight_scale"), "{err}");
        let mut broken = q.clone();
        broken.quantization.as_mut().unwrap().granularity = Granularity::PerChannel;
        broken.save(&path).unwrap();
        assert!(Package::load(&path, &PackageOptions::default()).is_err());
        let mut broken = q.clone();
        broken.quantization.as_mut().unwrap().tensors = vec!["nothing".into()];
        broken.save(&path).unwrap();
        let err = Package::load(&path, &PackageOptions::default()).unwrap_err();
        assert!(err.to_string().contains("nothing is not a weight"), "{err}");
    }
}
