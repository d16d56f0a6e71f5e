//! Every hostile fixture (tests/fixtures/hostile, made by make_hostile.py
//! and make_fixtures.py) through every command that takes a file, each run
//! under a 1 GiB address-space limit and a time limit: a clear error or an
//! answer, never a panic, an abort, a hang, raw control characters on the
//! terminal, or a file outside the output folder.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The address-space limit each run gets, in KiB (`ulimit -v`).
const MEMORY_KIB: u64 = 1 << 20;
/// The time each run gets.
const TIME: Duration = Duration::from_secs(30);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs ckpt in `dir` under the memory and time limits. Its output goes to
/// files outside `dir`, so that no amount of it can block the run.
fn limited(dir: &Path, args: &[&str]) -> Run {
    let logs = tempfile::tempdir().unwrap();
    let (out, err) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let started = Instant::now();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {MEMORY_KIB} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_ckpt"))
        .args(args)
        .current_dir(dir)
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .expect("run ckpt");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > TIME {
            child.kill().ok();
            panic!("ckpt {args:?} ran past {TIME:?} (a hang?)");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        status.code().is_some(),
        "ckpt {args:?} was killed: {status:?}"
    );
    let text = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
    Run {
        code: status.code(),
        stdout: text(&out),
        stderr: text(&err),
    }
}

/// Control characters a terminal acts on (newlines and tabs are fine).
fn raw_controls(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
}

/// Checks one run; an error must name one of `named` (the fixture, an
/// output, the spec).
fn check(run: &Run, args: &[&str], named: &[&str]) {
    assert!(
        matches!(run.code, Some(0 | 2)),
        "ckpt {args:?} exited {:?}: {}",
        run.code,
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
    assert!(
        !raw_controls(&run.stdout),
        "{args:?} printed raw control characters"
    );
    assert!(
        !raw_controls(&run.stderr),
        "{args:?} printed raw control characters"
    );
    if run.code == Some(2) {
        let err = &run.stderr;
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("ckpt: error: "), "{args:?}: {err}");
        assert!(
            named.iter().any(|n| err.contains(n)),
            "{args:?}: the error names no file: {err}"
        );
    }
}

