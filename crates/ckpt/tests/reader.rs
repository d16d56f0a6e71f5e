//! A reader needs no write permission: `RunReader` lists, checks and loads
//! a run it cannot write to, while a writer holds the lock and saves. The
//! reader runs in a child process (this test binary again) as another
//! user when the tests run as root (root ignores permissions), or with the
//! run's folders made read-only otherwise.
#![cfg(unix)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use ckpt::store::{CheckpointManager, RunReader, StoreOptions};
use ckpt::{StateDict, TensorData, TrainingCheckpoint};

const CHILD_DIR: &str = "CKPT_TEST_READ_ONLY_RUN";

fn checkpoint(step: u64) -> TrainingCheckpoint {
    let mut model = StateDict::new();
    let floats: Vec<f32> = (0..1000).map(|i| (i as u64 * step) as f32).collect();
    model.insert("w".into(), TensorData::from_f32(&[1000], &floats).unwrap());
    let mut c = TrainingCheckpoint::new(model);
    c.step = step as i64;
    c
}

/// Sets the mode of every folder (and file) under `dir`, `dir` included.
fn set_modes(dir: &Path, dirs: u32, files: u32) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dirs)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            set_modes(&path, dirs, files);
        } else {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(files)).unwrap();
        }
    }
}

/// The child's side: runs only when the parent test starts it.
#[test]
fn read_only_reader_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let denied = std::fs::File::create(dir.join("probe")).unwrap_err();
    assert_eq!(
        denied.kind(),
        std::io::ErrorKind::PermissionDenied,
        "{denied}"
    );
    let reader = RunReader::open(dir).unwrap();
    let check = reader.check(|_, _| {}).unwrap();
    assert!(check.writer_active, "{check:?}");
    assert!(check.steps.iter().all(|(_, p)| p.is_none()), "{check:?}");
    assert_eq!(reader.load(1).unwrap(), checkpoint(1));
    assert!(reader.history().unwrap().iter().any(|s| s.step == 1));
}

#[test]
fn a_reader_without_write_permission_reads_while_a_writer_saves() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("run");
    let mut writer = CheckpointManager::open(&dir, StoreOptions::default()).unwrap();
    writer.save(1, &checkpoint(1), &[("loss", 1.0)]).unwrap();

    // Who made the folder is who runs the tests.
    let root = std::fs::metadata(tmp.path()).unwrap().uid() == 0;
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", "read_only_reader_child", "--test-threads=1"])
        .env(CHILD_DIR, &dir)
        .stdout(std::process::Stdio::piped());
    if root {
        // Another user, for whom the run (0755/0644) is read-only; the
        // writer, root, keeps saving meanwhile.
        set_modes(&dir, 0o755, 0o644);
        child.uid(65534).gid(65534);
    } else {
        set_modes(&dir, 0o555, 0o444);
    }
    let running = child.spawn().unwrap();
    if root {
        writer.save(2, &checkpoint(2), &[("loss", 0.5)]).unwrap();
    }
    let out = running.wait_with_output().unwrap();
    set_modes(&dir, 0o755, 0o644);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the reader failed: {out:?}");
    assert!(text.contains("1 passed"), "the reader did not run: {text}");
    writer.save(3, &checkpoint(3), &[("loss", 0.25)]).unwrap();
    assert_eq!(writer.load(3).unwrap(), checkpoint(3));
}
