//! A restricted pickle reader: a stack machine that builds plain data and
//! never runs anything.
//!
//! It knows the opcodes of protocols 2–5 (text-only protocol 0/1 opcodes are
//! refused by name). Every global the stream names is checked against the
//! deny-list of dangerous callables ([`super::safety`]) when it is named,
//! reached or not, and refused by name. The globals `torch.save` and
//! training scripts use for data — tensors, storages, `collections`
//! containers, NumPy arrays and scalars, paths, dates — build plain data
//! ([`reduce`]); instances and calls of any other class (`NEWOBJ`,
//! `REDUCE`, `copyreg._reconstructor`, then `BUILD`) become inert objects
//! that are never constructed ([`crate::PyObject`]).
//!
//! Objects live in an arena so that containers shared through the memo see
//! later mutations, as in Python. Converting to a [`crate::Value`] copies shared
//! objects, under a node budget and a depth limit so that neither a cycle
//! nor a "billion laughs" of shared references can exhaust memory. Lengths
//! in the stream are checked against the bytes that remain before anything
//! is allocated.

mod convert;
mod globals;
mod machine;
mod ops;
mod reduce;

use std::collections::BTreeSet;
use std::path::Path;

use super::safety;
use crate::{DType, Error, Result};
pub(crate) use convert::Converter;
use machine::Machine;

/// Index of an object in the arena.
pub(crate) type Id = usize;

/// What a persistent id names: a storage in the archive.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StorageRef {
    /// The storage's key (`data/<key>`).
    pub key: String,
    /// The element type, or `None` for an `UntypedStorage` (bytes).
    pub dtype: Option<DType>,
    /// Its length in elements (bytes when untyped).
    pub numel: u64,
}

/// A tensor as the pickle describes it: a view of a storage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorRef {
    /// The storage object.
    pub storage: StorageRef,
    /// The tensor's dtype.
    pub dtype: DType,
    /// Offset in elements.
    pub offset: u64,
    /// Shape.
    pub shape: Vec<u64>,
    /// Strides in elements.
    pub stride: Vec<u64>,
}

/// An object built by the machine.
#[derive(Debug, Clone)]
pub(crate) enum Obj {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Id>),
    Tuple(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    /// A global's module and name (boxed, as the larger variants are, to
    /// keep every object small: the budget charges each one).
    Global(Box<(String, String)>),
    Dtype(DType),
    Storage(Box<StorageRef>),
    Tensor(Box<TensorRef>),
    /// `torch._utils._rebuild_qtensor(...)`: a quantized tensor, its
    /// integer values and how they map to floats.
    QTensor(Box<TensorRef>, Box<QScheme>),
    /// `numpy.dtype(code)`, with the byte order its `BUILD` state gives.
    NpDtype {
        code: String,
        big_endian: bool,
    },
    /// `numpy.core.multiarray._reconstruct(...)`: an array whose `BUILD`
    /// state holds its shape, dtype, order and bytes.
    NdArray {
        state: Option<Id>,
    },
    /// An instance of any other class (or a call of any other function),
    /// never constructed: the class, the call's arguments, the state.
    Object {
        class: Box<(String, String)>,
        args: Option<Id>,
        state: Option<Id>,
    },
}

/// How a quantized tensor's integers map to floats (torch's qschemes).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum QScheme {
    /// `per_tensor_affine`: `(q - zero_point) * scale`.
    PerTensor {
        /// The scale (a Python float; torch computes with it as float32).
        scale: f64,
        /// The zero point.
        zero_point: i64,
    },
    /// `per_channel_affine` (float64 scales, int64 zero points) or
    /// `per_channel_affine_float_qparams` (float32 scales and zero points):
    /// one scale and zero point per slice along `axis`.
    PerChannel {
        /// The scales tensor.
        scales: Id,
        /// The zero points tensor.
        zero_points: Id,
        /// The dimension the channels run along.
        axis: usize,
    },
}

/// The result of running a pickle stream.
pub(crate) struct Unpickled {
    /// Every object built.
    pub arena: Vec<Obj>,
    /// The object `STOP` returned.
    pub root: Id,
    /// The offset just past `STOP`, where a following pickle would start.
    pub end: usize,
    /// Bytes that copying shared objects may still cost (see [`Budget`]).
    pub budget: Budget,
    /// Every global the stream names, `module.name` as written.
    pub globals: BTreeSet<String>,
}

