//! Any bytes read as a `.pth` file (zip container, pickle, storages), and
//! as a `torch.export` `.pt2` archive (configs, raw storages, pickled
//! payloads), and through format detection by contents: an error or a
//! value, never a panic, a hang or an allocation the input merely claims.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

mod common;

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

fuzz_target!(|data: &[u8]| {
    common::bounded(data.len(), || {
        let _ = ckpt::Format::detect(data, Path::new("fuzz"));
        let _ = ckpt::read_bytes(ckpt::Format::PyTorch, data.to_vec(), Path::new("fuzz.pth"));
        let _ = ckpt::read_bytes(ckpt::Format::ExportedProgram, data.to_vec(), Path::new("fuzz.pt2"));
    });
});
