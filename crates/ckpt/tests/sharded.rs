//! Hugging Face sharded checkpoints (index + shards), both flavours.

mod common;

use common::*;

use ckpt::{Error, Format, SaveOptions, StateDict, TensorData};
use serde_json::Value as Json;

fn assert_expected(sd: &StateDict) {
    let text = std::fs::read_to_string(fixture("sharded/expected.json")).unwrap();
    let want: Json = serde_json::from_str(&text).unwrap();
    let want = want.as_object().unwrap();
    let names: Vec<&String> = sd.keys().collect();
    assert_eq!(names, want.keys().collect::<Vec<_>>());
    for (name, w) in want {
        assert_tensor(name, &sd[name.as_str()], w);
    }
}

#[test]
fn safetensors_and_bin_indexes_read_as_one_state_dict() {
    for index in [
        "sharded/model.safetensors.index.json",
        "sharded/pytorch_model.bin.index.json",
    ] {
        let loaded = ckpt::read(fixture(index), &ckpt::LoadOptions::default()).unwrap();
        assert_eq!(loaded.format, Format::ShardedIndex);
        assert_eq!(loaded.metadata["total_size"], "256");
        assert_expected(&StateDict::try_from(&loaded.value).unwrap());
    }
}

#[test]
fn an_index_cannot_reach_outside_its_folder() {
    let err = ckpt::load(fixture("hostile/escape.safetensors.index.json")).unwrap_err();
    assert!(err.to_string().contains("plain file name"), "{err}");
}

#[test]
fn an_index_naming_a_missing_tensor_is_an_error() {
    let err = ckpt::load(fixture("sharded/missing.safetensors.index.json")).unwrap_err();
    assert!(
        matches!(err, Error::HeaderEntry { ref entry, .. } if entry == "nope"),
        "{err}"
    );
}

#[test]
fn writing_shards_splits_by_size_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let sd: StateDict = (0..5)
        .map(|i| {
            (
                format!("layer{i}.weight"),
                TensorData::from_f32(&[10], &[i as f32; 10]).unwrap(),
            )
        })
        .collect();
    let path = dir.path().join("model.safetensors");
    ckpt::save_with(
        &path,
        &sd.clone().into(),
        &SaveOptions::default().max_shard_size(80),
    )
    .unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "model-00001-of-00003.safetensors",
            "model-00002-of-00003.safetensors",
            "model-00003-of-00003.safetensors",
            "model.safetensors.index.json"
        ]
    );
    let index = dir.path().join("model.safetensors.index.json");
    assert_eq!(ckpt::load_state_dict(&index).unwrap(), sd);
    // Each shard is a plain file of its format.
    assert_eq!(
        ckpt::load_state_dict(dir.path().join("model-00003-of-00003.safetensors"))
            .unwrap()
            .len(),
        1
    );

    let bin_index = dir.path().join("pytorch_model.bin.index.json");
    ckpt::save(&bin_index, &sd.clone().into()).unwrap();
    assert!(dir.path().join("pytorch_model-00001-of-00001.bin").exists());
    assert_eq!(ckpt::load_state_dict(&bin_index).unwrap(), sd);
}

#[test]
fn shards_are_written_in_the_format_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let sd: StateDict = (0..3)
        .map(|i| {
            (
                format!("w{i}"),
                TensorData::from_f32(&[10], &[i as f32; 10]).unwrap(),
            )
        })
        .collect();
    let path = dir.path().join("model.safetensors");
    let options = SaveOptions::default()
        .max_shard_size(40)
        .format(Format::PyTorch);
    ckpt::save_with(&path, &sd.clone().into(), &options).unwrap();
    let shard = dir.path().join("model-00001-of-00003.safetensors");
    let loaded = ckpt::read(&shard, &Default::default()).unwrap();
    assert_eq!(
        loaded.format,
        Format::PyTorch,
        "the contents, whatever the name"
    );
    let index = dir.path().join("model.safetensors.index.json");
    assert_eq!(ckpt::load_state_dict(&index).unwrap(), sd);
}

#[test]
fn an_index_naming_an_index_as_a_shard_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("loop.safetensors.index.json");
    std::fs::write(
        &index,
        r#"{"weight_map": {"w": "loop.safetensors.index.json"}}"#,
    )
    .unwrap();
    let err = ckpt::load(&index).unwrap_err();
    assert!(err.to_string().contains("itself an index"), "{err}");
}
