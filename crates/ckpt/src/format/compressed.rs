//! ckpt's compressed format (`.ckptz`): what a `.safetensors` file holds
//! (a state dict, or any checkpoint through the ckpt tree), with each
//! tensor compressed on its own by the codec that suits it. Only ckpt reads
//! it; `ckpt convert` turns it back into safetensors for other readers.
//!
//! ```text
//! bytes 0..8    b"CKPTZ\0\0\x01"  magic and layout version 1
//! bytes 8..16   u64 LE: the index's length I
//! 16..16+I      the index, zlib: {"metadata": {str: str},
//!                  "tensors": [{"name", "dtype", "shape", "codec", "length"}]}
//! then          each tensor's blob, back to back in index order
//! ```
//!
//! Every blob is a zlib stream (Adler-32 checked on read) of:
//!
//! - `zlib`: the tensor's bytes;
//! - `planes`: byte 0 of every element, then byte 1, ... (floats: the
//!   exponent bytes group together);
//! - `sparse`: a bitmap of the non-zero elements (bit `i % 8` of byte
//!   `i / 8`; an element is zero when all its bytes are, so `-0.0` is
//!   kept), then the non-zero elements as planes: pruned and quantized
//!   weights.
//!
//! The writer tries each codec on a sample of the tensor (its first 64 Ki
//! elements) and compresses the whole tensor with the smallest.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::{json, Value as Json};

use super::inflate;
use super::safetensors::{flatten, rebuild, MAX_HEADER_LEN, RESERVED_PREFIX};
use crate::tensor::Buffer;
use crate::{byte_len, DType, Error, Format, Loaded, Result, TensorData, Value};

/// The first bytes of every `.ckptz` file.
pub const MAGIC: [u8; 8] = *b"CKPTZ\0\0\x01";

/// The elements each codec is tried on.
const SAMPLE: usize = 64 << 10;

/// The zlib level (miniz: 1 fastest … 9 smallest). Measured on 256 MiB
/// of float32 weights: level 1 compresses 7× faster than 6 for files 1%
/// larger (and 1% smaller when half the weights are pruned).
const LEVEL: u8 = 1;

/// How one tensor's blob is coded (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// The bytes, zlib.
    Zlib,
    /// Byte planes, zlib.
    Planes,
    /// A bitmap of non-zero elements and their byte planes, zlib.
    Sparse,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::Zlib => "zlib",
            Codec::Planes => "planes",
            Codec::Sparse => "sparse",
        }
    }
}

/// One tensor's line in the index.
struct IndexEntry {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    codec: Codec,
    length: u64,
}

fn corrupt(path: &Path, tensor: &str, offset: u64, problem: impl Into<String>) -> Error {
    Error::BadCompressed {
        path: path.to_owned(),
        tensor: tensor.to_owned(),
        offset,
        problem: problem.into(),
    }
}

/// Element `i`'s bytes spread into planes: `out[b * n + i] = bytes[i * size + b]`.
fn to_planes(bytes: &[u8], size: usize) -> Vec<u8> {
    let n = bytes.len() / size;
    let mut out = vec![0u8; bytes.len()];
    for (i, element) in bytes.chunks_exact(size).enumerate() {
        for (b, &byte) in element.iter().enumerate() {
            out[b * n + i] = byte;
        }
    }
    out
}

/// Elements back from planes (the inverse of [`to_planes`]).
fn from_planes(planes: &[u8], size: usize, out: &mut [u8]) {
    let n = planes.len() / size;
    for (i, element) in out.chunks_exact_mut(size).enumerate().take(n) {
        for (b, byte) in element.iter_mut().enumerate() {
            *byte = planes[b * n + i];
        }
    }
}

/// The uncompressed form of `bytes` under `codec`.
fn encode(codec: Codec, bytes: &[u8], size: usize) -> Vec<u8> {
    match codec {
        Codec::Zlib => bytes.to_vec(),
        Codec::Planes => to_planes(bytes, size),
        Codec::Sparse => {
            let n = bytes.len() / size;
            let mut out = vec![0u8; n.div_ceil(8)];
            let mut values = Vec::new();
            for (i, element) in bytes.chunks_exact(size).enumerate() {
                if element.iter().any(|&b| b != 0) {
                    out[i / 8] |= 1 << (i % 8);
                    values.extend_from_slice(element);
                }
            }
            out.extend(to_planes(&values, size));
            out
        }
    }
}

