//! Any bytes as a run directory's `manifest.json`, a step's `meta.json`
//! and its checkpoint file (split at the first two 0xff bytes), in memory: opening the run
//! for reading and writing (manifest checks, rebuilds, clean-up) and
//! loading every step it lists, with hash checks off so the parsers behind
//! them are reached.
#![no_main]

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ckpt::storage::Storage;
use ckpt::store::{CheckpointManager, RunReader, StoreOptions};
use libfuzzer_sys::fuzz_target;

struct Mem(Mutex<BTreeMap<String, Vec<u8>>>);

impl Storage for Mem {
    fn root(&self) -> &Path {
        Path::new("fuzz-run")
    }
    fn create_root(&self) -> io::Result<()> {
        Ok(())
    }
    fn lock(&self) -> io::Result<Option<Box<dyn std::any::Any + Send + Sync>>> {
        Ok(Some(Box::new(())))
    }
    fn create_dir(&self, _: &str) -> io::Result<()> {
        Ok(())
    }
    fn write(&self, name: &str, write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
        let mut bytes = Vec::new();
        write(&mut bytes)?;
        self.0.lock().unwrap().insert(name.to_owned(), bytes);
        Ok(())
    }
    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.0.lock().unwrap().entry(name.to_owned()).or_default().extend_from_slice(bytes);
        Ok(())
    }
    fn sync(&self, _: &str) -> io::Result<()> {
        Ok(())
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut files = self.0.lock().unwrap();
        let moved: Vec<String> = files.keys().filter(|k| *k == from || k.starts_with(&format!("{from}/"))).cloned().collect();
        for k in moved {
            let v = files.remove(&k).unwrap();
            files.insert(format!("{to}{}", &k[from.len()..]), v);
        }
        Ok(())
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.0.lock().unwrap().retain(|k, _| k != name && !k.starts_with(&format!("{name}/")));
        Ok(())
    }
    fn list_in(&self, dir: &str) -> io::Result<Vec<String>> {
        let files = self.0.lock().unwrap();
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let mut names: Vec<String> = files
            .keys()
            .filter_map(|k| k.strip_prefix(prefix.as_str()))
            .map(|k| k.split('/').next().unwrap().to_owned())
            .collect();
        names.dedup();
        Ok(names)
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.0.lock().unwrap().get(name).cloned().ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn local_path(&self, _: &str) -> Option<PathBuf> {
        None
    }
}

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
