//! Which globals a pickle may name: the deny-list of dangerous callables
//! (refused wherever they appear), and the globals
//! `torch.load(weights_only=True)` accepts (for the verdict on what a file
//! would ask of a Python user).
//!
//! The deny-list is the union of the public scanners' lists (picklescan
//! 1.0.5 `_unsafe_globals`, modelscan 0.8 `unsafe_globals`, fickling 0.1
//! `UNSAFE_IMPORTS`), with torch's own loaders added. ckpt never imports
//! or calls a global, so the list does not protect ckpt: it says what the
//! file would do to whoever opens it with `pickle` or
//! `torch.load(weights_only=False)`, and ckpt refuses such files outright.

/// Modules every name of which (and every submodule) is dangerous.
const MODULES: &[&str] = &[
    "__builtins__",
    "_aix_support",
    "_ctypes",
    "_frozen_importlib",
    "_frozen_importlib_external",
    "_imp",
    "_interpreters",
    "_operator",
    "_osx_support",
    "_pickle",
    "_posixsubprocess",
    "_pyrepl",
    "_signal",
    "_sqlite3",
    "_thread",
    "_xxsubinterpreters",
    "aiohttp",
    "asyncio",
    "atexit",
    "bdb",
    "cProfile",
    "cloudpickle",
    "code",
    "codeop",
    "commands",
    "compileall",
    "ctypes",
    "dill",
    "distutils",
    "doctest",
    "ensurepip",
    "fickling",
    "fileinput",
    "ftplib",
    "functools",
    "gc",
    "glob",
    "http",
    "httplib",
    "idlelib",
    "imaplib",
    "imp",
    "importlib",
    "inspect",
    "joblib",
    "lib2to3",
    "linecache",
    "logging",
    "marshal",
    "mmap",
    "modelaudit",
    "modelscan",
    "multiprocessing",
    "nntplib",
    "nt",
    "numpy.distutils",
    "numpy.f2py",
    "numpy.testing",
    "numpy.ctypeslib",
    "operator",
    "os",
    "pandas.io.pickle",
    "pdb",
    "pexpect",
    "pickle",
    "picklescan",
    "pip",
    "pipes",
    "pkgutil",
    "platform",
    "poplib",
    "posix",
    "profile",
    "pty",
    "py_compile",
    "pydoc",
    "requests",
    "runpy",
    "saferpickle",
    "select",
    "selectors",
    "shelve",
    "shutil",
    "signal",
    "site",
    "smtplib",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "subprocess",
    "sys",
    "syslog",
    "tarfile",
    "telnetlib",
    "tempfile",
    "test",
    "threading",
    "timeit",
    "torch._dynamo",
    "torch._export",
    "torch._inductor",
    "torch.compile",
    "torch.hub",
    "torch.jit",
    "torch.utils._config_module",
    "torch.utils.bottleneck",
    "torch.utils.collect_env",
    "trace",
    "types",
    "unittest",
    "urllib",
    "urllib2",
    "uuid",
    "venv",
    "webbrowser",
    "xmlrpc",
    "zipfile",
    "zipimport",
];

/// Single dangerous names in otherwise harmless modules (a name also
/// covers its attributes: `ConfigModule` covers `ConfigModule.load_config`).
const NAMES: &[(&str, &[&str])] = &[
    ("_io", &["FileIO", "open", "open_code"]),
    ("io", &["FileIO", "open", "open_code"]),
    ("numpy", &["load", "loadtxt", "fromfile", "memmap"]),
    ("numpy.lib.npyio", &["load", "loadtxt"]),
    ("pandas", &["read_pickle"]),
    ("torch", &["load", "compile", "from_file"]),
    ("torch.export", &["load"]),
    (
        "torch.fx.experimental.symbolic_shapes",
        &["ShapeEnv.evaluate_guards_expression"],
    ),
    ("torch.storage", &["_load_from_bytes"]),
    ("torch.serialization", &["load", "_load", "_legacy_load"]),
    (
        "torch.utils.data.datapipes.utils.decoder",
        &["basichandlers"],
    ),
    (
        "torch.distributed.elastic.rendezvous.api",
        &["basichandlers"],
    ),
    ("yaml", &["load", "unsafe_load", "full_load", "load_all"]),
];

/// Names dangerous in any module (fickling's rule for `eval`; the others
/// are the process- and code-running names of the stdlib).
const ANY_MODULE: &[&str] = &[
    "eval",
    "exec",
    "execfile",
    "compile",
    "system",
    "popen",
    "__import__",
    "getattr",
    "setattr",
    "delattr",
    "apply",
    "breakpoint",
    "globals",
    "locals",
    "vars",
];

/// The builtins that only build plain values (fickling's `SAFE_BUILTINS`);
/// every other builtin is dangerous.
const SAFE_BUILTINS: &[&str] = &[
    "abs",
    "all",
    "any",
    "ascii",
    "bin",
    "bool",
    "bytearray",
    "bytes",
    "chr",
    "complex",
    "dict",
    "divmod",
    "enumerate",
    "float",
    "format",
    "frozenset",
    "hash",
    "hex",
    "int",
    "isinstance",
    "issubclass",
    "len",
    "list",
    "max",
    "min",
    "object",
    "oct",
    "ord",
    "pow",
    "range",
    "repr",
    "reversed",
    "round",
    "set",
    "slice",
    "sorted",
    "str",
    "sum",
    "tuple",
    "zip",
];

