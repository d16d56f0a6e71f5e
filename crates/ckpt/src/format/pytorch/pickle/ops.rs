//! The opcodes of protocols 2–5: the loop that runs them
//! ([`Machine::run`]), one dispatch to a small handler per opcode or
//! family (numbers, text and bytes, tuples, lists, dicts, the memo, calls
//! and `BUILD`). Globals and persistent ids are in [`super::globals`],
//! `REDUCE`'s calls in [`super::reduce`].

use super::machine::{Item, Machine};
use super::{Id, Obj};
use crate::{Error, Result};

impl Machine<'_> {
    /// Runs opcodes up to `STOP`, while what the stream has built stays
    /// within its footprint bound; the object `STOP` returns. An opcode
    /// ckpt does not read is refused by name.
    pub(super) fn run(&mut self) -> Result<Id> {
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
                b'.' => return self.pop(),
                0x80 => self.skip(1)?, // PROTO: any version is read the same way
                0x95 => self.skip(8)?, // FRAME: a length hint only
                b'(' => self.stack.push(Item::Mark),
                b'0' => self.discard()?,
                b'1' => self.discard_to_mark()?,
                b'2' => self.dup()?,
                b'N' => self.push(Obj::None),
                0x88 => self.push(Obj::Bool(true)),
                0x89 => self.push(Obj::Bool(false)),
                b'J' => self.binint()?,
                b'K' => self.unsigned(1)?,
                b'M' => self.unsigned(2)?,
                0x8a => self.long(1)?,
                0x8b => self.long(4)?,
                b'G' => self.binfloat()?,
                b'X' => self.unicode(4)?,
                0x8c => self.unicode(1)?,
                0x8d => self.unicode(8)?,
                // Python 2 byte strings; Python 3 reads them as latin-1 text.
                b'U' => self.latin1(1)?,
                b'T' => self.latin1(4)?,
                b'B' => self.bytes(4)?,
                b'C' => self.bytes(1)?,
                0x8e | 0x96 => self.bytes(8)?,
                b')' => self.push(Obj::Tuple(Vec::new())),
                b't' => self.tuple_to_mark()?,
                0x85..=0x87 => self.tuple_of((op - 0x84) as usize)?,
                b']' | 0x8f => self.push(Obj::List(Vec::new())),
                b'l' | 0x91 => self.list_to_mark()?,
                b'a' => self.append_one()?,
                b'e' | 0x90 => self.append_to_mark()?,
                b'}' => self.push(Obj::Dict(Vec::new())),
                b'd' => self.dict_to_mark()?,
                b's' => self.set_item()?,
                b'u' => self.set_items_to_mark()?,
                b'c' => self.text_global()?,
                0x93 => self.stack_global()?,
                b'h' => self.recall(1)?,
                b'j' => self.recall(4)?,
                b'q' => self.remember(1)?,
                b'r' => self.remember(4)?,
                0x94 => self.memoize()?,
                b'Q' => self.persistent_load()?,
                b'R' => self.call()?,
                0x81 => self.new_obj()?,
                0x92 => self.new_obj_ex()?,
                b'b' => self.build_top()?,
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

    /// An unsigned little-endian argument of `width` bytes (1, 2, 4 or 8).
    #[inline(always)]
    fn uint(&mut self, width: usize) -> Result<u64> {
        Ok(match width {
            1 => self.u8()? as u64,
            2 => self.u16()? as u64,
            4 => self.u32()? as u64,
            _ => self.u64()?,
        })
    }

    /// Bytes after their length, which takes `width` bytes.
    #[inline(always)]
    fn counted(&mut self, width: usize) -> Result<&[u8]> {
        let n = self.uint(width)?;
        let n = self.len(n)?;
        self.take(n)
    }

    /// An argument that is read and ignored.
    #[inline]
    fn skip(&mut self, n: usize) -> Result<()> {
        self.take(n)?;
        Ok(())
    }

    /// `POP`.
    #[inline]
    fn discard(&mut self) -> Result<()> {
        self.stack
            .pop()
            .ok_or_else(|| self.err("POP on an empty stack"))?;
        Ok(())
    }

    /// `POP_MARK`.
    #[inline]
    fn discard_to_mark(&mut self) -> Result<()> {
        self.pop_mark()?;
        Ok(())
    }

    /// `DUP`.
    #[inline]
    fn dup(&mut self) -> Result<()> {
        let id = self.top()?;
        self.stack.push(Item::Obj(id));
        Ok(())
    }

    /// `BININT`: a signed 32-bit integer.
    #[inline]
    fn binint(&mut self) -> Result<()> {
        let v = self.u32()? as i32;
        self.push(Obj::Int(v as i64));
        Ok(())
    }

    /// `BININT1`, `BININT2`: an unsigned integer of `width` bytes.
    #[inline(always)]
    fn unsigned(&mut self, width: usize) -> Result<()> {
        let v = self.uint(width)?;
        self.push(Obj::Int(v as i64));
        Ok(())
    }

    /// `LONG1`, `LONG4`: a length of `width` bytes, then the integer.
    #[inline(always)]
    fn long(&mut self, width: usize) -> Result<()> {
        let n = match width {
            1 => self.u8()? as usize,
            _ => {
                let n = self.u32()? as u64;
                self.len(n)?
            }
        };
        let v = self.int(n)?;
        self.push(Obj::Int(v));
        Ok(())
    }

    /// `BINFLOAT`: a big-endian f64.
    #[inline]
    fn binfloat(&mut self) -> Result<()> {
        let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap_or_default());
        self.push(Obj::Float(v));
        Ok(())
    }

    /// `BINUNICODE`, `SHORT_BINUNICODE`, `BINUNICODE8`: UTF-8 text after a
    /// length of `width` bytes.
    #[inline(always)]
    fn unicode(&mut self, width: usize) -> Result<()> {
        let s = match std::str::from_utf8(self.counted(width)?) {
            Ok(s) => s.to_owned(),
            Err(_) => return Err(self.err("a string is not UTF-8")),
        };
        self.push(Obj::Str(s));
        Ok(())
    }

    /// `SHORT_BINSTRING`, `BINSTRING`: bytes read as latin-1 text.
    #[inline(always)]
    fn latin1(&mut self, width: usize) -> Result<()> {
        let s = self.counted(width)?.iter().map(|&b| b as char).collect();
        self.push(Obj::Str(s));
        Ok(())
    }

    /// `BINBYTES`, `SHORT_BINBYTES`, `BINBYTES8`, `BYTEARRAY8`.
    #[inline(always)]
    fn bytes(&mut self, width: usize) -> Result<()> {
        let b = self.counted(width)?.to_vec();
        self.push(Obj::Bytes(b));
        Ok(())
    }

    /// A little-endian two's complement integer of `bytes_len` bytes.
    fn int(&mut self, bytes_len: usize) -> Result<i64> {
        let raw = self.take(bytes_len)?.to_vec();
        long_from_le(&raw).ok_or_else(|| self.err("an integer does not fit in 64 bits"))
    }

    /// `TUPLE`.
    #[inline]
    fn tuple_to_mark(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        self.push(Obj::Tuple(items));
        Ok(())
    }

    /// `TUPLE1`, `TUPLE2`, `TUPLE3`.
    #[inline]
    fn tuple_of(&mut self, n: usize) -> Result<()> {
        if self.stack.len() < n {
            return Err(self.err("TUPLE with too few values"));
        }
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.pop()?);
        }
        items.reverse();
        self.push(Obj::Tuple(items));
        Ok(())
    }

    /// `LIST`, `FROZENSET`.
    #[inline]
    fn list_to_mark(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        self.push(Obj::List(items));
        Ok(())
    }

    /// `APPEND`.
    #[inline]
    fn append_one(&mut self) -> Result<()> {
        let item = self.pop()?;
        let list = self.top()?;
        self.append(list, vec![item])
    }

    /// `APPENDS`, `ADDITEMS`.
    #[inline]
    fn append_to_mark(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        let list = self.top()?;
        self.append(list, items)
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

    /// `DICT`.
    #[inline]
    fn dict_to_mark(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        let dict = self.alloc(Obj::Dict(Vec::new()));
        self.set_items(dict, items)?;
        self.stack.push(Item::Obj(dict));
        Ok(())
    }

    /// `SETITEM`.
    #[inline]
    fn set_item(&mut self) -> Result<()> {
        let value = self.pop()?;
        let key = self.pop()?;
        let dict = self.top()?;
        self.set_items(dict, vec![key, value])
    }

    /// `SETITEMS`.
    #[inline]
    fn set_items_to_mark(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        let dict = self.top()?;
        self.set_items(dict, items)
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

    /// `BINGET`, `LONG_BINGET`: the memo entry whose key takes `width`
    /// bytes.
    #[inline(always)]
    fn recall(&mut self, width: usize) -> Result<()> {
        let k = self.uint(width)? as u32;
        let id = self.memo_get(k)?;
        self.stack.push(Item::Obj(id));
        Ok(())
    }

    /// `BINPUT`, `LONG_BINPUT`: memoises the top under a key of `width`
    /// bytes.
    #[inline(always)]
    fn remember(&mut self, width: usize) -> Result<()> {
        let k = self.uint(width)? as u32;
        self.memo_put(k)
    }

    /// `MEMOIZE`: the top under the next key.
    #[inline]
    fn memoize(&mut self) -> Result<()> {
        let k = self.memo.len() as u32;
        self.memo_put(k)
    }

    /// `BINPERSID`: a storage.
    fn persistent_load(&mut self) -> Result<()> {
        let pid = self.pop()?;
        let storage = self.persistent_id(pid)?;
        self.push(Obj::Storage(Box::new(storage)));
        Ok(())
    }

    /// `REDUCE`.
    fn call(&mut self) -> Result<()> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let result = self.reduce(callable, args)?;
        self.stack.push(Item::Obj(result));
        Ok(())
    }

    /// `NEWOBJ`.
    fn new_obj(&mut self) -> Result<()> {
        let args = self.pop()?;
        let class = self.pop()?;
        self.new_object(class, args)
    }

    /// `NEWOBJ_EX` (the keyword arguments are not kept).
    fn new_obj_ex(&mut self) -> Result<()> {
        let _kwargs = self.pop()?;
        let args = self.pop()?;
        let class = self.pop()?;
        self.new_object(class, args)
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

    /// `BUILD`.
    fn build_top(&mut self) -> Result<()> {
        let state = self.pop()?;
        let target = self.top()?;
        self.build(target, state)
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
    use super::long_from_le;

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
