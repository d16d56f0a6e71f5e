//! End-to-end tests of `ckpt convert`, `ckpt diff` and `ckpt verify` on
//! files, argument errors, and readers that go away.

mod common;
#[path = "../../../tests/interop/python.rs"]
mod python;

use std::process::Command;

use common::{ckpt, expect_error, fixture, stderr, stdout};

#[test]
fn convert_pth_to_safetensors_and_back_keeps_the_whole_tree() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("c.safetensors");
    let pth = dir.path().join("c.pth");
    let source = fixture("pth/checkpoint.pth");
    let out = ckpt(&["convert", source.to_str().unwrap(), st.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("27 tensors"), "{}", stdout(&out));
    assert!(
        ckpt(&["convert", st.to_str().unwrap(), pth.to_str().unwrap()])
            .status
            .success()
    );
    assert_eq!(ckpt::load(&pth).unwrap(), ckpt::load(&source).unwrap());
    let diff = ckpt(&["diff", source.to_str().unwrap(), pth.to_str().unwrap()]);
    assert_eq!(diff.status.code(), Some(0), "{}", stdout(&diff));
    assert!(
        stdout(&diff).starts_with("\nequal") || stdout(&diff).contains("equal: 27 tensors"),
        "{}",
        stdout(&diff)
    );
}

