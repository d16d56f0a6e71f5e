//! Files in memory, for the targets that read through a `Storage`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ckpt::storage::Storage;

/// A folder of files held in memory.
pub struct Mem(pub Mutex<BTreeMap<String, Vec<u8>>>);

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

