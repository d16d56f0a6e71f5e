//! Flexible loading: matching a state dict from a file against the tensors a
//! model expects, with PyTorch's `strict` semantics, key remapping, subset
//! filters and a shape-mismatch policy. No tensor engine is involved, so the
//! CLI and every engine bridge share these rules.

use std::fmt;

use regex_lite::Regex;

use crate::{DType, Error, Result, StateDict, TensorData};

/// One tensor a model expects: its name, dtype and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The name, as the model's own state dict names it (`fc1.weight`).
    pub name: String,
    /// The dtype the model holds it in.
    pub dtype: DType,
    /// The shape the model needs.
    pub shape: Vec<usize>,
}

impl Expected {
    /// What a model expects, taken from one of its state dicts.
    pub fn from_state_dict(state_dict: &StateDict) -> Vec<Expected> {
        state_dict
            .iter()
            .map(|(name, t)| Expected {
                name: name.clone(),
                dtype: t.dtype(),
                shape: t.shape().to_vec(),
            })
            .collect()
    }
}

/// A rewrite of the names found in a file, applied in order before matching.
#[derive(Debug, Clone)]
pub enum KeyRule {
    /// Removes a prefix from the names that have it (`module.` from a model
    /// saved inside `DataParallel`); other names are unchanged.
    StripPrefix(String),
    /// Puts a prefix in front of every name.
    AddPrefix(String),
    /// Replaces every match of a regular expression; the replacement may
    /// use `$1`, `${name}` for captured groups.
    Rename {
        /// The pattern.
        pattern: Regex,
        /// The replacement text.
        replacement: String,
    },
}

impl KeyRule {
    /// A [`KeyRule::Rename`], compiling `pattern`.
    ///
    /// ```
    /// let rule = ckpt::KeyRule::rename(r"^encoder\.layer(\d+)", "body.$1").unwrap();
    /// assert_eq!(rule.apply("encoder.layer3.weight"), "body.3.weight");
    /// assert!(ckpt::KeyRule::rename("(", "x").is_err());
    /// ```
    pub fn rename(pattern: &str, replacement: &str) -> Result<KeyRule> {
        Ok(KeyRule::Rename {
            pattern: compile(pattern)?,
            replacement: replacement.to_owned(),
        })
    }

    /// The name this rule makes of `name`.
    pub fn apply(&self, name: &str) -> String {
        match self {
            KeyRule::StripPrefix(prefix) => {
                name.strip_prefix(prefix.as_str()).unwrap_or(name).into()
            }
            KeyRule::AddPrefix(prefix) => format!("{prefix}{name}"),
            KeyRule::Rename {
                pattern,
                replacement,
            } => pattern.replace_all(name, replacement.as_str()).into_owned(),
        }
    }
}

fn compile(pattern: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|e| Error::BadPattern {
        pattern: pattern.to_owned(),
        reason: e.to_string(),
    })
}

/// What to do with a tensor whose shape (or a dtype that cannot be cast)
/// differs from what the model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMismatch {
    /// Fail the whole load (PyTorch's behaviour, even with `strict=False`).
    #[default]
    Error,
    /// Leave the model's tensor as it is and list the mismatch in the report.
    Skip,
}

/// How a state dict is matched against a model.
///
/// ```
/// use ckpt::{KeyRule, LoadRules, OnMismatch};
/// // Fine-tune a new head on a pretrained body saved from DataParallel:
/// let rules = LoadRules::default()
///     .rule(KeyRule::StripPrefix("module.".into()))
///     .exclude(r"^head\.").unwrap();
/// assert!(rules.strict && rules.on_mismatch == OnMismatch::Error);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadRules {
    /// Missing and unexpected names are errors (the default), as with
    /// PyTorch's `strict=True`.
    pub strict: bool,
    /// Shape and dtype mismatches: error (default) or skip.
    pub on_mismatch: OnMismatch,
    /// Float tensors of another float dtype are cast to the model's dtype
    /// (the default, as PyTorch's `copy_` does); with `false` that is a
    /// mismatch.
    pub cast: bool,
    /// Name rewrites, applied in order to every name in the file.
    pub key_rules: Vec<KeyRule>,
    /// Only names (after rewriting) that match this are loaded or expected.
    pub include: Option<Regex>,
    /// Names (after rewriting) that match this are neither loaded nor
    /// expected.
    pub exclude: Option<Regex>,
}

