//! The checkpoint store under crashes, I/O errors, corruption and a second
//! writer: whatever happens, the newest committed checkpoint loads.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ckpt::storage::{LocalStorage, Storage};
use ckpt::store::{
    AsyncPolicy, AsyncSave, CheckpointManager, KeepBest, MetricMode, MissingMetric, Retention,
    RunReader, StoreOptions,
};
use ckpt::{Format, StateDict, TensorData, TrainingCheckpoint};

/// A checkpoint whose every value says which step it is.
fn checkpoint(step: u64, floats: usize) -> TrainingCheckpoint {
    let mut model = StateDict::new();
    model.insert(
        "w".into(),
        TensorData::from_f32(&[floats], &vec![step as f32; floats]).unwrap(),
    );
    model.insert(
        "b".into(),
        TensorData::from_f32(&[3], &[step as f32, 1.0, 2.0]).unwrap(),
    );
    let mut c = TrainingCheckpoint::new(model);
    c.step = step as i64;
    c.epoch = (step / 10) as i64;
    c.loss = Some(1.0 / (step as f64 + 1.0));
    c
}

/// Checks that `c` is exactly what [`checkpoint`] made for `step`.
fn assert_is_step(c: &TrainingCheckpoint, step: u64) {
    assert_eq!(c.step, step as i64);
    let w: Vec<f64> = c.model["w"].values_f64().collect();
    assert!(
        w.iter().all(|&v| v == step as f64),
        "step {step}: tensor holds another step's values"
    );
    assert_eq!(c.model["b"].values_f64().next(), Some(step as f64));
}

/// The options for a run in `dir`: incremental when the directory's name
/// says so (child processes inherit the mode with the path).
fn options_for(dir: &Path) -> StoreOptions {
    StoreOptions::default().incremental(dir.to_string_lossy().contains("incremental"))
}

fn open(dir: &Path) -> CheckpointManager {
    CheckpointManager::open(dir, options_for(dir)).unwrap_or_else(|e| panic!("{e}"))
}

/// A temporary run directory in each mode.
fn run_dirs() -> [tempfile::TempDir; 2] {
    ["plain", "incremental"].map(|mode| tempfile::Builder::new().prefix(mode).tempdir().unwrap())
}

#[test]
fn save_retain_and_restore_in_every_format() {
    for format in [Format::Safetensors, Format::PyTorch, Format::Compressed] {
        let dir = tempfile::tempdir().unwrap();
        let best = KeepBest {
            metric: "val".into(),
            mode: MetricMode::Max,
            k: 1,
            missing: MissingMetric::Ignore,
        };
        let options = StoreOptions::default()
            .format(format)
            .retention(Retention::default().keep_last(2).keep_best(best));
        let mut store = CheckpointManager::open(dir.path(), options.clone()).unwrap();
        for (step, val) in [(1, 0.5), (2, 0.9), (3, 0.1), (4, 0.2), (5, 0.3)] {
            let report = store
                .save(step, &checkpoint(step, 8), &[("val", val)])
                .unwrap();
            assert_eq!(report.step, step);
        }
        let steps: Vec<u64> = store.steps().iter().map(|s| s.step).collect();
        assert_eq!(steps, [2, 4, 5], "{format}");
        assert_eq!(store.best().unwrap().step, 2);
        assert_is_step(&store.load(2).unwrap(), 2);
        let file = format!("step-00000005/checkpoint.{}", format.extension());
        assert!(dir.path().join(file).exists());
        assert!(!dir.path().join("step-00000003").exists());
        drop(store);

        // Reopened: the same steps; the same step again is refused.
        let mut store = CheckpointManager::open(dir.path(), options).unwrap();
        assert_eq!(store.latest().unwrap().step, 5);
        assert_eq!(store.latest().unwrap().metric("val"), Some(0.3));
        let err = store.save(5, &checkpoint(5, 8), &[]).unwrap_err();
        assert!(
            err.to_string().ends_with("step 5 is already committed"),
            "{err}"
        );
        let restored = store.restore_latest().unwrap().unwrap();
        assert!(restored.skipped.is_empty());
        assert_is_step(&restored.checkpoint, 5);
        assert!(store
            .load(3)
            .unwrap_err()
            .to_string()
            .contains("no committed step 3"));
    }
}

