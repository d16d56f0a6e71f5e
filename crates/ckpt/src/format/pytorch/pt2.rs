//! `torch.export.save` archives (`.pt2`): a zip whose `archive_format`
//! entry says `pt2`, with each exported program's weights and constants
//! described by `data/weights/<model>_weights_config.json` and
//! `data/constants/<model>_constants_config.json`.
//!
//! A config maps each fully qualified name to a payload: raw bytes of a
//! flat storage (`data/weights/weight_3`) viewed through the tensor meta's
//! dtype code, sizes, strides and storage offset (several names may view
//! one storage), or, for tensor subclasses (`use_pickle`), a whole
//! `torch.save` file read through the restricted pickle reader. The names
//! are those `torch.export.load(p).state_dict` (then `.constants`) gives.
//! Archives written before the configs keep their weights as one
//! `torch.save` file, `data/weights/<model>.pt`, read as such.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value as Json;

use super::pickle::{StorageRef, TensorRef};
use super::zip::{Contents, Purpose, ZipArchive};
use super::{entry_bytes, materialise, safety, PickleReport, Shared, EXPANSION_ALLOWANCE};
use crate::tensor::Buffer;
use crate::{DType, Dict, Error, Format, Key, Loaded, Result, Value};

/// torch's serialized `ScalarType` codes (`torch._export.serde.schema`).
const SCALAR_TYPES: [(i64, DType); 20] = [
    (1, DType::U8),
    (2, DType::I8),
    (3, DType::I16),
    (4, DType::I32),
    (5, DType::I64),
    (6, DType::F16),
    (7, DType::F32),
    (8, DType::F64),
    (10, DType::C64),
    (11, DType::C128),
    (12, DType::Bool),
    (13, DType::BF16),
    (28, DType::U16),
    (29, DType::F8E4M3),
    (30, DType::F8E5M2),
    (31, DType::F8E4M3Fnuz),
    (32, DType::F8E5M2Fnuz),
    (33, DType::F8E8M0),
    (34, DType::U32),
    (35, DType::U64),
];

/// Configs larger than this are refused before they are read.
const MAX_CONFIG: u64 = 64 << 20;

/// True when a zip archive is a `.pt2` archive: its top folder's
/// `archive_format` entry says `pt2`.
pub(crate) fn is_pt2(zip: &ZipArchive, bytes: &[u8], path: &Path) -> bool {
    zip.entries.iter().any(|e| {
        let named = e
            .name
            .split_once('/')
            .is_some_and(|(_, rest)| rest == "archive_format");
        named
            && e.size <= 16
            && match e.contents(bytes, path, Purpose::Parse) {
                Ok(Contents::Stored(range)) => bytes.get(range) == Some(b"pt2".as_slice()),
                Ok(Contents::Inflated(data)) => data == b"pt2",
                Err(_) => false,
            }
    })
}

fn bad(path: &Path, entry: &str, problem: impl Into<String>) -> Error {
    Error::BadArchive {
        path: path.to_owned(),
        entry: entry.to_owned(),
        problem: problem.into(),
    }
}

