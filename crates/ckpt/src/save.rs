//! Saving: the functions that write a [`Value`] to any supported file or
//! sharded index (with [`SaveOptions`]).

use std::path::Path;

use crate::format::{Format, SaveOptions};
use crate::{Result, Value};

/// Saves a checkpoint; the format comes from the extension. A flat dict of
/// tensors becomes a plain file any reader of the format loads; a nested
/// checkpoint (ints, floats, strings, lists, tuples, dicts with integer
/// keys, tensors anywhere) also stores its tree, so [`crate::load`] returns
/// exactly what was saved.
///
/// The file is replaced atomically: readers see the old file or the new one.
pub fn save(path: impl AsRef<Path>, value: &Value) -> Result<()> {
    save_with(path, value, &SaveOptions::default())
}

/// [`save`] with options.
pub fn save_with(path: impl AsRef<Path>, value: &Value, options: &SaveOptions) -> Result<()> {
    let path = path.as_ref();
    let format = match options.format {
        Some(format) => format,
        None => Format::from_path(path)?,
    };
    if format == Format::Dcp {
        return crate::layout::dcp::write::save(path, value);
    }
    if let (Format::ShardedIndex, max) | (_, max @ Some(_)) = (format, options.max_shard_size) {
        let max = max.unwrap_or(crate::layout::hf::DEFAULT_MAX_SHARD_SIZE);
        return crate::layout::hf::write(path, value, max, options);
    }
    crate::format::write_file(format, path, value, options)
}