#[test]
fn a_run_refuses_formats_that_cannot_hold_a_training_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    for format in [Format::Npz, Format::ShardedIndex] {
        let Err(err) = CheckpointManager::open(dir.path(), StoreOptions::default().format(format))
        else {
            panic!("a run accepted {format}");
        };
        assert!(
            matches!(err, ckpt::Error::UnsupportedStoreFormat { format: f, .. } if f == format),
            "{err}"
        );
        assert!(
            err.to_string().contains("a run stores checkpoints as"),
            "{err}"
        );
    }
}

#[test]
fn a_second_writer_is_refused_in_this_process_and_another() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = CheckpointManager::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("another process is writing to this run directory"),
        "{err}"
    );

    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process", "--nocapture"])
        .env("CKPT_STORE_ROLE", "open")
        .env("CKPT_STORE_DIR", dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(out.contains("refused: "), "{out}");
    drop(store);
    open(dir.path()); // released with the manager
}

/// Every file under `dir` with its length and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            out.extend(snapshot(&entry.path()));
        } else {
            out.push((entry.path(), meta.len(), meta.modified().unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn a_reader_writes_nothing_takes_no_lock_and_never_blocks_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store.save(1, &checkpoint(1, 4), &[]).unwrap();
    let check = RunReader::open(dir.path())
        .unwrap()
        .check(|_, _| {})
        .unwrap();
    assert!(check.writer_active, "the writer holds the lock");
    drop(store);

    // A run without its lock file (copied, or on read-only media): a
    // reader creates nothing and changes nothing.
    std::fs::remove_file(dir.path().join(".lock")).unwrap();
    let before = snapshot(dir.path());
    let reader = RunReader::open(dir.path()).unwrap();
    let check = reader.check(|_, _| {}).unwrap();
    assert!(
        !check.writer_active && check.leftovers.is_empty(),
        "{check:?}"
    );
    assert_eq!(snapshot(dir.path()), before);

    // Readers checking without pause never make a writer see a lock.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers = {
        let (stop, dir) = (stop.clone(), dir.path().to_owned());
        std::thread::spawn(move || {
            let reader = RunReader::open(&dir).unwrap();
            let mut checks = 0;
            while !stop.load(Ordering::Relaxed) {
                reader.check(|_, _| {}).unwrap();
                checks += 1;
            }
            checks
        })
    };
    for step in 2..12 {
        let mut store = open(dir.path());
        store.save(step, &checkpoint(step, 4), &[]).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(readers.join().unwrap() > 0);
}

#[test]
fn every_flipped_byte_is_detected_and_load_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store.save(1, &checkpoint(1, 4), &[]).unwrap();
    store.save(2, &checkpoint(2, 4), &[]).unwrap();
    drop(store);
    for name in [
        "step-00000002/checkpoint.safetensors",
        "step-00000002/meta.json",
    ] {
        let path = dir.path().join(name);
        let good = std::fs::read(&path).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            std::fs::write(&path, &bad).unwrap();
            let store = open(dir.path());
            assert!(store.load(2).is_err(), "{name}: flip at {at} not detected");
            let restored = store.restore_latest().unwrap().unwrap();
            assert_is_step(&restored.checkpoint, 1);
            assert_eq!(restored.skipped.len(), 1);
            assert_eq!(restored.skipped[0].0, 2);
        }
        std::fs::write(&path, &good).unwrap();
    }
    let restored = open(dir.path()).restore_latest().unwrap().unwrap();
    assert_is_step(&restored.checkpoint, 2);

    // A damaged manifest is rebuilt from the steps' own meta.json files.
    let manifest = dir.path().join("manifest.json");
    let mut bad = std::fs::read(&manifest).unwrap();
    bad[10] ^= 0x20;
    std::fs::write(&manifest, bad).unwrap();
    let store = open(dir.path());
    assert!(store.opened().rebuilt.is_some());
    assert_eq!(store.steps().len(), 2);
    assert_is_step(&store.restore_latest().unwrap().unwrap().checkpoint, 2);
}

