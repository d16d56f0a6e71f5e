//! Content hashes for the store: XXH3-64 over 8 MiB chunks, hashed on all
//! cores, combined by hashing the chunk hashes. Fast enough that verifying
//! on every load costs little next to reading the bytes.

use std::thread;

use xxhash_rust::xxh3::xxh3_64;

const CHUNK: usize = 8 << 20;

/// The store's hash of `bytes`, as 16 hex digits.
pub(crate) fn content_hash(bytes: &[u8]) -> String {
    content_hash_reporting(bytes, None)
}

/// [`content_hash`], calling `progress(bytes hashed, total)` after each
/// chunk (from the hashing threads).
pub(crate) fn content_hash_reporting(
    bytes: &[u8],
    progress: Option<&(dyn Fn(u64, u64) + Sync)>,
) -> String {
    let done = std::sync::atomic::AtomicU64::new(0);
    let total = bytes.len() as u64;
    let hash_one = |c: &[u8]| {
        let h = xxh3_64(c);
        if let Some(report) = progress {
            let now = done.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed)
                + c.len() as u64;
            report(now, total);
        }
        h
    };
    let chunks: Vec<&[u8]> = if bytes.is_empty() {
        vec![bytes]
    } else {
        bytes.chunks(CHUNK).collect()
    };
    let threads = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(chunks.len());
    let mut hashes = vec![0u64; chunks.len()];
    if threads <= 1 {
        for (h, c) in hashes.iter_mut().zip(&chunks) {
            *h = hash_one(c);
        }
    } else {
        let per = chunks.len().div_ceil(threads);
        let hash_one = &hash_one;
        thread::scope(|scope| {
            for (hs, cs) in hashes.chunks_mut(per).zip(chunks.chunks(per)) {
                scope.spawn(move || {
                    for (h, c) in hs.iter_mut().zip(cs) {
                        *h = hash_one(c);
                    }
                });
            }
        });
    }
    let combined: Vec<u8> = hashes.iter().flat_map(|h| h.to_le_bytes()).collect();
    format!("{:016x}", xxh3_64(&combined))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_flipped_byte_changes_the_hash_and_chunking_is_stable() {
        let data: Vec<u8> = (0..CHUNK * 2 + 1000)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let h = content_hash(&data);
        assert_eq!(h.len(), 16);
        assert_eq!(h, content_hash(&data.clone()));
        for at in [0, CHUNK - 1, CHUNK, data.len() - 1] {
            let mut bad = data.clone();
            bad[at] ^= 0x40;
            assert_ne!(content_hash(&bad), h, "flip at {at}");
        }
        assert_ne!(content_hash(b""), content_hash(b"\0"));
    }
}

/// The same hash as [`content_hash`], computed while the bytes stream past
/// (one core; writing is slower than hashing).
pub(crate) struct StreamHasher {
    chunk: xxhash_rust::xxh3::Xxh3,
    in_chunk: usize,
    hashes: Vec<u8>,
    total: u64,
}

impl StreamHasher {
    pub(crate) fn new() -> StreamHasher {
        StreamHasher {
            chunk: xxhash_rust::xxh3::Xxh3::new(),
            in_chunk: 0,
            hashes: Vec::new(),
            total: 0,
        }
    }

    pub(crate) fn update(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = (CHUNK - self.in_chunk).min(bytes.len());
            self.chunk.update(&bytes[..take]);
            self.in_chunk += take;
            bytes = &bytes[take..];
            if self.in_chunk == CHUNK {
                self.hashes
                    .extend_from_slice(&self.chunk.digest().to_le_bytes());
                self.chunk.reset();
                self.in_chunk = 0;
            }
        }
    }

    /// The hash and the number of bytes seen.
    pub(crate) fn finish(mut self) -> (String, u64) {
        if self.in_chunk > 0 || self.hashes.is_empty() {
            self.hashes
                .extend_from_slice(&self.chunk.digest().to_le_bytes());
        }
        (format!("{:016x}", xxh3_64(&self.hashes)), self.total)
    }
}

/// A writer that hashes what passes through it.
pub(crate) struct HashingWriter<'a> {
    pub out: &'a mut dyn std::io::Write,
    pub hasher: StreamHasher,
}

impl std::io::Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    #[test]
    fn streaming_equals_one_shot_for_any_split() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 77] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            for split in [1, 4096, CHUNK / 3 + 5] {
                if split == 1 && len > 4096 {
                    continue;
                }
                let mut h = StreamHasher::new();
                for part in data.chunks(split.max(1)) {
                    h.update(part);
                }
                assert_eq!(
                    h.finish(),
                    (content_hash(&data), len as u64),
                    "len {len} split {split}"
                );
            }
        }
    }
}
