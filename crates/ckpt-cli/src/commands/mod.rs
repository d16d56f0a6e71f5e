//! One module per command. Each takes its arguments struct (`args.rs`)
//! and the escaping stdout writer, and uses the shared modules
//! (`shared/`), never another command.

pub mod compress;
pub mod convert;
pub mod demo;
pub mod diff;
pub mod eval;
pub mod export;
pub mod gc;
pub mod inspect;
pub mod ls;
#[cfg(feature = "plot")]
pub mod plot;
pub mod run;
pub mod verify;

use std::io::Write;

use anyhow::Result;

use crate::args::Command;

/// Runs `command`; returns the exit code (0, or 1 for "differs" or
/// "damaged" from `diff`, `verify` and `export`).
pub fn dispatch(command: Command, out: &mut dyn Write) -> Result<u8> {
    let done = |()| 0;
    match command {
        Command::Inspect(args) => inspect::run(&args, out).map(done),
        Command::Convert(args) => convert::run(&args, out).map(done),
        Command::Verify(args) => verify::run(&args, out),
        Command::Demo(args) => demo::run(&args, out).map(done),
        Command::Export(args) => export::run(&args, out),
        Command::Prune(args) => compress::prune(&args, out).map(done),
        Command::Quantize(args) => compress::quantize(&args, out).map(done),
        Command::Eval(args) => eval::run(&args, out).map(done),
        Command::Run(args) => run::run(&args, out).map(done),
        Command::Ls(args) => ls::run(&args, out).map(done),
        Command::Gc(args) => gc::run(&args, out).map(done),
        #[cfg(feature = "plot")]
        Command::Plot(args) => plot::run(&args, out).map(done),
        Command::Diff(args) => diff::run(&args, out).map(|equal| u8::from(!equal)),
    }
}