impl Default for LoadRules {
    fn default() -> Self {
        LoadRules {
            strict: true,
            on_mismatch: OnMismatch::Error,
            cast: true,
            key_rules: Vec::new(),
            include: None,
            exclude: None,
        }
    }
}

impl LoadRules {
    /// Sets [`LoadRules::strict`].
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Sets [`LoadRules::on_mismatch`].
    pub fn on_mismatch(mut self, policy: OnMismatch) -> Self {
        self.on_mismatch = policy;
        self
    }

    /// Sets [`LoadRules::cast`].
    pub fn cast(mut self, cast: bool) -> Self {
        self.cast = cast;
        self
    }

    /// Appends a name rewrite.
    pub fn rule(mut self, rule: KeyRule) -> Self {
        self.key_rules.push(rule);
        self
    }

    /// Sets [`LoadRules::include`] from a regular expression.
    pub fn include(mut self, pattern: &str) -> Result<Self> {
        self.include = Some(compile(pattern)?);
        Ok(self)
    }

    /// Sets [`LoadRules::exclude`] from a regular expression.
    pub fn exclude(mut self, pattern: &str) -> Result<Self> {
        self.exclude = Some(compile(pattern)?);
        Ok(self)
    }

    fn wanted(&self, name: &str) -> bool {
        self.include.as_ref().is_none_or(|re| re.is_match(name))
            && !self.exclude.as_ref().is_some_and(|re| re.is_match(name))
    }
}

/// A tensor whose shape or dtype does not fit the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The name (after rewriting).
    pub name: String,
    /// What the model expects.
    pub expected: (DType, Vec<usize>),
    /// What the file holds.
    pub found: (DType, Vec<usize>),
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ed, es) = &self.expected;
        let (fd, fs) = &self.found;
        if es != fs {
            write!(
                f,
                "{}: the model has shape {es:?}, the file {fs:?}",
                self.name
            )
        } else {
            write!(f, "{}: the model has dtype {ed}, the file {fd}", self.name)
        }
    }
}

/// What a load did and did not do. Strict loads that fail carry one of
/// these in [`Error::StateDictMismatch`], listing every problem at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadReport {
    /// Names loaded into the model.
    pub loaded: Vec<String>,
    /// Names the model expects that the file lacks.
    pub missing: Vec<String>,
    /// Names in the file that the model does not have.
    pub unexpected: Vec<String>,
    /// Names present in both whose shape or dtype does not fit.
    pub mismatched: Vec<Mismatch>,
    /// Names left out by the include/exclude filters.
    pub filtered: Vec<String>,
    /// Names the key rules changed, as (in the file, after the rules).
    pub renamed: Vec<(String, String)>,
    /// Tensors cast to the model's dtype, as (name, from, to).
    pub cast: Vec<(String, DType, DType)>,
}

impl LoadReport {
    /// True when everything the model expects was loaded and nothing in the
    /// file was left over.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing keys: {}", self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected keys: {}", self.unexpected.join(", ")));
        }
        if !self.mismatched.is_empty() {
            let list: Vec<String> = self.mismatched.iter().map(|m| m.to_string()).collect();
            parts.push(format!("mismatched: {}", list.join("; ")));
        }
        if parts.is_empty() {
            write!(f, "{} tensors loaded", self.loaded.len())
        } else {
            write!(f, "{}", parts.join("; "))
        }
    }
}

/// The outcome of [`match_state_dict`]: tensors ready to copy into the
/// model, each with the index of the [`Expected`] entry it fills, and the
/// report.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Matched {
    /// (index into the expected list, the tensor in the expected dtype).
    pub tensors: Vec<(usize, TensorData)>,
    /// What was loaded, missing, unexpected, mismatched, filtered, renamed.
    pub report: LoadReport,
}

