//! Reading a pickle's opcodes without running them: whether a file's
//! first bytes are a text pickle ([`text_pickle`]), and the first dangerous
//! global a stream names ([`scan`]), reached or not.

use std::rc::Rc;

use super::is_dangerous;

/// True when a file's first bytes are a pickle written without a `PROTO`
/// opcode (protocols 0 and 1, which `pickle.load` and torch's legacy
/// loader still run): after up to four `MARK`s, a `GLOBAL` or `INST` of a
/// dotted identifier, a quoted text string, a text `dict`/`list` with its
/// memo (`(dp0`), or protocol 1's empty container and memo (`}q`).
pub(crate) fn text_pickle(head: &[u8]) -> bool {
    let start = head.iter().take(4).take_while(|&&b| b == b'(').count();
    let rest = &head[start..];
    let ident = |s: &[u8]| {
        let end = s.iter().position(|&b| b == b'\n').unwrap_or(s.len());
        end > 0
            && (s[0].is_ascii_alphabetic() || s[0] == b'_')
            && s[..end]
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            && (end < s.len() || s.len() >= 8)
    };
    match rest {
        [b'c' | b'i', tail @ ..] => ident(tail),
        [b'S', b'\'' | b'"', ..] => true,
        [b'd' | b'l' | b't', b'p', d, ..] => start > 0 && d.is_ascii_digit(),
        [b'}' | b']' | b')', b'q', ..] => start == 0,
        _ => false,
    }
}

/// The first dangerous global a pickle stream names, found by reading its
/// opcodes without running them (as the scanners do): `(offset, global)`,
/// `module.name` as written. It knows every opcode of protocols 0 to 5,
/// the text ones too (`GLOBAL`, `INST`), and follows the stack as Python's
/// unpickler would (marks, pops, containers, the memo), so `STACK_GLOBAL`
/// resolves to the strings it would take; one whose module or name is not
/// a plain string (computed, or a text string with escapes) is refused as
/// such. It stops where Python would stop: at `STOP`, an opcode it does
/// not know, or a malformed one. The restricted reader checks every
/// global it meets; this finds the ones a stream names where the reader
/// stops early (a text opcode it refuses, a broken stream) or never runs
/// (a NumPy object array, an archive's other pickles).
pub(crate) fn scan(bytes: &[u8]) -> Option<(usize, String)> {
    let mut scan = Scan {
        bytes,
        pos: 0,
        stack: Vec::new(),
        memo: std::collections::HashMap::new(),
    };
    loop {
        let at = scan.pos;
        match scan.step()? {
            Step::Next => {}
            Step::Global(module, name) => {
                if is_dangerous(&module, &name) {
                    return Some((at, format!("{module}.{name}")));
                }
            }
            Step::Unresolved => return Some((at, "a STACK_GLOBAL of a computed name".to_owned())),
        }
    }
}

/// What the scan knows of a stack entry.
#[derive(Clone)]
enum Item {
    Mark,
    /// A plain string; shared, so recalling a long one from the memo many
    /// times copies nothing.
    Str(Rc<str>),
    /// A text string whose escapes the scan does not decode.
    Escaped,
    Other,
}

/// One opcode's effect that matters to the scan.
enum Step {
    Next,
    Global(Rc<str>, Rc<str>),
    Unresolved,
}

struct Scan<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    memo: std::collections::HashMap<u64, Item>,
}

