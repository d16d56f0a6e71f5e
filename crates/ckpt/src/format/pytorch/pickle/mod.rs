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
//! later mutations, as in Python. Converting to a [`Value`] copies shared
//! objects, under a node budget and a depth limit so that neither a cycle
//! nor a "billion laughs" of shared references can exhaust memory. Lengths
//! in the stream are checked against the bytes that remain before anything
//! is allocated.

mod convert;
mod reduce;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use super::{safety, storage_dtype};
use crate::{DType, Error, Result};
pub(crate) use convert::Converter;

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

#[derive(Clone, Copy)]
enum Item {
    Mark,
    Obj(Id),
}

/// How many `Value` nodes one pickle may expand to, shared objects counted
/// each time they are reached: twice the objects the stream built, plus
/// this much slack for legitimately shared values.
const NODE_SLACK: usize = 100_000;
/// The deepest nesting converted (a cycle hits this).
const MAX_DEPTH: usize = 256;

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
    entry: &'a str,
    arena: Vec<Obj>,
    stack: Vec<Item>,
    memo: HashMap<u32, Id>,
    /// Where the current opcode starts.
    op_start: usize,
    budget: Budget,
    /// The most bytes of objects, stack and memo the stream may build.
    max_footprint: usize,
    globals: BTreeSet<String>,
}

/// How many bytes of objects, stack and memo a pickle may build per byte
/// of stream, besides [`FOOTPRINT_SLACK`]: a state dict builds about 7, a
/// list of `True`s about 40, no stream more than 56 (an object and a
/// stack slot per one-byte opcode). A deflated stream is measured by
/// [`FOOTPRINT_COMPRESSION`] bytes per byte it takes in the file at most,
/// so that a pickle compressed past what real ones reach cannot build
/// more than a stored one of the same length could.
const FOOTPRINT_PER_BYTE: usize = 64;
/// How much a real pickle compresses at most, for [`FOOTPRINT_PER_BYTE`].
const FOOTPRINT_COMPRESSION: usize = 8;
/// Bytes of objects every stream may build whatever its length.
const FOOTPRINT_SLACK: usize = 1 << 20;

