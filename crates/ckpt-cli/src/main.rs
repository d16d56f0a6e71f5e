//! `ckpt`: inspect, convert and manage neural-network checkpoints.
//!
//! The binary owns all output: libraries return values and errors, and
//! this crate turns them into tables, JSON, messages and exit codes
//! (0 success, 1 "differs" from `ckpt diff`, 2 error).

mod compress;
mod convert;
mod demo;
mod diff;
mod digits;
mod eval;
mod export;
mod gc;
mod inspect;
mod ls;
mod model_io;
mod output;
#[cfg(feature = "plot")]
mod plot;
mod run;
mod values;
mod verify;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use ckpt::compress::quantize::{Activations, Granularity};
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
    /// The main job: train a small model on handwritten digits (shipped
    /// with ckpt), checkpointing every epoch, and end with a model package,
    /// an inference package, the validation-loss curve and the held-out
    /// accuracy.
    ///
    /// The data: 1,797 8×8 digits (UCI, CC BY 4.0), split into 1,257 for
    /// training, 270 for validation and 270 held out. The model: an MLP
    /// 64-128-64-10 with dropout, AdamW, warm-up then exponential decay.
    /// Each epoch is committed to the run directory (keep last 3 and the
    /// best by validation loss). Stop it at any moment (Ctrl-C, kill) and
    /// `--resume` continues exactly where the last checkpoint left off;
    /// `--resume` with more `--epochs` extends a finished run, identically
    /// to a run that had that many epochs from the start.
    Demo {
        /// Epochs to train (in total, counting those already done).
        #[arg(long, default_value_t = 30, value_parser = at_least_one::<u64>)]
        epochs: u64,
        /// The run directory.
        #[arg(long, default_value = "runs/demo")]
        dir: PathBuf,
        /// Seed for initialisation, data order and dropout.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Checkpoint and package format.
        #[arg(long, value_enum, default_value = "safetensors")]
        format: FileFormat,
        /// Continue the run in --dir from its last checkpoint.
        #[arg(long)]
        resume: bool,
    },

    /// Export a model package (or a state dict with --spec) to ONNX, then
    /// run the file in tract, an independent ONNX runtime, on a random batch
    /// and compare with ckpt's own inference.
    ///
    /// Every spec layer maps to standard ONNX operators; the weights become
    /// initializers under their state-dict names (past 1 GiB, external
    /// data in OUT.onnx.data). The batch dimension is dynamic unless
    /// --static-batch fixes it. The package's metadata (version, classes,
    /// input shape, metrics) goes into the model's metadata properties.
    /// Exit code 1 when the check finds a difference.
    Export {
        /// The model package (.safetensors or .pth), or a state dict with --spec.
        model: PathBuf,
        /// The ONNX file to write.
        output: PathBuf,
        /// A model spec (JSON) for MODEL when MODEL is a plain state dict.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// The ONNX opset: 13 to 21 (LayerNorm needs 17).
        #[arg(long, default_value_t = 17)]
        opset: i64,
        /// Fix the batch dimension to N instead of leaving it dynamic.
        #[arg(long, value_name = "N", value_parser = at_least_one::<usize>)]
        static_batch: Option<usize>,
        /// The graph input's name.
        #[arg(long, default_value = "input")]
        input_name: String,
        /// The graph output's name.
        #[arg(long, default_value = "output")]
        output_name: String,
        /// Skip running the export in tract.
        #[arg(long)]
        no_check: bool,
    },

    /// Prune weights with PyTorch's rules, and report the sparsity.
    ///
    /// By default the `*.weight` tensors of rank 2 or more (Linear and
    /// Conv weights) are pruned, each on its own, by L1 magnitude. A model
    /// package stays a package; pruning is made permanent (zeros in the
    /// weights) unless --reparametrize writes PyTorch's weight_orig and
    /// weight_mask (state dicts only), which loads into a PyTorch model
    /// pruned the same way.
    Prune {
        /// The model package or state dict.
        input: PathBuf,
        /// Where to write the result.
        output: PathBuf,
        /// How much: a fraction (0.3) or a count (5) of each tensor's
        /// elements, or of all chosen elements with --global, or of whole
        /// slices with --structured.
        #[arg(long, value_parser = compress::parse_amount)]
        amount: ckpt::compress::prune::Amount,
        /// Rank all chosen tensors' elements together (global L1).
        #[arg(long, conflicts_with_all = ["structured", "random"])]
        global: bool,
        /// Prune whole slices along --dim by their --n norm (Ln structured).
        #[arg(long)]
        structured: bool,
        /// The dimension of the slices for --structured (0: output rows or channels).
        #[arg(long, default_value_t = 0, requires = "structured")]
        dim: usize,
        /// The norm for --structured (1, 2, ... or inf).
        #[arg(long, default_value_t = 2.0, requires = "structured")]
        n: f64,
        /// Prune random elements instead, from this seed.
        #[arg(long, value_name = "SEED", conflicts_with = "structured")]
        random: Option<u64>,
        /// Prune the tensors whose names match this regular expression.
        #[arg(long, value_name = "PATTERN")]
        layers: Option<String>,
        /// Write weight_orig + weight_mask (PyTorch's reparametrisation).
        #[arg(long)]
        reparametrize: bool,
        /// Also run both models on the demo's held-out digits: accuracy
        /// and inference time (model packages of the digits' shape).
        #[arg(long = "eval")]
        evaluate: bool,
    },

    /// Quantize weights to int8 (symmetric, per output channel unless
    /// --per-tensor), with their scales beside them as NAME_scale (float32),
    /// and report sizes and the largest rounding error.
    ///
    /// By default the Linear weights (in a package, from its spec; in a
    /// state dict, the `*.weight` tensors of rank 2); --layers picks others
    /// (Conv2d, Embedding). A model package becomes a quantized package
    /// (format 2) that `ckpt run`, `ckpt eval` and `ckpt export` run as
    /// --mode says; a state dict stays a state dict.
    Quantize {
        /// The model package or state dict.
        input: PathBuf,
        /// Where to write the quantized package or state dict.
        output: PathBuf,
        /// One scale per tensor instead of one per output channel.
        #[arg(long)]
        per_tensor: bool,
        /// Quantize the tensors whose names match this regular expression.
        #[arg(long, value_name = "PATTERN")]
        layers: Option<String>,
        /// How a quantized package's Linear layers compute: `dynamic`
        /// (int8 weights times activations quantized to uint8 per batch,
        /// like PyTorch's dynamic quantization) or `weight-only` (weights
        /// dequantized, float activations).
        #[arg(long, value_enum, default_value_t = QuantMode::Dynamic)]
        mode: QuantMode,
        /// Also run both models on the demo's held-out digits: accuracy
        /// and inference time (model packages of the digits' shape).
        #[arg(long = "eval")]
        evaluate: bool,
    },

    /// Run model packages on the demo's 270 held-out digits: size on
    /// disk, non-zero weights, accuracy and inference time, one row each
    /// (the first file is the size reference). Quantized packages run as
    /// they record.
    Eval {
        /// Model packages (float, pruned or quantized; any format).
        #[arg(required = true)]
        models: Vec<PathBuf>,
    },

    /// Run a model on inputs: batched inference on a model package (or a
    /// state dict plus --spec), from a .npy array of samples to a .npy of
    /// outputs (float32).
    Run {
        /// The model package (.safetensors or .pth), or a state dict with --spec.
        model: PathBuf,
        /// The inputs: a .npy array of shape [N, ...the model's input shape].
        #[arg(long)]
        input: PathBuf,
        /// Where to write the outputs (.npy).
        #[arg(long)]
        output: PathBuf,
        /// A model spec (JSON) for MODEL when MODEL is a plain state dict.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// cpu, or cuda (when built with the `cuda` feature).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Samples per batch.
        #[arg(long, default_value_t = 256, value_parser = at_least_one::<usize>)]
        batch_size: usize,
    },

    /// Show every tensor of a file (name, dtype, shape, parameters, bytes),
    /// the totals, the non-tensor values of a checkpoint, and the metadata.
    ///
    /// Formats: .safetensors, and PyTorch .pth/.pt/.bin/.ckpt (zip or
    /// legacy, including torch.save(model) and TorchScript files, whose
    /// weights are shown under their state-dict names without running any
    /// code). The format comes from the extension and is checked against the
    /// file's first bytes. Files are memory-mapped: inspecting a
    /// multi-gigabyte file reads little more than its header.
    Inspect {
        /// The file to inspect.
        file: PathBuf,
        /// Show the checkpoint's nested structure (dicts, lists, tuples,
        /// tensors) instead of the flat table.
        #[arg(long, conflicts_with = "json")]
        tree: bool,
        /// Print JSON for programs instead of a table:
        /// {"format", "tensors": [{"name", "dtype", "shape", "bytes"}],
        /// "values", "metadata", "total_params", "total_bytes"}, with
        /// PyTorch dtype names.
        #[arg(long)]
        json: bool,
    },

    /// Convert a checkpoint between formats: .safetensors, .pth/.pt/.bin,
    /// .npy/.npz and Hugging Face sharded checkpoints (.index.json), any way
    /// round, optionally casting floats, renaming keys and sharding.
    ///
    /// A nested checkpoint keeps its whole tree: in a .safetensors file ckpt
    /// stores the tree in the metadata, so converting back to .pth restores
    /// the nesting. The output is written atomically. Integer and bool
    /// tensors are never cast.
    Convert {
        /// The input file (any format ckpt reads).
        input: PathBuf,
        /// The output file; its extension picks the format (`.pth.tar`
        /// writes `.pth`) unless --format says otherwise.
        output: PathBuf,
        /// Write this format whatever OUT is called (for names such as
        /// `checkpoint.tar` or `weights`).
        #[arg(long, value_enum)]
        format: Option<WriteFormat>,
        /// Cast every float tensor to this dtype: float32, float16,
        /// bfloat16, float64 (or f32, f16, bf16, f64, half, float, double).
        /// Quantized tensors (int8/uint8/int32 with a `_scale` beside them,
        /// as torch's quantized tensors read) are dequantized first, exactly
        /// as torch's `dequantize()`.
        #[arg(long, value_parser = convert::parse_dtype)]
        dtype: Option<ckpt::DType>,
        /// Remove this prefix from every string key that has it (for
        /// example `module.`, which DataParallel adds).
        #[arg(long, value_name = "PREFIX")]
        strip_prefix: Option<String>,
        /// Write Hugging Face shards of at most this size (5GB, 500MB,
        /// 2GiB, or bytes) plus an index: OUT `model.safetensors` gives
        /// `model-00001-of-0000N.safetensors` … and
        /// `model.safetensors.index.json`. An OUT ending in `.index.json`
        /// shards at 5GB unless this is given. Shards are flat: a nested
        /// checkpoint's tensors keep their flattened names.
        #[arg(long, value_name = "SIZE", value_parser = convert::parse_size)]
        max_shard_size: Option<u64>,
    },

    /// Check files or run directories end to end.
    ///
    /// A file: parse everything, read every tensor byte, and compare every
    /// stored checksum (the zip CRC-32s of .pth and .npz files and of
    /// sharded checkpoints' shards). torch does not check CRCs when loading,
    /// and neither does ckpt, so a file whose checksums do not match still
    /// loads; verify reports it.
    ///
    /// A run directory (written by the checkpoint store): every committed
    /// step's content hashes and structure, and leftovers of torn saves.
    /// Safe while training writes to it.
    ///
    /// Exit code 0 when everything is intact, 1 when a checksum or hash does
    /// not match or a save was torn, 2 when something cannot be read.
    Verify {
        /// The files or run directories to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },

    /// List the committed steps of a run directory: step, epoch, metrics,
    /// size, age, and which retention rules keep each (latest, last, best#k,
    /// every); the best step is marked `*`. A last line draws one metric
    /// as a sparkline.
    ///
    /// Reads without taking the writer's lock: safe while training runs.
    Ls {
        /// The run directory.
        dir: PathBuf,
        /// The metric for the sparkline (default: the one retention ranks
        /// by, else the first recorded).
        #[arg(long)]
        metric: Option<String>,
        /// Print JSON for programs: {"dir", "best", "steps": [{"step",
        /// "epoch", "metrics", "bytes", "time", "age_seconds", "kept_by",
        /// "best", "dir"}]}.
        #[arg(long)]
        json: bool,
    },

    /// Delete the steps of a run directory that no retention rule keeps
    /// (the newest step is always kept). Without rule flags, the rules the
    /// run's writer recorded apply; with any, only the given rules.
    ///
    /// Takes the writer's lock: refused while training writes to the run.
    Gc {
        /// The run directory.
        dir: PathBuf,
        /// Keep the newest N steps.
        #[arg(long, value_name = "N", value_parser = at_least_one::<usize>)]
        keep_last: Option<usize>,
        /// Keep the best K steps by --metric.
        #[arg(long, value_name = "K", requires = "metric", value_parser = at_least_one::<usize>)]
        keep_best: Option<usize>,
        /// The metric --keep-best ranks by.
        #[arg(long)]
        metric: Option<String>,
        /// Whether lower (min, the default) or higher (max) is better.
        #[arg(long, value_enum, default_value = "min")]
        mode: Mode,
        /// Keep every step whose number is a multiple of N.
        #[arg(long, value_name = "N", value_parser = at_least_one::<u64>)]
        keep_every: Option<u64>,
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },

    /// Draw a metric of a run directory against step, as a PNG (the best
    /// step circled in red when the run ranks by that metric).
    #[cfg(feature = "plot")]
    Plot {
        /// The run directory.
        dir: PathBuf,
        /// The metric to draw.
        #[arg(long)]
        metric: String,
        /// The PNG to write (default: METRIC.png in the current directory).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },

    /// Compare two checkpoints, in any formats: keys only in one, dtype or
    /// shape changes, per-tensor max absolute and relative difference, and
    /// differing non-tensor values.
    ///
    /// Elements are equal when their bits match (NaN equals NaN) or
    /// |a - b| <= atol + rtol * |b|. Exit code 0 when the files are equal
    /// within the tolerances, 1 when they differ, 2 on error.
    Diff {
        /// The first file (A).
        a: PathBuf,
        /// The second file (B).
        b: PathBuf,
        /// Absolute tolerance.
        #[arg(long, default_value_t = 0.0, value_parser = tolerance)]
        atol: f64,
        /// Relative tolerance.
        #[arg(long, default_value_t = 0.0, value_parser = tolerance)]
        rtol: f64,
        /// Print JSON for programs instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// How a quantized package's Linear layers compute, for
/// `ckpt quantize --mode`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum QuantMode {
    Dynamic,
    WeightOnly,
}

/// A checkpoint format for `ckpt demo --format`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum FileFormat {
    Safetensors,
    Pth,
}

/// A format ckpt writes, for `ckpt convert --format`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum WriteFormat {
    Safetensors,
    Pth,
    Npz,
    Npy,
    Ckptz,
}

