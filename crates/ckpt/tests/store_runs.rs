//! A run's everyday life in the checkpoint store: every format, retention
//! (as a property test too), readers that change nothing, progress.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ckpt::store::{
    CheckpointManager, KeepBest, MetricMode, MissingMetric, Retention, RunReader, StoreOptions,
};
use ckpt::Format;
use common::store::{assert_is_step, checkpoint, open};

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

/// Any tree (what Python's `torch.save` takes), not only a
/// `TrainingCheckpoint`: saved, saved in the background, loaded, restored
/// past a damaged step, and checked by a reader, exactly as it was.
#[test]
fn any_tree_is_saved_and_restored_as_it_was() {
    use ckpt::{Dict, TensorData, Value};
    let tree = |step: u64| {
        let mut model = Dict::new();
        let w = TensorData::from_f32(&[2], &[step as f32, 1.0]).unwrap();
        model.insert("w".into(), Value::Tensor(w));
        let mut d = Dict::new();
        d.insert("model".into(), Value::Dict(model));
        d.insert(
            7.into(),
            Value::Tuple(vec![Value::Int(step as i64), Value::None]),
        );
        Value::Dict(d)
    };
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store.save_value(1, &tree(1), 10, &[("loss", 0.5)]).unwrap();
    store.save_value_async(2, &tree(2), 20, &[]).unwrap();
    store.wait().unwrap();
    assert_eq!(store.load_value(1).unwrap(), tree(1));
    assert_eq!(store.steps()[1].epoch, 20);
    let restored = store.restore_latest_value().unwrap().unwrap();
    assert_eq!((restored.step, restored.checkpoint), (2, tree(2)));
    // Not a TrainingCheckpoint: that reading says why.
    let err = store.load(1).unwrap_err().to_string();
    assert!(err.contains("model_state_dict"), "{err}");
    assert!(RunReader::open(dir.path())
        .unwrap()
        .check(|_, _| ())
        .unwrap()
        .is_ok());
    // A damaged newest step is passed over and named.
    let file = dir.path().join("step-00000002/checkpoint.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let restored = store.restore_latest_value().unwrap().unwrap();
    assert_eq!((restored.step, restored.checkpoint), (1, tree(1)));
    assert_eq!(restored.skipped[0].0, 2);
}
