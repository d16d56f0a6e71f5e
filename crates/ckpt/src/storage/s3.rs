//! S3-compatible object storage (feature `s3`), through the `object_store`
//! crate: [`ObjectStorage`], a [`Storage`] on a bucket prefix, which runs
//! and single files (`s3://bucket/key` anywhere a path is taken) go
//! through. One tokio runtime serves the whole process, and one client
//! each bucket (per endpoint and settings): opening a prefix costs no
//! connection set-up after the first.
//!
//! Endpoint, region and credentials come from the usual `AWS_*`
//! environment variables (`AWS_ENDPOINT`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, ...).
//! Requests are retried with exponential backoff on transient errors
//! (`object_store`'s retry policy). Objects past [`PART`] bytes are
//! uploaded in parts with at most one part in memory; a failed upload is
//! aborted.
//!
//! There is no rename on object storage: the store writes a step's objects
//! in place and commits by writing `manifest.json` last (one PUT, atomic).
//! The writer lock is a `.lock` object created only if absent; a lock left
//! by a process of this host that is no longer running is taken over.

use std::any::Any;
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::runtime::Runtime;

use super::Storage;

/// The size of each uploaded part of a large object (S3 needs at least
/// 5 MiB for every part but the last).
pub const PART: usize = 8 << 20;

/// Parts uploading at once: the memory a large upload holds is at most
/// this many parts plus the one being filled.
pub const PARTS_IN_FLIGHT: usize = 4;

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The I/O error for a failed request, of the kind that says what went
/// wrong where there is one, with the client's error as its source.
fn to_io(e: object_store::Error) -> io::Error {
    use object_store::Error as E;
    let kind = match &e {
        E::NotFound { .. } => io::ErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => io::ErrorKind::AlreadyExists,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
        E::NotSupported { .. } | E::NotImplemented { .. } => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// A bucket and key prefix on S3-compatible storage.
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: PathBuf,
}

/// The process's runtime for object storage: `block_on` may be called
/// from any thread outside it (background saves run on their own), and
/// part uploads run on its workers.
fn runtime() -> io::Result<&'static Runtime> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ckpt-s3")
        .enable_all()
        .build()?;
    Ok(RUNTIME.get_or_init(|| built))
}

/// The client for `bucket` with `options` and the `AWS_*` environment as
/// they are now: built once, then shared by every prefix of the bucket.
fn client(bucket: &str, options: &ObjectOptions) -> io::Result<Arc<dyn ObjectStore>> {
    static CLIENTS: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .collect();
    env.sort();
    let key = format!("{bucket}\n{options:?}\n{env:?}");
    let clients = CLIENTS.get_or_init(Default::default);
    if let Some(found) = clients.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(found.clone());
    }
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = &options.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let mut retry = object_store::RetryConfig::default();
    if let Some(n) = options.max_retries {
        retry.max_retries = n;
    }
    if let Some(t) = options.retry_timeout {
        retry.retry_timeout = t;
    }
    let store: Arc<dyn ObjectStore> = Arc::new(builder.with_retry(retry).build().map_err(other)?);
    let mut clients = clients.lock().unwrap_or_else(|p| p.into_inner());
    Ok(clients.entry(key).or_insert(store).clone())
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectStorage({})", self.url.display())
    }
}

/// Settings beyond the `AWS_*` environment variables.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ObjectOptions {
    /// The endpoint (`http://127.0.0.1:9000`), instead of `AWS_ENDPOINT`.
    pub endpoint: Option<String>,
    /// Retries of a failed request (default: `object_store`'s, 10).
    pub max_retries: Option<usize>,
    /// How long to keep retrying one request (default: 3 minutes).
    pub retry_timeout: Option<std::time::Duration>,
}

impl ObjectStorage {
    /// The prefix `url` (`s3://bucket/some/run`), configured from the
    /// `AWS_*` environment variables.
    pub fn from_url(url: &Path) -> io::Result<ObjectStorage> {
        ObjectStorage::from_url_with(url, &ObjectOptions::default())
    }

