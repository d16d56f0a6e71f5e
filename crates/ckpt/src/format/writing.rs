//! Writing one file: [`SaveOptions`], [`Progress`], and the one dispatch
//! from a single-file format to its writer, written through the one
//! atomic replace.

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;

use super::{Format, WritePlan};
use crate::{Result, Value};

/// How to save a file.
///
/// ```
/// let options = ckpt::SaveOptions::default()
///     .metadata("architecture", "mlp")
///     .durable(true);
/// assert!(options.durable);
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SaveOptions {
    /// Called as the tensors are written, with (bytes written, bytes in
    /// all), at least every 1% and once at the end; for a sharded save,
    /// once per shard. Libraries never print: the caller draws the bar.
    pub progress: Option<Progress>,
    /// String metadata stored in the file (safetensors `__metadata__`).
    pub metadata: IndexMap<String, String>,
    /// Sync the file and its directory to disk before returning, so the new
    /// file survives a power cut. Off by default: the file is still replaced
    /// atomically (a crash leaves the old file or the new one, never a part),
    /// but the last save may be lost if the machine itself goes down.
    pub durable: bool,
    /// Split the tensors into Hugging Face style shards of at most this many
    /// bytes (a larger tensor gets a shard of its own), plus an index. Saving
    /// to an index path (`model.safetensors.index.json`) shards too, at
    /// [`DEFAULT_MAX_SHARD_SIZE`](crate::layout::hf::DEFAULT_MAX_SHARD_SIZE)
    /// unless this is set. Sharded files are flat: a nested checkpoint's
    /// tensors are stored under their flattened names.
    pub max_shard_size: Option<u64>,
    /// Write this format whatever the path's extension (a `checkpoint.tar`
    /// that is a `.pth` file); by default the extension picks it.
    pub format: Option<Format>,
}

impl SaveOptions {
    /// Adds one metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets [`SaveOptions::max_shard_size`].
    pub fn max_shard_size(mut self, bytes: u64) -> Self {
        self.max_shard_size = Some(bytes);
        self
    }

    /// Sets [`SaveOptions::progress`].
    ///
    /// ```
    /// let options = ckpt::SaveOptions::default().on_progress(|done, total| {
    ///     eprint!("\r{}%", done * 100 / total.max(1));
    /// });
    /// # let _ = options;
    /// ```
    pub fn on_progress(mut self, report: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        self.progress = Some(Progress::new(report));
        self
    }

    /// Sets [`SaveOptions::format`].
    ///
    /// ```
    /// let options = ckpt::SaveOptions::default().format(ckpt::Format::PyTorch);
    /// assert_eq!(options.format, Some(ckpt::Format::PyTorch));
    /// ```
    pub fn format(mut self, format: Format) -> Self {
        self.format = Some(format);
        self
    }

    /// Sets [`SaveOptions::durable`].
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }
}

/// Writes `value` as the single file `path` in `format`, replacing it
/// atomically.
pub(crate) fn write_file(
    format: Format,
    path: &Path,
    value: &Value,
    options: &SaveOptions,
) -> Result<()> {
    let plan = plan(format, value, path, options)?;
    crate::storage::write_atomic(path, options.durable, |out| {
        write_plan(&*plan, out, options)
    })
}

/// The one dispatch from a single-file format to its writer; `path` only
/// names the file in errors.
pub(crate) fn plan(
    format: Format,
    value: &Value,
    path: &Path,
    options: &SaveOptions,
) -> Result<Box<dyn WritePlan>> {
    Ok(match format {
        Format::Safetensors => Box::new(super::safetensors::Plan::new(value, &options.metadata)?),
        Format::PyTorch => Box::new(super::pytorch::Plan::new(value, path)?),
        Format::Npy | Format::Npz => Box::new(super::numpy::Plan::new(format, value, path)?),
        Format::Compressed => Box::new(super::compressed::Plan::new(value, &options.metadata)?),
        // Folders, written by their layouts.
        Format::ShardedIndex | Format::Dcp => {
            return Err(crate::Error::UnknownExtension {
                path: path.to_owned(),
            })
        }
        Format::TorchScript | Format::Pickle | Format::ExportedProgram => {
            return Err(crate::Error::ReadOnlyFormat {
                path: path.to_owned(),
                format,
            })
        }
    })
}

/// Writes a plan to `out`, reporting progress when `options` asks for it.
pub(crate) fn write_plan(
    plan: &dyn WritePlan,
    out: &mut dyn Write,
    options: &SaveOptions,
) -> io::Result<()> {
    match &options.progress {
        None => plan.write_to(out),
        Some(progress) => {
            let total = plan.payload_len();
            let mut counted = Counting {
                out,
                written: 0,
                next_report: 0,
                total,
                report: &*progress.0,
            };
            plan.write_to(&mut counted)?;
            (progress.0)(total, total);
            Ok(())
        }
    }
}

/// A progress callback, given (bytes done, bytes in all) as work proceeds
/// (see [`SaveOptions::progress`]).
///
/// ```
/// let mut options = ckpt::SaveOptions::default();
/// options.progress = Some(ckpt::Progress::new(|done, total| eprintln!("{done}/{total}")));
/// # assert!(options.progress.is_some());
/// ```
#[derive(Clone)]
pub struct Progress(pub(crate) Arc<dyn Fn(u64, u64) + Send + Sync>);

impl Progress {
    /// Wraps a callback.
    pub fn new(report: impl Fn(u64, u64) + Send + Sync + 'static) -> Progress {
        Progress(Arc::new(report))
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// Counts what passes through and reports it every 1% of `total`.
struct Counting<'a> {
    out: &'a mut dyn Write,
    written: u64,
    next_report: u64,
    total: u64,
    report: &'a (dyn Fn(u64, u64) + Send + Sync),
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.written += n as u64;
        if self.written >= self.next_report && self.written < self.total {
            (self.report)(self.written, self.total);
            self.next_report = self.written + (self.total / 100).max(1);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
