//! Which globals a pickle may name: the deny-list of dangerous callables
//! (refused wherever they appear), and the globals
//! `torch.load(weights_only=True)` accepts (for the verdict on what a file
//! would ask of a Python user).
//!
//! The deny-list is the union of the public scanners' lists (picklescan
//! 1.0.5 `_unsafe_globals`, modelscan 0.8 `unsafe_globals`, fickling 0.1
//! `UNSAFE_IMPORTS`), with torch's own loaders added, and the bypasses
//! reported against them (private aliases such as `_functools` and
//! `argparse._os`, methods reached through a class such as
//! `pathlib.Path.write_text`, torch's `fx` reducer that `exec`s its source,
//! `torch._C`, file writers). ckpt never imports
//! or calls a global, so the list does not protect ckpt: it says what the
//! file would do to whoever opens it with `pickle` or
//! `torch.load(weights_only=False)`, and ckpt refuses such files outright.

mod dangerous;
mod deny_list;
mod scan;
mod weights_only;

pub(crate) use dangerous::{is_dangerous, python3_module};
use scan::scan;
pub(crate) use scan::text_pickle;
pub(crate) use weights_only::torch_allows;

/// [`scan()`] as the error that refuses the file: `entry` of `path` names
/// a dangerous global.
pub(crate) fn refuse(bytes: &[u8], path: &std::path::Path, entry: &str) -> Option<crate::Error> {
    scan(bytes).map(|(offset, global)| crate::Error::DangerousGlobal {
        path: path.to_owned(),
        entry: entry.to_owned(),
        offset: offset as u64,
        global,
    })
}

/// Refuses a zip archive any of whose other pickles (`constants.pkl` of a
/// TorchScript archive, a pickle no loader reads) names a dangerous
/// global: the file is refused whatever it names, wherever.
pub(crate) fn refuse_other_pickles(
    zip: &super::zip::ZipArchive,
    buffer: &std::sync::Arc<crate::tensor::Buffer>,
    path: &std::path::Path,
    read: &str,
) -> crate::Result<()> {
    for entry in &zip.entries {
        if entry.name.ends_with(".pkl") && entry.name != read {
            let bytes = super::entry_bytes(buffer, entry, path, super::zip::Purpose::Parse)?;
            let leaf = entry.name.split_once('/').map_or(&*entry.name, |(_, l)| l);
            if let Some(e) = refuse(bytes.as_slice(), path, leaf) {
                return Err(e);
            }
        }
    }
    Ok(())
}
