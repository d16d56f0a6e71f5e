//! Model versions: what to do when a package's version is not the
//! expected one ([`PackageOptions`], [`VersionPolicy`]), and registered
//! [`Migrations`] (renames, transforms, a new spec) along the shortest
//! chain of versions.

use std::path::Path;
use std::sync::Arc;

use super::{bad, PackageInfo};
use crate::compress::quantize::Quantization;
use crate::{Error, KeyRule, ModelSpec, Result, StateDict, TensorData};

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
    pub(super) edges: Vec<(String, String, Vec<MigrationStep>)>,
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
    /// The per-sample input shape of a whole pickled model
    /// (`torch.save(model)`) whose first layer does not tell it, for the
    /// spec derived from its modules.
    pub input_shape: Option<Vec<usize>>,
}

impl PackageOptions {
    /// Expects model version `version`.
    pub fn expect_version(mut self, version: &str) -> Self {
        self.expect_version = Some(version.to_owned());
        self
    }

    /// Sets [`PackageOptions::input_shape`].
    pub fn input_shape(mut self, shape: Vec<usize>) -> Self {
        self.input_shape = Some(shape);
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

/// Brings a package of `info.model_version` to the version `options`
/// expect: runs the migration chain (recorded in `info.migrations`), or,
/// with none registered, warns or refuses as the policy says. Returns
/// the weights, the spec and the warnings.
pub(super) fn to_expected_version(
    mut weights: StateDict,
    mut spec: ModelSpec,
    info: &mut PackageInfo,
    mut quantization: Option<&mut Quantization>,
    path: &Path,
    options: &PackageOptions,
) -> Result<(StateDict, ModelSpec, Vec<String>)> {
    let mut warnings = Vec::new();
    let Some(want) = &options.expect_version else {
        return Ok((weights, spec, warnings));
    };
    if *want == info.model_version {
        return Ok((weights, spec, warnings));
    }
    match options.migrations.path(&info.model_version, want) {
        Some(chain) => {
            for i in chain {
                let (from, to, steps) = &options.migrations.edges[i];
                (weights, spec) = migrate(weights, spec, quantization.as_deref_mut(), steps)
                    .map_err(|e| bad(path, format!("migration {from} -> {to}: {e}")))?;
                info.migrations.push(format!("{from} -> {to}"));
            }
            info.model_version = want.clone();
        }
        None if options.on_version_mismatch == VersionPolicy::Error => {
            return Err(bad(
                path,
                format!(
                    "model version {} is not the expected {want}, and no migration leads there",
                    info.model_version
                ),
            ))
        }
        None => warnings.push(format!(
            "{}: model version {} is not the expected {want} (no migration registered)",
            path.display(),
            info.model_version
        )),
    }
    Ok((weights, spec, warnings))
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