/// Matches `source` (a state dict from a file) against what a model
/// expects, under `rules`. Nothing is changed anywhere: a caller copies
/// [`Matched::tensors`] into its model only when this returns `Ok`, so a
/// failed strict load leaves the model as it was.
///
/// Errors: [`Error::StateDictMismatch`] listing every missing, unexpected
/// and mismatched name at once (strict mode, or any mismatch under
/// [`OnMismatch::Error`]); [`Error::DuplicateName`] when two names in the
/// file become the same name under the key rules.
///
/// ```
/// use ckpt::{match_state_dict, Expected, KeyRule, LoadRules, StateDict, TensorData};
/// let mut file = StateDict::new();
/// file.insert("module.fc.weight".into(), TensorData::from_f32(&[1, 2], &[1.0, 2.0]).unwrap());
/// let model = [Expected { name: "fc.weight".into(), dtype: ckpt::DType::F32, shape: vec![1, 2] },
///              Expected { name: "fc.bias".into(), dtype: ckpt::DType::F32, shape: vec![1] }];
///
/// let err = match_state_dict(file.clone(), &model, &LoadRules::default()).unwrap_err();
/// assert!(err.to_string().contains("missing keys: fc.bias, fc.weight"));
///
/// let rules = LoadRules::default().strict(false).rule(KeyRule::StripPrefix("module.".into()));
/// let matched = match_state_dict(file, &model, &rules).unwrap();
/// assert_eq!(matched.report.loaded, ["fc.weight"]);
/// assert_eq!(matched.report.missing, ["fc.bias"]);
/// ```
pub fn match_state_dict(
    source: StateDict,
    expected: &[Expected],
    rules: &LoadRules,
) -> Result<Matched> {
    let mut report = LoadReport::default();
    let mut found = StateDict::new();
    for (name, tensor) in source {
        let renamed = rules
            .key_rules
            .iter()
            .fold(name.clone(), |n, rule| rule.apply(&n));
        if renamed != name {
            report.renamed.push((name, renamed.clone()));
        }
        if !rules.wanted(&renamed) {
            report.filtered.push(renamed);
            continue;
        }
        found.insert_new(&renamed, &tensor)?;
    }

    let mut tensors = Vec::new();
    for (index, want) in expected.iter().enumerate() {
        if !rules.wanted(&want.name) {
            continue;
        }
        // swap_remove: O(1); what is left is sorted below.
        let Some(tensor) = found.swap_remove(&want.name) else {
            report.missing.push(want.name.clone());
            continue;
        };
        let castable = rules.cast && tensor.dtype().is_float() && want.dtype.is_float();
        if tensor.shape() != want.shape || (tensor.dtype() != want.dtype && !castable) {
            report.mismatched.push(Mismatch {
                name: want.name.clone(),
                expected: (want.dtype, want.shape.clone()),
                found: (tensor.dtype(), tensor.shape().to_vec()),
            });
            continue;
        }
        let tensor = if tensor.dtype() == want.dtype {
            tensor
        } else {
            report
                .cast
                .push((want.name.clone(), tensor.dtype(), want.dtype));
            tensor.cast(want.dtype)?
        };
        report.loaded.push(want.name.clone());
        tensors.push((index, tensor));
    }
    report.unexpected = found.keys().cloned().collect();
    report.missing.sort();
    report.unexpected.sort();

    let fatal = (rules.strict && !(report.missing.is_empty() && report.unexpected.is_empty()))
        || (rules.on_mismatch == OnMismatch::Error && !report.mismatched.is_empty());
    if fatal {
        if !rules.strict {
            // Only the mismatches are the error in a non-strict load.
            report.missing.clear();
            report.unexpected.clear();
        }
        return Err(Error::StateDictMismatch(Box::new(report)));
    }
    Ok(Matched { tensors, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize]) -> TensorData {
        let n = shape.iter().product();
        TensorData::from_f32(shape, &vec![0.5; n]).unwrap()
    }

    fn expect(name: &str, shape: &[usize]) -> Expected {
        Expected {
            name: name.into(),
            dtype: DType::F32,
            shape: shape.to_vec(),
        }
    }

    fn sd(entries: &[(&str, &[usize])]) -> StateDict {
        entries.iter().map(|(n, s)| (n.to_string(), t(s))).collect()
    }

    #[test]
    fn strict_lists_every_problem_at_once() {
        let file = sd(&[("a", &[2]), ("b", &[3]), ("extra", &[1])]);
        let model = [expect("a", &[2]), expect("b", &[4]), expect("c", &[1])];
        let err = match_state_dict(file, &model, &LoadRules::default()).unwrap_err();
        let Error::StateDictMismatch(report) = &err else {
            panic!("{err}")
        };
        assert_eq!(report.missing, ["c"]);
        assert_eq!(report.unexpected, ["extra"]);
        assert_eq!(report.mismatched.len(), 1);
        assert_eq!(
            err.to_string(),
            "state dict does not fit the model: missing keys: c; unexpected keys: extra; \
             mismatched: b: the model has shape [4], the file [3]"
        );
    }

    #[test]
    fn non_strict_loads_what_fits_and_skips_mismatches_on_request() {
        let file = sd(&[("a", &[2]), ("b", &[3]), ("extra", &[1])]);
        let model = [expect("a", &[2]), expect("b", &[4]), expect("c", &[1])];
        let rules = LoadRules::default().strict(false);
        // Shape mismatches are still errors unless skipped, as in PyTorch.
        let err = match_state_dict(file.clone(), &model, &rules).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("mismatched: b: the model has shape [4], the file [3]"),
            "{err}"
        );
        let matched = match_state_dict(file, &model, &rules.on_mismatch(OnMismatch::Skip)).unwrap();
        assert_eq!(matched.report.loaded, ["a"]);
        assert_eq!(matched.tensors.len(), 1);
        assert_eq!(matched.tensors[0].0, 0);
        assert_eq!(matched.report.missing, ["c"]);
        assert_eq!(matched.report.unexpected, ["extra"]);
        assert!(!matched.report.is_complete());
    }

    #[test]
    fn key_rules_apply_in_order_and_collisions_are_errors() {
        let file = sd(&[("module.enc.0.weight", &[1]), ("module.head.weight", &[1])]);
        let model = [expect("body.0.weight", &[1]), expect("head.weight", &[1])];
        let rules = LoadRules::default()
            .rule(KeyRule::StripPrefix("module.".into()))
            .rule(KeyRule::rename(r"^enc\.", "body.").unwrap());
        let matched = match_state_dict(file, &model, &rules).unwrap();
        assert_eq!(matched.report.loaded, ["body.0.weight", "head.weight"]);
        assert_eq!(
            matched.report.renamed[0],
            ("module.enc.0.weight".into(), "body.0.weight".into())
        );

        let clash = sd(&[("module.x", &[1]), ("x", &[1])]);
        let rules = LoadRules::default().rule(KeyRule::StripPrefix("module.".into()));
        let err = match_state_dict(clash, &[expect("x", &[1])], &rules).unwrap_err();
        assert!(err.to_string().contains("x"), "{err}");

        let added = match_state_dict(
            sd(&[("w", &[1])]),
            &[expect("net.w", &[1])],
            &LoadRules::default().rule(KeyRule::AddPrefix("net.".into())),
        )
        .unwrap();
        assert_eq!(added.report.loaded, ["net.w"]);
    }

    #[test]
    fn filters_load_a_subset_for_a_new_head() {
        let file = sd(&[("body.w", &[2]), ("head.w", &[10])]);
        let model = [expect("body.w", &[2]), expect("head.w", &[3])];
        let rules = LoadRules::default().exclude(r"^head\.").unwrap();
        let matched = match_state_dict(file.clone(), &model, &rules).unwrap();
        assert_eq!(matched.report.loaded, ["body.w"]);
        assert_eq!(matched.report.filtered, ["head.w"]);
        assert!(matched.report.is_complete());

        let only = LoadRules::default().include(r"^body\.").unwrap();
        assert_eq!(
            match_state_dict(file, &model, &only).unwrap().report.loaded,
            ["body.w"]
        );
        assert!(matches!(
            LoadRules::default().include("["),
            Err(Error::BadPattern { .. })
        ));
    }

    #[test]
    fn float_dtypes_cast_unless_refused_and_ints_never_do() {
        let file = sd(&[("w", &[2])]);
        let mut half = expect("w", &[2]);
        half.dtype = DType::BF16;
        let matched =
            match_state_dict(file.clone(), &[half.clone()], &LoadRules::default()).unwrap();
        assert_eq!(matched.tensors[0].1.dtype(), DType::BF16);
        assert_eq!(
            matched.report.cast,
            [("w".to_string(), DType::F32, DType::BF16)]
        );

        let err =
            match_state_dict(file.clone(), &[half], &LoadRules::default().cast(false)).unwrap_err();
        assert!(
            err.to_string()
                .contains("w: the model has dtype bfloat16, the file float32"),
            "{err}"
        );

        let mut int = expect("w", &[2]);
        int.dtype = DType::I64;
        assert!(match_state_dict(file, &[int], &LoadRules::default()).is_err());
    }
}
