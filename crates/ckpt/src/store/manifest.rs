//! The store's two small JSON files: `manifest.json` (the committed steps:
//! writing it is the commit) and each step's `meta.json` (what the step
//! holds and the content hash of its checkpoint file). Both carry a
//! checksum of their own, so a flipped byte is noticed.

use indexmap::IndexMap;
use serde_json::{json, Map, Value as Json};

use crate::storage::hash::content_hash;

/// The store layout version this library writes and reads.
pub(crate) const FORMAT_VERSION: u64 = 1;

/// One committed step, as the manifest lists it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StepInfo {
    /// The training step.
    pub step: u64,
    /// The epoch.
    pub epoch: i64,
    /// The metrics recorded with the save.
    pub metrics: IndexMap<String, f64>,
    /// When it was committed, in seconds since the Unix epoch.
    pub time: f64,
    /// The checkpoint file's size (for an incremental checkpoint: its
    /// tensors' bytes, the logical size).
    pub bytes: u64,
    /// For an incremental checkpoint, the bytes this save wrote (new
    /// chunks and the index).
    pub written: Option<u64>,
    /// The checkpoint file's name inside the step's directory.
    pub file: String,
    /// The hash of the step's `meta.json`.
    pub(crate) meta_hash: String,
}

impl StepInfo {
    /// The step's directory name (`step-00000010`).
    pub fn dir(&self) -> String {
        step_dir(self.step)
    }

    /// A metric's value.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).copied()
    }
}

/// The directory name of a step.
pub(crate) fn step_dir(step: u64) -> String {
    format!("step-{step:08}")
}

/// What a step directory's `meta.json` says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Meta {
    pub info: StepInfo,
    /// The checkpoint file's content hash.
    pub file_hash: String,
    pub tensors: usize,
}

fn number(x: f64) -> Json {
    if x.is_finite() {
        json!(x)
    } else {
        // JSON has no NaN or infinity; a diverged loss must still be saved.
        json!(x.to_string())
    }
}

fn parse_number(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn metrics_json(metrics: &IndexMap<String, f64>) -> Json {
    Json::Object(
        metrics
            .iter()
            .map(|(k, v)| (k.clone(), number(*v)))
            .collect(),
    )
}

fn info_json(info: &StepInfo) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("step".into(), json!(info.step));
    m.insert("epoch".into(), json!(info.epoch));
    m.insert("metrics".into(), metrics_json(&info.metrics));
    m.insert("time".into(), number(info.time));
    m.insert("bytes".into(), json!(info.bytes));
    if let Some(w) = info.written {
        m.insert("written".into(), json!(w));
    }
    m.insert("file".into(), json!(info.file));
    m
}

fn parse_info(v: &Json, meta_hash: String) -> Result<StepInfo, String> {
    let field = |k: &str| v.get(k).ok_or_else(|| format!("no {k}"));
    let metrics = match field("metrics")? {
        Json::Object(m) => m
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    parse_number(v).ok_or_else(|| format!("metric {k} is not a number"))?,
                ))
            })
            .collect::<Result<IndexMap<_, _>, String>>()?,
        _ => return Err("metrics is not an object".into()),
    };
    let file = field("file")?
        .as_str()
        .ok_or("file is not a string")?
        .to_owned();
    if file.contains('/') || file.contains('\\') || file.starts_with('.') {
        return Err(format!("file name {file:?} leaves its directory"));
    }
    Ok(StepInfo {
        step: field("step")?.as_u64().ok_or("step is not a count")?,
        epoch: field("epoch")?.as_i64().ok_or("epoch is not an integer")?,
        metrics,
        time: parse_number(field("time")?).ok_or("time is not a number")?,
        bytes: field("bytes")?.as_u64().ok_or("bytes is not a count")?,
        written: match v.get("written") {
            None => None,
            Some(w) => Some(w.as_u64().ok_or("written is not a count")?),
        },
        file,
        meta_hash,
    })
}

/// Wraps `body` with its checksum and returns the file's text.
fn sealed(mut body: Map<String, Json>) -> Vec<u8> {
    let text = Json::Object(body.clone()).to_string();
    body.insert("checksum".into(), json!(content_hash(text.as_bytes())));
    let mut out = serde_json::to_vec_pretty(&Json::Object(body)).expect("JSON of plain values");
    out.push(b'\n');
    out
}

/// Why a manifest or a step's `meta.json` cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ManifestError {
    /// Written by a newer ckpt in a store format this one does not read:
    /// never rebuilt over, which would lose what the newer writer recorded.
    Newer {
        /// The format the file was written in.
        version: u64,
    },
    /// Damaged or malformed: what is wrong.
    Damaged(String),
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManifestError::Newer { version } => write!(
                f,
                "written in store format {version} by a newer ckpt; this one reads format {FORMAT_VERSION}"
            ),
            ManifestError::Damaged(reason) => f.write_str(reason),
        }
    }
}

impl From<String> for ManifestError {
    fn from(reason: String) -> Self {
        ManifestError::Damaged(reason)
    }
}

impl From<&str> for ManifestError {
    fn from(reason: &str) -> Self {
        ManifestError::Damaged(reason.to_owned())
    }
}

/// Parses a file written by [`sealed`], checking the version and checksum.
fn unseal(bytes: &[u8]) -> Result<Map<String, Json>, ManifestError> {
    let Json::Object(mut body) =
        crate::json::parse(bytes).map_err(|e| format!("not JSON ({e})"))?
    else {
        return Err("not a JSON object".into());
    };
    let Some(Json::String(checksum)) = body.remove("checksum") else {
        return Err("no checksum".into());
    };
    let version = body
        .get("format_version")
        .and_then(Json::as_u64)
        .ok_or("no format_version")?;
    if version > FORMAT_VERSION {
        return Err(ManifestError::Newer { version });
    }
    let text = Json::Object(body.clone()).to_string();
    if content_hash(text.as_bytes()) != checksum {
        return Err("checksum mismatch (the file was changed or damaged)".into());
    }
    Ok(body)
}