/// Reads every exported program's weights and constants.
pub(crate) fn read(buffer: Arc<Buffer>, path: &Path) -> Result<Loaded> {
    let zip = ZipArchive::parse(buffer.as_slice(), path)?;
    let prefix = zip.prefix(path)?.to_owned();
    let mut archive = Archive {
        zip: &zip,
        buffer: &buffer,
        path,
        allowance: (buffer.as_slice().len() as u64)
            .saturating_mul(2)
            .saturating_add(EXPANSION_ALLOWANCE),
        report: PickleReport::default(),
        pickled_any: false,
        skipped: Vec::new(),
        entries: HashMap::new(),
        pickles: HashMap::new(),
        raw: HashSet::new(),
    };
    let weights_dir = format!("{prefix}/data/weights/");
    let constants_dir = format!("{prefix}/data/constants/");
    let mut models: IndexMap<String, Dict> = IndexMap::new();
    for entry in &zip.entries {
        let Some(rest) = entry.name.strip_prefix(&weights_dir) else {
            continue;
        };
        if let Some(model) = rest.strip_suffix("_weights_config.json") {
            let mut dict = Dict::new();
            archive.payloads(&entry.name, &weights_dir, false, &mut dict)?;
            let constants = format!("{constants_dir}{model}_constants_config.json");
            if zip.get(&constants).is_some() {
                archive.payloads(&constants, &constants_dir, true, &mut dict)?;
            }
            if models.insert(model.to_owned(), dict).is_some() {
                return Err(bad(
                    path,
                    &entry.name,
                    "a second set of weights for one model",
                ));
            }
        } else if let Some(model) = rest.strip_suffix(".pt").filter(|m| !m.contains('/')) {
            // The layout before configs: the weights as one torch.save file.
            let loaded = archive.pickled(&entry.name)?;
            let Value::Dict(dict) = loaded else {
                return Err(bad(path, &entry.name, "the weights file is not a dict"));
            };
            if models.insert(model.to_owned(), dict).is_some() {
                return Err(bad(
                    path,
                    &entry.name,
                    "a second set of weights for one model",
                ));
            }
        }
    }
    archive.scan_others()?;
    if models.is_empty() {
        return Err(bad(
            path,
            &weights_dir,
            "a .pt2 archive without weights (no *_weights_config.json)",
        ));
    }
    let mut metadata = IndexMap::new();
    let names: Vec<&str> = models.keys().map(String::as_str).collect();
    metadata.insert("pt2.models".to_owned(), names.join(", "));
    if !archive.skipped.is_empty() {
        metadata.insert(
            "pt2.skipped_constants".to_owned(),
            archive.skipped.join(", "),
        );
    }
    // A verdict only when a payload was a pickle (torch.export.load
    // unpickles those with weights_only=False).
    let report = archive.pickled_any.then_some(archive.report);
    let value = if models.len() == 1 {
        Value::Dict(models.into_values().next().unwrap_or_default())
    } else {
        Value::Dict(
            models
                .into_iter()
                .map(|(m, d)| (Key::Str(m), Value::Dict(d)))
                .collect(),
        )
    };
    Ok(Loaded {
        format: Format::ExportedProgram,
        value,
        metadata,
        pickle: report,
        module: None,
    })
}

/// The archive being read, and what reading it has used and found.
struct Archive<'a> {
    zip: &'a ZipArchive,
    buffer: &'a Arc<Buffer>,
    path: &'a Path,
    /// Bytes that materialising strided views may still allocate.
    allowance: u64,
    report: PickleReport,
    /// Whether any payload was a pickle.
    pickled_any: bool,
    /// Constants that are not tensors (script objects), by name.
    skipped: Vec<String>,
    /// Entries read so far (each is inflated once, however many names
    /// view it).
    entries: HashMap<String, Shared>,
    /// Pickled payloads read so far.
    pickles: HashMap<String, Value>,
    /// Entries read as raw tensor bytes (not pickles).
    raw: HashSet<String>,
}

