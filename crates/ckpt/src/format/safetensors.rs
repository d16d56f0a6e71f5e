//! safetensors: an 8-byte little-endian header length, a JSON header, then
//! the tensors' bytes back to back.
//!
//! Reading validates every claim of the header before any tensor is built:
//! the header length against a cap and the file, each dtype, each shape's
//! size with checked arithmetic, and the data ranges, which must lie inside
//! the data section, match dtype × shape, and cover it exactly with no gap
//! or overlap. Tensors are ranges of the shared buffer (usually a memory
//! map), so nothing is copied.
//!
//! Writing keeps the caller's tensor order in the header and lays the data
//! out widest dtype first, so that every tensor starts at a multiple of its
//! element size (the header is padded to 8 bytes). A checkpoint that is not
//! a flat state dict also stores its tree (see [`crate::tree`]) under the
//! metadata key [`TREE_KEY`], so it loads back exactly.

use std::io::{self, Write};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::value::RawValue;
use serde_json::{Map, Value as Json};

use crate::json::UniqueMap;
use crate::state_dict::is_plain_state_dict;
use crate::tensor::{byte_len, Buffer};
use crate::{DType, Error, Format, Loaded, Result, StateDict, TensorData, Value};

/// The largest header ckpt reads (the same cap as the `safetensors` crate).
pub const MAX_HEADER_LEN: u64 = 100 * 1024 * 1024;

/// The metadata key under which ckpt stores a checkpoint's tree.
pub const TREE_KEY: &str = "ckpt.tree";

/// Metadata keys ckpt keeps for itself; a save refuses them from callers.
pub const RESERVED_PREFIX: &str = "ckpt.";

const METADATA_KEY: &str = "__metadata__";

/// The longest tensor entry read: a dtype, at most 64 dimensions and two
/// offsets take well under 2 KiB.
const MAX_ENTRY_LEN: usize = 64 << 10;

/// One tensor's entry in a parsed header.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The tensor name.
    pub name: String,
    /// Its dtype.
    pub dtype: DType,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its bytes' range within the whole file.
    pub range: Range<usize>,
}

/// A validated safetensors header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// The tensors, in the header's order.
    pub entries: Vec<Entry>,
    /// The `__metadata__` map, in its order.
    pub metadata: IndexMap<String, String>,
}

fn truncated(path: &Path, offset: u64, what: &'static str, needed: u64, available: u64) -> Error {
    Error::Truncated {
        path: path.to_owned(),
        offset,
        what,
        needed,
        available,
    }
}

fn entry_error(path: &Path, entry: &str, problem: &'static str) -> Error {
    Error::HeaderEntry {
        path: path.to_owned(),
        entry: entry.to_owned(),
        problem,
    }
}

