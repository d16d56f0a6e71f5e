//! The Rust side's way to the Python peers, shared by every crate's
//! interop tests (included with `#[path]`).

use std::path::Path;
use std::process::Command;

/// The Python named by `CKPT_PYTHON`, or `None` (with a message saying the
/// test is skipped) when it is unset.
pub fn python() -> Option<String> {
    let python = std::env::var("CKPT_PYTHON").ok();
    if python.is_none() {
        eprintln!("skipping interop test: set CKPT_PYTHON to a Python with torch and safetensors");
    }
    python
}

/// Runs `tests/interop/SCRIPT ARGS...` and fails the test, showing its
/// output, when it fails.
pub fn run_peer(python: &str, script: &str, args: &[&str]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/interop")
        .join(script);
    let out = Command::new(python)
        .arg(path)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The peer's findings, shown with `-- --nocapture`.
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
}