fn compress(codec: Codec, bytes: &[u8], size: usize) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec_zlib(&encode(codec, bytes, size), LEVEL)
}

/// The smallest codec on a sample, and the tensor compressed with it.
fn best(t: &TensorData) -> (Codec, Vec<u8>) {
    let size = t.dtype().size();
    let bytes = t.bytes();
    let sample = &bytes[..bytes.len().min(SAMPLE * size)];
    let mut candidates = vec![Codec::Zlib, Codec::Sparse];
    if size > 1 {
        candidates.push(Codec::Planes);
    }
    let tried: Vec<(Codec, Vec<u8>)> = candidates
        .into_iter()
        .map(|c| (c, compress(c, sample, size)))
        .collect();
    let (codec, blob) = tried
        .into_iter()
        .min_by_key(|(_, blob)| blob.len())
        .expect("zlib is always a candidate");
    let (codec, blob) = if sample.len() == bytes.len() {
        (codec, blob)
    } else {
        (codec, compress(codec, bytes, size))
    };
    // A sparse blob of a nearly empty tensor can be smaller than deflate's
    // ratio allows, which readers refuse as a bomb: zlib it instead.
    if inflate::could_hold(blob.len(), bytes.len() as u64) {
        (codec, blob)
    } else {
        (Codec::Zlib, compress(Codec::Zlib, bytes, size))
    }
}

/// Decodes one tensor's blob, which starts at byte `offset` of the file.
/// A tensor never decodes to more than deflate's ratio allows of its blob
/// (the writer never chooses a codec that would), so a small file cannot
/// claim a huge tensor; its buffers are allocated fallibly.
fn decode(
    entry: &IndexEntry,
    dtype: DType,
    blob: &[u8],
    path: &Path,
    offset: u64,
) -> Result<Vec<u8>> {
    let name = entry.name.as_str();
    let raw = byte_len(dtype, &entry.shape).ok_or_else(|| Error::ShapeOverflow {
        path: path.to_owned(),
        tensor: name.to_owned(),
        shape: entry.shape.iter().map(|&d| d as u64).collect(),
    })?;
    let fail = |f: inflate::Failure| f.into_error(path, |p| corrupt(path, name, offset, p));
    if !inflate::could_hold(blob.len(), raw) {
        return Err(fail(inflate::Failure::Impossible(blob.len() as u64, raw)));
    }
    let size = dtype.size();
    match entry.codec {
        Codec::Zlib => inflate::exact(blob, true, raw).map_err(fail),
        Codec::Planes => {
            let planes = inflate::exact(blob, true, raw).map_err(fail)?;
            let mut out = inflate::zeroed(raw).map_err(fail)?;
            from_planes(&planes, size, &mut out);
            Ok(out)
        }
        Codec::Sparse => {
            let n = raw / size as u64;
            let bitmap = n.div_ceil(8);
            // The bitmap first, to learn how many values follow.
            let all = inflate::at_most(blob, true, bitmap + raw).map_err(fail)?;
            let Some((bits, values)) = all.split_at_checked(bitmap as usize) else {
                return Err(corrupt(path, name, offset, "the bitmap is cut short"));
            };
            let nonzero: u64 = bits.iter().map(|b| u64::from(b.count_ones())).sum();
            if !n.is_multiple_of(8) && bits.last().is_some_and(|b| b >> (n % 8) != 0) {
                return Err(corrupt(
                    path,
                    name,
                    offset,
                    "the bitmap marks elements past the end",
                ));
            }
            if values.len() as u64 != nonzero * size as u64 {
                return Err(corrupt(
                    path,
                    name,
                    offset,
                    format!(
                        "{nonzero} non-zero elements but {} bytes of values",
                        values.len()
                    ),
                ));
            }
            let mut dense = inflate::zeroed(values.len() as u64).map_err(fail)?;
            from_planes(values, size, &mut dense);
            let mut out = inflate::zeroed(raw).map_err(fail)?;
            let mut next = dense.chunks_exact(size);
            for i in 0..n as usize {
                if bits[i / 8] & (1 << (i % 8)) != 0 {
                    let v = next.next().expect("counted above");
                    out[i * size..(i + 1) * size].copy_from_slice(v);
                }
            }
            Ok(out)
        }
    }
}

