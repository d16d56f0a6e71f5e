//! Incremental checkpoints: chunks stored once by content. Fine-tuning with
//! frozen layers writes only what changed; a few changed embedding rows
//! rewrite only their chunks; whatever saves and retention do, every kept
//! step loads exactly and the blob folder holds exactly the chunks kept
//! steps name (property test).

use std::collections::BTreeSet;
use std::path::Path;

use ckpt::store::{CheckpointManager, KeepEvery, Retention, StoreOptions};
use ckpt::{StateDict, TensorData, TrainingCheckpoint};
use proptest::prelude::*;

const MIB: usize = 1 << 20;

fn tensor(floats: usize, fill: f32) -> TensorData {
    TensorData::from_f32(&[floats], &vec![fill; floats]).unwrap()
}

fn options() -> StoreOptions {
    StoreOptions::default()
        .incremental(true)
        .retention(Retention::default().keep_last(2))
}

/// The blob names in the run.
fn blobs(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir.join("blobs")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

#[test]
fn fine_tuning_with_frozen_layers_writes_only_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = CheckpointManager::open(dir.path(), options()).unwrap();
    let mut model = StateDict::new();
    for i in 0..4 {
        // 5 MiB each: two chunks apiece.
        model.insert(
            format!("backbone.{i}.weight"),
            tensor(5 * MIB / 4, i as f32),
        );
    }
    model.insert("head.weight".into(), tensor(1000, 0.0));
    let head_bytes = 4000;
    let first = m
        .save(1, &TrainingCheckpoint::new(model.clone()), &[])
        .unwrap();
    assert!(first.written >= 20 * MIB as u64, "{first:?}");
    for step in 2..=5 {
        model.insert("head.weight".into(), tensor(1000, step as f32));
        let report = m
            .save(step, &TrainingCheckpoint::new(model.clone()), &[])
            .unwrap();
        // The head's chunk and the small index, nothing of the backbone.
        assert!(
            report.written >= head_bytes && report.written < head_bytes + 4096,
            "step {step}: wrote {} bytes",
            report.written
        );
        assert_eq!(report.bytes, first.bytes);
        let loaded = m.load(step).unwrap();
        assert_eq!(loaded.model, model);
    }
    // Steps 1..3 were dropped; the backbone's chunks live on (steps 4, 5
    // name them), the old heads' chunks are gone: 8 + 2 blobs.
    assert_eq!(blobs(dir.path()).len(), 10);
    drop(m);
    // A reopened run finds its chunks and loads from them.
    let m = CheckpointManager::open(dir.path(), options()).unwrap();
    assert!(m.opened().removed.is_empty(), "{:?}", m.opened().removed);
    assert_eq!(m.restore_latest().unwrap().unwrap().checkpoint.model, model);
}

#[test]
fn changed_embedding_rows_rewrite_only_their_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = CheckpointManager::open(dir.path(), options()).unwrap();
    // 16 MiB: four chunks.
    let mut values = vec![0.5f32; 4 * MIB];
    let sd = |v: &[f32]| {
        let mut sd = StateDict::new();
        sd.insert(
            "embed.weight".into(),
            TensorData::from_f32(&[4096, 1024], v).unwrap(),
        );
        TrainingCheckpoint::new(sd)
    };
    m.save(1, &sd(&values), &[]).unwrap();
    // Two rows in the last quarter change.
    for v in &mut values[3500 * 1024..3502 * 1024] {
        *v = 2.0;
    }
    let report = m.save(2, &sd(&values), &[]).unwrap();
    assert!(
        report.written >= 4 * MIB as u64 && report.written < 4 * MIB as u64 + 4096,
        "{report:?}"
    );
    assert_eq!(m.load(2).unwrap().model, sd(&values).model);
}