    /// [`ObjectStorage::from_url`] with `options`.
    pub fn from_url_with(url: &Path, options: &ObjectOptions) -> io::Result<ObjectStorage> {
        let text = url
            .to_str()
            .and_then(|u| u.strip_prefix("s3://"))
            .ok_or_else(|| other(format!("{} is not an s3:// URL", url.display())))?;
        let (bucket, prefix) = text.split_once('/').unwrap_or((text, ""));
        if bucket.len() < 3 {
            return Err(other(format!(
                "{}: a bucket name has at least 3 characters",
                url.display()
            )));
        }
        runtime()?;
        let store = client(bucket, options)?;
        Ok(ObjectStorage {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
            url: url.to_owned(),
        })
    }

    fn key(&self, name: &str) -> Key {
        match (self.prefix.is_empty(), name.is_empty()) {
            (true, _) => Key::from(name),
            (false, true) => Key::from(self.prefix.as_str()),
            (false, false) => Key::from(format!("{}/{name}", self.prefix)),
        }
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        // Built in `from_url_with`, before any storage exists.
        runtime().expect("the runtime").block_on(f)
    }

    /// The whole object `name` (relative to the prefix).
    pub fn get(&self, name: &str) -> io::Result<Vec<u8>> {
        let key = self.key(name);
        self.block_on(async {
            let bytes = self.store.get(&key).await.map_err(to_io)?.bytes().await;
            Ok(bytes.map_err(to_io)?.to_vec())
        })
    }

    /// Uploads what `write` produces as object `name`, in parts past
    /// [`PART`] bytes; the object appears whole or not at all.
    pub fn put(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut upload = Upload {
            storage: self,
            key: self.key(name),
            buffer: Vec::with_capacity(PART.min(1 << 20)),
            multipart: None,
            in_flight: std::collections::VecDeque::new(),
        };
        let result = write(&mut upload).and_then(|()| upload.finish());
        if result.is_err() {
            for part in upload.in_flight.drain(..) {
                part.abort();
            }
            if let Some(mut m) = upload.multipart.take() {
                let _ = self.block_on(m.abort());
            }
        }
        result
    }

    fn put_bytes(&self, name: &str, bytes: &[u8], mode: PutMode) -> io::Result<()> {
        let key = self.key(name);
        let payload = PutPayload::from(bytes.to_vec());
        let options = PutOptions {
            mode,
            ..Default::default()
        };
        self.block_on(self.store.put_opts(&key, payload, options))
            .map(|_| ())
            .map_err(to_io)
    }
}

type PartUpload = tokio::task::JoinHandle<object_store::Result<()>>;

/// An object being written: bytes gather into one part; the first full
/// part starts a multipart upload, whose parts upload
/// [`PARTS_IN_FLIGHT`] at a time.
struct Upload<'a> {
    storage: &'a ObjectStorage,
    key: Key,
    buffer: Vec<u8>,
    multipart: Option<Box<dyn MultipartUpload>>,
    in_flight: std::collections::VecDeque<PartUpload>,
}

impl Upload<'_> {
    /// Waits for the oldest part in flight.
    fn wait_one(&mut self) -> io::Result<()> {
        let Some(part) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match self.storage.block_on(part) {
            Ok(result) => result.map_err(to_io),
            Err(e) => Err(other(e)),
        }
    }

    fn flush_part(&mut self) -> io::Result<()> {
        let part = PutPayload::from(std::mem::take(&mut self.buffer));
        let s = self.storage;
        if self.multipart.is_none() {
            self.multipart = Some(
                s.block_on(s.store.put_multipart(&self.key))
                    .map_err(to_io)?,
            );
        }
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.wait_one()?;
        }
        let m = self.multipart.as_mut().expect("started above");
        // Part numbers are taken in call order; the upload runs on the
        // runtime's worker.
        let upload = m.put_part(part);
        self.in_flight.push_back(runtime()?.spawn(upload));
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        let s = self.storage;
        if self.multipart.is_none() {
            let payload = PutPayload::from(std::mem::take(&mut self.buffer));
            return s
                .block_on(s.store.put(&self.key, payload))
                .map(|_| ())
                .map_err(to_io);
        }
        if !self.buffer.is_empty() {
            self.flush_part()?;
        }
        while !self.in_flight.is_empty() {
            self.wait_one()?;
        }
        let m = self.multipart.as_mut().expect("multipart");
        s.block_on(m.complete()).map(|_| ()).map_err(to_io)?;
        self.multipart = None;
        Ok(())
    }
}

