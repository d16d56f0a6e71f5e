//! The command line: clap's derive structs, one arguments struct per
//! command, the value enums, and the parsers of values that clap cannot
//! check alone (counts of at least 1, tolerances, dtypes, sizes, amounts).

use std::path::PathBuf;

use ckpt::compress::prune::Amount;
use ckpt::compress::quantize::{Activations, Granularity};
use ckpt::store::MetricMode;
use ckpt::{DType, Format};
use clap::{Args, Parser, Subcommand};

/// Save, load, inspect and convert neural-network checkpoints, safely.
///
/// ckpt reads files without running any code from them, and reports bad
/// files as one clear line naming the file and the place in it.
#[derive(Parser)]
#[command(name = "ckpt", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
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
    Demo(DemoArgs),

    /// Export a model package (or a state dict with --spec, or a whole
    /// pickled model) to ONNX or TorchScript.
    ///
    /// ONNX (OUT.onnx): every spec layer maps to standard ONNX operators;
    /// the weights become initializers under their state-dict names (past
    /// 1 GiB, external data in OUT.onnx.data). The batch dimension is
    /// dynamic unless --static-batch fixes it. The package's metadata
    /// (version, classes, input shape, metrics) goes into the model's
    /// metadata properties. The file is then run in tract, an independent
    /// ONNX runtime, on a random batch and compared with ckpt's own
    /// inference; exit code 1 when it differs.
    ///
    /// TorchScript (OUT.pt, or --format torchscript): the archive
    /// torch.jit.save writes, which torch.jit.load and LibTorch load with
    /// no Python (file format version 3, or 10 with a GELU). Each layer is
    /// the class torch.jit.script writes for its torch.nn module; the
    /// metadata and the spec go into extra/ckpt.json.
    Export(ExportArgs),

    /// Prune weights with PyTorch's rules, and report the sparsity.
    ///
    /// By default the `*.weight` tensors of rank 2 or more (Linear and
    /// Conv weights) are pruned, each on its own, by L1 magnitude. A model
    /// package stays a package; pruning is made permanent (zeros in the
    /// weights) unless --reparametrize writes PyTorch's weight_orig and
    /// weight_mask (state dicts only), which loads into a PyTorch model
    /// pruned the same way.
    Prune(PruneArgs),

    /// Quantize weights to int8 (symmetric, per output channel unless
    /// --per-tensor), with their scales beside them as NAME_scale (float32),
    /// and report sizes and the largest rounding error.
    ///
    /// By default the Linear weights (in a package, from its spec; in a
    /// state dict, the `*.weight` tensors of rank 2); --layers picks others
    /// (Conv2d, Embedding). A model package becomes a quantized package
    /// (format 2) that `ckpt run`, `ckpt eval` and `ckpt export` run as
    /// --mode says; a state dict stays a state dict.
    Quantize(QuantizeArgs),

    /// Run model packages on the demo's 270 held-out digits: size on
    /// disk, non-zero weights, accuracy and inference time, one row each
    /// (the first file is the size reference). Quantized packages run as
    /// they record.
    Eval(EvalArgs),

    /// Run a model on inputs: batched inference on a model package (or a
    /// state dict plus --spec), from a .npy array of samples to a .npy of
    /// outputs (float32).
    Run(RunArgs),

    /// Show every tensor of a file (name, dtype, shape, parameters, bytes),
    /// the totals, the non-tensor values of a checkpoint, and the metadata.
    ///
    /// Formats: .safetensors, and PyTorch .pth/.pt/.bin/.ckpt (zip or
    /// legacy, including torch.save(model) and TorchScript files, whose
    /// weights are shown under their state-dict names without running any
    /// code, then their module tree and the spec derived from it, or why
    /// none is). The format comes from the extension and is checked against
    /// the file's first bytes. Files are memory-mapped: inspecting a
    /// multi-gigabyte file reads little more than its header.
    Inspect(InspectArgs),

    /// Convert a checkpoint between formats: .safetensors, .pth/.pt/.bin,
    /// .npy/.npz and Hugging Face sharded checkpoints (.index.json), any way
    /// round, optionally casting floats, renaming keys and sharding.
    ///
    /// A nested checkpoint keeps its whole tree: in a .safetensors file ckpt
    /// stores the tree in the metadata, so converting back to .pth restores
    /// the nesting. The output is written atomically. Integer and bool
    /// tensors are never cast.
    Convert(ConvertArgs),

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
    Verify(VerifyArgs),

    /// List the committed steps of a run directory: step, epoch, metrics,
    /// size, age, and which retention rules keep each (latest, last, best#k,
    /// every); the best step is marked `*`. A last line draws one metric
    /// as a sparkline.
    ///
    /// Reads without taking the writer's lock: safe while training runs.
    Ls(LsArgs),

    /// Delete the steps of a run directory that no retention rule keeps
    /// (the newest step is always kept). Without rule flags, the rules the
    /// run's writer recorded apply; with any, only the given rules.
    ///
    /// Takes the writer's lock: refused while training writes to the run.
    Gc(GcArgs),

    /// Draw a metric of a run directory against step, as a PNG (the best
    /// step circled in red when the run ranks by that metric).
    #[cfg(feature = "plot")]
    Plot(PlotArgs),

    /// Compare two checkpoints, in any formats: keys only in one, dtype or
    /// shape changes, per-tensor max absolute and relative difference, and
    /// differing non-tensor values.
    ///
    /// Elements are equal when their bits match (NaN equals NaN) or
    /// |a - b| <= atol + rtol * |b|. Exit code 0 when the files are equal
    /// within the tolerances, 1 when they differ, 2 on error.
    Diff(DiffArgs),
}