/// Which storage operation fails.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// The n-th `write` call returns an error.
    Write(u64),
    /// The n-th `sync` fails.
    Sync(u64),
    /// The n-th `rename` fails.
    Rename(u64),
    /// Writes fail with "no space" after this many bytes in all.
    DiskFull(u64),
    /// The process aborts at the n-th operation of any kind (a crash).
    AbortAt(u64),
}

struct Faulty {
    inner: LocalStorage,
    fault: Fault,
    writes: AtomicU64,
    syncs: AtomicU64,
    renames: AtomicU64,
    ops: AtomicU64,
    bytes: Arc<AtomicU64>,
}

impl Faulty {
    fn new(dir: &Path, fault: Fault) -> Faulty {
        Faulty {
            inner: LocalStorage::new(dir),
            fault,
            writes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            renames: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    fn op(&self) {
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        if self.fault == Fault::AbortAt(n) {
            std::process::abort();
        }
    }
}

fn injected() -> io::Error {
    io::Error::other("injected failure")
}

struct Limited<'a> {
    out: &'a mut dyn Write,
    bytes: Arc<AtomicU64>,
    limit: u64,
}

impl Write for Limited<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.fetch_add(buf.len() as u64, Ordering::SeqCst) + buf.len() as u64 > self.limit
        {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Storage for Faulty {
    fn root(&self) -> &Path {
        self.inner.root()
    }
    fn create_root(&self) -> io::Result<()> {
        self.inner.create_root()
    }
    fn lock(&self) -> io::Result<Option<Box<dyn std::any::Any + Send + Sync>>> {
        self.inner.lock()
    }
    fn writer_active(&self) -> io::Result<bool> {
        self.inner.writer_active()
    }
    fn create_dir(&self, name: &str) -> io::Result<()> {
        self.op();
        self.inner.create_dir(name)
    }
    fn write(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        self.op();
        if self.fault == Fault::Write(self.writes.fetch_add(1, Ordering::SeqCst)) {
            return Err(injected());
        }
        match self.fault {
            Fault::DiskFull(limit) => self.inner.write(name, &mut |out| {
                write(&mut Limited {
                    out,
                    bytes: Arc::clone(&self.bytes),
                    limit,
                })
            }),
            _ => self.inner.write(name, write),
        }
    }
    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.op();
        self.inner.append(name, bytes)
    }
    fn sync(&self, name: &str) -> io::Result<()> {
        self.op();
        if self.fault == Fault::Sync(self.syncs.fetch_add(1, Ordering::SeqCst)) {
            return Err(injected());
        }
        self.inner.sync(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.op();
        if self.fault == Fault::Rename(self.renames.fetch_add(1, Ordering::SeqCst)) {
            return Err(injected());
        }
        self.inner.rename(from, to)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.op();
        self.inner.remove(name)
    }
    fn list_in(&self, dir: &str) -> io::Result<Vec<String>> {
        self.inner.list_in(dir)
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.inner.read(name)
    }
    fn local_path(&self, name: &str) -> Option<PathBuf> {
        self.inner.local_path(name)
    }
}

fn open_faulty(dir: &Path, fault: Fault) -> CheckpointManager {
    CheckpointManager::open_with(Arc::new(Faulty::new(dir, fault)), options_for(dir)).unwrap()
}

#[test]
fn injected_io_errors_fail_the_save_and_lose_nothing() {
    // One save makes 2 writes, 4 syncs and 1 rename before the manifest
    // (2 more writes/syncs... counted here by trying each until one passes).
    let mut faults = Vec::new();
    for n in 0..4 {
        faults.push(Fault::Write(n));
        faults.push(Fault::Rename(n));
    }
    for n in 0..8 {
        faults.push(Fault::Sync(n));
    }
    for limit in [0, 10, 100, 1_000, 4_000] {
        faults.push(Fault::DiskFull(limit));
    }
    let mut failed = 0;
    let mut failures = Vec::new();
    for (fault, dir) in faults
        .into_iter()
        .flat_map(|f| run_dirs().map(move |d| (f, d)))
    {
        {
            let mut store = open(dir.path());
            store.save(1, &checkpoint(1, 64), &[]).unwrap();
        }
        let mut store = open_faulty(dir.path(), fault);
        match store.save(2, &checkpoint(2, 1000), &[]) {
            Ok(_) => {
                // The fault did not hit this save (fewer operations).
                assert_is_step(&store.restore_latest().unwrap().unwrap().checkpoint, 2);
                continue;
            }
            Err(e) => {
                failed += 1;
                let msg = e.to_string();
                failures.push(msg.clone());
                assert!(
                    msg.contains("injected failure") || msg.contains("No space left"),
                    "{fault:?}: {msg}"
                );
                assert!(
                    msg.contains(&dir.path().display().to_string()),
                    "{fault:?}: the error names no path: {msg}"
                );
            }
        }
        // The previous checkpoint is intact (or, when only the sync after
        // the commit failed, the new one is committed and says so), in this
        // manager and a new one, and the next save succeeds.
        let latest = store.latest().unwrap().step;
        let err = failures.last().unwrap();
        assert!(
            latest == 1 || (latest == 2 && err.contains("step 2 is committed")),
            "{fault:?}: {err}"
        );
        assert_is_step(&store.restore_latest().unwrap().unwrap().checkpoint, latest);
        drop(store);
        let mut store = open(dir.path());
        let restored = store.restore_latest().unwrap().unwrap();
        assert!(restored.skipped.is_empty(), "{fault:?}");
        assert_is_step(&restored.checkpoint, latest);
        store.save(3, &checkpoint(3, 1000), &[]).unwrap();
        assert_is_step(&store.restore_latest().unwrap().unwrap().checkpoint, 3);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".tmp") || n.starts_with(".manifest"))
            .collect();
        assert!(leftovers.is_empty(), "{fault:?}: {leftovers:?}");
    }
    assert!(failed >= 12, "only {failed} faults hit a save");
}