impl Scan<'_> {
    /// Runs one opcode; `None` where Python's unpickler would stop.
    fn step(&mut self) -> Option<Step> {
        let op = *self.bytes.get(self.pos)?;
        self.pos += 1;
        match op {
            b'.' => return None,
            b'c' | b'i' => return self.text_global(op),
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                self.stack.push(Item::Other);
                return Some(match (module, name) {
                    (Item::Str(m), Item::Str(n)) => Step::Global(m, n),
                    _ => Step::Unresolved,
                });
            }
            b'S' | b'V' => {
                let line = self.line()?;
                let text = String::from_utf8_lossy(line);
                let item = if text.contains('\\') {
                    Item::Escaped
                } else if op == b'S' {
                    Item::Str(text.trim_matches(|c| c == '\'' || c == '"').into())
                } else {
                    Item::Str(text.into())
                };
                self.stack.push(item);
            }
            // Binary strings: SHORT_BINUNICODE, BINUNICODE(8), BINSTRING.
            0x8c | b'U' => self.string(1)?,
            b'X' | b'T' => self.string(4)?,
            0x8d => self.string(8)?,
            _ => self.other(op)?,
        }
        Some(Step::Next)
    }

    /// `GLOBAL` or `INST`: module and name on two lines.
    fn text_global(&mut self, op: u8) -> Option<Step> {
        let module: Rc<str> = String::from_utf8_lossy(self.line()?).into();
        let name: Rc<str> = String::from_utf8_lossy(self.line()?).into();
        if op == b'i' {
            self.pop_mark()?;
        }
        self.stack.push(Item::Other);
        Some(Step::Global(module, name))
    }

    /// Every opcode that names no global: its argument skipped, its
    /// effect on the stack and the memo followed.
    fn other(&mut self, op: u8) -> Option<()> {
        let (pops, pushes) = match op {
            b'(' => {
                self.stack.push(Item::Mark);
                return Some(());
            }
            b'N' | b')' | b']' | b'}' | 0x88 | 0x89 | 0x8f | 0x97 => (0, 1),
            b'I' | b'L' | b'F' | b'P' => {
                self.line()?;
                (0, 1)
            }
            b'K' | 0x82 => self.skip(1, (0, 1))?,
            b'M' | 0x83 => self.skip(2, (0, 1))?,
            b'J' | 0x84 => self.skip(4, (0, 1))?,
            b'G' => self.skip(8, (0, 1))?,
            0x80 => self.skip(1, (0, 0))?,
            0x95 => self.skip(8, (0, 0))?,
            0x8a | b'C' => self.sized(1, (0, 1))?,
            0x8b | b'B' => self.sized(4, (0, 1))?,
            0x8e | 0x96 => self.sized(8, (0, 1))?,
            b'0' | b'a' | b'b' => (1, 0),
            b's' => (2, 0),
            b'Q' | 0x85 | 0x98 => (1, 1),
            b'R' | 0x81 | 0x86 => (2, 1),
            0x87 | 0x92 => (3, 1),
            b'2' => {
                let top = self.stack.last()?.clone();
                self.stack.push(top);
                return Some(());
            }
            b'1' | b'e' | b'u' | 0x90 => {
                self.pop_mark()?;
                return Some(());
            }
            b't' | b'l' | b'd' | b'o' | 0x91 => {
                self.pop_mark()?;
                (0, 1)
            }
            b'p' | b'q' | b'r' | 0x94 => return self.put(op),
            b'g' | b'h' | b'j' => return self.get(op),
            _ => return None,
        };
        for _ in 0..pops {
            self.pop()?;
        }
        for _ in 0..pushes {
            self.stack.push(Item::Other);
        }
        Some(())
    }

    fn put(&mut self, op: u8) -> Option<()> {
        let key = match op {
            b'p' => self.line_int()?,
            b'q' => self.le(1)?,
            b'r' => self.le(4)?,
            _ => self.memo.len() as u64,
        };
        let top = match self.stack.last()? {
            Item::Mark => return None,
            item => item.clone(),
        };
        self.memo.insert(key, top);
        Some(())
    }

    fn get(&mut self, op: u8) -> Option<()> {
        let key = match op {
            b'g' => self.line_int()?,
            b'h' => self.le(1)?,
            _ => self.le(4)?,
        };
        let item = self.memo.get(&key)?.clone();
        self.stack.push(item);
        Some(())
    }

    fn pop(&mut self) -> Option<Item> {
        match self.stack.pop()? {
            Item::Mark => None,
            item => Some(item),
        }
    }

    fn pop_mark(&mut self) -> Option<()> {
        while !matches!(self.stack.pop()?, Item::Mark) {}
        Some(())
    }

    /// A string whose length takes `len_bytes` bytes before it.
    fn string(&mut self, len_bytes: usize) -> Option<()> {
        let n = usize::try_from(self.le(len_bytes)?).ok()?;
        let data = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        self.stack
            .push(Item::Str(String::from_utf8_lossy(data).into()));
        Some(())
    }

    /// Skips `n` bytes of argument; `effect` is (pops, pushes).
    fn skip(&mut self, n: usize, effect: (usize, usize)) -> Option<(usize, usize)> {
        self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(effect)
    }

    /// Skips a length-prefixed argument.
    fn sized(&mut self, len_bytes: usize, effect: (usize, usize)) -> Option<(usize, usize)> {
        let n = usize::try_from(self.le(len_bytes)?).ok()?;
        self.skip(n, effect)
    }

    /// A little-endian unsigned integer of `n` bytes, consumed.
    fn le(&mut self, n: usize) -> Option<u64> {
        let b = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(b.iter().rev().fold(0u64, |v, &x| (v << 8) | x as u64))
    }

    /// A text line, consumed with its newline.
    fn line(&mut self) -> Option<&[u8]> {
        let rest = self.bytes.get(self.pos..)?;
        let end = rest.iter().position(|&b| b == b'\n')?;
        self.pos += end + 1;
        Some(&rest[..end])
    }

    fn line_int(&mut self) -> Option<u64> {
        String::from_utf8_lossy(self.line()?).trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_finds_globals_the_reader_never_reaches() {
        // Protocol 0: INST after a text string (the reader refuses `S`).
        let inst = b"(S'touch x'\nios\nsystem\n.";
        assert_eq!(scan(inst), Some((12, "os.system".to_owned())));
        // STACK_GLOBAL from strings recalled from the memo.
        let memo = b"\x80\x04\x8c\x05posix\x94\x8c\x06system\x94h\x00h\x01\x93.";
        assert_eq!(scan(memo).map(|(_, g)| g), Some("posix.system".to_owned()));
        // Harmless globals, and anything after STOP, are not reported.
        let clean = b"\x80\x02ccollections\nOrderedDict\n)R.cos\nsystem\n";
        assert_eq!(scan(clean), None);
        assert_eq!(scan(b"\x80\x04\x8c\x05posix"), None);
        assert_eq!(scan(b""), None);
        // Marks and containers are followed: `posix`, then a mark and an
        // empty tuple popped back off, then `system`.
        let marked = b"\x80\x04\x8c\x05posix(1\x8c\x06system\x93.";
        assert_eq!(
            scan(marked).map(|(_, g)| g),
            Some("posix.system".to_owned())
        );
        let tupled = b"\x80\x04\x8c\x05posix(K\x01t0\x8c\x06system\x93.";
        assert_eq!(
            scan(tupled).map(|(_, g)| g),
            Some("posix.system".to_owned())
        );
        // A text string with escapes is not taken at its word.
        let escaped = b"S'\\x70osix'\nS'system'\n\x93.";
        assert!(
            scan(escaped).unwrap().1.contains("computed"),
            "{:?}",
            scan(escaped)
        );
        // A long string recalled a million times costs nothing.
        let mut recalled = b"\x80\x04\x8d\x00\x00\x10\x00\x00\x00\x00\x00".to_vec();
        recalled.extend(std::iter::repeat_n(b'a', 1 << 20));
        recalled.push(0x94);
        recalled.extend(std::iter::repeat_n(*b"h\x000", 1 << 20).flatten());
        assert_eq!(scan(&recalled), None);
    }

    #[test]
    fn text_pickles_are_recognised_and_text_is_not() {
        assert!(text_pickle(b"cos\nsystem\n(S'to"));
        assert!(text_pickle(b"(S'touch ckpt_ma"));
        assert!(text_pickle(b"(cos\nsystem\nU\x11t"));
        assert!(text_pickle(b"(dp0\nS'w'\np1\n"));
        assert!(text_pickle(b"}q\x00(X\x01\x00\x00\x00w"));
        assert!(text_pickle(b"ctorch._utils\n_re"));
        assert!(!text_pickle(b"cargo build --re"));
        assert!(!text_pickle(b"config: {lr: 0.1"));
        assert!(!text_pickle(b"{\"weight_map\": {"));
        assert!(!text_pickle(b"(hello world)..."));
    }
}
