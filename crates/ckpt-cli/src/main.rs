//! `ckpt`: inspect, convert and manage neural-network checkpoints.
//!
//! The binary owns all output: libraries return values and errors, and
//! this crate turns them into tables, JSON, messages and exit codes
//! (0 success, 2 error).

mod inspect;
mod output;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Save, load, inspect and convert neural-network checkpoints, safely.
///
/// ckpt reads files without running any code from them, and reports bad
/// files as one clear line naming the file and the place in it.
#[derive(Parser)]
#[command(name = "ckpt", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show every tensor of a file (name, dtype, shape, parameters, bytes),
    /// the totals, the non-tensor values of a checkpoint, and the metadata.
    ///
    /// The format comes from the extension (.safetensors) and is checked
    /// against the file's first bytes. The file is memory-mapped: inspecting
    /// a multi-gigabyte file reads only its header.
    Inspect {
        /// The file to inspect.
        file: PathBuf,
        /// Print JSON for programs instead of a table:
        /// {"format", "tensors": [{"name", "dtype", "shape", "bytes"}],
        /// "values", "metadata", "total_params", "total_bytes"}, with
        /// PyTorch dtype names.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = io::stdout().lock();
    let result = match cli.command {
        Command::Inspect { file, json } => inspect::run(&file, json, &mut stdout),
    };
    match result.and_then(|()| stdout.flush().map_err(Into::into)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            output::error(&err);
            ExitCode::from(2)
        }
    }
}

/// A reader that went away (`ckpt inspect big.pth | head`) is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}