impl Write for Upload<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = PART - self.buffer.len();
        let n = bytes.len().min(room);
        self.buffer.extend_from_slice(&bytes[..n]);
        if self.buffer.len() == PART {
            self.flush_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Who holds a lock: `host pid`.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{host} {}", std::process::id())
}

/// A lock whose holder ran on this host and is gone.
fn stale(text: &str) -> bool {
    let mine = holder();
    let (Some((host, pid)), Some((my_host, _))) =
        (text.trim().split_once(' '), mine.split_once(' '))
    else {
        return false;
    };
    host == my_host && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes the lock object when dropped.
struct LockGuard {
    store: Arc<dyn ObjectStore>,
    key: Key,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let (store, key) = (self.store.clone(), self.key.clone());
        // From a thread of its own: the guard may drop inside a runtime,
        // where blocking on another is not allowed.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = runtime() {
                let _ = rt.block_on(store.delete(&key));
            }
        })
        .join();
    }
}

impl Storage for ObjectStorage {
    fn root(&self) -> &Path {
        &self.url
    }

    fn create_root(&self) -> io::Result<()> {
        Ok(()) // prefixes need no creating; the bucket must exist
    }

    fn renames(&self) -> bool {
        false
    }

    fn lock(&self) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
        let me = holder();
        for _ in 0..2 {
            match self.put_bytes(".lock", me.as_bytes(), PutMode::Create) {
                Ok(()) => {
                    return Ok(Some(Box::new(LockGuard {
                        store: self.store.clone(),
                        key: self.key(".lock"),
                    })))
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let text = String::from_utf8_lossy(&self.get(".lock").unwrap_or_default())
                        .into_owned();
                    if !stale(&text) {
                        return Ok(None);
                    }
                    self.remove(".lock")?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    fn writer_active(&self) -> io::Result<bool> {
        match self.get(".lock") {
            Ok(text) => Ok(!stale(&String::from_utf8_lossy(&text))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn create_dir(&self, _: &str) -> io::Result<()> {
        Ok(())
    }

    fn write(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        self.put(name, write)
    }

    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        // One writer holds the lock: read, extend, replace.
        let mut all = match self.get(name) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        all.extend_from_slice(bytes);
        self.put_bytes(name, &all, PutMode::Overwrite)
    }

    fn sync(&self, _: &str) -> io::Result<()> {
        Ok(()) // an object is durable when its PUT returns
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Err(other(format!(
            "object storage cannot rename {from} to {to} atomically"
        )))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let key = self.key(name);
        let dir = Key::from(format!("{key}/"));
        self.block_on(async {
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(to_io(e)),
            }
            use futures::TryStreamExt;
            let inside: Vec<_> = self
                .store
                .list(Some(&dir))
                .try_collect()
                .await
                .map_err(to_io)?;
            for meta in inside {
                match self.store.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(to_io(e)),
                }
            }
            Ok(())
        })
    }

    fn list_in(&self, dir: &str) -> io::Result<Vec<String>> {
        let prefix = (!self.prefix.is_empty() || !dir.is_empty()).then(|| self.key(dir));
        let listing = self
            .block_on(self.store.list_with_delimiter(prefix.as_ref()))
            .map_err(to_io)?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .chain(listing.objects.iter().map(|o| &o.location))
            .filter_map(|k| k.filename().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.get(name)
    }

    fn read_range(&self, name: &str, range: std::ops::Range<u64>) -> io::Result<Vec<u8>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.key(name);
        self.block_on(self.store.get_range(&key, range))
            .map(|b| b.to_vec())
            .map_err(to_io)
    }

    fn local_path(&self, _: &str) -> Option<PathBuf> {
        None
    }
}
