//! The checkpoint store and single files on S3-compatible object storage:
//! a real moto server on loopback (tests/interop/moto_server.py, started by
//! the harness). Runs with the `s3` feature when `CKPT_PYTHON` names a
//! Python with `moto[server]` (`scripts/test` and CI arrange both).
#![cfg(feature = "s3")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ckpt::storage::s3::{ObjectOptions, ObjectStorage};
use ckpt::storage::Storage;
use ckpt::store::{CheckpointManager, Retention, RunReader, StoreOptions};
use ckpt::{Error, Format, StateDict, TensorData, TrainingCheckpoint, Value};

#[path = "../../../tests/interop/moto.rs"]
mod moto;

/// A fresh prefix in the test bucket.
fn url(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!(
        "s3://{}/{name}-{}-{n}",
        moto::BUCKET,
        std::process::id()
    ))
}

fn checkpoint(step: u64, floats: usize) -> TrainingCheckpoint {
    let mut model = StateDict::new();
    model.insert(
        "w".into(),
        TensorData::from_f32(&[floats], &vec![step as f32; floats]).unwrap(),
    );
    let mut c = TrainingCheckpoint::new(model);
    c.step = step as i64;
    c
}

fn step_of(c: &TrainingCheckpoint) -> u64 {
    c.model["w"].values_f64().next().unwrap() as u64
}

