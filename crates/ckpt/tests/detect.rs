//! Formats by content, whatever the file is called, and folders read as
//! the model they hold.

mod common;

use std::path::Path;

use ckpt::{Error, Format, LoadOptions};
use common::*;

fn read(path: &Path) -> ckpt::Result<ckpt::Loaded> {
    ckpt::read(path, &LoadOptions::default())
}

#[test]
fn files_open_whatever_they_are_called() {
    let dir = tempfile::tempdir().unwrap();
    for (fixture_name, new_name, format) in [
        ("pth/all_dtypes.pth", "checkpoint.pth.tar", Format::PyTorch),
        ("pth/all_dtypes.pth", "weights", Format::PyTorch),
        ("pth/legacy.pth", "old_model.tar", Format::PyTorch),
        ("pth/torchscript.pt", "model.jit", Format::TorchScript),
        (
            "pth/torchscript.pt",
            "model.torchscript",
            Format::TorchScript,
        ),
        ("mlp.safetensors", "model.bin", Format::Safetensors),
        ("mlp.safetensors", "mlp", Format::Safetensors),
        ("numpy/stored.npz", "arrays.zip", Format::Npz),
        ("numpy/f32.npy", "array", Format::Npy),
        ("ckptz/valid.ckptz", "valid.dat", Format::Compressed),
        ("pth/exported.pt2", "model", Format::ExportedProgram),
        ("pth/exported.pt2", "exported.pth", Format::ExportedProgram),
    ] {
        let src = fixture(fixture_name);
        if !src.exists() {
            panic!("fixture {fixture_name} is missing");
        }
        let renamed = dir.path().join(new_name);
        std::fs::copy(&src, &renamed).unwrap();
        let original = read(&src).unwrap();
        let loaded = read(&renamed).unwrap_or_else(|e| panic!("{new_name}: {e}"));
        assert_eq!(loaded.format, format, "{new_name}");
        assert_eq!(loaded.value, original.value, "{new_name}");
    }
}

#[test]
fn unrecognised_contents_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes");
    std::fs::write(&path, b"just some text, not a model at all").unwrap();
    let err = read(&path).unwrap_err();
    assert!(matches!(err, Error::UnrecognisedFormat { .. }), "{err}");
    assert!(err.to_string().contains("notes"), "{err}");
}

#[test]
fn writing_takes_the_format_from_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let value = ckpt::load(fixture("mlp.safetensors")).unwrap();
    let tar = dir.path().join("checkpoint.pth.tar");
    ckpt::save(&tar, &value).unwrap();
    assert_eq!(read(&tar).unwrap().format, Format::PyTorch);
    let err = ckpt::save(dir.path().join("model.jit"), &value).unwrap_err();
    assert!(matches!(err, Error::ReadOnlyFormat { .. }), "{err}");
    // Or from the options, whatever the name.
    let named = dir.path().join("checkpoint.tar");
    let options = ckpt::SaveOptions::default().format(Format::PyTorch);
    ckpt::save_with(&named, &value, &options).unwrap();
    let loaded = read(&named).unwrap();
    assert_eq!((loaded.format, loaded.value), (Format::PyTorch, value));
}

#[test]
fn a_hugging_face_folder_opens_as_its_model() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("bert");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(
        folder.join("config.json"),
        r#"{"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 8}"#,
    )
    .unwrap();
    std::fs::copy(fixture("mlp.safetensors"), folder.join("model.safetensors")).unwrap();
    std::fs::write(folder.join("vocab.txt"), "[PAD]\n").unwrap();
    let loaded = read(&folder).unwrap();
    assert_eq!(
        loaded.value,
        ckpt::load(fixture("mlp.safetensors")).unwrap()
    );
    assert_eq!(loaded.metadata["config.model_type"], "bert");
    assert_eq!(loaded.metadata["config.architectures"], "BertModel");
    assert_eq!(loaded.metadata["folder.weights"], "model.safetensors");
    assert!(ckpt::verify(&folder).unwrap().mismatches.is_empty());
}

