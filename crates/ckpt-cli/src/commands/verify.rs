//! `ckpt verify PATH...`: files, or run directories of the store.

use std::io::Write;
use std::path::Path;

use anyhow::Result;

use crate::args::VerifyArgs;
use crate::shared::output::human_bytes;
use crate::shared::progress;

/// Verifies each file; returns the exit code: 0 all good, 1 some checksum
/// mismatch, 2 some file could not be read (each reported on its own line).
pub fn run(args: &VerifyArgs, out: &mut dyn Write) -> Result<u8> {
    let mut code = 0;
    for file in &args.files {
        // A local directory, or an object-store prefix that names no file
        // format, is a run.
        let is_run = is_run_dir(file)
            || (ckpt::storage::Location::parse(file).is_remote()
                && ckpt::Format::from_path(file).is_err());
        if is_run {
            match run_dir(file, out) {
                Ok(ok) => code = code.max(if ok { 0 } else { 1 }),
                Err(err) => {
                    code = 2;
                    crate::shared::output::error(&err);
                }
            }
            continue;
        }
        match ckpt::verify(file) {
            Ok(report) if report.mismatches.is_empty() => {
                writeln!(
                    out,
                    "{}: ok ({}, {} tensors, {}, {} checksums)",
                    file.display(),
                    report.format,
                    report.tensors,
                    human_bytes(report.bytes),
                    report.checksums,
                )?;
                if let Some(pickle) = &report.pickle {
                    writeln!(out, "  in Python: {}", pickle.verdict())?;
                }
            }
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
                crate::shared::output::error(&err.into());
            }
        }
    }
    Ok(code)
}

/// A local folder is a run when it has a manifest or step directories
/// (a damaged manifest is rebuilt from them); any other folder is a model
/// folder, verified as the file it is read from.
fn is_run_dir(dir: &Path) -> bool {
    dir.is_dir()
        && (dir.join("manifest.json").exists()
            || std::fs::read_dir(dir).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("step-"))
            }))
}

/// Verifies a run directory: every committed step's hashes and structure,
/// and torn saves. Returns whether everything is intact.
fn run_dir(dir: &Path, out: &mut dyn Write) -> Result<bool> {
    let reader = ckpt::store::RunReader::open(dir)?;
    let check = reader.check(progress::bytes("verifying"))?;
    let steps = reader.steps();
    writeln!(
        out,
        "{}: run directory, {} committed steps",
        dir.display(),
        steps.len()
    )?;
    let mut problems = 0;
    for ((step, problem), info) in check.steps.iter().zip(&steps) {
        match problem {
            None => writeln!(out, "  step {step}: ok ({})", human_bytes(info.bytes))?,
            Some(p) => {
                problems += 1;
                writeln!(out, "  step {step}: {p}")?;
            }
        }
    }
    for name in &check.leftovers {
        if check.writer_active {
            writeln!(
                out,
                "  {name}: a save in progress (a writer holds the lock)"
            )?;
        } else {
            problems += 1;
            writeln!(out, "  {name}: left by an interrupted save or deletion (removed when the run is next opened for writing)")?;
        }
    }
    if problems == 0 {
        writeln!(out, "{}: ok", dir.display())?;
    } else {
        writeln!(
            out,
            "{}: {problems} problem{}",
            dir.display(),
            if problems == 1 { "" } else { "s" }
        )?;
    }
    Ok(check.is_ok())
}
