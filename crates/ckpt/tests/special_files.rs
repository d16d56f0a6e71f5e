//! Only regular files are read as files: FIFOs, devices and sockets, named
//! directly or through a symlink, are errors naming what they are, at
//! once — never a hang (a FIFO with no writer) or a read without end
//! (`/dev/zero`).

#![cfg(unix)]

mod common;

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use ckpt::store::{CheckpointManager, StoreOptions};
use common::*;

/// Runs `f` on a thread and fails the test if it takes over 10 s.
fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("hung: a special file was read as a file")
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(status.success());
}

fn read_error(path: &Path) -> String {
    let path = path.to_owned();
    within_seconds(move || {
        ckpt::read(&path, &ckpt::LoadOptions::default())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    })
}

#[test]
fn a_fifo_is_refused_at_once_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("x.pth");
    mkfifo(&fifo);
    let err = read_error(&fifo);
    assert!(err.contains("x.pth") && err.contains("a FIFO"), "{err}");
}

#[test]
fn a_symlink_to_a_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("model.safetensors");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let err = read_error(&link);
    assert!(err.contains("a device"), "{err}");
}

#[test]
fn a_shard_that_is_a_fifo_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
    ] {
        std::fs::copy(fixture(&format!("sharded/{name}")), dir.path().join(name)).unwrap();
    }
    mkfifo(&dir.path().join("model-00002-of-00002.safetensors"));
    let err = read_error(&dir.path().join("model.safetensors.index.json"));
    assert!(err.contains("a FIFO"), "{err}");
}

#[test]
fn a_model_folder_whose_config_is_a_fifo_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("mlp.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    mkfifo(&dir.path().join("config.json"));
    let folder = dir.path().to_owned();
    let loaded = within_seconds(move || ckpt::read(&folder, &ckpt::LoadOptions::default()));
    assert!(loaded.is_ok(), "{:?}", loaded.err());
}

/// A run at `dir/run` with steps 1..=`steps` of the MLP fixture.
fn run_with_steps(dir: &Path, steps: u64) -> std::path::PathBuf {
    let run = dir.join("run");
    let mut manager = CheckpointManager::open(&run, StoreOptions::default()).unwrap();
    let checkpoint =
        ckpt::TrainingCheckpoint::new(ckpt::load_state_dict(fixture("mlp.safetensors")).unwrap());
    for step in 1..=steps {
        manager.save(step, &checkpoint, &[]).unwrap();
    }
    run
}

#[test]
fn a_run_whose_step_file_links_to_a_device_fails_to_load_not_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_with_steps(dir.path(), 1);
    let step = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("step-"))
        .unwrap()
        .path();
    let file = std::fs::read_dir(&step)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
    let result = within_seconds(move || {
        let manager = CheckpointManager::open(&run, StoreOptions::default()).unwrap();
        manager.load(1).map(|_| ()).map_err(|e| e.to_string())
    });
    // Refused as a link before it could be read as a device.
    let err = result.unwrap_err();
    assert!(err.contains("symbolic link"), "{err}");
}

#[test]
fn a_step_that_is_a_symlink_out_of_the_run_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_with_steps(dir.path(), 2);
    // step 1 moved elsewhere and linked back: an intact copy, outside.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::rename(run.join("step-00000001"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, run.join("step-00000001")).unwrap();
    let manager = CheckpointManager::open(&run, StoreOptions::default()).unwrap();
    let err = manager.load(1).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    assert!(manager.load(2).is_ok());
    // ckpt's own gc or retention never deletes through the link.
    assert!(elsewhere.join("meta.json").exists());
}
