//! Writing `.pth` files that `torch.load(path, weights_only=True)` accepts.
//!
//! The pickle uses protocol 2 and only the opcodes and globals of the
//! reference's writer whitelist (plus `_rebuild_tensor_v3`,
//! `UntypedStorage` and the dtype global for float8, and `_codecs.encode`
//! for bytes, all on torch's `weights_only` allow-list). No memo is
//! written. Every tensor gets its own storage, `data/0`, `data/1`, … in
//! first-use order, each 64-byte aligned; storages stream from the tensors'
//! bytes, so a large file is never built in memory.

use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Key, Result, TensorData, Value};

use super::storage_class;
use super::zip::ZipWriter;

/// A `.pth` file ready to be written.
pub(crate) struct Plan {
    prefix: String,
    pickle: Vec<u8>,
    tensors: Vec<TensorData>,
}

impl Plan {
    /// Plans the file for `value`, to be saved at `path` (whose file stem
    /// names the archive's top folder, as torch does).
    pub(crate) fn new(value: &Value, path: &Path) -> Result<Plan> {
        let mut pickler = Pickler::new();
        pickler.value(value, 0)?;
        let (pickle, tensors) = pickler.finish_with_tensors();
        Ok(Plan {
            prefix: archive_prefix(path),
            pickle,
            tensors,
        })
    }
}

impl crate::format::WritePlan for Plan {
    fn payload_len(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes().len() as u64).sum()
    }

    /// Streams the archive to `out`.
    fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        let p = &self.prefix;
        let mut zip = ZipWriter::new(out);
        zip.entry(&format!("{p}/data.pkl"), &[&self.pickle])?;
        zip.entry(&format!("{p}/byteorder"), &[b"little"])?;
        for (i, t) in self.tensors.iter().enumerate() {
            zip.entry(&format!("{p}/data/{i}"), &[t.bytes()])?;
        }
        zip.entry(&format!("{p}/version"), &[b"3\n"])?;
        zip.entry(
            &format!("{p}/.data/serialization_id"),
            &[serialization_id().as_bytes()],
        )?;
        zip.finish()?;
        Ok(())
    }
}

/// torch names the top folder after the file (`model.pt` -> `model`), or
/// `archive` when that would not be plain ASCII.
pub(crate) fn archive_prefix(path: &Path) -> String {
    match path.file_stem().and_then(|s| s.to_str()) {
        Some(stem) if !stem.is_empty() && stem.is_ascii() && !stem.contains('/') => stem.to_owned(),
        _ => "archive".to_owned(),
    }
}

/// 40 decimal digits, as torch writes (used only for logging).
fn serialization_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = nanos ^ ((std::process::id() as u128) << 64);
    format!("{:040}", seed % 10u128.pow(38))
}

/// A protocol-2 pickle being written. Beside whole values, the parts
/// other writers build objects from: opcodes, integers, strings, globals.
pub(crate) struct Pickler {
    out: Vec<u8>,
    tensors: Vec<TensorData>,
}

impl Pickler {
    /// A pickle opened with `PROTO 2`.
    pub(crate) fn new() -> Pickler {
        Pickler {
            out: vec![0x80, 0x02],
            tensors: Vec::new(),
        }
    }

