//! `ckpt verify FILE...`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use crate::output::human_bytes;

/// Verifies each file; returns the exit code: 0 all good, 1 some checksum
/// mismatch, 2 some file could not be read (each reported on its own line).
pub fn run(files: &[PathBuf], out: &mut dyn Write) -> Result<u8> {
    let mut code = 0;
    for file in files {
        match ckpt::verify(file) {
            Ok(report) if report.mismatches.is_empty() => writeln!(
                out,
                "{}: ok ({}, {} tensors, {}, {} checksums)",
                file.display(),
                report.format,
                report.tensors,
                human_bytes(report.bytes),
                report.checksums,
            )?,
            Ok(report) => {
                code = code.max(1);
                writeln!(
                    out,
                    "{}: {} of {} checksums do not match (the file still loads, as torch does not check them):",
                    file.display(),
                    report.mismatches.len(),
                    report.checksums,
                )?;
                for entry in &report.mismatches {
                    writeln!(out, "  {entry}")?;
                }
            }
            Err(err) => {
                code = 2;
                crate::output::error(&err.into());
            }
        }
    }
    Ok(code)
}