#[test]
fn runs_save_retain_restore_and_fall_back_on_object_storage() {
    if moto::start().is_none() {
        return;
    }
    for format in [Format::Safetensors, Format::PyTorch] {
        let run = url("run");
        let options = StoreOptions::default()
            .format(format)
            .retention(Retention::default().keep_last(2));
        let mut m = CheckpointManager::open(&run, options.clone()).unwrap();
        for step in 1..=4 {
            m.save(step, &checkpoint(step, 100), &[("loss", 1.0 / step as f64)])
                .unwrap();
        }
        // A checkpoint over one upload part goes up in parts.
        m.save(5, &checkpoint(5, 3 << 20), &[("loss", 0.1)])
            .unwrap();
        let steps: Vec<u64> = m.steps().iter().map(|s| s.step).collect();
        assert_eq!(steps, [4, 5], "{format}");
        assert_eq!(step_of(&m.restore_latest().unwrap().unwrap().checkpoint), 5);

        // A second writer is refused while the first holds the lock.
        assert!(matches!(
            CheckpointManager::open(&run, options.clone()),
            Err(Error::StoreLocked { .. })
        ));
        // A reader sees the writer by looking at its lock, not taking it.
        let check = RunReader::open(&run).unwrap().check(|_, _| {}).unwrap();
        assert!(check.writer_active);
        drop(m);

        // Readers see only committed steps; the listing is the manifest's.
        let reader = RunReader::open(&run).unwrap();
        assert_eq!(reader.steps().len(), 2);
        let storage = ObjectStorage::from_url(&run).unwrap();
        let names = storage.list().unwrap();
        assert!(
            names.contains(&"step-00000004".to_owned())
                && !names.contains(&"step-00000003".to_owned()),
            "{names:?}"
        );
        assert!(!reader.check(|_, _| {}).unwrap().writer_active);
        assert!(!storage.list().unwrap().contains(&".lock".to_owned()));

        // Damage the newest checkpoint: loads fall back to step 4.
        let file = format!("step-00000005/checkpoint.{}", format.extension());
        let mut bytes = storage.read(&file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xFF;
        storage.write(&file, &mut |w| w.write_all(&bytes)).unwrap();
        let m = CheckpointManager::open(&run, options).unwrap();
        let restored = m.restore_latest().unwrap().unwrap();
        assert_eq!(restored.step, 4);
        assert_eq!(restored.skipped.len(), 1);
        assert!(
            restored.skipped[0].1.contains("content hash"),
            "{:?}",
            restored.skipped
        );
    }
}

#[test]
fn single_files_read_and_write_as_objects() {
    if moto::start().is_none() {
        return;
    }
    let dir = url("files");
    let mut sd = StateDict::new();
    sd.insert(
        "fc.weight".into(),
        TensorData::from_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap(),
    );
    let value = Value::from(sd);
    for ext in ["safetensors", "pth", "ckptz"] {
        let path = dir.join(format!("model.{ext}"));
        ckpt::save(&path, &value).unwrap();
        assert_eq!(ckpt::load(&path).unwrap(), value, "{ext}");
    }
    let missing = dir.join("missing.safetensors");
    let err = ckpt::load(&missing).unwrap_err().to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

/// A DCP folder copied to a prefix reads as it does from the disk: the
/// prefix is listed for `.metadata`, the items fetched by name.
#[test]
fn a_dcp_folder_on_object_storage_reads_as_one_checkpoint() {
    if moto::start().is_none() {
        return;
    }
    let prefix = url("dcp");
    let storage = ObjectStorage::from_url(&prefix).unwrap();
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/dcp/ranks2_dim0");
    for entry in std::fs::read_dir(&local).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        storage.write(&name, &mut |w| w.write_all(&bytes)).unwrap();
    }
    let remote = ckpt::read(&prefix, &Default::default()).unwrap();
    assert_eq!(remote.format, ckpt::Format::Dcp);
    let expected = ckpt::load(local.with_extension("expected.pth")).unwrap();
    assert_eq!(remote.value, expected);
    // By rank, with ranged GETs, and streamed into one local file.
    let whole = ckpt::StateDict::flatten(&expected).unwrap();
    let ckpt = ckpt::layout::distributed::Distributed::open(&prefix).unwrap();
    for world in 1..=3 {
        let mut bytes = Vec::new();
        for rank in 0..world {
            bytes.extend_from_slice(ckpt.load_shard(rank, world).unwrap()["w"].bytes());
        }
        assert_eq!(bytes, whole["w"].bytes(), "{world} ranks");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("whole.safetensors");
    ckpt::layout::dcp::consolidate(&prefix, &out, &Default::default()).unwrap();
    assert_eq!(ckpt::load(&out).unwrap(), expected);
}

/// Run as a child process: saves step 1, says so, then saves a large
/// step 2 (a multipart upload) while the parent kills it.
#[test]
fn child_writer() {
    let Ok(run) = std::env::var("CKPT_S3_CHILD_RUN") else {
        return;
    };
    let mut m = CheckpointManager::open(Path::new(&run), StoreOptions::default()).unwrap();
    m.save(1, &checkpoint(1, 10), &[]).unwrap();
    println!("saved 1");
    std::io::stdout().flush().unwrap();
    m.save(2, &checkpoint(2, 12 << 20), &[]).unwrap();
    println!("saved 2");
}

#[test]
fn a_writer_killed_during_a_multipart_upload_leaves_the_last_commit() {
    if moto::start().is_none() {
        return;
    }
    for delay_ms in [50, 300, 900] {
        let run = url("killed");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
            .env("CKPT_S3_CHILD_RUN", &run)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !String::from_utf8_lossy(&seen).contains("saved 1") {
            assert_eq!(out.read(&mut byte).unwrap(), 1, "child ended early");
            seen.push(byte[0]);
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();

        // The lock of the dead writer is taken over; step 2 never
        // committed, and its leftovers are cleaned up.
        let mut m = CheckpointManager::open(&run, StoreOptions::default()).unwrap();
        let latest = m.latest().map(|s| s.step);
        let restored = m.restore_latest().unwrap().unwrap();
        match latest {
            Some(1) => assert_eq!(step_of(&restored.checkpoint), 1),
            // The kill came after the commit: then step 2 is whole.
            Some(2) => assert_eq!(step_of(&restored.checkpoint), 2),
            other => panic!("latest {other:?}"),
        }
        let names = ObjectStorage::from_url(&run).unwrap().list().unwrap();
        eprintln!(
            "killed {delay_ms} ms into the upload: latest step {latest:?}, objects {names:?}"
        );
        if latest == Some(1) {
            assert!(!names.contains(&"step-00000002".to_owned()), "{names:?}");
            m.save(2, &checkpoint(2, 10), &[]).unwrap();
        }
    }
}

/// A TCP proxy to the S3 server that can cut every connection.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
}

fn proxy(upstream: &str) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cut = Arc::new(AtomicBool::new(false));
    let target = upstream.trim_start_matches("http://").to_owned();
    let flag = cut.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            if flag.load(Ordering::SeqCst) {
                continue; // dropped: the connection resets
            }
            let Ok(server) = TcpStream::connect(&target) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let flag = flag.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64 << 10];
                    from.set_read_timeout(Some(Duration::from_millis(50))).ok();
                    loop {
                        if flag.load(Ordering::SeqCst) {
                            let _ = to.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        match from.read(&mut buf) {
                            Ok(0) => {
                                let _ = to.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(n) => {
                                if to.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => return,
                        }
                    }
                });
            }
        }
    });
    Proxy { port, cut }
}

