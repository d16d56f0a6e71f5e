//! A moto S3 server for the tests (tests/interop/moto_server.py), started
//! once per test process on a free loopback port and stopped when the
//! process exits (its standard input closes). Included with `#[path]`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The bucket every test uses (each under its own prefix).
pub const BUCKET: &str = "ckpt-test";

static SERVER: OnceLock<Option<Mutex<Child>>> = OnceLock::new();

/// Starts the server (once) and points the `AWS_*` variables at it;
/// `None`, with a message, when `CKPT_PYTHON` is unset.
pub fn start() -> Option<String> {
    let server = SERVER.get_or_init(|| {
        let Ok(python) = std::env::var("CKPT_PYTHON") else {
            eprintln!("skipping S3 test: set CKPT_PYTHON to a Python with moto[server]");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/interop/moto_server.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .arg(BUCKET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start moto");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "moto did not start");
        // Set once, under the OnceLock, before any test uses them.
        for (k, v) in [
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{port}")),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "ckpt".into()),
            ("AWS_SECRET_ACCESS_KEY", "ckpt".into()),
            ("AWS_REGION", "us-east-1".into()),
        ] {
            std::env::set_var(k, v);
        }
        Some(Mutex::new(child))
    });
    server
        .as_ref()
        .map(|_| std::env::var("AWS_ENDPOINT").unwrap())
}
