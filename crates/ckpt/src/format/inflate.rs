//! Inflating deflate (zip entries) and zlib (`.ckptz`) streams within a
//! memory budget.
//!
//! - Tensor bytes inflate into exactly the space their header states, and
//!   only when the compressed bytes could hold that much (deflate expands
//!   at most [`MAX_RATIO`] times): a size the file merely claims is never
//!   allocated. The space is reserved fallibly, so a real tensor too large
//!   for the memory left is an error, not an abort.
//! - Parse buffers (pickles, JSON headers and indexes) grow only as their
//!   data inflates, up to [`PARSE_RATIO`] times their compressed size plus
//!   [`PARSE_SLACK`]: a small file cannot become a huge one to parse.
//! - Checksums are computed on a stream through a small window, never on
//!   a second inflated copy.

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

/// Deflate cannot expand data more than 1032 times (a 258-byte match per
/// two bits); a stream claiming more cannot be telling the truth.
pub(crate) const MAX_RATIO: u64 = 1032;

/// How many times its compressed size a parse buffer may inflate to.
/// ckpt's own indexes compress about 28 times; real pickles far less.
pub(crate) const PARSE_RATIO: u64 = 64;

/// Bytes every parse buffer may inflate to whatever its compressed size.
pub(crate) const PARSE_SLACK: u64 = 1 << 20;

/// The window a stream inflates through.
const WINDOW: usize = 64 << 10;

/// Why a stream could not be inflated as asked.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Its compressed bytes (first) could never inflate to the size its
    /// header states (second).
    Impossible(u64, u64),
    /// It inflates to more than the limit.
    Longer(u64),
    /// It ended after this many bytes, fewer than expected.
    Shorter(u64, u64),
    /// It is not a valid stream, or its checksum differs.
    Damaged,
    /// The bytes its header states cannot be allocated now.
    NoMemory(u64),
}

impl Failure {
    /// The failure as a sentence.
    pub(crate) fn describe(&self) -> String {
        match self {
            Failure::Impossible(have, claim) => {
                format!("{have} compressed bytes cannot inflate to the {claim} its header states")
            }
            Failure::Longer(limit) => format!("inflates to more than {limit} bytes"),
            Failure::Shorter(got, want) => format!("inflates to {got} bytes, not {want}"),
            Failure::Damaged => "is damaged (not a valid stream, or its checksum differs)".into(),
            Failure::NoMemory(n) => format!("needs {n} bytes, more than the memory left"),
        }
    }

    /// The failure as ckpt's error: memory as [`crate::Error::OutOfMemory`],
    /// anything else through `bad`, which is given [`Failure::describe`].
    pub(crate) fn into_error(
        self,
        path: &std::path::Path,
        bad: impl FnOnce(String) -> crate::Error,
    ) -> crate::Error {
        match self {
            Failure::NoMemory(bytes) => crate::Error::OutOfMemory {
                path: path.to_owned(),
                bytes,
            },
            other => bad(other.describe()),
        }
    }
}

/// `len` zero bytes, or [`Failure::NoMemory`] where allocating them fails
/// (an address-space limit, an overcommit refusal) instead of an abort.
pub(crate) fn zeroed(len: u64) -> Result<Vec<u8>, Failure> {
    let n = usize::try_from(len).map_err(|_| Failure::NoMemory(len))?;
    let mut out = Vec::new();
    out.try_reserve_exact(n)
        .map_err(|_| Failure::NoMemory(len))?;
    out.resize(n, 0);
    Ok(out)
}

/// True when `compressed` bytes could inflate to `len`.
pub(crate) fn could_hold(compressed: usize, len: u64) -> bool {
    len <= (compressed as u64)
        .saturating_mul(MAX_RATIO)
        .saturating_add(64)
}

/// Inflates `data` (zlib when `zlib`, raw deflate otherwise) into exactly
/// `len` bytes: refused before allocating when `data` could not hold
/// them, and the moment it would inflate past them.
pub(crate) fn exact(data: &[u8], zlib: bool, len: u64) -> Result<Vec<u8>, Failure> {
    if !could_hold(data.len(), len) {
        return Err(Failure::Impossible(data.len() as u64, len));
    }
    let mut out = zeroed(len)?;
    into(data, zlib, &mut out)?;
    Ok(out)
}

/// Inflates `data` into exactly `out.len()` bytes.
pub(crate) fn into(data: &[u8], zlib: bool, out: &mut [u8]) -> Result<(), Failure> {
    use miniz_oxide::inflate::TINFLStatus;
    let len = out.len() as u64;
    match miniz_oxide::inflate::decompress_slice_iter_to_slice(
        out,
        std::iter::once(data),
        zlib,
        false,
    ) {
        Ok(n) if n as u64 == len => Ok(()),
        Ok(n) => Err(Failure::Shorter(n as u64, len)),
        Err(TINFLStatus::HasMoreOutput) => Err(Failure::Longer(len)),
        Err(_) => Err(Failure::Damaged),
    }
}

/// The most a parse buffer of `compressed` bytes may inflate to.
pub(crate) fn parse_limit(compressed: usize) -> u64 {
    (compressed as u64)
        .saturating_mul(PARSE_RATIO)
        .saturating_add(PARSE_SLACK)
}

