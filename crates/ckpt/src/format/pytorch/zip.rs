//! The zip container of `torch.save` files: reading through the central
//! directory, and a streaming writer with torch's layout.
//!
//! Reading trusts nothing: the end records, every central-directory entry
//! and every local header are bounds-checked against the bytes, counts are
//! never used to pre-allocate, and deflated entries grow only as their data
//! actually inflates, up to the size they declare.

use std::collections::HashMap;
use std::io::{self, Write};
use std::ops::Range;
use std::path::Path;

use crate::format::inflate;
use crate::{Error, Result};

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const END_SIG: u32 = 0x0605_4b50;
const END64_SIG: u32 = 0x0606_4b50;
const END64_LOCATOR_SIG: u32 = 0x0706_4b50;
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;

/// One entry of the archive, as the central directory describes it.
#[derive(Debug, Clone)]
pub struct ZipEntry {
    /// The full name, prefix included (`archive/data/0`).
    pub name: String,
    /// 0 stored, 8 deflated.
    pub method: u16,
    /// The CRC-32 the directory records.
    pub crc32: u32,
    /// The uncompressed size the directory records.
    pub size: u64,
    /// Where the entry's (possibly compressed) bytes lie in the file.
    pub data: Range<usize>,
}

/// A parsed archive: its entries in directory order.
#[derive(Debug, Clone)]
pub struct ZipArchive {
    /// The entries.
    pub entries: Vec<ZipEntry>,
    /// Entry index by name (the first entry of a repeated name wins).
    by_name: HashMap<String, usize>,
}

/// Little-endian reads that fail with a truncation error naming the field.
struct Reader<'a> {
    bytes: &'a [u8],
    path: &'a Path,
}

impl Reader<'_> {
    fn slice(&self, at: usize, len: usize, what: &'static str) -> Result<&[u8]> {
        at.checked_add(len)
            .and_then(|end| self.bytes.get(at..end))
            .ok_or_else(|| Error::Truncated {
                path: self.path.to_owned(),
                offset: at as u64,
                what,
                needed: len as u64,
                available: self.bytes.len().saturating_sub(at) as u64,
            })
    }

    fn u16(&self, at: usize, what: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.slice(at, 2, what)?.try_into().unwrap_or_default(),
        ))
    }

    fn u32(&self, at: usize, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.slice(at, 4, what)?.try_into().unwrap_or_default(),
        ))
    }

    fn u64(&self, at: usize, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.slice(at, 8, what)?.try_into().unwrap_or_default(),
        ))
    }
}

fn bad(path: &Path, offset: usize, problem: &'static str) -> Error {
    Error::BadZip {
        path: path.to_owned(),
        offset: offset as u64,
        problem,
    }
}

fn to_usize(v: u64, path: &Path, offset: usize) -> Result<usize> {
    usize::try_from(v).map_err(|_| bad(path, offset, "an offset does not fit in memory"))
}

/// An entry as the central directory describes it.
#[derive(Debug, Clone)]
pub(crate) struct Central {
    /// The entry's full name.
    pub name: String,
    /// 0 stored, 8 deflated.
    pub method: u16,
    /// The CRC-32 of its contents.
    pub crc32: u32,
    /// Its size, uncompressed.
    pub size: u64,
    /// Its size as stored.
    pub compressed: u64,
    /// Where its local header starts in the archive.
    pub local: u64,
}

