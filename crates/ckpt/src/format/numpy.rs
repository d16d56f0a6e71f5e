//! NumPy `.npy` (one array) and `.npz` (a zip of `.npy` members).
//!
//! An `.npy` file is the magic `\x93NUMPY`, a version, a header length (u16
//! for version 1, u32 for 2 and 3), a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded to
//! 64 bytes, then the data. Reading checks every part of that before any
//! array is built; data stored uncompressed is borrowed from the map.
//! Big-endian and Fortran-order arrays are converted to ckpt's
//! little-endian row-major bytes. NumPy has no bfloat16 or float8, so those
//! tensors cannot be written here (cast them first with `--dtype`).

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;

use super::pytorch::zip::{Contents, Purpose, ZipArchive, ZipWriter};
use crate::tensor::Buffer;
use crate::{DType, Dict, Error, Format, Key, Loaded, Result, StateDict, TensorData, Value};

const MAGIC: &[u8] = b"\x93NUMPY";
/// The largest header ckpt reads.
const MAX_HEADER: usize = 1 << 20;

fn bad(path: &Path, entry: &str, problem: &'static str) -> Error {
    Error::HeaderEntry {
        path: path.to_owned(),
        entry: entry.to_owned(),
        problem,
    }
}

/// What an `.npy` header declares.
struct ArrayHeader {
    dtype: DType,
    big_endian: bool,
    fortran: bool,
    shape: Vec<usize>,
    data_start: usize,
}

/// Parses the header of the `.npy` bytes in `bytes` (`name` labels errors).
fn parse_header(bytes: &[u8], path: &Path, name: &str) -> Result<ArrayHeader> {
    if bytes.len() < 10 || !bytes.starts_with(MAGIC) {
        return Err(bad(path, name, "not a .npy array (no \\x93NUMPY magic)"));
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            let raw = bytes
                .get(8..12)
                .ok_or_else(|| bad(path, name, "the header length is cut off"))?;
            (
                u32::from_le_bytes(raw.try_into().unwrap_or_default()) as usize,
                12,
            )
        }
        _ => return Err(bad(path, name, "unknown .npy version")),
    };
    if len > MAX_HEADER {
        return Err(bad(path, name, "the header is larger than 1 MiB"));
    }
    let text = bytes
        .get(start..start + len)
        .ok_or_else(|| bad(path, name, "the header runs past the end of the data"))?;
    let text = std::str::from_utf8(text).map_err(|_| bad(path, name, "the header is not text"))?;
    // numpy's parser takes the last of a repeated key: ambiguity is an error.
    if ["descr", "fortran_order", "shape"]
        .iter()
        .any(|key| text.matches(&format!("'{key}'")).count() > 1)
    {
        return Err(bad(path, name, "the header names a key twice"));
    }
    let descr =
        dict_value(text, "descr").ok_or_else(|| bad(path, name, "the header has no 'descr'"))?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.strip_suffix('\''))
        .ok_or_else(|| bad(path, name, "'descr' is not a simple dtype string"))?;
    let big_endian = descr.starts_with('>');
    let normalised = match descr.as_bytes().first() {
        Some(b'>' | b'=') => format!("<{}", &descr[1..]),
        _ => descr.to_owned(),
    };
    let dtype = DType::from_numpy(&normalised)
        .or_else(|| DType::from_numpy(&normalised.replacen('<', "|", 1)))
        .ok_or_else(|| {
            // An object array is a pickle (numpy.load(allow_pickle=True)
            // runs it): one that names a dangerous global says so.
            let pickle = bytes
                .get(start + len..)
                .filter(|_| normalised.ends_with('O'));
            pickle
                .and_then(|p| super::pytorch::safety::refuse(p, path, &format!("{name}'s pickle")))
                .unwrap_or_else(|| Error::UnknownDType {
                    path: path.to_owned(),
                    tensor: name.to_owned(),
                    dtype: descr.to_owned(),
                })
        })?;
    let fortran = match dict_value(text, "fortran_order") {
        Some("False") => false,
        Some("True") => true,
        _ => return Err(bad(path, name, "'fortran_order' is not True or False")),
    };
    let shape_text =
        dict_value(text, "shape").ok_or_else(|| bad(path, name, "the header has no 'shape'"))?;
    let shape = shape_text
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad(path, name, "'shape' is not a tuple"))?
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            bad(
                path,
                name,
                "'shape' holds something other than non-negative integers",
            )
        })?;
    if shape.len() > super::pytorch::MAX_DIMS {
        return Err(bad(path, name, "'shape' has more than 64 dimensions"));
    }
    Ok(ArrayHeader {
        dtype,
        big_endian,
        fortran,
        shape,
        data_start: start + len,
    })
}