/// Runs the pickle stream in `bytes` (the zip entry `entry` of `path`),
/// which takes `stored` bytes of the file (fewer than `bytes` when it was
/// deflated): what it may build is a multiple of those.
pub(crate) fn unpickle(bytes: &[u8], stored: usize, path: &Path, entry: &str) -> Result<Unpickled> {
    let measured = stored.max(bytes.len() / FOOTPRINT_COMPRESSION);
    let mut m = Machine {
        bytes,
        pos: 0,
        path,
        entry,
        arena: Vec::new(),
        stack: Vec::new(),
        memo: HashMap::new(),
        op_start: 0,
        budget: Budget::for_stream(measured),
        max_footprint: measured
            .saturating_mul(FOOTPRINT_PER_BYTE)
            .saturating_add(FOOTPRINT_SLACK),
        globals: BTreeSet::new(),
    };
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

impl Machine<'_> {
    fn err(&self, problem: &'static str) -> Error {
        Error::Pickle {
            path: self.path.to_owned(),
            entry: self.entry.to_owned(),
            offset: self.op_start as u64,
            problem,
        }
    }

    fn charge(&self, n: usize) -> Result<()> {
        self.budget.charge(n, self.path, self.entry)
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        match self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()) {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err("the stream ends inside an opcode's argument")),
        }
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().unwrap_or_default(),
        ))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }

    fn len(&mut self, n: u64) -> Result<usize> {
        // Checked against what remains before anything is allocated.
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len() - self.pos)
            .ok_or_else(|| self.err("a length runs past the end of the stream"))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.bytes[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("a GLOBAL name has no newline"))?;
        let s = std::str::from_utf8(&rest[..end])
            .map_err(|_| self.err("a GLOBAL name is not UTF-8"))?
            .to_owned();
        self.pos += end + 1;
        Ok(s)
    }

    fn alloc(&mut self, obj: Obj) -> Id {
        self.arena.push(obj);
        self.arena.len() - 1
    }

    fn push(&mut self, obj: Obj) {
        let id = self.alloc(obj);
        self.stack.push(Item::Obj(id));
    }

    fn pop(&mut self) -> Result<Id> {
        match self.stack.pop() {
            Some(Item::Obj(id)) => Ok(id),
            Some(Item::Mark) => Err(self.err("expected a value, found a MARK")),
            None => Err(self.err("the stack is empty")),
        }
    }

    fn top(&self) -> Result<Id> {
        match self.stack.last() {
            Some(Item::Obj(id)) => Ok(*id),
            _ => Err(self.err("expected a value on the stack")),
        }
    }

    /// Pops everything down to the last MARK.
    fn pop_mark(&mut self) -> Result<Vec<Id>> {
        let mark = self
            .stack
            .iter()
            .rposition(|i| matches!(i, Item::Mark))
            .ok_or_else(|| self.err("no MARK on the stack"))?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .filter_map(|i| match i {
                Item::Obj(id) => Some(id),
                Item::Mark => None,
            })
            .collect())
    }

    fn memo_get(&self, key: u32) -> Result<Id> {
        self.memo
            .get(&key)
            .copied()
            .ok_or_else(|| self.err("a memo lookup names no stored value"))
    }

    fn memo_put(&mut self, key: u32) -> Result<()> {
        let id = self.top()?;
        self.memo.insert(key, id);
        Ok(())
    }

    fn int(&mut self, bytes_len: usize) -> Result<i64> {
        let raw = self.take(bytes_len)?.to_vec();
        long_from_le(&raw).ok_or_else(|| self.err("an integer does not fit in 64 bits"))
    }

    fn append(&mut self, list: Id, items: Vec<Id>) -> Result<()> {
        match &mut self.arena[list] {
            Obj::List(v) => {
                v.extend(items);
                Ok(())
            }
            // Sets built by EMPTY_SET/ADDITEMS are kept as lists.
            _ => Err(self.err("APPEND to something that is not a list")),
        }
    }

    fn set_items(&mut self, dict: Id, items: Vec<Id>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("SETITEMS with an odd number of values"));
        }
        match &mut self.arena[dict] {
            Obj::Dict(pairs) => {
                pairs.extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1])));
                Ok(())
            }
            _ => Err(self.err("SETITEM on something that is not a dict")),
        }
    }

    /// Bytes of objects, stack and memo built so far (memo entries with
    /// their hash table's overhead).
    fn footprint(&self) -> usize {
        self.arena.len() * std::mem::size_of::<Obj>()
            + self.stack.len() * std::mem::size_of::<Item>()
            + self.memo.len() * 32
    }

    fn run(&mut self) -> Result<Id> {
        loop {
            if self.footprint() > self.max_footprint {
                return Err(self
                    .err("the stream builds far more objects than its length warrants (a bomb?)"));
            }
            self.op_start = self.pos;
            let op = self
                .u8()
                .map_err(|_| self.err("the stream ends without STOP"))?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO: any version is read the same way
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Item::Mark),
                b'0' => {
                    self.stack
                        .pop()
                        .ok_or_else(|| self.err("POP on an empty stack"))?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let id = self.top()?;
                    self.stack.push(Item::Obj(id));
                }
                b'N' => self.push(Obj::None),
                0x88 => self.push(Obj::Bool(true)),
                0x89 => self.push(Obj::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Obj::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Obj::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Obj::Int(v as i64));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let v = self.int(n)?;
                    self.push(Obj::Int(v));
                }
                0x8b => {
                    let n = self.u32()? as u64;
                    let n = self.len(n)?;
                    let v = self.int(n)?;
                    self.push(Obj::Int(v));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap_or_default());
                    self.push(Obj::Float(v));
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.u32()? as u64,
                        0x8c => self.u8()? as u64,
                        _ => self.u64()?,
                    };
                    let n = self.len(n)?;
                    let s = match std::str::from_utf8(self.take(n)?) {
                        Ok(s) => s.to_owned(),
                        Err(_) => return Err(self.err("a string is not UTF-8")),
                    };
                    self.push(Obj::Str(s));
                }
                b'U' | b'T' => {
                    // Python 2 byte strings; Python 3 reads them as latin-1 text.
                    let n = if op == b'U' {
                        self.u8()? as u64
                    } else {
                        self.u32()? as u64
                    };
                    let n = self.len(n)?;
                    let s = self.take(n)?.iter().map(|&b| b as char).collect();
                    self.push(Obj::Str(s));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.u32()? as u64,
                        b'C' => self.u8()? as u64,
                        _ => self.u64()?,
                    };
                    let n = self.len(n)?;
                    let b = self.take(n)?.to_vec();
                    self.push(Obj::Bytes(b));
                }
                b')' => self.push(Obj::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Obj::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(self.err("TUPLE with too few values"));
                    }
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Obj::Tuple(items));
                }
                b']' | 0x8f => self.push(Obj::List(Vec::new())),
                b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Obj::List(items));
                }
                b'a' => {
                    let item = self.pop()?;
                    let list = self.top()?;
                    self.append(list, vec![item])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.append(list, items)?;
                }
                b'}' => self.push(Obj::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = self.alloc(Obj::Dict(Vec::new()));
                    self.set_items(dict, items)?;
                    self.stack.push(Item::Obj(dict));
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let dict = self.top()?;
                    self.set_items(dict, vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let dict = self.top()?;
                    self.set_items(dict, items)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let global = self.global(module, name)?;
                    self.push(global);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&self.arena[module], &self.arena[name]) {
                        (Obj::Str(m), Obj::Str(n)) => {
                            let global = self.global(m.clone(), n.clone())?;
                            self.push(global);
                        }
                        _ => return Err(self.err("STACK_GLOBAL needs two strings")),
                    }
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    let id = self.memo_get(k)?;
                    self.stack.push(Item::Obj(id));
                }
                b'j' => {
                    let k = self.u32()?;
                    let id = self.memo_get(k)?;
                    self.stack.push(Item::Obj(id));
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_id(pid)?;
                    self.push(Obj::Storage(Box::new(storage)));
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let result = self.reduce(callable, args)?;
                    self.stack.push(Item::Obj(result));
                }
                0x81 => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.new_object(class, args)?;
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.new_object(class, args)?;
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    self.build(target, state)?;
                }
                _ => {
                    return Err(Error::PickleOpcode {
                        path: self.path.to_owned(),
                        entry: self.entry.to_owned(),
                        offset: self.op_start as u64,
                        opcode: op,
                    })
                }
            }
        }
    }

    fn global_name(&self, id: Id) -> Option<(&str, &str)> {
        match &self.arena[id] {
            Obj::Global(g) => Some((&g.0, &g.1)),
            _ => None,
        }
    }

    fn refuse(&self, id: Id) -> Error {
        let global = match self.global_name(id) {
            Some((m, n)) => format!("{m}.{n}"),
            None => "a non-global value".to_owned(),
        };
        Error::RefusedGlobal {
            path: self.path.to_owned(),
            entry: self.entry.to_owned(),
            global,
        }
    }

    /// A global as the stream names it: refused when dangerous (wherever
    /// it is, reached or not), recorded, and kept as a name (a dtype such
    /// as `torch.float32` becomes its value).
    fn global(&mut self, module: String, name: String) -> Result<Obj> {
        if safety::is_dangerous(&module, &name) {
            return Err(Error::DangerousGlobal {
                path: self.path.to_owned(),
                entry: self.entry.to_owned(),
                offset: self.op_start as u64,
                global: format!("{module}.{name}"),
            });
        }
        self.charge(2 * (module.len() + name.len()))?;
        self.globals.insert(format!("{module}.{name}"));
        let module = safety::python3_module(&module).to_owned();
        Ok(match DType::from_torch(&name) {
            Some(dtype) if module == "torch" => Obj::Dtype(dtype),
            _ => Obj::Global(Box::new((module, name))),
        })
    }

    fn new_object(&mut self, class: Id, args: Id) -> Result<()> {
        let (m, n) = self
            .global_name(class)
            .ok_or_else(|| self.err("NEWOBJ of something that is not a class"))?;
        self.charge(m.len() + n.len())?;
        let class = Box::new((m.to_owned(), n.to_owned()));
        self.push(Obj::Object {
            class,
            args: Some(args),
            state: None,
        });
        Ok(())
    }

    /// `BUILD`: an object's state, an array's contents, a dtype's byte
    /// order.
    fn build(&mut self, target: Id, state: Id) -> Result<()> {
        let big_endian = match &self.arena[state] {
            Obj::Tuple(items) => {
                matches!(items.get(1).map(|&o| &self.arena[o]), Some(Obj::Str(s)) if s == ">")
            }
            _ => false,
        };
        match &mut self.arena[target] {
            Obj::Object { state: slot, .. } | Obj::NdArray { state: slot } => *slot = Some(state),
            Obj::NpDtype {
                big_endian: slot, ..
            } => *slot = big_endian,
            // torch BUILDs attributes onto OrderedDicts (`_metadata`, the
            // modules' versions) and tensors (Parameter state); the data
            // itself is complete without them.
            Obj::Dict(_) | Obj::Tensor(_) | Obj::QTensor(..) => {}
            _ => return Err(self.err("BUILD on a value that takes no state")),
        }
        Ok(())
    }

    fn tuple(&self, id: Id) -> Result<Vec<Id>> {
        match &self.arena[id] {
            Obj::Tuple(items) => {
                self.charge(items.len() * std::mem::size_of::<Id>())?;
                Ok(items.clone())
            }
            _ => Err(self.err("call arguments are not a tuple")),
        }
    }

    fn as_int(&self, id: Id) -> Result<i64> {
        match self.arena[id] {
            Obj::Int(i) => Ok(i),
            Obj::Bool(b) => Ok(b as i64),
            _ => Err(self.err("expected an integer")),
        }
    }

    fn as_float(&self, id: Id) -> Result<f64> {
        match self.arena[id] {
            Obj::Float(f) => Ok(f),
            Obj::Int(i) => Ok(i as f64),
            _ => Err(self.err("expected a number")),
        }
    }

    fn as_str(&self, id: Id) -> Result<&str> {
        match &self.arena[id] {
            Obj::Str(s) => Ok(s),
            _ => Err(self.err("expected a string")),
        }
    }

    fn dims(&self, id: Id) -> Result<Vec<u64>> {
        let dims = self.tuple(id)?;
        if dims.len() > MAX_DIMS {
            return Err(self.err("a tensor has more than 64 dimensions"));
        }
        dims.into_iter()
            .map(|d| {
                u64::try_from(self.as_int(d)?).map_err(|_| self.err("a size or stride is negative"))
            })
            .collect()
    }

    /// `('storage', <storage class>, key, location, numel[, view])`.
    fn persistent_id(&self, pid: Id) -> Result<StorageRef> {
        let parts = self
            .tuple(pid)
            .map_err(|_| self.err("a persistent id is not a tuple"))?;
        let [tag, class, key, _location, numel, ref view @ ..] = parts[..] else {
            return Err(self.err("a persistent id has fewer than 5 parts"));
        };
        // Very old legacy files name views of a root storage here; ckpt
        // refuses them rather than read the wrong bytes.
        if view.iter().any(|&v| !matches!(self.arena[v], Obj::None)) {
            return Err(self.err("a storage view (pre-1.0 legacy format) is not supported"));
        }
        if self.as_str(tag)? != "storage" {
            return Err(self.err("a persistent id is not a storage"));
        }
        let dtype = match self.global_name(class) {
            Some(("torch.storage", "UntypedStorage")) => None,
            Some(("torch", name)) => Some(storage_dtype(name).ok_or_else(|| self.refuse(class))?),
            _ => return Err(self.refuse(class)),
        };
        let key = match &self.arena[key] {
            Obj::Str(s) => {
                self.charge(s.len())?;
                s.clone()
            }
            Obj::Int(i) => i.to_string(),
            _ => return Err(self.err("a storage key is not a string")),
        };
        let numel = u64::try_from(self.as_int(numel)?)
            .map_err(|_| self.err("a storage length is negative"))?;
        Ok(StorageRef { key, dtype, numel })
    }
}

/// Little-endian two's complement of any length, when it fits in an i64.
fn long_from_le(raw: &[u8]) -> Option<i64> {
    if raw.is_empty() {
        return Some(0);
    }
    let negative = raw[raw.len() - 1] & 0x80 != 0;
    let fill = if negative { 0xFF } else { 0x00 };
    if raw.len() > 8 && raw[8..].iter().any(|&b| b != fill) {
        return None;
    }
    let mut buf = [fill; 8];
    let n = raw.len().min(8);
    buf[..n].copy_from_slice(&raw[..n]);
    let v = i64::from_le_bytes(buf);
    // With more than 8 bytes the sign must also agree with bit 63.
    (raw.len() <= 8 || (v < 0) == negative).then_some(v)
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

    #[test]
    fn longs_of_any_width_decode_or_refuse() {
        assert_eq!(long_from_le(&[]), Some(0));
        assert_eq!(long_from_le(&[0xff]), Some(-1));
        assert_eq!(long_from_le(&[0x00, 0x80]), Some(-32768));
        assert_eq!(long_from_le(&[1, 0, 0, 0, 0, 0, 0, 0, 0]), Some(1));
        assert_eq!(long_from_le(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]), None);
        assert_eq!(long_from_le(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), None);
    }
}
