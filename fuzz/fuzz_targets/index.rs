//! Any bytes read as a checkpoint index (`*.index.json`): Hugging Face's
//! sharded index or ckpt's multi-rank index. The files it names do not
//! exist, so everything past the index's own checks is an error too —
//! never a panic, a hang or an allocation the index claims.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

mod common;

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

fuzz_target!(|data: &[u8]| {
    common::bounded(data.len(), || {
        let origin = Path::new("/nonexistent-ckpt-fuzz/ckpt.index.json");
        let _ = ckpt::read_bytes(ckpt::Format::ShardedIndex, data.to_vec(), origin);
    });
});
