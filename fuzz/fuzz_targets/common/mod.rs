//! Shared by the fuzz targets: a global allocator that counts, so each
//! target can fail when reading an input allocates more than a fixed
//! multiple of the input's length. libFuzzer's own limit is absolute
//! (`-malloc_limit_mb`), which inputs of a few KB never reach; a ratio
//! finds decompression bombs and lying sizes at any input size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes a reader may allocate per byte of input: deflate inflates at most
/// 1032:1 and a tensor may be decoded through two or three buffers
/// (`.ckptz` planes and sparse), so real inputs stay under 4096.
pub const PER_INPUT_BYTE: usize = 4096;
/// Bytes a reader may allocate whatever its input: ckpt's fixed slacks
/// (16 MiB for expanded tensor views, 1 MiB each for parse buffers,
/// pickle objects and copies, the node slack of pickle conversion).
pub const SLACK: usize = 32 << 20;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes and their peak.
pub struct Counting;

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new) };
        if !p.is_null() {
            // Counted as both alive at once, as a moving realloc is.
            grew(new);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

/// Runs `read` on an input of `len` bytes and panics (a finding) when its
/// peak allocation passes `PER_INPUT_BYTE * len + SLACK`.
pub fn bounded<T>(len: usize, read: impl FnOnce() -> T) -> T {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = read();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let limit = PER_INPUT_BYTE * len + SLACK;
    assert!(
        peak <= limit,
        "reading {len} bytes allocated {peak} at peak, past {limit} ({PER_INPUT_BYTE} per byte + {SLACK})"
    );
    out
}