impl Archive<'_> {
    /// Reads the payloads a config lists into `dict`.
    fn payloads(
        &mut self,
        config: &str,
        dir: &str,
        constants: bool,
        dict: &mut Dict,
    ) -> Result<()> {
        let entry = self
            .zip
            .get(config)
            .ok_or_else(|| bad(self.path, config, "missing"))?;
        if entry.size > MAX_CONFIG {
            return Err(bad(self.path, config, "the config is larger than 64 MiB"));
        }
        let bytes = entry_bytes(self.buffer, entry, self.path, Purpose::Parse)?;
        let json: Json = crate::json::parse(bytes.as_slice())
            .map_err(|e| bad(self.path, config, format!("not JSON: {e}")))?;
        let Some(Json::Object(items)) = json.get("config") else {
            return Err(bad(self.path, config, "no \"config\" object"));
        };
        for (fqn, meta) in items {
            let field = |problem: &str| bad(self.path, config, format!("{fqn}: {problem}"));
            let name = meta
                .get("path_name")
                .and_then(Json::as_str)
                .filter(|n| !n.is_empty() && !n.contains('/') && !n.contains(".."))
                .ok_or_else(|| field("no plain path_name"))?;
            if constants && !name.starts_with("tensor_") {
                self.skipped.push(fqn.clone());
                continue;
            }
            let value = if meta.get("use_pickle") == Some(&Json::Bool(true)) {
                self.pickled(&format!("{dir}{name}"))?
            } else {
                let tensor_meta = meta
                    .get("tensor_meta")
                    .ok_or_else(|| field("no tensor_meta"))?;
                self.raw(&format!("{dir}{name}"), tensor_meta)
                    .map_err(|problem| field(&problem))??
            };
            if dict.insert(Key::Str(fqn.clone()), value).is_some() {
                return Err(field("named twice (as a weight and as a constant)"));
            }
        }
        Ok(())
    }

    /// A tensor viewing a raw storage entry. The outer error is a problem
    /// with the tensor meta, the inner one with the bytes.
    fn raw(&mut self, entry: &str, meta: &Json) -> std::result::Result<Result<Value>, String> {
        let code = meta
            .get("dtype")
            .and_then(Json::as_i64)
            .ok_or("no dtype code")?;
        let dtype = SCALAR_TYPES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, d)| *d)
            .ok_or_else(|| format!("dtype code {code} is not one ckpt reads"))?;
        let ints = |key: &str| -> std::result::Result<Vec<u64>, String> {
            let items = meta
                .get(key)
                .and_then(Json::as_array)
                .ok_or(format!("no {key}"))?;
            if items.len() > super::MAX_DIMS {
                return Err(format!("{key} has more than 64 dimensions"));
            }
            items
                .iter()
                .map(|i| as_int(i).ok_or(format!("{key} are not sizes")))
                .collect()
        };
        let (shape, stride) = (ints("sizes")?, ints("strides")?);
        if shape.len() != stride.len() {
            return Err("sizes and strides differ in length".into());
        }
        let offset = meta
            .get("storage_offset")
            .and_then(as_int)
            .ok_or("no storage_offset")?;
        Ok((|| {
            let storage = self.entry(entry)?;
            self.raw.insert(entry.to_owned());
            let len = storage.as_slice().len() as u64;
            if !len.is_multiple_of(dtype.size() as u64) {
                return Err(bad(
                    self.path,
                    entry,
                    format!("{len} bytes are not whole {dtype} elements"),
                ));
            }
            let view = TensorRef {
                storage: StorageRef {
                    key: entry.to_owned(),
                    dtype: Some(dtype),
                    numel: len / dtype.size() as u64,
                },
                dtype,
                offset,
                shape,
                stride,
            };
            let t = materialise(&view, &storage, false, &mut self.allowance, self.path)?;
            Ok(Value::Tensor(t))
        })())
    }

    /// Refuses the archive when an entry it did not read as tensor bytes
    /// (sample inputs, script objects: files `torch.export.load` unpickles
    /// with `weights_only=False`) names a dangerous global, directly or in
    /// a `torch.save` file inside it.
    fn scan_others(&self) -> Result<()> {
        for entry in &self.zip.entries {
            if self.raw.contains(&entry.name) || entry.name.ends_with(".json") {
                continue;
            }
            let bytes = entry_bytes(self.buffer, entry, self.path, Purpose::Parse)?;
            let bytes = bytes.as_slice();
            if bytes.starts_with(b"PK\x03\x04") {
                // A nested torch.save file; one torch could not open is harmless.
                let inner = Arc::new(Buffer::Heap(bytes.to_vec()));
                if let Ok(zip) = ZipArchive::parse(inner.as_slice(), self.path) {
                    safety::refuse_other_pickles(&zip, &inner, self.path, "")?;
                }
            } else if let Some(err) = safety::refuse(bytes, self.path, &entry.name) {
                return Err(err);
            }
        }
        Ok(())
    }

    /// An entry's bytes, read once.
    fn entry(&mut self, entry: &str) -> Result<Shared> {
        if let Some(done) = self.entries.get(entry) {
            return Ok(done.clone());
        }
        let zip_entry = self
            .zip
            .get(entry)
            .ok_or_else(|| bad(self.path, entry, "missing from the archive"))?;
        let bytes = entry_bytes(self.buffer, zip_entry, self.path, Purpose::Tensor)?;
        self.entries.insert(entry.to_owned(), bytes.clone());
        Ok(bytes)
    }

    /// A payload that is a whole `torch.save` file, read once; what it
    /// materialises is charged to the archive's allowance.
    fn pickled(&mut self, entry: &str) -> Result<Value> {
        if let Some(done) = self.pickles.get(entry) {
            return Ok(done.clone());
        }
        let bytes = self.entry(entry)?;
        let inner = Arc::new(Buffer::Heap(bytes.as_slice().to_vec()));
        let loaded = super::read(inner, self.path)?;
        let size = crate::StateDict::flatten(&loaded.value)?.total_bytes();
        self.allowance = self.allowance.checked_sub(size).ok_or_else(|| {
            bad(
                self.path,
                entry,
                "its pickled payloads hold far more than the archive",
            )
        })?;
        self.pickled_any = true;
        if let Some(report) = loaded.pickle {
            self.report.merge(report);
        }
        self.pickles.insert(entry.to_owned(), loaded.value.clone());
        Ok(loaded.value)
    }
}

/// `{"as_int": n}` (how the schema writes symbolic-or-concrete ints) or a
/// plain non-negative integer.
fn as_int(v: &Json) -> Option<u64> {
    v.get("as_int").unwrap_or(v).as_u64()
}
