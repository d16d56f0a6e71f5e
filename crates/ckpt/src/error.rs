//! The one error type of the `ckpt` crate.

use std::path::PathBuf;

use crate::DType;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `ckpt`.
///
/// Variants that come from a file carry its path and, where there is one,
/// the tensor name and byte offset, so the message alone tells the user
/// where to look. Parsers never panic on bad input; they return one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system refused a read, write, map or rename.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// The path's extension names no format ckpt knows.
    #[error(
        "{}: unknown file extension; ckpt reads and writes {}",
        path.display(),
        crate::Format::EXTENSIONS
    )]
    UnknownExtension {
        /// The path.
        path: PathBuf,
    },

    /// Neither the contents nor the name say which format a file is.
    #[error(
        "{}: not a format ckpt knows (its first bytes match none of safetensors, PyTorch, TorchScript, pickle, NumPy, ckptz or a JSON index; ckpt reads {})",
        path.display(),
        crate::Format::EXTENSIONS
    )]
    UnrecognisedFormat {
        /// The path.
        path: PathBuf,
    },

    /// A folder does not hold one model ckpt can read as a file.
    #[error("{}: {problem}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// What is wrong, naming the files involved.
        problem: String,
    },

    /// A run directory stores its checkpoints in one of the formats that
    /// hold a whole training checkpoint, and this is not one.
    #[error("{}: a run stores checkpoints as .safetensors, .pth or .ckptz, not {format}", dir.display())]
    UnsupportedStoreFormat {
        /// The run directory.
        dir: PathBuf,
        /// The format asked for.
        format: crate::Format,
    },

    /// ckpt reads this format but does not write it.
    #[error("{}: ckpt reads {format} files but does not write them; choose .safetensors, .pth, .npz, .ckptz or .index.json", path.display())]
    ReadOnlyFormat {
        /// The path.
        path: PathBuf,
        /// The format.
        format: crate::Format,
    },

    /// The extension promises one format and the first bytes show another.
    #[error("{}: the extension says {expected} but the contents are {found}", path.display())]
    FormatMismatch {
        /// The path.
        path: PathBuf,
        /// The format the extension names.
        expected: crate::Format,
        /// What the first bytes look like.
        found: &'static str,
    },

    /// The file ends before a structure it declares.
    #[error("{}: truncated at byte {offset}: {what} needs {needed} bytes, the file has {available}", path.display())]
    Truncated {
        /// The path.
        path: PathBuf,
        /// Where the structure starts.
        offset: u64,
        /// What was being read.
        what: &'static str,
        /// Bytes needed from `offset`.
        needed: u64,
        /// Bytes present from `offset`.
        available: u64,
    },

    /// A header declares a size beyond the limit ckpt accepts.
    #[error("{}: the header claims {size} bytes, more than the limit of {limit}", path.display())]
    HeaderTooLarge {
        /// The path.
        path: PathBuf,
        /// The size the file claims.
        size: u64,
        /// The largest size ckpt accepts.
        limit: u64,
    },

    /// A header is not the JSON its format requires.
    #[error("{}: header is not valid JSON: {source}", path.display())]
    HeaderJson {
        /// The path.
        path: PathBuf,
        /// The JSON parser's message, with line and column.
        source: serde_json::Error,
    },

    /// A header parses as JSON but does not have the required structure.
    #[error("{}: header entry {entry:?}: {problem}", path.display())]
    HeaderEntry {
        /// The path.
        path: PathBuf,
        /// The entry (a tensor name, or `__metadata__`).
        entry: String,
        /// What is wrong with it.
        problem: &'static str,
    },

    /// A tensor's dtype name is not one ckpt knows.
    #[error("{}: tensor {tensor:?} has unknown dtype {dtype:?}", path.display())]
    UnknownDType {
        /// The path.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The dtype name as written in the file.
        dtype: String,
    },

    /// A shape whose element count or byte size does not fit in 64 bits.
    #[error("{}: tensor {tensor:?} has shape {shape:?} whose size overflows", path.display())]
    ShapeOverflow {
        /// The path.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The shape as written.
        shape: Vec<u64>,
    },

    /// A tensor's data range disagrees with its dtype and shape.
    #[error("{}: tensor {tensor:?} ({dtype}, shape {shape:?}) needs {expected} bytes but its data range holds {actual}", path.display())]
    ByteLengthMismatch {
        /// The path.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// Its dtype.
        dtype: DType,
        /// Its shape.
        shape: Vec<usize>,
        /// Element count × dtype size.
        expected: u64,
        /// The length of the data range.
        actual: u64,
    },

    /// A tensor's data range lies outside the data section or overlaps
    /// another tensor, or the ranges leave a gap.
    #[error("{}: tensor {tensor:?} has data range {start}..{end}, but {problem} (data section is {data_len} bytes)", path.display())]
    BadDataRange {
        /// The path.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// Start offset within the data section.
        start: u64,
        /// End offset within the data section.
        end: u64,
        /// The length of the data section.
        data_len: u64,
        /// What is wrong.
        problem: &'static str,
    },

    /// Bytes handed to [`TensorData`](crate::TensorData) do not match its dtype and shape.
    #[error("tensor of {dtype} with shape {shape:?} needs {} bytes, got {actual}", expected.map_or_else(|| "impossibly many (a dimension past 2^63 - 1, or more than 2^64)".to_owned(), |n| n.to_string()))]
    TensorSize {
        /// The dtype.
        dtype: DType,
        /// The shape.
        shape: Vec<usize>,
        /// Element count × dtype size (`None` when that overflows).
        expected: Option<u64>,
        /// The number of bytes given.
        actual: u64,
    },

    /// Two tensors of a tree flatten to the same name.
    #[error("two tensors flatten to the same name {name:?}")]
    DuplicateName {
        /// The name both paths produce.
        name: String,
    },

    /// ckpt's tree metadata in a file is malformed.
    #[error("{}: the ckpt tree in the metadata is invalid at {at}: {problem}", path.display())]
    BadTree {
        /// The path.
        path: PathBuf,
        /// Where in the tree (a `/`-joined path).
        at: String,
        /// What is wrong.
        problem: &'static str,
    },

    /// A tree nested deeper than ckpt can store and read back.
    #[error("the tree is nested more than {limit} levels deep")]
    TreeTooDeep {
        /// The deepest nesting accepted.
        limit: usize,
    },

    /// Metadata given to a save uses a key that ckpt reserves for itself.
    #[error("metadata key {key:?} is reserved for ckpt (keys starting with \"ckpt.\")")]
    ReservedMetadataKey {
        /// The key.
        key: String,
    },

    /// The file's data needs more memory than is left (a tensor that
    /// really inflates this large, under an address-space limit): the
    /// allocation failed cleanly instead of aborting.
    #[error("{}: needs {bytes} bytes of memory for its data, more than is available", path.display())]
    OutOfMemory {
        /// The path.
        path: PathBuf,
        /// The bytes asked for.
        bytes: u64,
    },

    /// A zip archive's structure is broken.
    #[error("{}: bad zip archive at byte {offset}: {problem}", path.display())]
    BadZip {
        /// The path.
        path: PathBuf,
        /// Where the problem is.
        offset: u64,
        /// What is wrong.
        problem: &'static str,
    },

    /// An archive's description of its contents (a `.pt2` config) is
    /// malformed or names what the archive does not hold.
    #[error("{}: {entry}: {problem}", path.display())]
    BadArchive {
        /// The path.
        path: PathBuf,
        /// The archive entry.
        entry: String,
        /// What is wrong.
        problem: String,
    },

    /// A pickle stream is malformed or describes something ckpt cannot
    /// represent.
    #[error("{}: {entry} at byte {offset}: {problem}", path.display())]
    Pickle {
        /// The path.
        path: PathBuf,
        /// The pickle's name inside the file (`data.pkl`).
        entry: String,
        /// The opcode's offset in the pickle (0 when found after parsing).
        offset: u64,
        /// What is wrong.
        problem: &'static str,
    },

    /// A pickle opcode outside the set ckpt reads.
    #[error("{}: {entry} at byte {offset}: unsupported pickle opcode {opcode:#04x} ({:?})", path.display(), *opcode as char)]
    PickleOpcode {
        /// The path.
        path: PathBuf,
        /// The pickle's name inside the file.
        entry: String,
        /// The opcode's offset in the pickle.
        offset: u64,
        /// The opcode byte.
        opcode: u8,
    },

    /// A pickle names a global that ckpt will not call or represent.
    #[error("{}: refusing global {global} in {entry} (ckpt never runs code from a file)", path.display())]
    RefusedGlobal {
        /// The path.
        path: PathBuf,
        /// The pickle's name inside the file.
        entry: String,
        /// `module.name`.
        global: String,
    },

    /// A pickle names a dangerous callable (`posix.system`,
    /// `builtins.eval`, `subprocess.Popen`, ...): Python's `pickle` and
    /// `torch.load(weights_only=False)` would import it and may call it.
    /// ckpt never does; it refuses the whole file.
    #[error("{}: dangerous: {entry} names {global} at byte {offset}, which torch.load(weights_only=False) would import and may call (refused; ckpt never runs code from a file)", path.display())]
    DangerousGlobal {
        /// The path.
        path: PathBuf,
        /// The pickle's name inside the file.
        entry: String,
        /// Where the global is named in the pickle.
        offset: u64,
        /// `module.name`, as the pickle writes it.
        global: String,
    },

    /// A tensor's storage is missing, the wrong size, or too small for the
    /// view that uses it.
    #[error("{}: storage {key:?}: {problem}", path.display())]
    BadStorage {
        /// The path.
        path: PathBuf,
        /// The storage key (`data/<key>`).
        key: String,
        /// What is wrong.
        problem: &'static str,
    },

    /// A cast between dtypes that ckpt does not perform.
    #[error("cannot cast {from} tensors to {to}")]
    UnsupportedCast {
        /// The tensor's dtype.
        from: DType,
        /// The requested dtype.
        to: DType,
    },

    /// safetensors has no such dtype (complex128).
    #[error("tensor {tensor}: safetensors has no {dtype}; write .pth or .npz instead")]
    SafetensorsDType {
        /// The tensor's name.
        tensor: String,
        /// The dtype.
        dtype: DType,
    },

    /// A tensor name that would escape the output's namespace (a zip member
    /// extracted outside its folder) or hold control characters.
    #[error("{}: tensor name {name:?} {problem}: a file member may not be named so (rename it: --strip-prefix, or a key rule)", path.display())]
    UnsafeName {
        /// The output path.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },

    /// NumPy has no such dtype (bfloat16, float8).
    #[error("{}: NumPy has no {dtype}; cast first (ckpt convert --dtype float32)", path.display())]
    NumpyDType {
        /// The path.
        path: PathBuf,
        /// The dtype.
        dtype: DType,
    },

    /// A format that holds exactly one tensor was given something else.
    #[error("{}: a .npy file holds one tensor, not a {found} (use .npz for many)", path.display())]
    NotATensor {
        /// The path.
        path: PathBuf,
        /// What kind of value was given.
        found: &'static str,
    },

    /// A value that must be a flat dict of tensors is something else.
    #[error("not a state dict: {at} is {found}, expected a tensor")]
    NotAStateDict {
        /// Where the offending value sits (a `/`-joined path).
        at: String,
        /// What kind of value was found.
        found: &'static str,
    },

    /// A regular expression given for key rules or filters does not compile.
    #[error("bad pattern {pattern:?}: {reason}")]
    BadPattern {
        /// The pattern as given.
        pattern: String,
        /// What the regex compiler said.
        reason: String,
    },

    /// A value that should be a training checkpoint lacks a part or has
    /// one of the wrong kind.
    #[error("not a training checkpoint: {key}: {reason}")]
    BadCheckpoint {
        /// The key (prefixed by the file, when read from one).
        key: String,
        /// What is wrong.
        reason: String,
    },

    /// Another live process holds the run directory's writer lock.
    #[error("{}: another process is writing to this run directory (it holds {}/.lock)", dir.display(), dir.display())]
    StoreLocked {
        /// The run directory.
        dir: PathBuf,
    },

    /// A step that is already committed was saved again.
    #[error("{}: step {step} is already committed", dir.display())]
    StepExists {
        /// The run directory.
        dir: PathBuf,
        /// The step.
        step: u64,
    },

    /// A step that is not committed was asked for.
    #[error("{}: no committed step {step}", dir.display())]
    NoSuchStep {
        /// The run directory.
        dir: PathBuf,
        /// The step.
        step: u64,
    },

    /// A store file (`manifest.json`, `meta.json`) is damaged or not the
    /// store's.
    #[error("{}: {reason}", path.display())]
    BadStore {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A file's content hash differs from the one recorded when it was
    /// committed.
    #[error("{}: content hash {found} differs from the {expected} recorded at commit (the file was changed or damaged)", path.display())]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// The recorded hash.
        expected: String,
        /// The hash of the bytes now.
        found: String,
    },

    /// A save lacks the metric the best-K rule needs, under
    /// `MissingMetric::Error`.
    #[error("step {step} has no value for the metric {metric:?} that retention ranks by")]
    MissingMetric {
        /// The step.
        step: u64,
        /// The metric.
        metric: String,
    },

    /// A background save failed; reported on the next call.
    #[error("the background save of step {step} failed: {source}")]
    BackgroundSave {
        /// The step it was saving.
        step: u64,
        /// Why.
        source: Box<Error>,
    },

    /// The new manifest is in place (the step is committed and loads), but
    /// syncing the run directory afterwards failed, so a power cut could
    /// still undo the commit.
    #[error("step {step} is committed, but making the commit durable failed: {source}")]
    CommitNotDurable {
        /// The step.
        step: u64,
        /// Why.
        source: Box<Error>,
    },

    /// Every committed checkpoint failed to load.
    #[error("{}: no committed checkpoint loads: {problems}", dir.display())]
    NoIntactCheckpoint {
        /// The run directory.
        dir: PathBuf,
        /// Each step's problem.
        problems: String,
    },

    /// A model spec is malformed or its layers do not fit together.
    #[error("model spec: {at}: {reason}")]
    BadSpec {
        /// The layer (its dotted name) or `spec`.
        at: String,
        /// What is wrong.
        reason: String,
    },

    /// A file is not a model package, or its parts do not fit together.
    #[error("{}: {reason}", path.display())]
    BadPackage {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// An export cannot express a layer or option.
    #[error("cannot export {layer}: {reason}")]
    Unsupported {
        /// The layer (its dotted name), or `model`.
        layer: String,
        /// Why, and what would be needed.
        reason: String,
    },

    /// A pruning request that cannot be carried out.
    #[error("pruning: {0}")]
    BadPruning(String),

    /// A `.ckptz` file's tensor data (or its index, for an empty tensor
    /// name) is damaged.
    #[error("{}: {}at byte {offset}: {problem}", path.display(), if tensor.is_empty() { String::new() } else { format!("tensor {tensor:?} ") })]
    BadCompressed {
        /// The file.
        path: PathBuf,
        /// The tensor (empty for the file's own structure).
        tensor: String,
        /// Where its data starts.
        offset: u64,
        /// What is wrong.
        problem: String,
    },

    /// A quantization request that cannot be carried out.
    #[error("quantization: {0}")]
    BadQuantization(String),

    /// A state dict does not fit a model: every missing, unexpected and
    /// mismatched name at once.
    #[error("state dict does not fit the model: {0}")]
    StateDictMismatch(Box<crate::LoadReport>),
}

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
