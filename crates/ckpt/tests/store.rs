//! The checkpoint store under crashes, I/O errors, corruption and a second
//! writer: whatever happens, the newest committed checkpoint loads.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use ckpt::store::{AsyncPolicy, AsyncSave, CheckpointManager, StoreOptions};
use common::store::{assert_is_step, checkpoint, open, open_faulty, options_for, run_dirs, Fault};

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
