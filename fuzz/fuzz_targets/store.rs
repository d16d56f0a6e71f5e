//! Any bytes as a run directory's `manifest.json`, a step's `meta.json`
//! and its checkpoint file (split at the first two 0xff bytes), in memory: opening the run
//! for reading and writing (manifest checks, rebuilds, clean-up) and
//! loading every step it lists, with hash checks off so the parsers behind
//! them are reached.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ckpt::store::{CheckpointManager, RunReader, StoreOptions};
use libfuzzer_sys::fuzz_target;

#[path = "common/mem.rs"]
mod mem;
use mem::Mem;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0xff);
    let manifest = parts.next().unwrap_or_default().to_vec();
    let meta = parts.next().unwrap_or_default().to_vec();
    let file = parts.next().unwrap_or_default().to_vec();
    let mut files = BTreeMap::new();
    files.insert("manifest.json".to_owned(), manifest);
    files.insert("step-00000001/meta.json".to_owned(), meta);
    files.insert("step-00000001/checkpoint.safetensors".to_owned(), file.clone());
    files.insert("step-00000001/checkpoint.pth".to_owned(), file.clone());
    // An incremental step: the file is its index (whose chunks are absent).
    files.insert("step-00000001/checkpoint.index.json".to_owned(), file);
    let storage = Arc::new(Mem(Mutex::new(files)));
    let options = StoreOptions::default().verify(false);
    if let Ok(reader) = RunReader::open_with(storage.clone(), options.clone()) {
        for step in reader.steps() {
            let _ = reader.load(step.step);
        }
        let _ = reader.history();
    }
    if let Ok(store) = CheckpointManager::open_with(storage, options) {
        let _ = store.restore_latest();
    }
});
