//! Any bytes read as a safetensors file: an error or a value, never a panic,
//! a hang or an allocation the input merely claims; whatever loads must
//! also flatten without a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

mod common;

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

fuzz_target!(|data: &[u8]| {
    common::bounded(data.len(), || {
        let origin = Path::new("fuzz.safetensors");
        if let Ok(loaded) = ckpt::read_bytes(ckpt::Format::Safetensors, data.to_vec(), origin) {
            let _ = ckpt::StateDict::flatten(&loaded.value);
        }
    });
});