#[test]
fn background_saves_return_at_once_and_report_failures_on_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let mut live = checkpoint(1, 1 << 16);
    assert_eq!(store.save_async(1, &live, &[]).unwrap(), AsyncSave::Started);
    live = checkpoint(2, 1 << 16); // training goes on changing the model
    assert_eq!(store.save_async(2, &live, &[]).unwrap(), AsyncSave::Started);
    let report = store.wait().unwrap().unwrap();
    assert_eq!(report.step, 2);
    assert_eq!(store.latest().unwrap().step, 2);
    assert_is_step(&store.load(1).unwrap(), 1);
    assert_is_step(&store.load(2).unwrap(), 2);
    assert!(store.snapshot_bytes() >= 4 << 16);

    // A failing background save is reported by the next call, not lost.
    drop(store);
    let mut store = open_faulty(dir.path(), Fault::Write(0));
    assert_eq!(
        store.save_async(3, &checkpoint(3, 16), &[]).unwrap(),
        AsyncSave::Started
    );
    let err = store.save_async(4, &checkpoint(4, 16), &[]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the background save of step 3 failed"),
        "{err}"
    );
    store.save_async(4, &checkpoint(4, 16), &[]).unwrap();
    assert_eq!(store.wait().unwrap().unwrap().step, 4);

    // With the skip policy, a save while one is in flight is skipped.
    drop(store);
    let options = StoreOptions::default().async_policy(AsyncPolicy::Skip);
    let mut store = CheckpointManager::open(dir.path(), options).unwrap();
    let big = checkpoint(0, 1 << 22);
    let mut outcomes = Vec::new();
    for step in 5..25 {
        let mut c = big.clone(); // shares the tensors: no copy
        c.step = step as i64;
        outcomes.push(store.save_async_owned(step, c, &[]).unwrap());
    }
    store.wait().unwrap();
    assert_eq!(outcomes[0], AsyncSave::Started);
    assert!(
        outcomes.contains(&AsyncSave::Skipped),
        "no save was in flight: {outcomes:?}"
    );
    let latest = store.latest().unwrap().step;
    assert_eq!(store.load(latest).unwrap().step, latest as i64);
}