/// The central directory of an archive whose bytes from `start` on are
/// `bytes` (the whole archive when `start` is 0): the end records found
/// at the end of `bytes`, the directory read where they say, which must
/// lie within `bytes`.
pub(crate) fn directory(bytes: &[u8], start: u64, path: &Path) -> Result<Vec<Central>> {
    let r = Reader { bytes, path };
    let end = find_end(bytes)
        .ok_or_else(|| bad(path, bytes.len(), "no end-of-central-directory record"))?;
    let mut count = r.u16(end + 10, "the end record")? as u64;
    let mut dir_size = r.u32(end + 12, "the end record")? as u64;
    let mut dir_offset = r.u32(end + 16, "the end record")? as u64;
    // torch always writes the zip64 records; use them when present.
    if end >= 20 && r.u32(end - 20, "the zip64 locator")? == END64_LOCATOR_SIG {
        let at = r.u64(end - 12, "the zip64 locator")?;
        let at = to_usize(at.wrapping_sub(start), path, end - 12)?;
        if at.checked_add(56).is_none_or(|e| e > end)
            || r.u32(at, "the zip64 end record")? != END64_SIG
        {
            return Err(bad(
                path,
                at,
                "the zip64 locator points at no zip64 end record",
            ));
        }
        count = r.u64(at + 32, "the zip64 end record")?;
        dir_size = r.u64(at + 40, "the zip64 end record")?;
        dir_offset = r.u64(at + 48, "the zip64 end record")?;
    }
    let dir_start = dir_offset
        .checked_sub(start)
        .ok_or_else(|| bad(path, end, "the central directory starts before these bytes"))?;
    let dir_start = to_usize(dir_start, path, end)?;
    let dir_len = to_usize(dir_size, path, end)?;
    r.slice(dir_start, dir_len, "the central directory")?;

    // Each central entry takes at least 46 bytes, which bounds the count
    // by what is really there.
    let mut entries = Vec::with_capacity((count as usize).min(dir_len / 46));
    let mut at = dir_start;
    for _ in 0..count {
        if r.u32(at, "a central directory entry")? != CENTRAL_SIG {
            return Err(bad(
                path,
                at,
                "a central directory entry has a bad signature",
            ));
        }
        let method = r.u16(at + 10, "a central directory entry")?;
        let crc32 = r.u32(at + 16, "a central directory entry")?;
        let mut compressed = r.u32(at + 20, "a central directory entry")? as u64;
        let mut size = r.u32(at + 24, "a central directory entry")? as u64;
        let name_len = r.u16(at + 28, "a central directory entry")? as usize;
        let extra_len = r.u16(at + 30, "a central directory entry")? as usize;
        let comment_len = r.u16(at + 32, "a central directory entry")? as usize;
        let mut local = r.u32(at + 42, "a central directory entry")? as u64;
        let name =
            String::from_utf8_lossy(r.slice(at + 46, name_len, "an entry name")?).into_owned();
        let extra = r.slice(at + 46 + name_len, extra_len, "an entry's extra field")?;
        read_zip64_extra(extra, &mut size, &mut compressed, &mut local);
        entries.push(Central {
            name,
            method,
            crc32,
            size,
            compressed,
            local,
        });
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(entries)
}

/// Where a local header's entry data starts, from the header's first 30
/// bytes (at `local` in the archive).
pub(crate) fn data_start(header: &[u8], local: u64, path: &Path) -> Result<u64> {
    let r = Reader {
        bytes: header,
        path,
    };
    if r.u32(0, "a local header")? != LOCAL_SIG {
        return Err(bad(path, 0, "a local header has a bad signature"));
    }
    let name = r.u16(26, "a local header")? as u64;
    let extra = r.u16(28, "a local header")? as u64;
    local
        .checked_add(30 + name + extra)
        .ok_or_else(|| bad(path, 0, "a local header lies past any archive"))
}

impl ZipArchive {
    /// Parses the central directory of the archive held in `bytes`.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<ZipArchive> {
        let r = Reader { bytes, path };
        let central = directory(bytes, 0, path)?;
        let mut entries = Vec::with_capacity(central.len());
        let mut locals = Vec::with_capacity(central.len());
        for c in central {
            let local = to_usize(c.local, path, 0)?;
            if r.u32(local, "a local header")? != LOCAL_SIG {
                return Err(bad(path, local, "a local header has a bad signature"));
            }
            let local_name = r.u16(local + 26, "a local header")? as usize;
            let local_extra = r.u16(local + 28, "a local header")? as usize;
            let data_start = local + 30 + local_name + local_extra;
            let data_len = to_usize(c.compressed, path, local)?;
            r.slice(data_start, data_len, "an entry's data")?;
            if c.method == 0 && c.compressed != c.size {
                return Err(bad(path, local, "a stored entry's sizes disagree"));
            }
            entries.push(ZipEntry {
                name: c.name,
                method: c.method,
                crc32: c.crc32,
                size: c.size,
                data: data_start..data_start + data_len,
            });
            locals.push(local);
        }
        // Entries may not share bytes: overlapping entries are how zip bombs
        // multiply one compressed block (Python's zipfile refuses them too).
        let mut spans: Vec<(usize, usize)> = locals
            .iter()
            .zip(&entries)
            .map(|(&l, e)| (l, e.data.end))
            .collect();
        spans.sort_unstable();
        if let Some(w) = spans.windows(2).find(|w| w[1].0 < w[0].1) {
            return Err(bad(path, w[1].0, "two entries overlap"));
        }
        let mut by_name = HashMap::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            // Readers disagree on which of two same-named entries counts
            // (torch takes the last): ambiguity is an error.
            if by_name.insert(e.name.clone(), i).is_some() {
                return Err(bad(path, e.data.start, "two entries have the same name"));
            }
        }
        Ok(ZipArchive { entries, by_name })
    }

    /// The folder every entry sits under: what precedes the first `/` of the
    /// first entry (torch names it after the file, or `archive`).
    pub fn prefix(&self, path: &Path) -> Result<&str> {
        self.entries
            .first()
            .and_then(|e| e.name.split_once('/'))
            .map(|(prefix, _)| prefix)
            .ok_or_else(|| bad(path, 0, "the archive has no top folder"))
    }

    /// Finds an entry by its full name.
    pub fn get(&self, name: &str) -> Option<&ZipEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }
}

