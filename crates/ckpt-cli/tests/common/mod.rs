//! What the end-to-end test files share: the fixtures, running the
//! binary, and its output as text.

// Each test file uses some of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A file of `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// Runs the `ckpt` binary with `args`, capturing its output.
pub fn ckpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(args)
        .output()
        .expect("run ckpt")
}

/// What the command printed on stdout.
pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// What the command printed on stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Runs ckpt expecting exit code 2 and an error line containing `needle`.
pub fn expect_error(args: &[&str], needle: &str) {
    let out = ckpt(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
}

/// Whether `ckpt export`'s report shows the tract check passed: "ok" in a
/// build with the check (feature `onnx-check`, in `full`), "skipped" and
/// why in one without it.
pub fn export_checked(report: &str) -> bool {
    if cfg!(feature = "onnx-check") {
        report.contains("check:      ok")
    } else {
        report.contains("check:      skipped (this ckpt was built without the onnx-check feature)")
    }
}