/// Child processes: `open` tries to open a locked directory; `writer`
/// saves steps without end (until killed); `abort-at` saves one step and
/// aborts at the n-th storage operation.
#[test]
fn child_process() {
    let (Ok(role), Ok(dir)) = (
        std::env::var("CKPT_STORE_ROLE"),
        std::env::var("CKPT_STORE_DIR"),
    ) else {
        return; // only when re-executed by the tests here
    };
    let dir = PathBuf::from(dir);
    match role.as_str() {
        "open" => match CheckpointManager::open(&dir, StoreOptions::default()) {
            Ok(_) => println!("opened"),
            Err(e) => println!("refused: {e}"),
        },
        "writer" => {
            let mut store = open(&dir);
            let mut step = store.latest().map_or(1, |s| s.step + 1);
            loop {
                store
                    .save(
                        step,
                        &checkpoint(step, 1 << 15),
                        &[("loss", 1.0 / step as f64)],
                    )
                    .unwrap();
                step += 1;
            }
        }
        "abort-at" => {
            let n: u64 = std::env::var("CKPT_STORE_N").unwrap().parse().unwrap();
            let mut store = open_faulty(&dir, Fault::AbortAt(n));
            let step = store.latest().map_or(1, |s| s.step + 1);
            store.save(step, &checkpoint(step, 1 << 12), &[]).unwrap();
            println!("completed");
        }
        other => panic!("unknown role {other}"),
    }
}