impl WriteFormat {
    fn format(self) -> ckpt::Format {
        match self {
            WriteFormat::Safetensors => ckpt::Format::Safetensors,
            WriteFormat::Pth => ckpt::Format::PyTorch,
            WriteFormat::Npz => ckpt::Format::Npz,
            WriteFormat::Npy => ckpt::Format::Npy,
            WriteFormat::Ckptz => ckpt::Format::Compressed,
        }
    }
}

/// Whether lower or higher is better, for `ckpt gc --mode`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    Min,
    Max,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Everything printed for people passes through one escaping writer.
    let mut stdout = output::Printable::new(io::stdout().lock());
    let result = match cli.command {
        Command::Inspect { file, json, tree } => {
            inspect::run(&file, json, tree, &mut stdout).map(|()| 0)
        }
        Command::Convert {
            input,
            output,
            dtype,
            strip_prefix,
            max_shard_size,
            format,
        } => {
            let changes = convert::Changes {
                dtype,
                strip_prefix: strip_prefix.as_deref(),
                max_shard_size,
                format: format.map(WriteFormat::format),
            };
            convert::run(&input, &output, &changes, &mut stdout).map(|()| 0)
        }
        Command::Verify { files } => verify::run(&files, &mut stdout),
        Command::Demo {
            epochs,
            dir,
            seed,
            format,
            resume,
        } => {
            let options = demo::Options {
                epochs,
                dir,
                seed,
                format: match format {
                    FileFormat::Safetensors => ckpt::Format::Safetensors,
                    FileFormat::Pth => ckpt::Format::PyTorch,
                },
                resume,
            };
            demo::run(&options, &mut stdout).map(|()| 0)
        }
        Command::Export {
            model,
            output,
            spec,
            opset,
            static_batch,
            input_name,
            output_name,
            no_check,
        } => {
            let options = export::Options {
                spec: spec.as_deref(),
                opset,
                static_batch,
                input_name,
                output_name,
                check: !no_check,
            };
            export::run(&model, &output, &options, &mut stdout)
        }
        Command::Prune {
            input,
            output,
            amount,
            global,
            structured,
            dim,
            n,
            random,
            layers,
            reparametrize,
            evaluate,
        } => {
            let options = compress::PruneOptions {
                amount,
                global,
                structured: structured.then_some((dim, n)),
                random,
                layers: layers.as_deref(),
                reparametrize,
                evaluate,
            };
            compress::prune(&input, &output, &options, &mut stdout).map(|()| 0)
        }
        Command::Quantize {
            input,
            output,
            per_tensor,
            layers,
            mode,
            evaluate,
        } => {
            let options = compress::QuantizeOptions {
                granularity: if per_tensor {
                    Granularity::PerTensor
                } else {
                    Granularity::PerChannel
                },
                activations: match mode {
                    QuantMode::Dynamic => Activations::Dynamic,
                    QuantMode::WeightOnly => Activations::WeightOnly,
                },
                layers: layers.as_deref(),
                evaluate,
            };
            compress::quantize(&input, &output, &options, &mut stdout).map(|()| 0)
        }
        Command::Eval { models } => eval::eval(&models, &mut stdout).map(|()| 0),
        Command::Run {
            model,
            input,
            output,
            spec,
            device,
            batch_size,
        } => run::run(
            &model,
            spec.as_deref(),
            &input,
            &output,
            &device,
            batch_size,
            &mut stdout,
        )
        .map(|()| 0),
        Command::Ls { dir, metric, json } => {
            ls::run(&dir, metric.as_deref(), json, &mut stdout).map(|()| 0)
        }
        Command::Gc {
            dir,
            keep_last,
            keep_best,
            metric,
            mode,
            keep_every,
            dry_run,
        } => {
            let rules = gc::Rules {
                keep_last,
                keep_best,
                metric,
                mode: match mode {
                    Mode::Min => ckpt::store::MetricMode::Min,
                    Mode::Max => ckpt::store::MetricMode::Max,
                },
                keep_every,
            };
            gc::run(&dir, &rules, dry_run, &mut stdout).map(|()| 0)
        }
        #[cfg(feature = "plot")]
        Command::Plot {
            dir,
            metric,
            output,
        } => {
            let output = output.unwrap_or_else(|| PathBuf::from(format!("{metric}.png")));
            plot::run(&dir, &metric, &output, &mut stdout).map(|()| 0)
        }
        Command::Diff {
            a,
            b,
            atol,
            rtol,
            json,
        } => {
            diff::run(&a, &b, atol, rtol, json, &mut stdout).map(|equal| if equal { 0 } else { 1 })
        }
    };
    match result.and_then(|code| stdout.flush().map(|()| code).map_err(Into::into)) {
        Ok(code) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            output::error(&err);
            ExitCode::from(2)
        }
    }
}

/// A count that must be at least 1 (`--batch-size 0` runs nothing; torch
/// refuses it too).
fn at_least_one<T: std::str::FromStr + PartialOrd + From<u8>>(text: &str) -> Result<T, String> {
    match text.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        Ok(_) => Err("must be at least 1".to_owned()),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// A tolerance: a finite number, 0 or more.
fn tolerance(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        _ => Err(format!("{text:?} is not a finite number of at least 0")),
    }
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