impl Meta {
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut m = Map::new();
        m.insert("format_version".into(), json!(FORMAT_VERSION));
        m.extend(info_json(&self.info));
        m.insert("file_hash".into(), json!(self.file_hash));
        m.insert("tensors".into(), json!(self.tensors));
        m.insert(
            "library".into(),
            json!(concat!("ckpt ", env!("CARGO_PKG_VERSION"))),
        );
        sealed(m)
    }

    pub(crate) fn parse(bytes: &[u8]) -> Result<Meta, ManifestError> {
        let body = unseal(bytes)?;
        let v = Json::Object(body);
        Ok(Meta {
            info: parse_info(&v, content_hash(bytes))?,
            file_hash: v
                .get("file_hash")
                .and_then(Json::as_str)
                .ok_or("no file_hash")?
                .to_owned(),
            tensors: v.get("tensors").and_then(Json::as_u64).unwrap_or(0) as usize,
        })
    }
}

/// One line of `history.jsonl` for a commit.
pub(crate) fn history_line(info: &StepInfo) -> Vec<u8> {
    let mut line = Json::Object(info_json(info)).to_string().into_bytes();
    line.push(b'\n');
    line
}

/// The entries of `history.jsonl`, one per step (the last line for it
/// wins), sorted by step; lines that do not parse (a torn last line) are
/// skipped.
pub(crate) fn parse_history(bytes: &[u8]) -> Vec<StepInfo> {
    let mut by_step = std::collections::BTreeMap::new();
    for line in bytes.split(|&b| b == b'\n') {
        let Ok(v) = crate::json::parse(line) else {
            continue;
        };
        if let Ok(info) = parse_info(&v, String::new()) {
            by_step.insert(info.step, info);
        }
    }
    by_step.into_values().collect()
}

/// The committed steps, oldest first, and the retention rules of the
/// writer that last committed (so `ckpt ls` can say what keeps a step).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Manifest {
    pub steps: Vec<StepInfo>,
    pub retention: Option<super::Retention>,
}

impl Manifest {
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut m = Map::new();
        m.insert("format_version".into(), json!(FORMAT_VERSION));
        let steps = self
            .steps
            .iter()
            .map(|s| {
                let mut e = info_json(s);
                e.insert("meta_hash".into(), json!(s.meta_hash));
                Json::Object(e)
            })
            .collect();
        m.insert("steps".into(), Json::Array(steps));
        if let Some(r) = &self.retention {
            m.insert("retention".into(), r.to_json());
        }
        sealed(m)
    }

    pub(crate) fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let body = unseal(bytes)?;
        let Some(Json::Array(entries)) = body.get("steps") else {
            return Err("no steps list".into());
        };
        let mut steps = entries
            .iter()
            .map(|e| {
                let hash = e
                    .get("meta_hash")
                    .and_then(Json::as_str)
                    .ok_or("no meta_hash")?;
                parse_info(e, hash.to_owned())
            })
            .collect::<Result<Vec<_>, String>>()?;
        steps.sort_by_key(|s| s.step);
        if steps.windows(2).any(|w| w[0].step == w[1].step) {
            return Err("a step is listed twice".into());
        }
        let retention = body.get("retention").and_then(super::Retention::from_json);
        Ok(Manifest { steps, retention })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(step: u64) -> StepInfo {
        StepInfo {
            step,
            epoch: 1,
            metrics: [("loss".to_string(), 0.5), ("bad".to_string(), f64::NAN)]
                .into_iter()
                .collect(),
            time: 1.7e9,
            bytes: 100,
            written: None,
            file: "checkpoint.safetensors".into(),
            meta_hash: "00ff".into(),
        }
    }

    #[test]
    fn manifests_round_trip_and_any_flipped_byte_is_noticed() {
        let m = Manifest {
            steps: vec![info(10), info(20)],
            retention: Some(Default::default()),
        };
        let bytes = m.to_bytes();
        let back = Manifest::parse(&bytes).unwrap();
        assert_eq!(back.retention, m.retention);
        assert_eq!(back.steps[0].step, 10);
        assert!(back.steps[1].metric("bad").unwrap().is_nan());
        assert_eq!(back.steps[0].metric("loss"), Some(0.5));
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            if let Ok(parsed) = Manifest::parse(&bad) {
                // Only a flip JSON ignores (whitespace to whitespace) may parse.
                assert_eq!(parsed.steps.len(), 2, "flip at {at}");
                assert_eq!(parsed.steps[0].step, 10);
            }
        }
    }

    #[test]
    fn newer_formats_and_escaping_file_names_are_refused() {
        let mut m = Map::new();
        m.insert("format_version".into(), json!(99));
        m.insert("steps".into(), json!([]));
        let err = Manifest::parse(&sealed(m)).unwrap_err();
        assert_eq!(err, ManifestError::Newer { version: 99 });
        assert!(err.to_string().contains("newer ckpt"), "{err}");

        let mut bad = info(1);
        bad.file = "../../etc/passwd".into();
        let meta = Meta {
            info: bad,
            file_hash: "0".into(),
            tensors: 0,
        };
        assert!(Meta::parse(&meta.to_bytes())
            .unwrap_err()
            .to_string()
            .contains("leaves its directory"));
    }
}