/// Reads a whole `.ckptz` file held in `buffer`.
pub(crate) fn read(buffer: Arc<Buffer>, path: &Path) -> Result<Loaded> {
    let bytes = buffer.as_slice();
    let truncated = |offset: u64, what, needed: u64| Error::Truncated {
        path: path.to_owned(),
        offset,
        what,
        needed,
        available: (bytes.len() as u64).saturating_sub(offset),
    };
    if bytes.len() < 16 {
        return Err(truncated(0, "the magic and index length", 16));
    }
    if bytes[..8] != MAGIC {
        return Err(corrupt(
            path,
            "",
            0,
            "not a ckptz file of a version this ckpt reads",
        ));
    }
    let index_len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if index_len > (bytes.len() - 16) as u64 {
        return Err(truncated(16, "the index", index_len));
    }
    let data_start = 16 + index_len as usize;
    let json = inflate::parse_buffer(&bytes[16..data_start], true, MAX_HEADER_LEN)
        .map_err(|f| f.into_error(path, |p| corrupt(path, "", 16, format!("the index {p}"))))?;
    let index: Json = crate::json::parse(&json).map_err(|source| Error::HeaderJson {
        path: path.to_owned(),
        source,
    })?;
    let (mut metadata, entries) = parse_index(&index, path)?;
    // Every entry's dtype and place first, then the blobs decoded in
    // parallel.
    let mut jobs = Vec::with_capacity(entries.len());
    let mut offset = data_start as u64;
    for entry in &entries {
        let dtype = DType::from_safetensors(&entry.dtype).ok_or_else(|| Error::UnknownDType {
            path: path.to_owned(),
            tensor: entry.name.clone(),
            dtype: entry.dtype.clone(),
        })?;
        let end = offset.saturating_add(entry.length);
        if end > bytes.len() as u64 {
            return Err(truncated(offset, "a tensor's blob", entry.length));
        }
        jobs.push((entry, dtype, offset));
        offset = end;
    }
    if offset != bytes.len() as u64 {
        return Err(corrupt(
            path,
            "",
            offset,
            format!(
                "{} bytes after the last tensor",
                bytes.len() as u64 - offset
            ),
        ));
    }
    let decoded = crate::parallel::map(&jobs, |(entry, dtype, offset)| {
        let blob = &bytes[*offset as usize..(*offset + entry.length) as usize];
        let data = decode(entry, *dtype, blob, path, *offset)?;
        TensorData::new(*dtype, entry.shape.clone(), data)
    });
    let mut tensors = IndexMap::with_capacity(entries.len());
    for ((entry, _, _), tensor) in jobs.iter().zip(decoded) {
        if tensors.insert(entry.name.clone(), tensor?).is_some() {
            return Err(Error::DuplicateName {
                name: entry.name.clone(),
            });
        }
    }
    let value = rebuild(tensors, &mut metadata, path)?;
    Ok(Loaded {
        format: Format::Compressed,
        value,
        metadata,
        pickle: None,
        module: None,
    })
}