/// The arguments of `ckpt demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Epochs to train (in total, counting those already done).
    #[arg(long, default_value_t = 30, value_parser = at_least_one::<u64>)]
    pub epochs: u64,
    /// The run directory.
    #[arg(long, default_value = "runs/demo")]
    pub dir: PathBuf,
    /// Seed for initialisation, data order and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Checkpoint and package format.
    #[arg(long, value_enum, default_value = "safetensors")]
    pub format: FileFormat,
    /// Continue the run in --dir from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
}

/// The arguments of `ckpt export`.
#[derive(Args)]
pub struct ExportArgs {
    /// The model package (.safetensors or .pth), or a state dict with --spec.
    pub model: PathBuf,
    /// The file to write: .onnx, or .pt for TorchScript.
    pub output: PathBuf,
    /// The format, when OUT's extension does not tell it.
    #[arg(long, value_enum)]
    pub format: Option<ExportFormat>,
    /// A model spec (JSON) for MODEL when MODEL is a plain state dict.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// For a whole pickled model (`torch.save(model)` of an
    /// `nn.Sequential`) whose first layer does not tell it: the input shape
    /// per sample, such as 3,32,32.
    #[arg(long, value_name = "SHAPE", value_parser = parse_shape, conflicts_with = "spec")]
    pub input_shape: Option<Shape>,
    /// The ONNX opset: 13 to 21 (LayerNorm needs 17); 17 by default. ONNX
    /// only, as the options up to --no-check.
    #[arg(long, value_name = "N")]
    pub opset: Option<i64>,
    /// Fix the batch dimension to N instead of leaving it dynamic.
    #[arg(long, value_name = "N", value_parser = at_least_one::<usize>)]
    pub static_batch: Option<usize>,
    /// The graph input's name (`input` by default).
    #[arg(long, value_name = "NAME")]
    pub input_name: Option<String>,
    /// The graph output's name (`output` by default).
    #[arg(long, value_name = "NAME")]
    pub output_name: Option<String>,
    /// Skip running the export in tract.
    #[arg(long)]
    pub no_check: bool,
}