    /// Closes the pickle with `STOP`; its bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.out.push(b'.');
        self.out
    }

    /// Closes the pickle; its bytes and the tensors of its storages, in
    /// `data/N` order.
    pub(crate) fn finish_with_tensors(mut self) -> (Vec<u8>, Vec<TensorData>) {
        let tensors = std::mem::take(&mut self.tensors);
        (self.finish(), tensors)
    }

    /// Raw opcodes.
    pub(crate) fn op(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// `value`, its tensors as storages of the archive.
    pub(crate) fn value(&mut self, value: &Value, depth: usize) -> Result<()> {
        if depth > crate::tree::MAX_DEPTH {
            return Err(crate::Error::TreeTooDeep {
                limit: crate::tree::MAX_DEPTH,
            });
        }
        match value {
            // torch.load(weights_only=True) takes no objects: their plain
            // dicts stand in.
            Value::Object(o) => self.value(&o.to_plain(), depth)?,
            Value::None => self.out.push(b'N'),
            Value::Bool(b) => self.out.push(if *b { 0x88 } else { 0x89 }),
            Value::Int(i) => self.int(*i),
            Value::Float(f) => {
                self.out.push(b'G');
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            Value::Str(s) => self.str(s),
            Value::Bytes(b) => {
                // Protocol 2 has no bytes opcode; Python writes
                // _codecs.encode(latin-1 text, 'latin1').
                self.global("_codecs", "encode");
                self.str(&b.iter().map(|&c| c as char).collect::<String>());
                self.str("latin1");
                self.out.extend_from_slice(&[0x86, b'R']);
            }
            Value::List(items) => {
                self.out.push(b']');
                for chunk in items.chunks(1000) {
                    self.out.push(b'(');
                    for item in chunk {
                        self.value(item, depth + 1)?;
                    }
                    self.out.push(b'e');
                }
            }
            Value::Tuple(items) => {
                if items.len() > 3 {
                    self.out.push(b'(');
                }
                for item in items {
                    self.value(item, depth + 1)?;
                }
                self.out.push(match items.len() {
                    0 => b')',
                    1 => 0x85,
                    2 => 0x86,
                    3 => 0x87,
                    _ => b't',
                });
            }
            Value::Dict(dict) => {
                self.out.push(b'}');
                let pairs: Vec<_> = dict.iter().collect();
                for chunk in pairs.chunks(1000) {
                    self.out.push(b'(');
                    for (k, v) in chunk {
                        match k {
                            Key::Str(s) => self.str(s),
                            Key::Int(i) => self.int(*i),
                        }
                        self.value(v, depth + 1)?;
                    }
                    self.out.push(b'u');
                }
            }
            Value::Tensor(t) => self.tensor(t, false),
        }
        Ok(())
    }

    /// An integer in the shortest opcode.
    pub(crate) fn int(&mut self, i: i64) {
        match i {
            0..=0xFF => self.out.extend_from_slice(&[b'K', i as u8]),
            0x100..=0xFFFF => {
                self.out.push(b'M');
                self.out.extend_from_slice(&(i as u16).to_le_bytes());
            }
            _ if i32::try_from(i).is_ok() => {
                self.out.push(b'J');
                self.out.extend_from_slice(&(i as i32).to_le_bytes());
            }
            // LONG1 always with 8 bytes, which every reader of torch files
            // (TorchScript's C++ unpickler included) accepts.
            _ => {
                self.out.extend_from_slice(&[0x8a, 8]);
                self.out.extend_from_slice(&i.to_le_bytes());
            }
        }
    }

    /// A string (`BINUNICODE`).
    pub(crate) fn str(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    /// `GLOBAL module name`.
    pub(crate) fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
    }

    /// A tuple of dimensions.
    pub(crate) fn dims(&mut self, dims: &[u64]) {
        let items: Vec<Value> = dims.iter().map(|&d| Value::Int(d as i64)).collect();
        // Cannot fail: ints only, depth 1.
        let _ = self.value(&Value::Tuple(items), 0);
    }

    /// `_rebuild_tensor_v2(storage, 0, size, stride, requires_grad,
    /// OrderedDict())`, or `_rebuild_tensor_v3(..., dtype)` over an
    /// `UntypedStorage` for the dtypes without a legacy storage class
    /// (float8). Its storage is the next `data/N`.
    pub(crate) fn tensor(&mut self, t: &TensorData, requires_grad: bool) {
        let key = self.tensors.len();
        self.tensors.push(t.clone());
        let legacy = storage_class(t.dtype());
        self.global(
            "torch._utils",
            if legacy.is_some() {
                "_rebuild_tensor_v2"
            } else {
                "_rebuild_tensor_v3"
            },
        );
        self.out.extend_from_slice(b"((");
        self.str("storage");
        match legacy {
            Some(class) => self.global("torch", class),
            None => self.global("torch.storage", "UntypedStorage"),
        }
        self.str(&key.to_string());
        self.str("cpu");
        let numel = if legacy.is_some() {
            t.numel()
        } else {
            t.bytes().len()
        };
        self.int(numel as i64);
        self.out.extend_from_slice(b"tQ");
        self.int(0);
        let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
        self.dims(&shape);
        self.dims(&contiguous_strides(&shape));
        self.out.push(if requires_grad { 0x88 } else { 0x89 });
        self.global("collections", "OrderedDict");
        self.out.extend_from_slice(b")R");
        if legacy.is_none() {
            self.global("torch", t.dtype().torch_name());
        }
        self.out.extend_from_slice(b"tR");
    }
}

/// torch's strides for a contiguous tensor (sizes of 0 count as 1).
pub(crate) fn contiguous_strides(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1].max(1));
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_match_torch() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), [12, 4, 1]);
        assert_eq!(contiguous_strides(&[0, 4]), [4, 1]);
        assert_eq!(contiguous_strides(&[4, 0]), [1, 1]);
        assert!(contiguous_strides(&[]).is_empty());
    }

    #[test]
    fn prefix_follows_torch() {
        assert_eq!(archive_prefix(Path::new("/x/model.pt")), "model");
        assert_eq!(archive_prefix(Path::new("/x/mödel.pt")), "archive");
    }

    #[test]
    fn serialization_id_is_40_digits() {
        let id = serialization_id();
        assert_eq!(id.len(), 40);
        assert!(id.bytes().all(|b| b.is_ascii_digit()));
    }
}