/// Parses and validates the header of a whole safetensors file held in
/// `bytes`. `path` only names the file in errors.
pub fn parse_header(bytes: &[u8], path: &Path) -> Result<Header> {
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| truncated(path, 0, "the header length", 8, bytes.len() as u64))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_LEN {
        return Err(Error::HeaderTooLarge {
            path: path.to_owned(),
            size: header_len,
            limit: MAX_HEADER_LEN,
        });
    }
    let available = bytes.len() as u64 - 8;
    if header_len > available {
        return Err(truncated(path, 8, "the JSON header", header_len, available));
    }
    let data_start = 8 + header_len as usize;
    // Each entry stays raw text until it is checked on its own, so a huge
    // hostile header never becomes one huge tree of JSON values.
    let map = serde_json::from_slice::<UniqueMap<Box<RawValue>>>(&bytes[8..data_start])
        .map_err(|source| Error::HeaderJson {
            path: path.to_owned(),
            source,
        })?
        .0;

    let data_len = (bytes.len() - data_start) as u64;
    let mut metadata = IndexMap::new();
    let mut entries = Vec::with_capacity(map.len());
    for (name, raw) in &map {
        if name == METADATA_KEY {
            metadata = serde_json::from_str::<UniqueMap<String>>(raw.get())
                .map(|m| m.0)
                .map_err(|_| entry_error(path, METADATA_KEY, "must be an object of strings"))?;
        } else {
            if raw.get().len() > MAX_ENTRY_LEN {
                return Err(entry_error(path, name, "the entry is longer than 64 KiB"));
            }
            let info: Json =
                crate::json::parse_str(raw.get()).map_err(|source| Error::HeaderJson {
                    path: path.to_owned(),
                    source,
                })?;
            let (dtype, shape, (start, end)) = parse_entry(name, &info, path)?;
            let range_error = |problem| Error::BadDataRange {
                path: path.to_owned(),
                tensor: name.clone(),
                start,
                end,
                data_len,
                problem,
            };
            if start > end {
                return Err(range_error("it ends before it starts"));
            }
            if end > data_len {
                return Err(range_error("it runs past the end of the file"));
            }
            let expected = byte_len(dtype, &shape).ok_or_else(|| Error::ShapeOverflow {
                path: path.to_owned(),
                tensor: name.clone(),
                shape: shape.iter().map(|&d| d as u64).collect(),
            })?;
            if expected != end - start {
                return Err(Error::ByteLengthMismatch {
                    path: path.to_owned(),
                    tensor: name.clone(),
                    dtype,
                    shape,
                    expected,
                    actual: end - start,
                });
            }
            // Both fit in usize: they are at most the file length.
            let range = data_start + start as usize..data_start + end as usize;
            entries.push(Entry {
                name: name.clone(),
                dtype,
                shape,
                range,
            });
        }
    }
    check_coverage(&entries, data_start, data_len, path)?;
    Ok(Header { entries, metadata })
}

type ParsedEntry = (DType, Vec<usize>, (u64, u64));

fn parse_entry(name: &str, info: &Json, path: &Path) -> Result<ParsedEntry> {
    let field = |key| {
        info.get(key)
            .ok_or_else(|| entry_error(path, name, "missing dtype, shape or data_offsets"))
    };
    let dtype_name = field("dtype")?
        .as_str()
        .ok_or_else(|| entry_error(path, name, "dtype is not a string"))?;
    let dtype = DType::from_safetensors(dtype_name).ok_or_else(|| Error::UnknownDType {
        path: path.to_owned(),
        tensor: name.to_owned(),
        dtype: dtype_name.to_owned(),
    })?;
    let dims = field("shape")?
        .as_array()
        .ok_or_else(|| entry_error(path, name, "shape is not a list"))?;
    if dims.len() > super::pytorch::MAX_DIMS {
        return Err(entry_error(path, name, "shape has more than 64 dimensions"));
    }
    let shape = dims
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| {
            entry_error(
                path,
                name,
                "shape holds something other than non-negative integers",
            )
        })?;
    let offsets = match field("data_offsets")?.as_array().map(Vec::as_slice) {
        Some([start, end]) => start.as_u64().zip(end.as_u64()),
        _ => None,
    }
    .ok_or_else(|| entry_error(path, name, "data_offsets is not two non-negative integers"))?;
    Ok((dtype, shape, offsets))
}

/// The data ranges must tile the data section exactly, as the safetensors
/// specification requires: no gap, no overlap, nothing left over.
fn check_coverage(entries: &[Entry], data_start: usize, data_len: u64, path: &Path) -> Result<()> {
    let mut order: Vec<&Entry> = entries.iter().collect();
    order.sort_by_key(|e| (e.range.start, e.range.end));
    let mut expected = data_start;
    for entry in &order {
        let problem = if entry.range.start < expected {
            Some("it overlaps another tensor")
        } else if entry.range.start > expected {
            Some("it leaves a gap before it")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(Error::BadDataRange {
                path: path.to_owned(),
                tensor: entry.name.clone(),
                start: (entry.range.start - data_start) as u64,
                end: (entry.range.end - data_start) as u64,
                data_len,
                problem,
            });
        }
        expected = entry.range.end;
    }
    let covered = (expected - data_start) as u64;
    if covered != data_len {
        return Err(Error::BadDataRange {
            path: path.to_owned(),
            tensor: order
                .last()
                .map_or_else(|| "(none)".to_owned(), |e| e.name.clone()),
            start: covered,
            end: covered,
            data_len,
            problem: "the data section has bytes after the last tensor",
        });
    }
    Ok(())
}