/// Inflates a parse buffer: grown as the data inflates, never past
/// `limit` or [`parse_limit`].
pub(crate) fn parse_buffer(data: &[u8], zlib: bool, limit: u64) -> Result<Vec<u8>, Failure> {
    at_most(data, zlib, limit.min(parse_limit(data.len())))
}

/// Inflates `data` into a buffer grown as the data inflates (reserved
/// fallibly), never past `limit`.
pub(crate) fn at_most(data: &[u8], zlib: bool, limit: u64) -> Result<Vec<u8>, Failure> {
    let mut out: Vec<u8> = Vec::new();
    stream(data, zlib, limit, |chunk| {
        let need = out.len() + chunk.len();
        if need > out.capacity() {
            // Doubling, but never past the limit (the stream stops there).
            let want = need.max(out.len() * 2).min(limit.max(need as u64) as usize);
            out.try_reserve_exact(want - out.len())
                .map_err(|_| Failure::NoMemory(want as u64))?;
        }
        out.extend_from_slice(chunk);
        Ok(())
    })?;
    Ok(out)
}

/// The CRC-32 of what `data` (raw deflate) inflates to, and its length,
/// through a small window; more than `limit` bytes is a failure.
pub(crate) fn crc32(data: &[u8], limit: u64) -> Result<(u32, u64), Failure> {
    let mut hasher = crc32fast::Hasher::new();
    let len = stream(data, false, limit, |chunk| {
        hasher.update(chunk);
        Ok(())
    })?;
    Ok((hasher.finalize(), len))
}

/// Inflates `data` chunk by chunk into `sink`; returns the length, or
/// fails the moment it passes `limit`.
fn stream(
    mut data: &[u8],
    zlib: bool,
    limit: u64,
    mut sink: impl FnMut(&[u8]) -> Result<(), Failure>,
) -> Result<u64, Failure> {
    let format = if zlib {
        DataFormat::Zlib
    } else {
        DataFormat::Raw
    };
    let mut state = InflateState::new_boxed(format);
    let mut window = vec![0u8; WINDOW];
    let mut total = 0u64;
    loop {
        let result = inflate(&mut state, data, &mut window, MZFlush::None);
        data = &data[result.bytes_consumed..];
        total += result.bytes_written as u64;
        if total > limit {
            return Err(Failure::Longer(limit));
        }
        sink(&window[..result.bytes_written])?;
        match result.status {
            Ok(MZStatus::StreamEnd) => return Ok(total),
            Ok(_) => {}
            // No progress: the input ran out before the stream's end.
            Err(MZError::Buf) if result.bytes_written == 0 => return Err(Failure::Damaged),
            Err(MZError::Buf) => {}
            Err(_) => return Err(Failure::Damaged),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miniz_oxide::deflate::{compress_to_vec, compress_to_vec_zlib};

    #[test]
    fn exact_sizes_inflate_and_lies_fail_either_way() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let raw = compress_to_vec(&data, 6);
        assert_eq!(exact(&raw, false, data.len() as u64).unwrap(), data);
        assert!(matches!(
            exact(&raw, false, data.len() as u64 - 1),
            Err(Failure::Longer(_))
        ));
        assert!(matches!(
            exact(&raw, false, data.len() as u64 + 1),
            Err(Failure::Shorter(..))
        ));
        let zlib = compress_to_vec_zlib(&data, 6);
        assert_eq!(exact(&zlib, true, data.len() as u64).unwrap(), data);
        let mut damaged = zlib.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(matches!(
            exact(&damaged, true, data.len() as u64),
            Err(Failure::Damaged)
        ));
    }

    #[test]
    fn claims_past_the_ratio_are_refused_before_allocating() {
        let raw = compress_to_vec(&[0u8; 1000], 6);
        assert!(matches!(
            exact(&raw, false, 1 << 40),
            Err(Failure::Impossible(..))
        ));
        assert!(matches!(
            exact(&raw, false, u64::MAX),
            Err(Failure::Impossible(..))
        ));
    }

    #[test]
    fn parse_buffers_stop_at_their_ratio() {
        let zeros = vec![0u8; 8 << 20];
        let bomb = compress_to_vec(&zeros, 9);
        assert!(parse_limit(bomb.len()) < zeros.len() as u64);
        assert!(matches!(
            parse_buffer(&bomb, false, u64::MAX),
            Err(Failure::Longer(_))
        ));
        let text = b"{\"a\": [1, 2, 3]}".repeat(1000);
        let small = compress_to_vec(&text, 6);
        assert_eq!(parse_buffer(&small, false, u64::MAX).unwrap(), text);
        assert!(matches!(
            parse_buffer(&small, false, 100),
            Err(Failure::Longer(100))
        ));
    }

    #[test]
    fn checksums_stream_without_a_copy_and_truncation_is_damage() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let raw = compress_to_vec(&data, 6);
        let (crc, len) = crc32(&raw, u64::MAX).unwrap();
        assert_eq!((crc, len), (crc32fast::hash(&data), data.len() as u64));
        assert!(matches!(crc32(&raw, 1000), Err(Failure::Longer(1000))));
        assert!(matches!(
            crc32(&raw[..raw.len() / 2], u64::MAX),
            Err(Failure::Damaged)
        ));
    }
}
