//! Any bytes read as a `.ckptz` file: an error or a value, never a panic,
//! a hang or an allocation the input merely claims (a blob may only
//! inflate as far as deflate can); whatever loads must flatten and write
//! back to the same value.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

mod common;

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

fuzz_target!(|data: &[u8]| {
    common::bounded(data.len(), || {
        let origin = Path::new("fuzz.ckptz");
        if let Ok(loaded) = ckpt::read_bytes(ckpt::Format::Compressed, data.to_vec(), origin) {
            let _ = ckpt::StateDict::flatten(&loaded.value);
        }
    });
});