/// Globals inside denied modules that are plain data builders: the
/// TorchScript archive's `torch.jit._pickle` functions build lists and
/// restore type tags, nothing else.
const CARVED_OUT: &[(&str, &str)] = &[
    ("torch.jit._pickle", "build_intlist"),
    ("torch.jit._pickle", "build_tensorlist"),
    ("torch.jit._pickle", "build_doublelist"),
    ("torch.jit._pickle", "build_boollist"),
    ("torch.jit._pickle", "build_complexlist"),
    ("torch.jit._pickle", "build_tensor_from_id"),
    ("torch.jit._pickle", "restore_type_tag"),
];

/// Python 2 module names, as Python 3's unpickler maps them.
pub(crate) fn python3_module(module: &str) -> &str {
    match module {
        "__builtin__" | "exceptions" => "builtins",
        "copy_reg" => "copyreg",
        "cPickle" => "pickle",
        "thread" => "_thread",
        "UserDict" | "UserList" | "UserString" => "collections",
        "StringIO" | "cStringIO" => "io",
        "urllib2" => "urllib.request",
        "httplib" => "http.client",
        other => other,
    }
}

fn in_module(module: &str, denied: &str) -> bool {
    module == denied
        || module
            .strip_prefix(denied)
            .is_some_and(|rest| rest.starts_with('.'))
}

fn names_attr(name: &str, denied: &str) -> bool {
    in_module(name, denied)
}

/// True when naming `module.name` in a pickle would let
/// `torch.load(weights_only=False)` run code: the deny-list, every
/// builtin outside the plain-value builders, any `eval`-like name, and
/// dotted names (`pathlib` + `os.system`, `collections` +
/// `OrderedDict.__init__.__globals__`) that walk through a dunder or
/// through a dangerous module's name.
pub(crate) fn is_dangerous(module: &str, name: &str) -> bool {
    let module = python3_module(module);
    if CARVED_OUT.contains(&(module, name)) {
        return false;
    }
    if MODULES.iter().any(|m| in_module(module, m)) {
        return true;
    }
    if module == "builtins" && !SAFE_BUILTINS.contains(&name) {
        return true;
    }
    if NAMES
        .iter()
        .any(|(m, names)| *m == module && names.iter().any(|n| names_attr(name, n)))
    {
        return true;
    }
    let parts: Vec<&str> = name.split('.').collect();
    if parts.iter().any(|p| ANY_MODULE.contains(p)) {
        return true;
    }
    // An attribute path: every step could be a module re-exported by the
    // one before it, or a dunder that reaches the interpreter.
    parts.len() > 1
        && parts.iter().any(|p| {
            (p.starts_with("__") && p.ends_with("__"))
                || MODULES.contains(p)
                || *p == "builtins"
                || *p == "__builtin__"
        })
}

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
                || super::torch_dtype_name(name)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scanners_patterns_are_dangerous() {
        for (m, n) in [
            ("posix", "system"),
            ("nt", "system"),
            ("os", "popen"),
            ("subprocess", "Popen"),
            ("builtins", "eval"),
            ("__builtin__", "exec"),
            ("builtins", "getattr"),
            ("builtins", "__import__"),
            ("builtins", "open"),
            ("importlib", "import_module"),
            ("runpy", "run_path"),
            ("pickle", "loads"),
            ("_pickle", "loads"),
            ("marshal", "loads"),
            ("ctypes", "CDLL"),
            ("socket", "create_connection"),
            ("shutil", "rmtree"),
            ("sys", "exit"),
            ("functools", "partial"),
            ("operator", "attrgetter"),
            ("operator", "methodcaller"),
            ("torch.jit", "load"),
            ("torch.hub", "load"),
            ("torch.serialization", "load"),
            ("torch", "load"),
            ("torch._inductor.codecache", "compile_file"),
            ("numpy.f2py", "compile"),
            ("numpy.testing._private.utils", "runstring"),
            ("webbrowser", "open"),
            ("pathlib", "os.system"),
            ("collections", "OrderedDict.__init__.__globals__"),
            ("torch.utils._config_module", "ConfigModule.load_config"),
            ("anything", "eval"),
            ("copy_reg", "os.system"),
        ] {
            assert!(is_dangerous(m, n), "{m}.{n}");
        }
    }

    #[test]
    fn the_globals_of_real_checkpoints_are_not() {
        for (m, n) in [
            ("collections", "OrderedDict"),
            ("collections", "defaultdict"),
            ("torch._utils", "_rebuild_tensor_v2"),
            ("torch", "FloatStorage"),
            ("torch.jit._pickle", "build_intlist"),
            ("torch.jit._pickle", "restore_type_tag"),
            ("argparse", "Namespace"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy", "dtype"),
            ("builtins", "set"),
            ("__builtin__", "set"),
            ("copyreg", "_reconstructor"),
            ("pathlib", "PosixPath"),
            ("transformers.trainer_utils", "SchedulerType"),
            ("__torch__.torch.nn.modules.linear", "Linear"),
            ("mymodels", "Net.Config"),
        ] {
            assert!(!is_dangerous(m, n), "{m}.{n}");
        }
    }

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