/// How many bytes copies of memoised objects may cost in all: a stream can
/// name one long string a million times in a few bytes each, and every
/// copy — while running the stream or converting its result — is charged
/// here, so a small file cannot grow into a huge allocation.
pub(crate) struct Budget(std::cell::Cell<usize>);

impl Budget {
    fn for_stream(len: usize) -> Budget {
        Budget(std::cell::Cell::new(
            len.saturating_mul(16).saturating_add(1 << 20),
        ))
    }

    /// Takes `n` bytes from the budget, or says the data copies too much.
    pub(crate) fn charge(&self, n: usize, path: &Path, entry: &str) -> Result<()> {
        match self.0.get().checked_sub(n) {
            Some(left) => {
                self.0.set(left);
                Ok(())
            }
            None => Err(Error::Pickle {
                path: path.to_owned(),
                entry: entry.to_owned(),
                offset: 0,
                problem: "the data copies shared values into far more bytes than the stream holds",
            }),
        }
    }
}

/// The most `_rebuild_from_type_v2` wrappers unwrapped around one call.
const MAX_WRAPPERS: usize = 8;

/// The most dimensions a tensor may have (NumPy's limit; torch's is 25).
pub(crate) const MAX_DIMS: usize = 64;

/// How many `Value` nodes one pickle may expand to, shared objects counted
/// each time they are reached: twice the objects the stream built, plus
/// this much slack for legitimately shared values.
const NODE_SLACK: usize = 100_000;
/// The deepest nesting converted (a cycle hits this).
const MAX_DEPTH: usize = 256;

