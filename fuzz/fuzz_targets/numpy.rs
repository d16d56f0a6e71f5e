//! Any bytes read as `.npy` and as `.npz`: an error or a value, never a
//! panic, a hang or an allocation the input merely claims.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

mod common;

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

fuzz_target!(|data: &[u8]| {
    common::bounded(data.len(), || {
        let _ = ckpt::read_bytes(ckpt::Format::Npy, data.to_vec(), Path::new("fuzz.npy"));
        let _ = ckpt::read_bytes(ckpt::Format::Npz, data.to_vec(), Path::new("fuzz.npz"));
    });
});