/// The text of a value in the header's dict literal: a quoted string, a
/// parenthesised tuple, or a bare word.
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let after = text
        .split_once(&format!("'{key}'"))?
        .1
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = match after.as_bytes().first()? {
        b'\'' => after[1..].find('\'')? + 2,
        b'(' => after.find(')')? + 1,
        _ => after.find([',', '}']).unwrap_or(after.len()),
    };
    Some(after[..end].trim())
}

/// Builds the tensor of one `.npy` held in `buffer[range]`.
fn read_array(
    buffer: &Arc<Buffer>,
    range: std::ops::Range<usize>,
    path: &Path,
    name: &str,
) -> Result<TensorData> {
    let bytes = &buffer.as_slice()[range.clone()];
    let h = parse_header(bytes, path, name)?;
    let expected = crate::byte_len(h.dtype, &h.shape).ok_or_else(|| Error::ShapeOverflow {
        path: path.to_owned(),
        tensor: name.to_owned(),
        shape: h.shape.iter().map(|&d| d as u64).collect(),
    })?;
    let actual = (bytes.len() - h.data_start.min(bytes.len())) as u64;
    if expected != actual {
        return Err(Error::ByteLengthMismatch {
            path: path.to_owned(),
            tensor: name.to_owned(),
            dtype: h.dtype,
            shape: h.shape,
            expected,
            actual,
        });
    }
    let data = range.start + h.data_start..range.end;
    if !h.big_endian && (!h.fortran || h.shape.len() < 2) {
        return TensorData::shared(h.dtype, h.shape, buffer.clone(), data);
    }
    let element = h.dtype.size();
    let src = &buffer.as_slice()[data];
    let mut out = if h.fortran {
        fortran_to_c(src, &h.shape, element)
    } else {
        src.to_vec()
    };
    if h.big_endian && element > 1 {
        out.chunks_exact_mut(element).for_each(<[u8]>::reverse);
    }
    TensorData::new(h.dtype, h.shape, out)
}