/// The index's metadata and entries, each field checked.
fn parse_index(index: &Json, path: &Path) -> Result<(IndexMap<String, String>, Vec<IndexEntry>)> {
    let bad = |entry: &str, problem| Error::HeaderEntry {
        path: path.to_owned(),
        entry: entry.to_owned(),
        problem,
    };
    let metadata = index
        .get("metadata")
        .and_then(Json::as_object)
        .ok_or_else(|| bad("metadata", "must be an object of strings"))?
        .iter()
        .map(|(k, v)| match v {
            Json::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(bad("metadata", "must be an object of strings")),
        })
        .collect::<Result<_>>()?;
    let list = index
        .get("tensors")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("tensors", "must be a list"))?;
    let mut entries = Vec::with_capacity(list.len());
    for item in list {
        let name = item
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| bad("tensors", "an entry has no name"))?;
        let dtype = item
            .get("dtype")
            .and_then(Json::as_str)
            .ok_or_else(|| bad(name, "dtype must be a string"))?;
        let shape = item
            .get("shape")
            .and_then(Json::as_array)
            .ok_or_else(|| bad(name, "shape must be a list"))?
            .iter()
            .map(|d| {
                d.as_u64()
                    .and_then(|d| usize::try_from(d).ok())
                    .ok_or_else(|| bad(name, "shape must hold non-negative integers"))
            })
            .collect::<Result<Vec<usize>>>()?;
        let codec = match item.get("codec").and_then(Json::as_str) {
            Some("zlib") => Codec::Zlib,
            Some("planes") => Codec::Planes,
            Some("sparse") => Codec::Sparse,
            _ => return Err(bad(name, "codec must be zlib, planes or sparse")),
        };
        let length = item
            .get("length")
            .and_then(Json::as_u64)
            .ok_or_else(|| bad(name, "length must be a non-negative integer"))?;
        entries.push(IndexEntry {
            name: name.to_owned(),
            dtype: dtype.to_owned(),
            shape,
            codec,
            length,
        });
    }
    Ok((metadata, entries))
}

/// A `.ckptz` file ready to be written: compressed in memory when
/// planned (tensors in parallel), so writing only streams bytes.
pub(crate) struct Plan {
    head: Vec<u8>,
    blobs: Vec<Vec<u8>>,
}

impl Plan {
    /// Plans the file for `value` with the user's `metadata`.
    pub(crate) fn new(value: &Value, metadata: &IndexMap<String, String>) -> Result<Plan> {
        if let Some(key) = metadata.keys().find(|k| k.starts_with(RESERVED_PREFIX)) {
            return Err(Error::ReservedMetadataKey { key: key.clone() });
        }
        let (tree, tensors) = flatten(value)?;
        let list: Vec<(&String, &TensorData)> = tensors.iter().collect();
        let results = crate::parallel::map(&list, |(_, t)| best(t));
        let mut meta = metadata.clone();
        if let Some(tree) = tree {
            meta.insert(super::safetensors::TREE_KEY.into(), tree);
        }
        let mut entries = Vec::with_capacity(list.len());
        let mut blobs = Vec::with_capacity(list.len());
        for ((name, t), (codec, blob)) in list.iter().zip(results) {
            entries.push(json!({
                "name": name,
                "dtype": t.dtype().safetensors_name(),
                "shape": t.shape(),
                "codec": codec.name(),
                "length": blob.len(),
            }));
            blobs.push(blob);
        }
        let json = json!({"metadata": meta, "tensors": entries}).to_string();
        let mut index = miniz_oxide::deflate::compress_to_vec_zlib(json.as_bytes(), LEVEL);
        // An index compressed past what readers inflate (repetitive
        // metadata) is stored instead, so every file written reads back.
        if json.len() as u64 > inflate::parse_limit(index.len()) {
            index = miniz_oxide::deflate::compress_to_vec_zlib(json.as_bytes(), 0);
        }
        let mut head = Vec::with_capacity(16 + index.len());
        head.extend_from_slice(&MAGIC);
        head.extend_from_slice(&(index.len() as u64).to_le_bytes());
        head.extend_from_slice(&index);
        Ok(Plan { head, blobs })
    }
}

impl super::WritePlan for Plan {
    fn payload_len(&self) -> u64 {
        self.blobs.iter().map(|b| b.len() as u64).sum()
    }

    fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&self.head)?;
        for blob in &self.blobs {
            out.write_all(blob)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::WritePlan;
    use crate::{Key, StateDict};

    fn file(value: &Value) -> Vec<u8> {
        let plan = Plan::new(value, &IndexMap::new()).unwrap();
        let mut bytes = Vec::new();
        plan.write_to(&mut bytes).unwrap();
        bytes
    }

    fn read_bytes(bytes: Vec<u8>) -> Result<Loaded> {
        read(Arc::new(Buffer::Heap(bytes)), Path::new("m.ckptz"))
    }

    fn tensors() -> StateDict {
        sized(5000)
    }

    /// Dense, pruned, int8, empty and 0-d tensors; `n` elements in the
    /// pruned one.
    fn sized(n: usize) -> StateDict {
        let dense: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let sparse: Vec<f32> = dense
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % 3 == 0 { v } else { 0.0 })
            .collect();
        let int8: Vec<u8> = (0..n * 3 / 5 + 1)
            .map(|i| if i % 2 == 0 { 0 } else { (i % 251) as u8 })
            .collect();
        let mut sd = StateDict::new();
        sd.insert(
            "dense".into(),
            TensorData::from_f32(&[n / 100, 100], &dense).unwrap(),
        );
        sd.insert(
            "sparse".into(),
            TensorData::from_f32(&[n], &sparse).unwrap(),
        );
        sd.insert(
            "q".into(),
            TensorData::new(DType::I8, vec![int8.len()], int8).unwrap(),
        );
        sd.insert("empty".into(), TensorData::from_f32(&[0, 3], &[]).unwrap());
        sd.insert("scalar".into(), TensorData::from_f32(&[], &[2.5]).unwrap());
        sd
    }

    #[test]
    fn what_the_writer_compresses_past_the_readers_bounds_still_reads_back() {
        // Metadata that deflates far past 64:1, and an all-zero tensor
        // whose sparse bitmap would pass deflate's 1032:1.
        let metadata: IndexMap<String, String> = [("notes".to_owned(), "=".repeat(4 << 20))].into();
        let zeros = TensorData::new(DType::F64, vec![1 << 22], vec![0u8; 8 << 22]).unwrap();
        let value = Value::Dict([(Key::from("w"), Value::Tensor(zeros.clone()))].into());
        let plan = Plan::new(&value, &metadata).unwrap();
        let mut bytes = Vec::new();
        plan.write_to(&mut bytes).unwrap();
        let loaded = read_bytes(bytes).unwrap();
        assert_eq!(loaded.metadata["notes"].len(), 4 << 20);
        assert_eq!(StateDict::flatten(&loaded.value).unwrap()["w"], zeros);
    }

    #[test]
    fn round_trips_every_codec_and_chooses_sparse_for_pruned_weights() {
        let sd = tensors();
        for t in sd.values() {
            let size = t.dtype().size();
            for codec in [Codec::Zlib, Codec::Planes, Codec::Sparse] {
                let entry = IndexEntry {
                    name: "t".into(),
                    dtype: t.dtype().safetensors_name().into(),
                    shape: t.shape().to_vec(),
                    codec,
                    length: 0,
                };
                let blob = compress(codec, t.bytes(), size);
                let back = decode(&entry, t.dtype(), &blob, Path::new("x"), 0).unwrap();
                assert_eq!(back, t.bytes(), "{codec:?}");
            }
        }
        assert_eq!(best(&sd["sparse"]).0, Codec::Sparse);
        let bytes = file(&sd.clone().into());
        assert!(
            bytes.len() < sd.total_bytes() as usize / 2,
            "{}",
            bytes.len()
        );
        assert_eq!(read_bytes(bytes).unwrap().value, Value::from(sd));
    }

    #[test]
    fn damage_anywhere_is_an_error_never_a_panic() {
        let value: Value = sized(300).into();
        let bytes = file(&value);
        for cut in 0..bytes.len() {
            assert!(read_bytes(bytes[..cut].to_vec()).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            // A flip in a zlib stream is caught by Adler-32 or the lengths,
            // unless it hits the padding bits after a stream's last block,
            // which change nothing.
            if let Ok(loaded) = read_bytes(flipped) {
                assert_eq!(loaded.value, value, "flip at {i}");
            }
        }
    }

    #[test]
    fn headers_claiming_more_than_the_blob_can_hold_are_refused() {
        let entry = IndexEntry {
            name: "huge".into(),
            dtype: "F32".into(),
            shape: vec![1 << 20, 1 << 20],
            codec: Codec::Zlib,
            length: 10,
        };
        let err = decode(&entry, DType::F32, &[0; 10], Path::new("m.ckptz"), 99).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("m.ckptz") && msg.contains("\"huge\"") && msg.contains("99"),
            "{msg}"
        );
    }
}