/// The entry's contents: a borrowed range when stored, inflated bytes
/// (exactly the declared size) when deflated.
pub enum Contents {
    /// Stored uncompressed at this range of the file.
    Stored(Range<usize>),
    /// Deflated; these are the inflated bytes.
    Inflated(Vec<u8>),
}

/// What an entry's bytes are for, which bounds how far it may inflate
/// (deflate's ratio for tensors, a small multiple for parse buffers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Tensor bytes: exactly the declared size, allocated only when the
    /// compressed bytes could hold it.
    Tensor,
    /// A pickle, JSON or a marker to parse: a bounded multiple of its
    /// compressed size.
    Parse,
}

impl ZipEntry {
    /// True when the entry's contents match the CRC-32 the directory
    /// records. Readers do not check it (torch does not); `verify` does,
    /// inflating deflated entries through a small window, not a copy.
    pub fn crc_matches(&self, bytes: &[u8], path: &Path) -> Result<bool> {
        let data = &bytes[self.data.clone()];
        let crc = match self.method {
            0 => crc32fast::hash(data),
            8 => {
                let (crc, len) = inflate::crc32(data, self.size)
                    .map_err(|f| f.into_error(path, |p| self.bad(path, p)))?;
                if len != self.size {
                    return Ok(false);
                }
                crc
            }
            _ => return Err(self.unknown_method(path)),
        };
        Ok(crc == self.crc32)
    }

    /// Reads the entry's contents from the archive's bytes.
    pub fn contents(&self, bytes: &[u8], path: &Path, purpose: Purpose) -> Result<Contents> {
        let data = &bytes[self.data.clone()];
        let inflated = match (self.method, purpose) {
            (0, _) => return Ok(Contents::Stored(self.data.clone())),
            (8, Purpose::Tensor) => inflate::exact(data, false, self.size),
            (8, Purpose::Parse) => inflate::parse_buffer(data, false, self.size).and_then(|out| {
                match out.len() as u64 == self.size {
                    true => Ok(out),
                    false => Err(inflate::Failure::Shorter(out.len() as u64, self.size)),
                }
            }),
            _ => return Err(self.unknown_method(path)),
        };
        inflated
            .map(Contents::Inflated)
            .map_err(|f| f.into_error(path, |p| self.bad(path, p)))
    }

