//! Any bytes as a PyTorch Distributed Checkpoint folder in memory: the
//! input is `.metadata`, `__0_0.distcp` and `__1_0.distcp`, each after a
//! 4-byte little-endian length (the last takes the rest), so mutations
//! reach the index's pickle, its chunk tables and the items they point
//! at. Read as one tree, and by rank for 2 ranks: never a panic, a hang
//! or an allocation the index claims.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ckpt::layout::distributed::Distributed;
use libfuzzer_sys::fuzz_target;

mod common;
#[path = "common/mem.rs"]
mod mem;

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

/// The next length-prefixed part of `data`.
fn part<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let (len, rest) = match data.split_first_chunk::<4>() {
        Some((len, rest)) => (u32::from_le_bytes(*len) as usize, rest),
        None => (0, *data),
    };
    let (part, rest) = rest.split_at(len.min(rest.len()));
    *data = rest;
    part
}

fuzz_target!(|data: &[u8]| {
    common::bounded(data.len(), || {
        let mut rest = data;
        let mut files = BTreeMap::new();
        for name in [".metadata", "__0_0.distcp"] {
            files.insert(name.to_owned(), part(&mut rest).to_vec());
        }
        files.insert("__1_0.distcp".to_owned(), rest.to_vec());
        let storage = Arc::new(mem::Mem(Mutex::new(files)));
        let dir = Path::new("fuzz-dcp");
        let _ = ckpt::layout::dcp::read(dir, &*storage, &ckpt::LoadOptions::default());
        if let Ok(ckpt) = Distributed::open_in(dir, storage) {
            for rank in 0..2 {
                let _ = ckpt.load_shard(rank, 2);
            }
        }
    });
});