#[test]
fn a_sharded_folder_opens_through_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("sharded");
    std::fs::create_dir(&folder).unwrap();
    for name in [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        std::fs::copy(fixture(&format!("sharded/{name}")), folder.join(name)).unwrap();
    }
    let loaded = read(&folder).unwrap();
    assert_eq!(loaded.format, Format::ShardedIndex);
    assert_eq!(
        loaded.value,
        ckpt::load(fixture("sharded/model.safetensors.index.json")).unwrap()
    );
}

#[test]
fn folders_that_hold_no_single_model_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let err = read(dir.path()).unwrap_err();
    assert!(err.to_string().contains("holds no weight file"), "{err}");
    std::fs::copy(fixture("mlp.safetensors"), dir.path().join("a.safetensors")).unwrap();
    std::fs::copy(fixture("pth/all_dtypes.pth"), dir.path().join("b.pth")).unwrap();
    let err = read(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("a.safetensors") && msg.contains("b.pth"),
        "{msg}"
    );
    std::fs::write(dir.path().join("manifest.json"), "{}").unwrap();
    let err = read(dir.path()).unwrap_err();
    assert!(err.to_string().contains("run directory"), "{err}");
}

#[test]
fn an_index_that_names_itself_as_a_shard_is_an_error_not_a_recursion() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.bin");
    std::fs::write(&path, r#"{"weight_map": {"x": "a.bin"}}"#).unwrap();
    let err = read(&path).unwrap_err();
    assert!(err.to_string().contains("itself an index"), "{err}");
    // A shard that is a folder (or a link to one) is refused too.
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let index = dir.path().join("b.index.json");
    std::fs::write(&index, r#"{"weight_map": {"x": "sub"}}"#).unwrap();
    let err = read(&index).unwrap_err();
    assert!(err.to_string().contains("is a folder"), "{err}");
}

#[test]
fn a_folder_with_a_file_and_a_stale_index_reads_the_file_as_transformers_does() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("mlp.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        r#"{"weight_map": {"gone": "model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let loaded = read(dir.path()).unwrap();
    assert_eq!(loaded.metadata["folder.weights"], "model.safetensors");
    assert_eq!(
        loaded.value,
        ckpt::load(fixture("mlp.safetensors")).unwrap()
    );
}

#[test]
fn npz_members_never_escape_the_archive_and_ambiguous_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let t = ckpt::TensorData::from_f32(&[1], &[1.0]).unwrap();
    for name in [
        "../../../x",
        "/etc/passwd",
        "a/../../b",
        "C:evil",
        "a\\..\\b",
        "bad\u{1b}[2K",
    ] {
        let mut sd = ckpt::StateDict::new();
        sd.insert(name.to_owned(), t.clone());
        let out = dir.path().join("out.npz");
        let err = ckpt::save(&out, &sd.into()).unwrap_err();
        assert!(matches!(err, Error::UnsafeName { .. }), "{name}: {err}");
        assert!(!out.exists(), "{name}");
    }
    // A .npy header naming a key twice (numpy takes the last).
    let mut npy = std::fs::read(fixture("numpy/f32.npy")).unwrap();
    let header_end = 10 + u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let header = String::from_utf8(npy[10..header_end].to_vec()).unwrap();
    let doubled = header.replacen("'shape'", "'fortran_order': True, 'shape'", 1);
    let doubled = format!("{:<width$}", doubled.trim_end(), width = header.len());
    assert_eq!(doubled.len(), header.len(), "{doubled}");
    npy.splice(10..header_end, doubled.into_bytes());
    let path = dir.path().join("twice.npy");
    std::fs::write(&path, &npy).unwrap();
    let err = read(&path).unwrap_err();
    assert!(err.to_string().contains("names a key twice"), "{err}");
    // A zip with two entries of one name (torch takes the last).
    use ckpt::format::pytorch::zip::ZipWriter;
    let mut w = ZipWriter::new(Vec::new());
    w.entry(
        "a/x.npy",
        &[&std::fs::read(fixture("numpy/f32.npy")).unwrap()],
    )
    .unwrap();
    w.entry(
        "a/x.npy",
        &[&std::fs::read(fixture("numpy/f64.npy")).unwrap()],
    )
    .unwrap();
    let bytes = w.finish().unwrap();
    let err = ckpt::read_bytes(Format::Npz, bytes, Path::new("twice.npz")).unwrap_err();
    assert!(err.to_string().contains("same name"), "{err}");
}
