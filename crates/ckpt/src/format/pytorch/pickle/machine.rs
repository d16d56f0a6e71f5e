//! The machine's state and primitives: the stream it reads, the arena
//! objects live in, the stack and the memo, the footprint bound on what it
//! builds, and typed reads of arena objects. The loop that runs opcodes is
//! in [`super::ops`].

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use super::{Budget, Id, Obj, MAX_DIMS};
use crate::{Error, Result};

/// A stack entry: a `MARK` or an object.
#[derive(Clone, Copy)]
pub(super) enum Item {
    Mark,
    Obj(Id),
}

/// The stack machine over one pickle stream.
pub(super) struct Machine<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
    pub(super) path: &'a Path,
    pub(super) entry: &'a str,
    pub(super) arena: Vec<Obj>,
    pub(super) stack: Vec<Item>,
    pub(super) memo: HashMap<u32, Id>,
    /// Where the current opcode starts.
    pub(super) op_start: usize,
    pub(super) budget: Budget,
    /// The most bytes of objects, stack and memo the stream may build.
    pub(super) max_footprint: usize,
    pub(super) globals: BTreeSet<String>,
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

impl<'a> Machine<'a> {
    /// A machine over `bytes`, which take `stored` bytes of the file.
    pub(super) fn new(bytes: &'a [u8], stored: usize, path: &'a Path, entry: &'a str) -> Self {
        let measured = stored.max(bytes.len() / FOOTPRINT_COMPRESSION);
        Machine {
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
        }
    }
}

impl Machine<'_> {
    /// Bytes of objects, stack and memo built so far (memo entries with
    /// their hash table's overhead).
    pub(super) fn footprint(&self) -> usize {
        self.arena.len() * std::mem::size_of::<Obj>()
            + self.stack.len() * std::mem::size_of::<Item>()
            + self.memo.len() * 32
    }

    /// An error at the current opcode.
    pub(super) fn err(&self, problem: &'static str) -> Error {
        Error::Pickle {
            path: self.path.to_owned(),
            entry: self.entry.to_owned(),
            offset: self.op_start as u64,
            problem,
        }
    }

    /// Charges `n` bytes of copies to the budget.
    pub(super) fn charge(&self, n: usize) -> Result<()> {
        self.budget.charge(n, self.path, self.entry)
    }

    /// The next `n` bytes of the stream.
    pub(super) fn take(&mut self, n: usize) -> Result<&[u8]> {
        match self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()) {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err("the stream ends inside an opcode's argument")),
        }
    }

    /// A one-byte argument.
    pub(super) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// A little-endian two-byte argument.
    pub(super) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().unwrap_or_default(),
        ))
    }

    /// A little-endian four-byte argument.
    pub(super) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }

    /// A little-endian eight-byte argument.
    pub(super) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }

    /// A length of bytes that follow, checked against what remains.
    pub(super) fn len(&mut self, n: u64) -> Result<usize> {
        // Checked against what remains before anything is allocated.
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len() - self.pos)
            .ok_or_else(|| self.err("a length runs past the end of the stream"))
    }

    /// A text line (`GLOBAL`'s arguments), without its newline.
    pub(super) fn line(&mut self) -> Result<String> {
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

    /// Puts `obj` in the arena.
    pub(super) fn alloc(&mut self, obj: Obj) -> Id {
        self.arena.push(obj);
        self.arena.len() - 1
    }

    /// Puts `obj` in the arena and on the stack.
    pub(super) fn push(&mut self, obj: Obj) {
        let id = self.alloc(obj);
        self.stack.push(Item::Obj(id));
    }

    /// Pops an object.
    pub(super) fn pop(&mut self) -> Result<Id> {
        match self.stack.pop() {
            Some(Item::Obj(id)) => Ok(id),
            Some(Item::Mark) => Err(self.err("expected a value, found a MARK")),
            None => Err(self.err("the stack is empty")),
        }
    }

    /// The object on top of the stack, left there.
    pub(super) fn top(&self) -> Result<Id> {
        match self.stack.last() {
            Some(Item::Obj(id)) => Ok(*id),
            _ => Err(self.err("expected a value on the stack")),
        }
    }

    /// Pops everything down to the last MARK.
    pub(super) fn pop_mark(&mut self) -> Result<Vec<Id>> {
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

    /// The object memoised under `key`.
    pub(super) fn memo_get(&self, key: u32) -> Result<Id> {
        self.memo
            .get(&key)
            .copied()
            .ok_or_else(|| self.err("a memo lookup names no stored value"))
    }

    /// Memoises the top of the stack under `key`.
    pub(super) fn memo_put(&mut self, key: u32) -> Result<()> {
        let id = self.top()?;
        self.memo.insert(key, id);
        Ok(())
    }

    /// The items of tuple `id` (their copy charged).
    pub(super) fn tuple(&self, id: Id) -> Result<Vec<Id>> {
        match &self.arena[id] {
            Obj::Tuple(items) => {
                self.charge(items.len() * std::mem::size_of::<Id>())?;
                Ok(items.clone())
            }
            _ => Err(self.err("call arguments are not a tuple")),
        }
    }

    /// Object `id` as an integer (a bool counts).
    pub(super) fn as_int(&self, id: Id) -> Result<i64> {
        match self.arena[id] {
            Obj::Int(i) => Ok(i),
            Obj::Bool(b) => Ok(b as i64),
            _ => Err(self.err("expected an integer")),
        }
    }

    /// Object `id` as a number.
    pub(super) fn as_float(&self, id: Id) -> Result<f64> {
        match self.arena[id] {
            Obj::Float(f) => Ok(f),
            Obj::Int(i) => Ok(i as f64),
            _ => Err(self.err("expected a number")),
        }
    }

    /// Object `id` as a string.
    pub(super) fn as_str(&self, id: Id) -> Result<&str> {
        match &self.arena[id] {
            Obj::Str(s) => Ok(s),
            _ => Err(self.err("expected a string")),
        }
    }

    /// A tensor's size or stride: a tuple of at most [`MAX_DIMS`] non-negative integers.
    pub(super) fn dims(&self, id: Id) -> Result<Vec<u64>> {
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
}
