//! What `torch.load(weights_only=True)` accepts by default: the verdict on
//! what a file would ask of a Python user.

use super::python3_module;
use crate::format::pytorch::torch_dtype_name;

/// The globals `torch.load(weights_only=True)` accepts by default (torch
/// 2.15's `_weights_only_unpickler._get_allowed_globals`), after Python
/// 2 names are mapped.
pub(crate) fn torch_allows(module: &str, name: &str) -> bool {
    let module = python3_module(module);
    match module {
        "collections" => matches!(name, "OrderedDict" | "Counter"),
        "builtins" => matches!(name, "bytearray" | "set" | "complex"),
        "_codecs" => name == "encode",
        "torch.nn.parameter" => name == "Parameter",
        "torch.serialization" => name == "_get_layout",
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "torch.storage" => matches!(name, "UntypedStorage" | "TypedStorage"),
        "torch._utils" => matches!(
            name,
            "_rebuild_parameter"
                | "_rebuild_parameter_with_state"
                | "_rebuild_qtensor"
                | "_rebuild_tensor"
                | "_rebuild_tensor_v2"
                | "_rebuild_tensor_v3"
                | "_rebuild_sparse_tensor"
                | "_rebuild_meta_tensor_no_storage"
                | "_rebuild_wrapper_subclass"
                | "_rebuild_device_tensor_from_numpy"
                | "_rebuild_device_tensor_from_cpu_tensor"
        ),
        "torch" | "torch.cuda" => {
            matches!(name, "Size" | "Tensor" | "device")
                || name.ends_with("Storage")
                || name.ends_with("Tensor")
                || name.starts_with("per_tensor_")
                || name.starts_with("per_channel_")
                || torch_dtype_name(name)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_only_accepts_torch_data_only() {
        assert!(torch_allows("torch._utils", "_rebuild_tensor_v2"));
        assert!(torch_allows("__builtin__", "set"));
        assert!(torch_allows("torch", "float32"));
        assert!(torch_allows("torch", "QInt8Storage"));
        assert!(!torch_allows("argparse", "Namespace"));
        assert!(!torch_allows("numpy.core.multiarray", "_reconstruct"));
        assert!(!torch_allows("builtins", "frozenset"));
    }
}