/// The arguments of `ckpt prune`.
#[derive(Args)]
pub struct PruneArgs {
    /// The model package or state dict.
    pub input: PathBuf,
    /// Where to write the result.
    pub output: PathBuf,
    /// How much: a fraction (0.3) or a count (5) of each tensor's
    /// elements, or of all chosen elements with --global, or of whole
    /// slices with --structured.
    #[arg(long, value_parser = parse_amount)]
    pub amount: Amount,
    /// Rank all chosen tensors' elements together (global L1).
    #[arg(long, conflicts_with_all = ["structured", "random"])]
    pub global: bool,
    /// Prune whole slices along --dim by their --n norm (Ln structured).
    #[arg(long)]
    pub structured: bool,
    /// The dimension of the slices for --structured (0: output rows or channels).
    #[arg(long, default_value_t = 0, requires = "structured")]
    pub dim: usize,
    /// The norm for --structured (1, 2, ... or inf).
    #[arg(long, default_value_t = 2.0, requires = "structured")]
    pub n: f64,
    /// Prune random elements instead, from this seed.
    #[arg(long, value_name = "SEED", conflicts_with = "structured")]
    pub random: Option<u64>,
    /// Prune the tensors whose names match this regular expression.
    #[arg(long, value_name = "PATTERN")]
    pub layers: Option<String>,
    /// Write weight_orig + weight_mask (PyTorch's reparametrisation).
    #[arg(long)]
    pub reparametrize: bool,
    /// Also run both models on the demo's held-out digits: accuracy
    /// and inference time (model packages of the digits' shape).
    #[arg(long = "eval")]
    pub evaluate: bool,
}

/// The arguments of `ckpt quantize`.
#[derive(Args)]
pub struct QuantizeArgs {
    /// The model package or state dict.
    pub input: PathBuf,
    /// Where to write the quantized package or state dict.
    pub output: PathBuf,
    /// One scale per tensor instead of one per output channel.
    #[arg(long)]
    pub per_tensor: bool,
    /// Quantize the tensors whose names match this regular expression.
    #[arg(long, value_name = "PATTERN")]
    pub layers: Option<String>,
    /// How a quantized package's Linear layers compute: `dynamic`
    /// (int8 weights times activations quantized to uint8 per batch,
    /// like PyTorch's dynamic quantization) or `weight-only` (weights
    /// dequantized, float activations).
    #[arg(long, value_enum, default_value_t = QuantMode::Dynamic)]
    pub mode: QuantMode,
    /// Also run both models on the demo's held-out digits: accuracy
    /// and inference time (model packages of the digits' shape).
    #[arg(long = "eval")]
    pub evaluate: bool,
}

/// The arguments of `ckpt eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Model packages (float, pruned or quantized; any format).
    #[arg(required = true)]
    pub models: Vec<PathBuf>,
}

/// The arguments of `ckpt run`.
#[derive(Args)]
pub struct RunArgs {
    /// The model package (.safetensors or .pth), or a state dict with --spec.
    pub model: PathBuf,
    /// The inputs: a .npy array of shape [N, ...the model's input shape].
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the outputs (.npy).
    #[arg(long)]
    pub output: PathBuf,
    /// A model spec (JSON) for MODEL when MODEL is a plain state dict.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// For a whole pickled model (`torch.save(model)` of an
    /// `nn.Sequential`) whose first layer does not tell it: the input shape
    /// per sample, such as 3,32,32.
    #[arg(long, value_name = "SHAPE", value_parser = parse_shape, conflicts_with = "spec")]
    pub input_shape: Option<Shape>,
    /// cpu, or cuda (when built with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Samples per batch.
    #[arg(long, default_value_t = 256, value_parser = at_least_one::<usize>)]
    pub batch_size: usize,
}

/// The arguments of `ckpt inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// The file to inspect.
    pub file: PathBuf,
    /// Show the checkpoint's nested structure (dicts, lists, tuples,
    /// tensors) instead of the flat table.
    #[arg(long, conflicts_with = "json")]
    pub tree: bool,
    /// Print JSON for programs instead of a table:
    /// {"format", "tensors": [{"name", "dtype", "shape", "bytes"}],
    /// "values", "metadata", "total_params", "total_bytes"}, with
    /// PyTorch dtype names.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `ckpt convert`.