/// Runs the pickle stream in `bytes` (the zip entry `entry` of `path`),
/// which takes `stored` bytes of the file (fewer than `bytes` when it was
/// deflated): what it may build is a multiple of those.
pub(crate) fn unpickle(bytes: &[u8], stored: usize, path: &Path, entry: &str) -> Result<Unpickled> {
    let mut m = Machine::new(bytes, stored, path, entry);
    let root = match m.run() {
        Ok(root) => root,
        Err(e @ Error::DangerousGlobal { .. }) => return Err(e),
        // Stopped early (a text opcode, a broken stream): a dangerous
        // global named anywhere in it is still what to report.
        Err(e) => return Err(safety::refuse(bytes, path, entry).unwrap_or(e)),
    };
    Ok(Unpickled {
        arena: m.arena,
        root,
        end: m.pos,
        budget: m.budget,
        globals: m.globals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{Dict, Key, Value};

    fn run(bytes: &[u8]) -> Result<Value> {
        let u = unpickle(bytes, bytes.len(), Path::new("t.pth"), "data.pkl")?;
        Converter::new(&u, Path::new("t.pth"), "data.pkl", |_| unreachable!()).root()
    }

    #[test]
    fn a_stream_compressed_past_real_pickles_cannot_build_more_than_its_file_size_allows() {
        let mut bytes = b"\x80\x02(".to_vec();
        bytes.extend(std::iter::repeat_n(b'N', 1 << 20));
        bytes.extend(b"l.");
        // Stored, a million Nones are a list.
        assert!(unpickle(&bytes, bytes.len(), Path::new("t.pth"), "data.pkl").is_ok());
        // The same stream deflated into 4 KB: refused before it builds
        // more than 64 bytes per eighth of its length.
        let err = match unpickle(&bytes, 4096, Path::new("t.pth"), "data.pkl") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        assert!(err.contains("builds far more objects"), "{err}");
    }

    #[test]
    fn plain_data_round_trips_through_the_machine() {
        // {'a': [1, 2.5, None, True], 3: ('x',)} as protocol 2 writes it.
        let bytes = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00N\x88eK\x03X\x01\x00\x00\x00x\x85u.";
        let v = run(bytes).unwrap();
        let Value::Dict(d) = v else { panic!() };
        assert_eq!(
            d[&Key::from("a")],
            Value::List(vec![
                Value::Int(1),
                Value::Float(2.5),
                Value::None,
                Value::Bool(true)
            ])
        );
        assert_eq!(d[&Key::Int(3)], Value::Tuple(vec![Value::Str("x".into())]));
    }

    #[test]
    fn calling_os_system_is_refused_by_name() {
        let bytes = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsq\x00\x85R.";
        let err = run(bytes).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("dangerous: data.pkl names os.system at byte 2"),
            "{msg}"
        );
        assert!(msg.contains("never runs code"), "{msg}");
    }

    #[test]
    fn a_dangerous_global_is_refused_even_when_never_called() {
        // ('ok', posix.system) -- the global is only named, as a value.
        let bytes = b"\x80\x02X\x02\x00\x00\x00okcposix\nsystem\n\x86.";
        assert!(matches!(
            run(bytes),
            Err(Error::DangerousGlobal { global, offset: 9, .. }) if global == "posix.system"
        ));
    }

    #[test]
    fn other_classes_become_inert_objects() {
        // argparse.Namespace() with BUILD {'lr': 0.5}, as protocol 2 writes it.
        let bytes = b"\x80\x02cargparse\nNamespace\n)\x81}X\x02\x00\x00\x00lrG?\xe0\x00\x00\x00\x00\x00\x00sb.";
        let Value::Object(o) = run(bytes).unwrap() else {
            panic!("not an object")
        };
        assert_eq!(o.class, "argparse.Namespace");
        assert!(o.args.is_empty());
        assert_eq!(o.state.get("lr"), Some(&Value::Float(0.5)));
    }

    #[test]
    fn ordered_dicts_from_pairs_read_as_old_torch_wrote_them() {
        // Python's own pickle of OrderedDict([['a', 1], ['b', 2]]) reduced
        // as Python 2 did, with BUILD {'_metadata': {'': {'version': 1}}}.
        let bytes = b"\x80\x02ccollections\nOrderedDict\nq\x00]q\x01(]q\x02(X\x01\x00\x00\x00aq\x03K\x01e]q\x04(X\x01\x00\x00\x00bq\x05K\x02ee\x85q\x06Rq\x07}q\x08X\t\x00\x00\x00_metadataq\t}q\nX\x00\x00\x00\x00q\x0b}q\x0cX\x07\x00\x00\x00versionq\rK\x01sssb.";
        let mut want = Dict::new();
        want.insert("a".into(), Value::Int(1));
        want.insert("b".into(), Value::Int(2));
        assert_eq!(run(bytes).unwrap(), Value::Dict(want));
    }

    #[test]
    fn stack_global_calls_are_refused_too() {
        let bytes = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x011\x85R.";
        assert!(
            matches!(run(bytes), Err(Error::DangerousGlobal { global, .. }) if global == "builtins.eval")
        );
    }

    #[test]
    fn text_opcodes_are_refused_by_name() {
        assert!(matches!(
            run(b"I1\n."),
            Err(Error::PickleOpcode { opcode: b'I', .. })
        ));
    }

    #[test]
    fn claimed_lengths_are_checked_before_allocating() {
        let bytes = b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7f";
        let err = run(bytes).unwrap_err();
        assert!(err.to_string().contains("runs past the end"), "{err}");
    }

    #[test]
    fn shared_references_cannot_explode() {
        // a = [0]; then 40 times: a = [a, a] via memo: exponential as a tree.
        let mut bytes = b"\x80\x02]q\x00K\x00a".to_vec();
        for i in 0..40u8 {
            bytes.extend_from_slice(&[b']', b'q', i + 1, b'h', i, b'a', b'h', i, b'a']);
        }
        bytes.push(b'.');
        // Refused by the copy budget or the node budget, whichever is
        // spent first.
        let err = run(&bytes).unwrap_err().to_string();
        assert!(
            err.contains("too many values") || err.contains("copies shared values"),
            "{err}"
        );
    }

    /// Objects nested `n` deep, each holding the next in its state:
    /// `C().__dict__ = {'x': C().__dict__ = {'x': ... None}}`.
    fn nested_objects(n: usize) -> Vec<u8> {
        let mut bytes = b"\x80\x02".to_vec();
        for _ in 0..n {
            bytes.extend_from_slice(b"c__main__\nC\n)\x81}X\x01\x00\x00\x00x");
        }
        bytes.push(b'N');
        bytes.extend(std::iter::repeat_n(*b"sb", n).flatten());
        bytes.push(b'.');
        bytes
    }

    #[test]
    fn deeply_nested_objects_fit_a_small_thread_stack() {
        // Threads get 2 MiB stacks by default; half is enough, in a debug
        // build, for the deepest nesting the reader accepts.
        std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(|| {
                assert!(run(&nested_objects(120)).is_ok());
                let err = run(&nested_objects(1000)).unwrap_err();
                assert!(err.to_string().contains("nests too deeply"), "{err}");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn a_list_containing_itself_reads_with_the_cycle_marked() {
        let bytes = b"\x80\x02]q\x00h\x00a.";
        assert_eq!(
            run(bytes).unwrap(),
            Value::List(vec![Value::Str(convert::RECURSIVE.into())])
        );
    }

    #[test]
    fn mutations_after_memoizing_are_seen_through_the_memo() {
        // d = {}; memo it; return (d, d) after adding a key to it.
        let bytes = b"\x80\x02}q\x00X\x01\x00\x00\x00kK\x01sh\x00\x86.";
        let v = run(bytes).unwrap();
        let mut d = Dict::new();
        d.insert("k".into(), Value::Int(1));
        assert_eq!(
            v,
            Value::Tuple(vec![Value::Dict(d.clone()), Value::Dict(d)])
        );
    }

    #[test]
    fn nested_rebuild_from_type_wrappers_do_not_recurse_without_bound() {
        // v = _rebuild_from_type_v2 memoised; then 100,000 levels of
        // (v, None, (...), None) around an innermost call of v itself.
        let mut bytes = b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\nq\x00".to_vec();
        let levels = 100_000;
        for _ in 0..levels {
            bytes.extend_from_slice(b"h\x00N");
        }
        bytes.extend_from_slice(b"h\x00N))\x87");
        for _ in 0..levels {
            bytes.extend_from_slice(b"N\x87");
        }
        bytes.extend_from_slice(b"R.");
        assert!(run(&bytes).is_err());
    }

    #[test]
    fn copies_of_a_memoised_string_are_charged() {
        // A 1 MiB string, memoised, then a list of 100,000 references.
        let mut bytes = b"\x80\x02X\x00\x00\x10\x00".to_vec();
        bytes.extend(std::iter::repeat_n(b'a', 1 << 20));
        bytes.extend_from_slice(b"q\x00](");
        for _ in 0..100_000 {
            bytes.extend_from_slice(b"h\x00");
        }
        bytes.extend_from_slice(b"e.");
        let err = run(&bytes).unwrap_err();
        assert!(err.to_string().contains("far more bytes"), "{err}");
    }

    #[test]
    fn torch_device_copies_are_charged() {
        let mut bytes = b"\x80\x02ctorch\ndevice\n(X\x00\x00\x10\x00".to_vec();
        bytes.extend(std::iter::repeat_n(b'c', 1 << 20));
        bytes.extend_from_slice(b"q\x00");
        for _ in 0..100_000 {
            bytes.extend_from_slice(b"h\x00");
        }
        bytes.extend_from_slice(b"tR.");
        let err = run(&bytes).unwrap_err();
        assert!(err.to_string().contains("far more bytes"), "{err}");
    }

    #[test]
    fn copies_of_long_class_names_are_charged() {
        // An unknown class with a 1 MiB module name, called 100,000 times
        // through the memo: 4 bytes a call in the file, 1 MiB in memory.
        let mut bytes = b"\x80\x02c".to_vec();
        bytes.extend(std::iter::repeat_n(b'm', 1 << 20));
        bytes.extend_from_slice(b"\nX\nq\x00(");
        bytes.extend(std::iter::repeat_n(*b"h\x00)R", 100_000).flatten());
        bytes.extend_from_slice(b"l.");
        let err = run(&bytes).unwrap_err();
        assert!(err.to_string().contains("far more bytes"), "{err}");
        // The same name recalled as a value, 100,000 times.
        let mut bytes = b"\x80\x02c".to_vec();
        bytes.extend(std::iter::repeat_n(b'm', 1 << 20));
        bytes.extend_from_slice(b"\nX\nq\x00(");
        bytes.extend(std::iter::repeat_n(*b"h\x00", 100_000).flatten());
        bytes.extend_from_slice(b"l.");
        let err = run(&bytes).unwrap_err();
        assert!(err.to_string().contains("far more bytes"), "{err}");
    }

    #[test]
    fn old_storage_views_are_refused() {
        let bytes = b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04(X\x01\x00\x00\x001K\x01K\x02ttQ.";
        let err = match unpickle(bytes, bytes.len(), Path::new("t.pth"), "data.pkl") {
            Err(e) => e,
            Ok(_) => panic!("a storage view was accepted"),
        };
        assert!(err.to_string().contains("storage view"), "{err}");
    }
}