#[test]
fn a_network_failure_fails_the_save_and_the_next_save_succeeds() {
    let Some(endpoint) = moto::start() else {
        return;
    };
    let p = proxy(&endpoint);
    let run = url("network");
    let mut options = ObjectOptions::default();
    options.endpoint = Some(format!("http://127.0.0.1:{}", p.port));
    options.max_retries = Some(2);
    options.retry_timeout = Some(Duration::from_secs(2));
    let storage = Arc::new(ObjectStorage::from_url_with(&run, &options).unwrap());
    let mut m = CheckpointManager::open_with(storage.clone(), StoreOptions::default()).unwrap();
    m.save(1, &checkpoint(1, 1000), &[]).unwrap();

    p.cut.store(true, Ordering::SeqCst);
    let err = m
        .save(2, &checkpoint(2, 1000), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains(&run.display().to_string()), "{err}");
    p.cut.store(false, Ordering::SeqCst);

    assert_eq!(m.latest().map(|s| s.step), Some(1));
    m.save(2, &checkpoint(2, 1000), &[]).unwrap();
    drop(m);
    let reader = RunReader::open(&run).unwrap();
    let steps: Vec<u64> = reader.steps().iter().map(|s| s.step).collect();
    assert_eq!(steps, [1, 2]);
    assert_eq!(step_of(&reader.load(2).unwrap()), 2);
}

#[test]
fn incremental_runs_share_chunks_on_object_storage() {
    if moto::start().is_none() {
        return;
    }
    let run = url("incremental");
    let options = StoreOptions::default()
        .incremental(true)
        .retention(Retention::default().keep_last(1));
    let mut m = CheckpointManager::open(&run, options).unwrap();
    // 8 MiB of distinct values: two chunks, written once.
    let state = |v: f32| {
        let values: Vec<f32> = (0..2 << 20).map(|i| i as f32 + v).collect();
        let mut model = StateDict::new();
        model.insert(
            "w".into(),
            TensorData::from_f32(&[2 << 20], &values).unwrap(),
        );
        TrainingCheckpoint::new(model)
    };
    let first = m.save(1, &state(7.0), &[]).unwrap();
    assert!(first.written >= 8 << 20, "{first:?}");
    let again = m.save(2, &state(7.0), &[]).unwrap();
    assert!(again.written < 4096, "{again:?}");
    assert_eq!(m.load(2).unwrap().model, state(7.0).model);
    let storage = ObjectStorage::from_url(&run).unwrap();
    assert_eq!(storage.list_in("blobs").unwrap().len(), 2);
    // New contents: the old chunks go when step 2 is dropped.
    m.save(3, &state(8.0), &[]).unwrap();
    assert_eq!(storage.list_in("blobs").unwrap().len(), 2);
    assert_eq!(m.load(3).unwrap().model, state(8.0).model);
}

#[test]
fn multi_rank_checkpoints_commit_and_reshard_on_object_storage() {
    use ckpt::layout::distributed::{commit, save_part, Distributed, Part};
    if moto::start().is_none() {
        return;
    }
    let dir = url("distributed");
    let values: Vec<f32> = (0..40).map(|i| i as f32 / 4.0).collect();
    let whole = TensorData::from_f32(&[10, 4], &values).unwrap();
    let slice = |r: std::ops::Range<usize>| Part {
        name: "w".into(),
        shape: vec![10, 4],
        rows: r.clone(),
        data: TensorData::from_f32(&[r.len(), 4], &values[r.start * 4..r.end * 4]).unwrap(),
    };
    save_part(&dir, 0, 2, &[slice(0..6)]).unwrap();
    assert!(commit(&dir, 2).is_err());
    save_part(&dir, 1, 2, &[slice(6..10)]).unwrap();
    commit(&dir, 2).unwrap();
    let ckpt = Distributed::open(&dir).unwrap();
    for world in 1..=3 {
        let mut bytes = Vec::new();
        for rank in 0..world {
            bytes.extend_from_slice(ckpt.load_shard(rank, world).unwrap()["w"].bytes());
        }
        assert_eq!(bytes, whole.bytes(), "{world} ranks");
    }
    // The prefix holds a DCP checkpoint: read whole like a folder.
    assert_eq!(ckpt::load_state_dict(&dir).unwrap()["w"], whole);
}