#[derive(Args)]
pub struct ConvertArgs {
    /// The input file (any format ckpt reads).
    pub input: PathBuf,
    /// The output file; its extension picks the format (`.pth.tar`
    /// writes `.pth`) unless --format says otherwise.
    pub output: PathBuf,
    /// Write this format whatever OUT is called (for names such as
    /// `checkpoint.tar` or `weights`). `dcp` writes OUT as a PyTorch
    /// Distributed Checkpoint folder (`.metadata`, `__0_0.distcp`) that
    /// `torch.distributed.checkpoint.load` reads into a model sharded any
    /// way; OUT must not hold one already. `dcp-hf` writes the Hugging Face
    /// flavour torch's `HuggingFaceStorageWriter` writes
    /// (`model-00001-of-00001.safetensors` with its `DCP_SHARDING_INFO`,
    /// and `model.safetensors.index.json`): tensors only.
    #[arg(long, value_enum)]
    pub format: Option<WriteFormat>,
    /// Cast every float tensor to this dtype: float32, float16,
    /// bfloat16, float64 (or f32, f16, bf16, f64, half, float, double).
    /// Quantized tensors (int8/uint8/int32 with a `_scale` beside them,
    /// as torch's quantized tensors read) are dequantized first, exactly
    /// as torch's `dequantize()`.
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<DType>,
    /// Remove this prefix from every string key that has it (for
    /// example `module.`, which DataParallel adds).
    #[arg(long, value_name = "PREFIX")]
    pub strip_prefix: Option<String>,
    /// Write Hugging Face shards of at most this size (5GB, 500MB,
    /// 2GiB, or bytes) plus an index: OUT `model.safetensors` gives
    /// `model-00001-of-0000N.safetensors` … and
    /// `model.safetensors.index.json`. An OUT ending in `.index.json`
    /// shards at 5GB unless this is given. Shards are flat: a nested
    /// checkpoint's tensors keep their flattened names.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_shard_size: Option<u64>,
    /// Write a whole pickled model (`torch.save(model)` of an
    /// `nn.Sequential` of spec layer kinds) as a model package: the spec
    /// derived from its modules, its weights and metadata, which `ckpt run`
    /// and `ckpt export` take (OUT .safetensors or .pth).
    #[arg(long)]
    pub package: bool,
    /// With --package, when the model's first layer does not tell it: the
    /// input shape per sample, such as 3,32,32.
    #[arg(long, value_name = "SHAPE", value_parser = parse_shape, requires = "package")]
    pub input_shape: Option<Shape>,
}

/// The arguments of `ckpt verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The files or run directories to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// The arguments of `ckpt ls`.
#[derive(Args)]
pub struct LsArgs {
    /// The run directory.
    pub dir: PathBuf,
    /// The metric for the sparkline (default: the one retention ranks
    /// by, else the first recorded).
    #[arg(long)]
    pub metric: Option<String>,
    /// Print JSON for programs: {"dir", "best", "steps": [{"step",
    /// "epoch", "metrics", "bytes", "time", "age_seconds", "kept_by",
    /// "best", "dir"}]}.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `ckpt gc`.
#[derive(Args)]
pub struct GcArgs {
    /// The run directory.
    pub dir: PathBuf,
    /// Keep the newest N steps.
    #[arg(long, value_name = "N", value_parser = at_least_one::<usize>)]
    pub keep_last: Option<usize>,
    /// Keep the best K steps by --metric.
    #[arg(long, value_name = "K", requires = "metric", value_parser = at_least_one::<usize>)]
    pub keep_best: Option<usize>,
    /// The metric --keep-best ranks by.
    #[arg(long)]
    pub metric: Option<String>,
    /// Whether lower (min, the default) or higher (max) is better.
    #[arg(long, value_enum, default_value = "min")]
    pub mode: Mode,
    /// Keep every step whose number is a multiple of N.
    #[arg(long, value_name = "N", value_parser = at_least_one::<u64>)]
    pub keep_every: Option<u64>,
    /// Only say what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
}

/// The arguments of `ckpt plot`.
#[cfg(feature = "plot")]
#[derive(Args)]
pub struct PlotArgs {
    /// The run directory.
    pub dir: PathBuf,
    /// The metric to draw.
    #[arg(long)]
    pub metric: String,
    /// The PNG to write (default: METRIC.png in the current directory).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// The arguments of `ckpt diff`.
#[derive(Args)]
pub struct DiffArgs {
    /// The first file (A).
    pub a: PathBuf,
    /// The second file (B).
    pub b: PathBuf,
    /// Absolute tolerance.
    #[arg(long, default_value_t = 0.0, value_parser = tolerance)]
    pub atol: f64,
    /// Relative tolerance.
    #[arg(long, default_value_t = 0.0, value_parser = tolerance)]
    pub rtol: f64,
    /// Print JSON for programs instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How a quantized package's Linear layers compute, for
/// `ckpt quantize --mode`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum QuantMode {
    Dynamic,
    WeightOnly,
}

impl QuantizeArgs {
    /// One scale per tensor (`--per-tensor`) or per output channel.
    pub fn granularity(&self) -> Granularity {
        if self.per_tensor {
            Granularity::PerTensor
        } else {
            Granularity::PerChannel
        }
    }