#[test]
fn a_damaged_chunk_is_detected_and_restore_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = CheckpointManager::open(dir.path(), options()).unwrap();
    let mut model = StateDict::new();
    model.insert("w".into(), tensor(1000, 1.0));
    m.save(1, &TrainingCheckpoint::new(model.clone()), &[])
        .unwrap();
    model.insert("w".into(), tensor(1000, 2.0));
    m.save(2, &TrainingCheckpoint::new(model.clone()), &[])
        .unwrap();
    // Damage step 2's own chunk (the one step 1 does not name).
    let before = blobs(dir.path());
    let index =
        std::fs::read_to_string(dir.path().join("step-00000002/checkpoint.index.json")).unwrap();
    let hash = before.iter().find(|h| index.contains(h.as_str())).unwrap();
    let path = dir.path().join("blobs").join(hash);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let restored = m.restore_latest().unwrap().unwrap();
    assert_eq!(restored.step, 1);
    assert!(
        restored.skipped[0].1.contains(hash.as_str()),
        "{:?}",
        restored.skipped
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random saves (each changing a random subset of 4 tensors) under
    /// random retention, with an occasional gc: every kept step loads as
    /// saved, and the blobs are exactly the chunks kept steps name.
    #[test]
    fn retention_and_gc_never_delete_a_referenced_chunk(
        changes in proptest::collection::vec(0u8..16, 1..12),
        keep_last in 1usize..4,
        every in 1u64..4,
        gc_at in 0usize..12,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let retention = Retention::default().keep_last(keep_last).keep_every(KeepEvery::Steps(every * 3));
        let mut m = CheckpointManager::open(
            dir.path(),
            StoreOptions::default().incremental(true).retention(retention),
        ).unwrap();
        let mut model = StateDict::new();
        for i in 0..4 {
            model.insert(format!("t{i}"), tensor(300, 0.0));
        }
        let mut saved = std::collections::BTreeMap::new();
        for (i, mask) in changes.iter().enumerate() {
            let step = i as u64 + 1;
            for t in 0..4 {
                if mask & (1 << t) != 0 {
                    model.insert(format!("t{t}"), tensor(300, step as f32 + t as f32 / 10.0));
                }
            }
            m.save(step, &TrainingCheckpoint::new(model.clone()), &[]).unwrap();
            saved.insert(step, model.clone());
            if i == gc_at {
                m.gc(&Retention::default().keep_last(1), false).unwrap();
            }
            let mut named = BTreeSet::new();
            for s in m.steps() {
                prop_assert_eq!(&m.load(s.step).unwrap().model, &saved[&s.step]);
                let index = std::fs::read_to_string(
                    dir.path().join(s.dir()).join("checkpoint.index.json"),
                ).unwrap();
                let json: serde_json::Value = serde_json::from_str(&index).unwrap();
                for t in json["tensors"].as_array().unwrap() {
                    for h in t["chunks"].as_array().unwrap() {
                        named.insert(h.as_str().unwrap().to_owned());
                    }
                }
            }
            prop_assert_eq!(blobs(dir.path()), named);
        }
    }
}

#[test]
fn an_index_claiming_a_huge_tensor_and_chunk_allocates_nothing_it_claims() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = CheckpointManager::open(dir.path(), options().verify(false)).unwrap();
    let mut model = StateDict::new();
    model.insert("w".into(), tensor(1000, 1.0));
    m.save(1, &TrainingCheckpoint::new(model), &[]).unwrap();
    let path = dir.path().join("step-00000001/checkpoint.index.json");
    let index = std::fs::read_to_string(&path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&index).unwrap();
    // One chunk of 2^63 + 1 bytes standing for 2^61 float32s (8 EiB).
    json["chunk"] = serde_json::json!(9_223_372_036_854_775_809u64);
    json["tensors"][0]["shape"] = serde_json::json!([2_305_843_009_213_693_952u64]);
    std::fs::write(&path, json.to_string()).unwrap();
    let err = m.load(1).unwrap_err().to_string();
    assert!(err.contains("bytes where"), "{err}");
}

#[test]
fn a_steps_index_reads_as_its_checkpoint_anywhere_a_path_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = CheckpointManager::open(dir.path(), options()).unwrap();
    let mut model = StateDict::new();
    model.insert("w".into(), tensor(3 * MIB / 4 + 5, 1.5));
    model.insert("b".into(), tensor(3, -2.0));
    let mut saved = TrainingCheckpoint::new(model);
    saved.step = 7;
    m.save(7, &saved, &[]).unwrap();
    let index = dir.path().join("step-00000007/checkpoint.index.json");
    let loaded = ckpt::read(&index, &Default::default()).unwrap();
    assert_eq!(loaded.format, ckpt::Format::ShardedIndex);
    assert_eq!(
        TrainingCheckpoint::from_value(&loaded.value).unwrap(),
        saved
    );
    let report = ckpt::verify(&index).unwrap();
    assert_eq!(report.tensors, 2);

    // A damaged chunk is an error naming the blob.
    let blob = std::fs::read_dir(dir.path().join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::metadata(p).unwrap().len() == 12)
        .unwrap();
    std::fs::write(&blob, [0u8; 12]).unwrap();
    let err = ckpt::read(&index, &Default::default()).unwrap_err();
    assert!(
        err.to_string().contains(&blob.display().to_string()),
        "{err}"
    );
}