/// Reads a whole safetensors file held in `buffer`: its tensors become
/// ranges of the buffer, and the tree in its metadata, if any, is rebuilt.
pub(crate) fn read(buffer: Arc<Buffer>, path: &Path) -> Result<Loaded> {
    let Header {
        entries,
        mut metadata,
    } = parse_header(buffer.as_slice(), path)?;
    let mut tensors = IndexMap::with_capacity(entries.len());
    for entry in entries {
        let tensor = TensorData::shared(entry.dtype, entry.shape, buffer.clone(), entry.range)?;
        tensors.insert(entry.name, tensor);
    }
    let value = rebuild(tensors, &mut metadata, path)?;
    Ok(Loaded {
        format: Format::Safetensors,
        value,
        metadata,
        pickle: None,
        module: None,
    })
}

/// The checkpoint a file's tensors and metadata stand for: the tree in
/// the metadata (taken out of it), or else a flat state dict.
pub(crate) fn rebuild(
    tensors: IndexMap<String, TensorData>,
    metadata: &mut IndexMap<String, String>,
    path: &Path,
) -> Result<Value> {
    match metadata.shift_remove(TREE_KEY) {
        Some(tree) => {
            let json: Json = crate::json::parse_str(&tree).map_err(|source| Error::HeaderJson {
                path: path.to_owned(),
                source,
            })?;
            crate::tree::decode(&json, tensors, path)
        }
        None => Ok(Value::from(tensors.into_iter().collect::<StateDict>())),
    }
}

/// The tensors of `value` by their flattened names, and its tree as JSON
/// text unless it is a plain state dict.
pub(crate) fn flatten(value: &Value) -> Result<(Option<String>, StateDict)> {
    if is_plain_state_dict(value) {
        Ok((None, StateDict::flatten(value)?))
    } else {
        let (json, tensors) = crate::tree::encode(value)?;
        Ok((Some(json.to_string()), tensors))
    }
}

/// A safetensors file ready to be written: the header bytes and the tensors
/// in data order. Everything that can fail except I/O has been checked.
pub(crate) struct Plan {
    header: Vec<u8>,
    tensors: Vec<TensorData>,
}

impl Plan {
    /// Plans the file for `value` with the user's `metadata` (string pairs).
    /// A flat dict of tensors becomes a plain safetensors file; anything
    /// else also carries its tree.
    pub(crate) fn new(value: &Value, metadata: &IndexMap<String, String>) -> Result<Plan> {
        let (tree, tensors) = flatten(value)?;
        let described: Vec<Described> = tensors
            .iter()
            .map(|(name, t)| (name.as_str(), t.dtype(), t.shape()))
            .collect();
        let (header, order) = header(tree, &described, metadata)?;
        let all: Vec<&TensorData> = tensors.values().collect();
        Ok(Plan {
            header,
            tensors: order.into_iter().map(|i| all[i].clone()).collect(),
        })
    }
}

/// A tensor as a header describes it: name, dtype, shape.
pub(crate) type Described<'a> = (&'a str, DType, &'a [usize]);

