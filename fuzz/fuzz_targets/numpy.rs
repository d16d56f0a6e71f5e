//! Any bytes read as `.npy` and as `.npz`: an error or a value, never a
//! panic, a hang or an allocation the input merely claims.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ckpt::read_bytes(ckpt::Format::Npy, data.to_vec(), Path::new("fuzz.npy"));
    let _ = ckpt::read_bytes(ckpt::Format::Npz, data.to_vec(), Path::new("fuzz.npz"));
});