    fn unknown_method(&self, path: &Path) -> Error {
        bad(
            path,
            self.data.start,
            "an entry uses a compression method other than stored or deflate",
        )
    }

    fn bad(&self, path: &Path, problem: String) -> Error {
        Error::BadArchive {
            path: path.to_owned(),
            entry: self.name.clone(),
            problem: format!("the deflated entry {problem}"),
        }
    }
}

/// Reads sizes and offset from a zip64 extra field (ID 1), which holds,
/// in order, each of them whose 32-bit field is saturated.
fn read_zip64_extra(mut extra: &[u8], size: &mut u64, compressed: &mut u64, local: &mut u64) {
    while extra.len() >= 4 {
        let id = u16::from_le_bytes([extra[0], extra[1]]);
        let len = u16::from_le_bytes([extra[2], extra[3]]) as usize;
        let Some(body) = extra.get(4..4 + len) else {
            return;
        };
        if id == 1 {
            let mut fields = body
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()));
            for field in [size, compressed, local] {
                if *field == 0xFFFF_FFFF {
                    match fields.next() {
                        Some(v) => *field = v,
                        None => return,
                    }
                }
            }
            return;
        }
        extra = &extra[4 + len..];
    }
}

fn find_end(bytes: &[u8]) -> Option<usize> {
    let last = bytes.len().checked_sub(22)?;
    let first = last.saturating_sub(0xFFFF);
    (first..=last)
        .rev()
        .find(|&at| bytes[at..at + 4] == END_SIG.to_le_bytes())
}

/// Writes an archive the way torch does: every entry stored, its data
/// aligned to 64 bytes by an `FB` padding extra field, a data descriptor
/// after each non-empty entry, then the central directory and the zip64 and
/// classic end records. Data streams through; only the small directory is
/// kept in memory.
pub struct ZipWriter<W: Write> {
    out: W,
    position: u64,
    written: Vec<(String, u32, u64, u64)>,
}

/// The alignment torch gives every entry's data.
pub const ALIGNMENT: u64 = 64;

/// Entries at least this large have their CRC computed on another thread
/// while they are written.
const PARALLEL_CRC: u64 = 1 << 20;

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    parts.iter().for_each(|p| crc.update(p));
    crc.finalize()
}