/// The header of a file holding `tensors` (in the order given, each of a
/// byte size that fits in 64 bits) and the
/// order their bytes follow it in (indices into `tensors`): widest dtype
/// first, which keeps every tensor aligned to its element size. `tree` is
/// the checkpoint's tree when it is not a flat dict of tensors.
pub(crate) fn header(
    tree: Option<String>,
    tensors: &[Described<'_>],
    metadata: &IndexMap<String, String>,
) -> Result<(Vec<u8>, Vec<usize>)> {
    if let Some(key) = metadata.keys().find(|k| k.starts_with(RESERVED_PREFIX)) {
        return Err(Error::ReservedMetadataKey { key: key.clone() });
    }
    if let Some((name, dtype, _)) = tensors.iter().find(|(_, d, _)| *d == DType::C128) {
        return Err(Error::SafetensorsDType {
            tensor: name.to_string(),
            dtype: *dtype,
        });
    }
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tensors[i].1.size()));
    let mut offsets = vec![(0u64, 0u64); tensors.len()];
    let mut offset = 0u64;
    for &i in &order {
        let (_, dtype, shape) = tensors[i];
        // Callers pass tensors whose byte sizes they checked.
        let end = offset.saturating_add(byte_len(dtype, shape).unwrap_or(u64::MAX));
        offsets[i] = (offset, end);
        offset = end;
    }

    let mut header = Map::new();
    let mut meta = Map::new();
    for (k, v) in metadata {
        meta.insert(k.clone(), Json::String(v.clone()));
    }
    if !meta.contains_key("format") {
        meta.insert("format".into(), Json::String("pt".into()));
    }
    if let Some(tree) = tree {
        meta.insert(TREE_KEY.into(), Json::String(tree));
    }
    header.insert(METADATA_KEY.into(), Json::Object(meta));
    for (&(name, dtype, shape), (start, end)) in tensors.iter().zip(offsets) {
        let mut info = Map::new();
        info.insert("dtype".into(), dtype.safetensors_name().into());
        info.insert("shape".into(), shape.into());
        info.insert("data_offsets".into(), vec![start, end].into());
        header.insert(name.to_owned(), Json::Object(info));
    }
    let mut json = Json::Object(header).to_string().into_bytes();
    // Pad with spaces so the data starts on an 8-byte boundary.
    while !(json.len() + 8).is_multiple_of(8) {
        json.push(b' ');
    }
    let mut bytes = Vec::with_capacity(8 + json.len());
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&json);
    Ok((bytes, order))
}