#[test]
fn convert_casts_floats_only() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("h.safetensors");
    let out = ckpt(&[
        "convert",
        fixture("pth/checkpoint.pth").to_str().unwrap(),
        out_path.to_str().unwrap(),
        "--dtype",
        "bf16",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sd = ckpt::load_state_dict(&out_path).unwrap();
    assert_eq!(sd["model_state_dict/fc1.weight"].dtype(), ckpt::DType::BF16);
    assert_eq!(
        sd["model_state_dict/bn.num_batches_tracked"].dtype(),
        ckpt::DType::I64
    );
    expect_error(
        &["convert", "a.pth", "b.pth", "--dtype", "int8"],
        "not a float dtype",
    );
}

#[test]
fn convert_strips_a_prefix_and_refuses_collisions() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("dp.safetensors");
    let mut sd = ckpt::StateDict::new();
    sd.insert(
        "module.fc.weight".into(),
        ckpt::TensorData::from_f32(&[1], &[1.0]).unwrap(),
    );
    sd.insert(
        "module.fc.bias".into(),
        ckpt::TensorData::from_f32(&[1], &[2.0]).unwrap(),
    );
    ckpt::save(&input, &sd.clone().into()).unwrap();
    let output = dir.path().join("plain.pth");
    let out = ckpt(&[
        "convert",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--strip-prefix",
        "module.",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = ckpt::load_state_dict(&output)
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(names, ["fc.weight", "fc.bias"]);

    sd.insert(
        "fc.bias".into(),
        ckpt::TensorData::from_f32(&[1], &[3.0]).unwrap(),
    );
    ckpt::save(&input, &sd.into()).unwrap();
    expect_error(
        &[
            "convert",
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            "--strip-prefix",
            "module.",
        ],
        "fc.bias",
    );
}

#[test]
fn convert_writes_and_reads_hugging_face_shards() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("model.safetensors");
    let source = fixture("mlp.safetensors");
    let out = ckpt(&[
        "convert",
        source.to_str().unwrap(),
        out_path.to_str().unwrap(),
        "--max-shard-size",
        "50KB",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let index = dir.path().join("model.safetensors.index.json");
    assert!(dir.path().join("model-00003-of-00003.safetensors").exists());
    let diff = ckpt(&["diff", source.to_str().unwrap(), index.to_str().unwrap()]);
    assert_eq!(diff.status.code(), Some(0), "{}", stdout(&diff));
    let inspect = ckpt(&["inspect", index.to_str().unwrap()]);
    assert!(
        stdout(&inspect).contains("(sharded checkpoint)"),
        "{}",
        stdout(&inspect)
    );
    expect_error(
        &["convert", "a.pth", "b.pth", "--max-shard-size", "5 parsecs"],
        "unknown unit",
    );
}

#[test]
fn convert_to_numpy_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let npz = dir.path().join("m.npz");
    let source = fixture("mlp.safetensors");
    assert!(
        ckpt(&["convert", source.to_str().unwrap(), npz.to_str().unwrap()])
            .status
            .success()
    );
    let diff = ckpt(&[
        "diff",
        "--json",
        source.to_str().unwrap(),
        npz.to_str().unwrap(),
    ]);
    assert_eq!(diff.status.code(), Some(0), "{}", stdout(&diff));
}

#[test]
fn convert_format_writes_that_format_whatever_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("checkpoint.tar");
    let out = ckpt(&[
        "convert",
        fixture("mlp.safetensors").to_str().unwrap(),
        out_path.to_str().unwrap(),
        "--format",
        "pth",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("-> "), "{}", stdout(&out));
    assert!(stdout(&out).contains("(PyTorch)"), "{}", stdout(&out));
    let loaded = ckpt::read(&out_path, &ckpt::LoadOptions::default()).unwrap();
    assert_eq!(loaded.format, ckpt::Format::PyTorch);
    assert_eq!(
        loaded.value,
        ckpt::load(fixture("mlp.safetensors")).unwrap()
    );
}

/// `--format dcp` writes a folder that reads back as the same tree, that
/// `verify` checks, that is never overwritten, and that torch's
/// `dcp.load` reads with 1 and 2 ranks.
#[test]
fn convert_format_dcp_writes_a_folder_torch_loads() {
    let dir = tempfile::tempdir().unwrap();
    for source in ["dcp/single.expected.pth", "pth/checkpoint.pth"] {
        let source = fixture(source);
        let folder = dir.path().join(source.file_stem().unwrap());
        let (src, out_dir) = (source.to_str().unwrap(), folder.to_str().unwrap());
        let out = ckpt(&["convert", src, out_dir, "--format", "dcp"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("(PyTorch distributed checkpoint (DCP))"));
        assert!(folder.join(".metadata").is_file());
        let verify = ckpt(&["verify", out_dir]);
        assert!(verify.status.success(), "{}", stdout(&verify));
        let again = ckpt(&["convert", src, out_dir, "--format", "dcp"]);
        assert!(stderr(&again).contains("already holds a committed DCP checkpoint"));
        if let Some(python) = python::python() {
            for world in ["1", "2"] {
                python::run_peer(&python, "dcp_peer.py", &["load", out_dir, src, world]);
            }
        }
    }
    // A folder to one safetensors file streams tensor by tensor: the same
    // tensors as the whole tree.
    let streamed = dir.path().join("ranks4.safetensors");
    let folder = fixture("dcp/ranks4_dim1");
    let out = ckpt(&[
        "convert",
        folder.to_str().unwrap(),
        streamed.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("(PyTorch distributed checkpoint (DCP)) ->")
            && stdout(&out).contains("(safetensors): 5 tensors"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        ckpt::load(&streamed).unwrap(),
        ckpt::load(fixture("dcp/ranks4_dim1.expected.pth")).unwrap()
    );
    // A tree whose keys are already strings reads back as it was.
    let back = ckpt::load(dir.path().join("single.expected")).unwrap();
    assert_eq!(
        back,
        ckpt::load(fixture("dcp/single.expected.pth")).unwrap()
    );
}

/// `--format dcp-hf` writes the Hugging Face flavour: torch's
/// `HuggingFaceStorageReader` loads it, ckpt reads it back, and a tree
/// with values other than tensors is refused by key.
#[test]
fn convert_format_dcp_hf_writes_what_torchs_hugging_face_reader_loads() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("hf");
    let source = fixture("mlp.safetensors");
    let (src, out_dir) = (source.to_str().unwrap(), folder.to_str().unwrap());
    let out = ckpt(&["convert", src, out_dir, "--format", "dcp-hf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("(DCP, Hugging Face flavour)"),
        "{}",
        stdout(&out)
    );
    assert!(folder.join("model.safetensors.index.json").is_file());
    let model = ckpt::read(
        folder.join("model-00001-of-00001.safetensors"),
        &Default::default(),
    );
    let info = &model.unwrap().metadata["DCP_SHARDING_INFO"];
    assert!(info.contains("saved_offsets"), "{info}");
    assert_eq!(ckpt::load(&folder).unwrap(), ckpt::load(&source).unwrap());
    if let Some(python) = python::python() {
        python::run_peer(&python, "dcp_peer.py", &["load-hf", out_dir, src]);
    }
    let nested = fixture("pth/checkpoint.pth");
    let refused = dir.path().join("refused");
    let out = ckpt(&[
        "convert",
        nested.to_str().unwrap(),
        refused.to_str().unwrap(),
        "--format",
        "dcp-hf",
    ]);
    assert!(
        stderr(&out).contains("holds tensors only"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn diff_reports_differences_with_exit_1_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.pth");
    let mut sa = ckpt::StateDict::new();
    sa.insert(
        "w".into(),
        ckpt::TensorData::from_f32(&[3], &[1.0, 2.0, 3.0]).unwrap(),
    );
    sa.insert(
        "gone".into(),
        ckpt::TensorData::from_f32(&[1], &[0.0]).unwrap(),
    );
    let mut sb = ckpt::StateDict::new();
    sb.insert(
        "w".into(),
        ckpt::TensorData::from_f32(&[3], &[1.0, 2.5, 3.0]).unwrap(),
    );
    sb.insert(
        "new".into(),
        ckpt::TensorData::from_f32(&[1], &[0.0]).unwrap(),
    );
    ckpt::save(&a, &sa.into()).unwrap();
    ckpt::save(&b, &sb.into()).unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());

    let out = ckpt(&["diff", a, b]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("only in A: gone") && text.contains("only in B: new"),
        "{text}"
    );
    assert!(text.contains("5.000e-1"), "{text}");

    let out = ckpt(&["diff", "--json", "--atol", "0.6", a, b]);
    assert_eq!(out.status.code(), Some(1)); // keys still differ
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["only_in_a"], serde_json::json!(["gone"]));
    let w = &json["tensors"][0];
    assert_eq!(w["name"], "w");
    assert_eq!(w["equal"], true);
    assert_eq!(w["max_abs"], 0.5);
    assert_eq!(w["max_rel"], 0.2);

    assert_eq!(ckpt(&["diff", a, "/no/such.pth"]).status.code(), Some(2));
}

#[test]
fn verify_reports_checksum_mismatches_but_the_file_still_loads() {
    let good = fixture("pth/checkpoint.pth");
    let out = ckpt(&[
        "verify",
        good.to_str().unwrap(),
        fixture("numpy/stored.npz").to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains(": ok (PyTorch, 27 tensors"),
        "{}",
        stdout(&out)
    );

    let no_crc = fixture("pth/no_crc.pth");
    assert!(ckpt::load(&no_crc).is_ok());
    let out = ckpt(&["verify", no_crc.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("checksums do not match") && stdout(&out).contains("no_crc/data/0"),
        "{}",
        stdout(&out)
    );

    expect_error(
        &[
            "verify",
            good.to_str().unwrap(),
            fixture("hostile/truncated.pth").to_str().unwrap(),
        ],
        "truncated.pth",
    );
}

#[test]
fn counts_of_zero_and_tolerances_that_are_not_numbers_are_argument_errors() {
    for (args, needle) in [
        (
            &[
                "run",
                "m.pth",
                "--input",
                "x.npy",
                "--output",
                "y.npy",
                "--batch-size",
                "0",
            ][..],
            "--batch-size",
        ),
        (&["gc", "runs/x", "--keep-last", "0"][..], "--keep-last"),
        (&["demo", "--epochs", "0"][..], "--epochs"),
        (&["diff", "a.pth", "b.pth", "--atol", "nan"][..], "--atol"),
        (&["diff", "a.pth", "b.pth", "--rtol=-1"][..], "--rtol"),
    ] {
        let out = ckpt(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    use std::process::Stdio;
    let files: Vec<String> = (0..2000)
        .map(|_| fixture("mlp.safetensors").to_str().unwrap().to_owned())
        .collect();
    let mut args = vec!["verify".to_owned()];
    args.extend(files);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `ckpt verify … | head -0`: the reader closes before the first line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}