impl<W: Write> ZipWriter<W> {
    /// A writer at the start of `out`.
    pub fn new(out: W) -> Self {
        ZipWriter {
            out,
            position: 0,
            written: Vec::new(),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    /// Writes one entry whose data is the concatenation of `parts`.
    pub fn entry(&mut self, name: &str, parts: &[&[u8]]) -> io::Result<()> {
        let offset = self.position;
        let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let zip64 = size >= 0xFFFF_FFFF || offset >= 0xFFFF_FFFF;
        let flags: u16 = if size == 0 { 0x0800 } else { 0x0808 };
        let zip64_extra_len = if zip64 { 4 + 16 + 8 } else { 0 };
        let start = offset + 30 + name.len() as u64 + zip64_extra_len + 4;
        let pad = (ALIGNMENT - start % ALIGNMENT) % ALIGNMENT;

        let mut header = Vec::with_capacity(30 + name.len() + 96);
        header.extend_from_slice(&LOCAL_SIG.to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes()); // version needed
        header.extend_from_slice(&flags.to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes()); // stored
        header.extend_from_slice(&[0; 4]); // time, date
        header.extend_from_slice(&[0; 4]); // crc (in the descriptor)
        let sizes: u32 = if zip64 { 0xFFFF_FFFF } else { 0 };
        header.extend_from_slice(&sizes.to_le_bytes());
        header.extend_from_slice(&sizes.to_le_bytes());
        header.extend_from_slice(&(name.len() as u16).to_le_bytes());
        header.extend_from_slice(&((zip64_extra_len + 4 + pad) as u16).to_le_bytes());
        header.extend_from_slice(name.as_bytes());
        if zip64 {
            header.extend_from_slice(&1u16.to_le_bytes());
            header.extend_from_slice(&24u16.to_le_bytes());
            header.extend_from_slice(&[0; 24]);
        }
        header.extend_from_slice(&0x4246u16.to_le_bytes()); // "FB"
        header.extend_from_slice(&(pad as u16).to_le_bytes());
        header.resize(header.len() + pad as usize, b'Z');
        self.put(&header)?;

        let crc = if size >= PARALLEL_CRC {
            // Checksum on a second core while this one writes.
            std::thread::scope(|scope| {
                let worker = scope.spawn(|| crc32(parts));
                for part in parts {
                    self.put(part)?;
                }
                Ok::<u32, io::Error>(worker.join().unwrap_or_else(|_| crc32(parts)))
            })?
        } else {
            for part in parts {
                self.put(part)?;
            }
            crc32(parts)
        };
        if size > 0 {
            let mut descriptor = Vec::with_capacity(24);
            descriptor.extend_from_slice(&DESCRIPTOR_SIG.to_le_bytes());
            descriptor.extend_from_slice(&crc.to_le_bytes());
            if zip64 {
                descriptor.extend_from_slice(&size.to_le_bytes());
                descriptor.extend_from_slice(&size.to_le_bytes());
            } else {
                descriptor.extend_from_slice(&(size as u32).to_le_bytes());
                descriptor.extend_from_slice(&(size as u32).to_le_bytes());
            }
            self.put(&descriptor)?;
        }
        self.written.push((name.to_owned(), crc, size, offset));
        Ok(())
    }

    /// Writes the central directory and end records and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        let dir_start = self.position;
        let written = std::mem::take(&mut self.written);
        for (name, crc, size, offset) in &written {
            let zip64 = *size >= 0xFFFF_FFFF || *offset >= 0xFFFF_FFFF;
            let flags: u16 = if *size == 0 { 0x0800 } else { 0x0808 };
            let mut extra = Vec::new();
            if zip64 {
                let mut body = Vec::new();
                if *size >= 0xFFFF_FFFF {
                    body.extend_from_slice(&size.to_le_bytes());
                    body.extend_from_slice(&size.to_le_bytes());
                }
                if *offset >= 0xFFFF_FFFF {
                    body.extend_from_slice(&offset.to_le_bytes());
                }
                extra.extend_from_slice(&1u16.to_le_bytes());
                extra.extend_from_slice(&(body.len() as u16).to_le_bytes());
                extra.extend_from_slice(&body);
            }
            let clamp = |v: u64| v.min(0xFFFF_FFFF) as u32;
            let mut entry = Vec::with_capacity(46 + name.len() + extra.len());
            entry.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
            entry.extend_from_slice(&0u16.to_le_bytes()); // made by
            entry.extend_from_slice(&0u16.to_le_bytes()); // needed
            entry.extend_from_slice(&flags.to_le_bytes());
            entry.extend_from_slice(&0u16.to_le_bytes()); // stored
            entry.extend_from_slice(&[0; 4]); // time, date
            entry.extend_from_slice(&crc.to_le_bytes());
            entry.extend_from_slice(&clamp(*size).to_le_bytes());
            entry.extend_from_slice(&clamp(*size).to_le_bytes());
            entry.extend_from_slice(&(name.len() as u16).to_le_bytes());
            entry.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            entry.extend_from_slice(&[0; 6]); // comment len, disk, internal attrs
            entry.extend_from_slice(&[0; 4]); // external attrs
            entry.extend_from_slice(&clamp(*offset).to_le_bytes());
            entry.extend_from_slice(name.as_bytes());
            entry.extend_from_slice(&extra);
            self.put(&entry)?;
        }
        let dir_size = self.position - dir_start;
        let end64_at = self.position;
        let count = written.len() as u64;
        let mut tail = Vec::with_capacity(56 + 20 + 22);
        // An empty archive is the classic end record alone, as Python's
        // zipfile writes it: NumPy recognises a zip only by `PK\x03\x04`
        // or `PK\x05\x06` at the start.
        if count > 0 {
            zip64_end(&mut tail, count, dir_size, dir_start, end64_at);
        }
        tail.extend_from_slice(&END_SIG.to_le_bytes());
        tail.extend_from_slice(&[0; 4]); // disk numbers
        let short_count = count.min(0xFFFF) as u16;
        tail.extend_from_slice(&short_count.to_le_bytes());
        tail.extend_from_slice(&short_count.to_le_bytes());
        tail.extend_from_slice(&(dir_size.min(0xFFFF_FFFF) as u32).to_le_bytes());
        tail.extend_from_slice(&(dir_start.min(0xFFFF_FFFF) as u32).to_le_bytes());
        tail.extend_from_slice(&0u16.to_le_bytes()); // comment
        self.put(&tail)?;
        Ok(self.out)
    }
}

/// The zip64 end record and its locator.
fn zip64_end(tail: &mut Vec<u8>, count: u64, dir_size: u64, dir_start: u64, end64_at: u64) {
    tail.extend_from_slice(&END64_SIG.to_le_bytes());
    tail.extend_from_slice(&44u64.to_le_bytes());
    tail.extend_from_slice(&0x031Eu16.to_le_bytes());
    tail.extend_from_slice(&45u16.to_le_bytes());
    tail.extend_from_slice(&[0; 8]); // disk numbers
    tail.extend_from_slice(&count.to_le_bytes());
    tail.extend_from_slice(&count.to_le_bytes());
    tail.extend_from_slice(&dir_size.to_le_bytes());
    tail.extend_from_slice(&dir_start.to_le_bytes());
    tail.extend_from_slice(&END64_LOCATOR_SIG.to_le_bytes());
    tail.extend_from_slice(&0u32.to_le_bytes());
    tail.extend_from_slice(&end64_at.to_le_bytes());
    tail.extend_from_slice(&1u32.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = ZipWriter::new(Vec::new());
        for (name, data) in entries {
            w.entry(name, &[data]).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn written_archives_read_back_with_aligned_data() {
        let bytes = archive(&[
            ("a/data.pkl", b"pickle"),
            ("a/data/0", &[7; 100]),
            ("a/empty", b""),
        ]);
        let zip = ZipArchive::parse(&bytes, Path::new("t.pth")).unwrap();
        assert_eq!(zip.prefix(Path::new("t.pth")).unwrap(), "a");
        let data = zip.get("a/data/0").unwrap();
        assert_eq!(data.data.start % 64, 0);
        assert_eq!(&bytes[data.data.clone()], &[7; 100]);
        assert_eq!(data.crc32, crc32fast::hash(&[7; 100]));
        assert_eq!(zip.get("a/empty").unwrap().data.len(), 0);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = archive(&[("a/data.pkl", b"pickle"), ("a/data/0", &[7; 100])]);
        for len in 0..bytes.len() {
            assert!(
                ZipArchive::parse(&bytes[..len], Path::new("t.pth")).is_err(),
                "{len}"
            );
        }
    }

    #[test]
    fn overlapping_entries_are_refused() {
        let mut bytes = archive(&[("a/x", &[1; 100]), ("a/y", &[2; 100])]);
        // Point the second central entry at the first local header.
        let sig = CENTRAL_SIG.to_le_bytes();
        let second = (0..bytes.len() - 4)
            .filter(|&i| bytes[i..i + 4] == sig)
            .nth(1)
            .unwrap();
        bytes[second + 42..second + 46].copy_from_slice(&0u32.to_le_bytes());
        let err = ZipArchive::parse(&bytes, Path::new("t.pth")).unwrap_err();
        assert!(err.to_string().contains("overlap"), "{err}");
    }

    #[test]
    fn huge_entry_counts_do_not_preallocate() {
        let mut bytes = archive(&[("a/x", b"1")]);
        let end = find_end(&bytes).unwrap();
        // Claim 2^64-1 entries in the zip64 record.
        let end64 = u64::from_le_bytes(bytes[end - 12..end - 4].try_into().unwrap()) as usize;
        bytes[end64 + 32..end64 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(ZipArchive::parse(&bytes, Path::new("t.pth")).is_err());
    }
}