/// Reorders column-major bytes into row-major order.
fn fortran_to_c(src: &[u8], shape: &[usize], element: usize) -> Vec<u8> {
    let numel: usize = shape.iter().product();
    let mut out = vec![0u8; src.len()];
    let mut index = vec![0usize; shape.len()];
    for c in 0..numel {
        // Column-major offset of the row-major index.
        let (mut f, mut stride) = (0, 1);
        for (i, &d) in index.iter().zip(shape) {
            f += i * stride;
            stride *= d;
        }
        out[c * element..(c + 1) * element].copy_from_slice(&src[f * element..(f + 1) * element]);
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

/// Reads an `.npy` (one tensor) or `.npz` (a dict of tensors) file.
pub(crate) fn read(format: Format, buffer: Arc<Buffer>, path: &Path) -> Result<Loaded> {
    let value = if format == Format::Npy {
        let range = 0..buffer.as_slice().len();
        Value::Tensor(read_array(&buffer, range, path, "the array")?)
    } else {
        let zip = ZipArchive::parse(buffer.as_slice(), path)?;
        let mut dict = Dict::with_capacity(zip.entries.len());
        for entry in &zip.entries {
            let name = entry.name.strip_suffix(".npy").unwrap_or(&entry.name);
            let tensor = match entry.contents(buffer.as_slice(), path, Purpose::Tensor)? {
                Contents::Stored(range) => read_array(&buffer, range, path, name)?,
                Contents::Inflated(bytes) => {
                    let len = bytes.len();
                    read_array(&Arc::new(Buffer::Heap(bytes)), 0..len, path, name)?
                }
            };
            if dict
                .insert(Key::Str(name.to_owned()), Value::Tensor(tensor))
                .is_some()
            {
                return Err(Error::DuplicateName {
                    name: name.to_owned(),
                });
            }
        }
        Value::Dict(dict)
    };
    Ok(Loaded {
        format,
        value,
        metadata: IndexMap::new(),
        pickle: None,
        module: None,
    })
}

/// The `.npy` header for a tensor, padded so the data starts on 64 bytes.
fn header(t: &TensorData, path: &Path) -> Result<Vec<u8>> {
    let descr = t.dtype().numpy_name();
    if descr.contains('V') {
        return Err(Error::NumpyDType {
            path: path.to_owned(),
            dtype: t.dtype(),
        });
    }
    let shape = match t.shape() {
        [] => "()".to_owned(),
        [d] => format!("({d},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut text = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let unpadded = 10 + text.len() + 1;
    text.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    text.push('\n');
    let mut out = Vec::with_capacity(10 + text.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(out)
}

/// An `.npy` or `.npz` file ready to be written.
pub(crate) struct Plan {
    arrays: Vec<(String, Vec<u8>, TensorData)>,
    format: Format,
}

impl Plan {
    /// Plans `value`: a single tensor for `.npy`; for `.npz`, every tensor
    /// of the tree under its flattened name (non-tensor values are not
    /// stored: NumPy files hold arrays only).
    pub(crate) fn new(format: Format, value: &Value, path: &Path) -> Result<Plan> {
        let tensors = match (format, value) {
            (Format::Npy, Value::Tensor(t)) => vec![(String::new(), t.clone())],
            (Format::Npy, other) => {
                return Err(Error::NotATensor {
                    path: path.to_owned(),
                    found: other.kind(),
                })
            }
            _ => StateDict::flatten(value)?.into_iter().collect(),
        };
        let arrays = tensors
            .into_iter()
            .map(|(name, t)| {
                if format == Format::Npz {
                    check_member_name(&name, path)?;
                }
                Ok((format!("{name}.npy"), header(&t, path)?, t))
            })
            .collect::<Result<_>>()?;
        Ok(Plan { arrays, format })
    }
}

/// A tensor name becomes a zip member name (`NAME.npy`): one that whoever
/// extracts the archive would write outside its folder (`..`, an absolute
/// path, a drive or backslash path) or that holds NUL or control
/// characters is refused, naming it.
fn check_member_name(name: &str, path: &Path) -> Result<()> {
    let problem = if name.chars().any(char::is_control) {
        Some("holds control characters")
    } else if name.starts_with('/') || name.contains('\\') || name.as_bytes().get(1) == Some(&b':')
    {
        Some("is an absolute or drive path")
    } else if !name.is_empty()
        && name
            .split('/')
            .any(|part| part == ".." || part == "." || part.is_empty())
    {
        Some("has an empty, '.' or '..' path component")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Error::UnsafeName {
            path: path.to_owned(),
            name: name.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

impl crate::format::WritePlan for Plan {
    fn payload_len(&self) -> u64 {
        self.arrays
            .iter()
            .map(|(_, _, t)| t.bytes().len() as u64)
            .sum()
    }

    /// Streams the file to `out`.
    fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.format == Format::Npy {
            let (_, header, t) = &self.arrays[0];
            out.write_all(header)?;
            return out.write_all(t.bytes());
        }
        let mut zip = ZipWriter::new(out);
        for (name, header, t) in &self.arrays {
            zip.entry(name, &[header, t.bytes()])?;
        }
        zip.finish()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_found_in_any_order() {
        let text = "{'shape': (3, 4), 'fortran_order': True, 'descr': '>i2', }";
        assert_eq!(dict_value(text, "descr"), Some("'>i2'"));
        assert_eq!(dict_value(text, "fortran_order"), Some("True"));
        assert_eq!(dict_value(text, "shape"), Some("(3, 4)"));
        assert_eq!(dict_value(text, "missing"), None);
    }

    #[test]
    fn fortran_order_becomes_row_major() {
        // A 2x3 array [[0,1,2],[3,4,5]] in column-major order.
        let src = [0u8, 3, 1, 4, 2, 5];
        assert_eq!(fortran_to_c(&src, &[2, 3], 1), [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn written_headers_are_64_byte_aligned_and_parse_back() {
        let t = TensorData::from_f32(&[2, 3], &[0.0; 6]).unwrap();
        let h = header(&t, Path::new("x.npy")).unwrap();
        assert_eq!(h.len() % 64, 0);
        let parsed = parse_header(&h, Path::new("x.npy"), "x").unwrap();
        assert_eq!(parsed.shape, [2, 3]);
        assert_eq!(parsed.dtype, DType::F32);
        assert_eq!(parsed.data_start, h.len());
    }

    #[test]
    fn truncated_headers_are_errors() {
        let t = TensorData::from_f32(&[2], &[0.0; 2]).unwrap();
        let h = header(&t, Path::new("x.npy")).unwrap();
        for len in 0..h.len() {
            assert!(
                parse_header(&h[..len], Path::new("x.npy"), "x").is_err(),
                "{len}"
            );
        }
    }
}