fn spawn(role: &str, dir: &Path, n: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process", "--nocapture"])
        .env("CKPT_STORE_ROLE", role)
        .env("CKPT_STORE_DIR", dir)
        .env("CKPT_STORE_N", n.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// After a crash: the directory opens, leftovers are gone, and the latest
/// step loads with exactly the contents saved for it.
fn check_after_crash(dir: &Path) -> (Option<u64>, usize) {
    let store = open(dir);
    let removed = store.opened().removed.len();
    let Some(restored) = store.restore_latest().unwrap() else {
        return (None, removed);
    };
    assert!(
        restored.skipped.is_empty(),
        "a committed step was damaged: {:?}",
        restored.skipped
    );
    assert_is_step(&restored.checkpoint, restored.step);
    for name in std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
    {
        assert!(!name.starts_with(".tmp"), "leftover {name}");
    }
    (Some(restored.step), removed)
}

#[test]
fn a_crash_at_every_operation_of_the_commit_protocol_loses_nothing() {
    for dir in run_dirs() {
        crash_at_every_operation(&dir);
    }
}

fn crash_at_every_operation(dir: &tempfile::TempDir) {
    {
        let mut store = open(dir.path());
        store.save(1, &checkpoint(1, 16), &[]).unwrap();
    }
    let mut n = 0;
    loop {
        let out = spawn("abort-at", dir.path(), n).wait_with_output().unwrap();
        let completed = String::from_utf8_lossy(&out.stdout).contains("completed");
        let latest = check_after_crash(dir.path()).0.unwrap();
        if completed {
            assert!(n >= 8, "a save took only {n} operations");
            if options_for(dir.path()).incremental {
                assert!(dir.path().join("blobs").read_dir().unwrap().count() >= 2);
            }
            break;
        }
        assert!(!out.status.success(), "abort at {n} did not abort");
        // Aborted before the manifest was replaced: the old step; after: the new.
        assert!(latest >= 1);
        n += 1;
    }
}

#[test]
fn hundreds_of_kills_at_random_instants_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let kills: u64 = std::env::var("CKPT_STORE_KILLS").map_or(200, |v| v.parse().unwrap());
    let mut seed = 0x5eed_u64;
    let mut last_seen = 0;
    let mut mid_save = 0;
    for _ in 0..kills {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_micros(2_000 + (seed >> 33) % 40_000);
        let mut child = spawn("writer", dir.path(), 0);
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (latest, removed) = check_after_crash(dir.path());
        if let Some(step) = latest {
            assert!(
                step >= last_seen,
                "the latest step went back from {last_seen} to {step}"
            );
            last_seen = step;
        }
        mid_save += usize::from(removed > 0);
    }
    assert!(
        last_seen > 10,
        "the writer committed only {last_seen} steps in {kills} runs"
    );
    // Kills that interrupted a save left something for open to remove.
    assert!(
        mid_save >= kills as usize / 10,
        "only {mid_save} of {kills} kills hit a save in progress"
    );
    eprintln!("{kills} kills, {mid_save} during a save, {last_seen} steps committed");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Saving a random sequence through the store leaves exactly the union
    /// of the rules, computed here from the whole sequence at the end.
    #[test]
    fn retention_through_real_saves_keeps_exactly_the_union(
        losses in proptest::collection::vec(proptest::option::of(0u8..10), 1..25),
        last in 0usize..4,
        k in 0usize..3,
        every in 0u64..5,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let best = KeepBest { metric: "loss".into(), mode: MetricMode::Min, k, missing: MissingMetric::Ignore };
        let mut rules = Retention::default().keep_last(last).keep_best(best);
        if every > 0 {
            rules = rules.keep_every(ckpt::store::KeepEvery::Steps(every));
        }
        let options = StoreOptions::default().durable(false).retention(rules);
        let mut store = CheckpointManager::open(dir.path(), options).unwrap();
        for (i, loss) in losses.iter().enumerate() {
            let step = i as u64 + 1;
            let metrics: Vec<(&str, f64)> = loss.iter().map(|&l| ("loss", f64::from(l))).collect();
            store.save(step, &checkpoint(step, 2), &metrics).unwrap();
        }
        let n = losses.len() as u64;
        let mut ranked: Vec<(u8, u64)> = losses.iter().enumerate().filter_map(|(i, l)| l.map(|l| (l, i as u64 + 1))).collect();
        ranked.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let best: Vec<u64> = ranked.iter().take(k).map(|p| p.1).collect();
        let expected: Vec<u64> = (1..=n)
            .filter(|&s| s == n || s + last as u64 > n || best.contains(&s) || (every > 0 && s % every == 0))
            .collect();
        let kept: Vec<u64> = store.steps().iter().map(|s| s.step).collect();
        proptest::prop_assert_eq!(&kept, &expected);
        let mut dirs: Vec<String> = std::fs::read_dir(dir.path()).unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("step-"))
            .collect();
        dirs.sort();
        let want: Vec<String> = expected.iter().map(|s| format!("step-{s:08}")).collect();
        proptest::prop_assert_eq!(dirs, want);
    }
}

#[test]
fn saves_and_verified_loads_report_progress() {
    use std::sync::atomic::AtomicU64;
    let dir = tempfile::tempdir().unwrap();
    let saved = Arc::new(AtomicU64::new(0));
    let checked = Arc::new(AtomicU64::new(0));
    let (s, c) = (Arc::clone(&saved), Arc::clone(&checked));
    let options = StoreOptions::default()
        .save_options(
            ckpt::SaveOptions::default().on_progress(move |done, total| {
                assert!(done <= total);
                s.store(done, Ordering::SeqCst);
            }),
        )
        .on_load_progress(move |done, total| {
            assert!(done <= total);
            c.fetch_max(done, Ordering::SeqCst);
        });
    let mut store = CheckpointManager::open(dir.path(), options).unwrap();
    store.save(1, &checkpoint(1, 1 << 22), &[]).unwrap();
    assert_eq!(saved.load(Ordering::SeqCst), 4 * (1 << 22) + 12);
    assert_is_step(&store.load(1).unwrap(), 1);
    assert_eq!(
        checked.load(Ordering::SeqCst),
        store.latest().unwrap().bytes
    );
}