    /// How the quantized package's Linear layers compute (`--mode`).
    pub fn activations(&self) -> Activations {
        match self.mode {
            QuantMode::Dynamic => Activations::Dynamic,
            QuantMode::WeightOnly => Activations::WeightOnly,
        }
    }
}

/// What `ckpt export` writes.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Onnx,
    /// A TorchScript archive (`torch.jit.load`, LibTorch).
    Torchscript,
}

/// A checkpoint format for `ckpt demo --format`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum FileFormat {
    Safetensors,
    Pth,
}

impl FileFormat {
    /// The library's format.
    pub fn format(self) -> Format {
        match self {
            FileFormat::Safetensors => Format::Safetensors,
            FileFormat::Pth => Format::PyTorch,
        }
    }
}

/// A format ckpt writes, for `ckpt convert --format`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum WriteFormat {
    Safetensors,
    Pth,
    Npz,
    Npy,
    Ckptz,
    /// A PyTorch Distributed Checkpoint folder (OUT is the folder).
    Dcp,
    /// DCP's Hugging Face flavour (OUT is the folder; tensors only).
    DcpHf,
}

impl WriteFormat {
    /// The library's format.
    pub fn format(self) -> Format {
        match self {
            WriteFormat::Safetensors => Format::Safetensors,
            WriteFormat::Pth => Format::PyTorch,
            WriteFormat::Npz => Format::Npz,
            WriteFormat::Npy => Format::Npy,
            WriteFormat::Ckptz => Format::Compressed,
            WriteFormat::Dcp | WriteFormat::DcpHf => Format::Dcp,
        }
    }
}

/// Whether lower or higher is better, for `ckpt gc --mode`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Mode {
    Min,
    Max,
}

impl Mode {
    /// The store's metric mode.
    pub fn metric_mode(self) -> MetricMode {
        match self {
            Mode::Min => MetricMode::Min,
            Mode::Max => MetricMode::Max,
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

/// Parses a dtype name as torch spells it (`float16`) or by a common alias
/// (`f16`, `half`, `bf16`, `float`, `double`).
fn parse_dtype(name: &str) -> Result<DType, String> {
    let canonical = match name {
        "f64" | "double" => "float64",
        "f32" | "float" => "float32",
        "f16" | "half" => "float16",
        "bf16" => "bfloat16",
        other => other,
    };
    DType::from_torch(canonical)
        .filter(|d| d.is_float())
        .ok_or_else(|| {
            format!("{name:?} is not a float dtype (float64, float32, float16, bfloat16)")
        })
}

/// A per-sample shape given on the command line (`3,32,32`).
#[derive(Clone, Debug)]
pub struct Shape(pub Vec<usize>);

/// Parses a shape: sizes separated by commas (`3,32,32`).
fn parse_shape(text: &str) -> Result<Shape, String> {
    text.split(',')
        .map(|d| d.trim().parse::<usize>().ok().filter(|&n| n > 0))
        .collect::<Option<Vec<_>>>()
        .map(Shape)
        .ok_or_else(|| format!("{text:?} is not a shape (sizes separated by commas: 3,32,32)"))
}

/// Parses a size: bytes, or a number with a decimal (`KB`, `MB`, `GB`, as
/// `transformers` uses) or binary (`KiB`, `MiB`, `GiB`) unit.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit (use B, KB, MB, GB, KiB, MiB or GiB)"
            ))
        }
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    let bytes = number * scale as f64;
    if !(1.0..u64::MAX as f64).contains(&bytes) {
        return Err(format!("{text:?} is not a positive size"));
    }
    Ok(bytes as u64)
}

/// `0.3` is a fraction, `5` a count.
fn parse_amount(text: &str) -> Result<Amount, String> {
    if let Ok(n) = text.parse::<usize>() {
        return Ok(Amount::Count(n));
    }
    match text.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(Amount::Fraction(f)),
        _ => Err(format!(
            "{text:?} is neither a fraction in [0, 1] nor a count"
        )),
    }
}
