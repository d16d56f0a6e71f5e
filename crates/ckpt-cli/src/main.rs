//! `ckpt`: inspect, convert and manage neural-network checkpoints.
//!
//! The binary owns all output: libraries return values and errors, and
//! this crate turns them into tables, JSON, messages and exit codes
//! (0 success, 1 "differs" from `ckpt diff`, 2 error).

mod args;
mod commands;
mod shared;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::args::Cli;
use crate::shared::output;

fn main() -> ExitCode {
    let cli = parse();
    // Everything printed for people passes through one escaping writer.
    let mut stdout = output::Printable::new(io::stdout().lock());
    let result = commands::dispatch(cli.command, &mut stdout);
    match result.and_then(|code| stdout.flush().map(|()| code).map_err(Into::into)) {
        Ok(code) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            output::error(&err);
            ExitCode::from(2)
        }
    }
}

/// The command line, as `Cli::parse` reads it (usage errors exit with
/// code 2), with clap's colours under the same rule as ours
/// ([`output::colour_choice`]).
fn parse() -> Cli {
    let mut matches = Cli::command().color(output::colour_choice()).get_matches();
    Cli::from_arg_matches_mut(&mut matches)
        .unwrap_or_else(|err| err.format(&mut Cli::command()).exit())
}

/// A reader that went away (`ckpt inspect big.pth | head`) is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let kind = cause
            .downcast_ref::<io::Error>()
            .map(io::Error::kind)
            .or_else(|| {
                cause
                    .downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            });
        kind == Some(io::ErrorKind::BrokenPipe)
    })
}