fn hostile() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hostile");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// The hostile fixture `name`, as a path string.
fn hostile_file(name: &str) -> String {
    let path = hostile().into_iter().find(|f| f.ends_with(name));
    path.unwrap_or_else(|| panic!("no hostile fixture {name}"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// A `.npy` of one float32 sample of shape [1, 8, 8].
fn input(dir: &Path) -> PathBuf {
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 8, 8), }";
    let mut text = header.to_owned();
    while !(10 + text.len() + 1).is_multiple_of(64) {
        text.push(' ');
    }
    text.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((text.len() as u16).to_le_bytes());
    bytes.extend(text.as_bytes());
    bytes.extend([0u8; 256]);
    let path = dir.join("input.npy");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The commands that take a file, for a file `f` (outputs go to `out`).
fn commands(f: &str, input: &str) -> Vec<Vec<String>> {
    let mut all: Vec<Vec<&str>> = vec![
        vec!["inspect", f],
        vec!["inspect", "--json", f],
        vec!["verify", f],
        vec!["diff", f, f],
        vec!["run", f, "--input", input, "--output", "out/o.npy"],
        vec!["export", f, "out/m.onnx"],
    ];
    for ext in ["safetensors", "pth", "npz", "ckptz"] {
        all.push(vec!["convert", f, ["out/c.", ext].concat().leak()]);
    }
    all.into_iter()
        .map(|c| c.into_iter().map(str::to_owned).collect())
        .collect()
}

#[test]
fn every_hostile_fixture_through_every_command_within_memory_and_time() {
    let files = hostile();
    assert!(files.len() >= 45, "only {} hostile fixtures", files.len());
    let no_tensors = hostile_file("no_tensors.safetensors");
    let mut runs = 0;
    for file in &files {
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir(work.path().join("out")).unwrap();
        let input = input(work.path());
        let (f, i) = (file.to_str().unwrap(), input.to_str().unwrap());
        let name = file.file_name().unwrap().to_str().unwrap();
        let spec_file = name.ends_with(".spec.json");
        // A spec's errors name its layer; the others, the file or output.
        let named = match spec_file {
            true => vec!["model spec: ", "cannot export "],
            false => vec![name, "out/"],
        };
        let list = if spec_file {
            let spec = ["--spec", f];
            vec![
                [
                    &["run", &no_tensors, "--input", i, "--output", "out/o.npy"][..],
                    &spec,
                ]
                .concat(),
                [&["export", &no_tensors, "out/m.onnx"][..], &spec].concat(),
            ]
            .into_iter()
            .map(|c| c.into_iter().map(str::to_owned).collect())
            .collect()
        } else {
            commands(f, i)
        };
        for args in list {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = limited(work.path(), &args);
            check(&run, &args, &named);
            runs += 1;
        }
        // Nothing was written but the outputs asked for.
        for entry in std::fs::read_dir(work.path().join("out")).unwrap() {
            let written = entry.unwrap().file_name();
            let written = written.to_str().unwrap();
            assert!(
                [
                    "o.npy",
                    "m.onnx",
                    "c.safetensors",
                    "c.pth",
                    "c.npz",
                    "c.ckptz"
                ]
                .contains(&written),
                "{name}: wrote {written:?}"
            );
        }
        let mut top: Vec<String> = std::fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        top.sort();
        assert_eq!(top, ["input.npy", "out"], "{name}");
    }
    assert!(runs > 400, "{runs}");
    assert_eq!(hostile(), files, "a command wrote beside the fixtures");
}

#[test]
fn bombs_are_refused_by_name_not_by_running_out_of_memory() {
    let work = tempfile::tempdir().unwrap();
    for (name, needle) in [
        (
            "bomb_pickle.pth",
            "data.pkl: the deflated entry inflates to more than",
        ),
        (
            "bomb_lying_storage.pth",
            "cannot inflate to the 1181116004 its header states",
        ),
        ("bomb_index.ckptz", "the index inflates to more than"),
        (
            "bomb_sparse.ckptz",
            "cannot inflate to the 1073741824 its header states",
        ),
        // 1.1 GiB of real zeros: more than the limit leaves, said cleanly.
        ("bomb_member.npz", "needs 1181116132 bytes of memory"),
        ("dup_key.npy", "names a key twice"),
        ("dup_entry.pth", "two entries have the same name"),
        ("dup_member.npz", "two entries have the same name"),
        ("dup_tensor.safetensors", "the key \"w\" is named twice"),
        ("shape_overflow.safetensors", "whose size overflows"),
    ] {
        for command in ["inspect", "verify"] {
            let path = hostile_file(name);
            let run = limited(work.path(), &[command, &path]);
            assert_eq!(run.code, Some(2), "{name}: {}", run.stderr);
            assert!(run.stderr.contains(needle), "{name}: {}", run.stderr);
        }
    }
}

#[test]
fn specs_past_the_budgets_are_refused_naming_the_layer() {
    let work = tempfile::tempdir().unwrap();
    let input = input(work.path());
    let no_tensors = hostile_file("no_tensors.safetensors");
    for (name, needle) in [
        (
            "moon_input.spec.json",
            "input_shape: a sample of shape [4096, 4096, 64]",
        ),
        ("moon_work.spec.json", "0: Conv2d takes"),
        ("dilation_zero.spec.json", "0: dilation must be positive"),
        (
            "groups_not_dividing.spec.json",
            "0: groups 2 must divide 3 and 4 channels",
        ),
    ] {
        let spec = hostile_file(name);
        let args = [
            "run",
            &no_tensors,
            "--spec",
            &spec,
            "--input",
            input.to_str().unwrap(),
            "--output",
            "o.npy",
        ];
        let run = limited(work.path(), &args);
        assert_eq!(run.code, Some(2), "{name}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{name}: {}", run.stderr);
    }
}