impl crate::format::WritePlan for Plan {
    fn payload_len(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes().len() as u64).sum()
    }

    /// Writes the file: the header, then every tensor's bytes in order.
    fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&self.header)?;
        for t in &self.tensors {
            out.write_all(t.bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::WritePlan;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    fn parse(bytes: &[u8]) -> Result<Header> {
        parse_header(bytes, Path::new("t.safetensors"))
    }

    #[test]
    fn parses_a_minimal_file() {
        let bytes = file(
            r#"{"a":{"dtype":"I16","shape":[2],"data_offsets":[0,4]}}"#,
            &[1, 0, 2, 0],
        );
        let header = parse(&bytes).unwrap();
        assert_eq!(header.entries.len(), 1);
        assert_eq!(header.entries[0].dtype, DType::I16);
        assert_eq!(&bytes[header.entries[0].range.clone()], &[1, 0, 2, 0]);
    }

    #[test]
    fn empty_input_is_truncated_not_a_panic() {
        assert!(matches!(
            parse(&[]),
            Err(Error::Truncated {
                needed: 8,
                available: 0,
                ..
            })
        ));
    }

    #[test]
    fn header_longer_than_the_file_is_truncated() {
        let mut bytes = file("{}", &[]);
        bytes[0] = 200;
        assert!(matches!(
            parse(&bytes),
            Err(Error::Truncated { needed: 200, .. })
        ));
    }

    #[test]
    fn header_claiming_terabytes_is_refused_before_reading() {
        let mut bytes = file("{}", &[]);
        bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(parse(&bytes), Err(Error::HeaderTooLarge { .. })));
    }

    #[test]
    fn tensor_claiming_terabytes_is_a_range_error() {
        let bytes = file(
            r#"{"a":{"dtype":"F32","shape":[1048576,1048576],"data_offsets":[0,4398046511104]}}"#,
            &[0; 4],
        );
        let err = parse(&bytes).unwrap_err();
        assert!(
            matches!(err, Error::BadDataRange { ref tensor, .. } if tensor == "a"),
            "{err}"
        );
    }

    #[test]
    fn huge_entries_are_refused_before_they_are_parsed() {
        let dims = vec!["1"; 100_000].join(",");
        let header = format!(r#"{{"a":{{"dtype":"F32","shape":[{dims}],"data_offsets":[0,4]}}}}"#);
        let err = parse(&file(&header, &[0; 4])).unwrap_err();
        assert!(err.to_string().contains("longer than 64 KiB"), "{err}");
        let dims = vec!["1"; 65].join(",");
        let header = format!(r#"{{"a":{{"dtype":"F32","shape":[{dims}],"data_offsets":[0,4]}}}}"#);
        let err = parse(&file(&header, &[0; 4])).unwrap_err();
        assert!(err.to_string().contains("more than 64 dimensions"), "{err}");
    }

    #[test]
    fn shape_overflow_is_an_error() {
        let bytes = file(
            r#"{"a":{"dtype":"F64","shape":[18446744073709551615,4],"data_offsets":[0,0]}}"#,
            &[],
        );
        assert!(matches!(parse(&bytes), Err(Error::ShapeOverflow { .. })));
    }

    #[test]
    fn byte_length_disagreeing_with_shape_is_an_error() {
        let bytes = file(
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            &[0; 8],
        );
        let err = parse(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ByteLengthMismatch {
                    expected: 12,
                    actual: 8,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn overlapping_ranges_are_an_error() {
        let bytes = file(
            r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#,
            &[0; 6],
        );
        let err = parse(&bytes).unwrap_err();
        assert!(
            matches!(err, Error::BadDataRange { problem, .. } if problem.contains("overlaps")),
            "{err}"
        );
    }

    #[test]
    fn gaps_and_trailing_bytes_are_errors() {
        let gap = file(
            r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#,
            &[0; 4],
        );
        assert!(
            matches!(parse(&gap), Err(Error::BadDataRange { problem, .. }) if problem.contains("gap"))
        );
        let trailing = file(
            r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
            &[0; 4],
        );
        assert!(
            matches!(parse(&trailing), Err(Error::BadDataRange { problem, .. }) if problem.contains("after"))
        );
    }

    #[test]
    fn unknown_dtype_names_the_tensor() {
        let bytes = file(
            r#"{"x":{"dtype":"C32","shape":[],"data_offsets":[0,8]}}"#,
            &[0; 8],
        );
        let err = parse(&bytes).unwrap_err();
        assert!(
            matches!(err, Error::UnknownDType { ref tensor, ref dtype, .. } if tensor == "x" && dtype == "C32")
        );
    }

    #[test]
    fn malformed_entries_are_errors() {
        assert!(matches!(
            parse(&file("[]", &[])),
            Err(Error::HeaderJson { .. })
        ));
        for header in [
            r#"{"a":1}"#,
            r#"{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}"#,
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}}"#,
            r#"{"__metadata__":{"k":1}}"#,
            r#"{"__metadata__":[]}"#,
        ] {
            let err = parse(&file(header, &[])).unwrap_err();
            assert!(matches!(err, Error::HeaderEntry { .. }), "{header}: {err}");
        }
        assert!(matches!(
            parse(&file("{not json", &[])),
            Err(Error::HeaderJson { .. })
        ));
    }

    #[test]
    fn plan_aligns_data_and_keeps_header_order() {
        let mut sd = StateDict::new();
        sd.insert(
            "byte".into(),
            TensorData::new(DType::U8, vec![3], vec![1, 2, 3]).unwrap(),
        );
        sd.insert(
            "wide".into(),
            TensorData::new(DType::F64, vec![1], vec![0; 8]).unwrap(),
        );
        let plan = Plan::new(&sd.clone().into(), &IndexMap::new()).unwrap();
        let mut bytes = Vec::new();
        plan.write_to(&mut bytes).unwrap();
        assert_eq!(bytes.len() % 8, 3);
        let header = parse(&bytes).unwrap();
        let names: Vec<_> = header.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["byte", "wide"]);
        assert_eq!(header.entries[1].range.start % 8, 0);
        assert_eq!(header.metadata["format"], "pt");
    }

    #[test]
    fn reserved_metadata_keys_are_refused() {
        let metadata = IndexMap::from([(TREE_KEY.to_owned(), "{}".to_owned())]);
        let err = Plan::new(&Value::Dict(Default::default()), &metadata)
            .err()
            .unwrap();
        assert!(matches!(err, Error::ReservedMetadataKey { .. }));
    }
}
