//! The verdict on one global: whether naming it lets
//! `torch.load(weights_only=False)` run code ([`is_dangerous`]), with
//! Python 2's names mapped as Python 3 reads them.

use super::deny_list::{
    ANY_MODULE, CARVED_OUT, MODULES, NAMES, PRIVATE_ALLOWED, PRIVATE_STDLIB, SAFE_BUILTINS,
};

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
        // The rest of `_compat_pickle.IMPORT_MAPPING` that reaches a
        // denied module.
        "commands" => "subprocess",
        "dummy_thread" => "_dummy_thread",
        "SocketServer" => "socketserver",
        "xmlrpclib" => "xmlrpc.client",
        "SimpleXMLRPCServer" | "DocXMLRPCServer" => "xmlrpc.server",
        "BaseHTTPServer" | "SimpleHTTPServer" | "CGIHTTPServer" => "http.server",
        "cookielib" => "http.cookiejar",
        "Cookie" => "http.cookies",
        "urlparse" => "urllib.parse",
        "robotparser" => "urllib.robotparser",
        "anydbm" | "whichdb" => "dbm",
        "dbhash" => "dbm.bsd",
        "dumbdbm" => "dbm.dumb",
        "gdbm" => "dbm.gnu",
        "Tkinter" => "tkinter",
        other => other,
    }
}

/// True when `module` is `denied` or one of its submodules.
fn in_module(module: &str, denied: &str) -> bool {
    module == denied
        || module
            .strip_prefix(denied)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// True when `name` is `denied` or one of its attributes.
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
    let top = module.split('.').next().unwrap_or_default();
    if PRIVATE_STDLIB.contains(&top)
        && !PRIVATE_ALLOWED
            .iter()
            .any(|&(m, n)| m == module && n.is_none_or(|n| n == name))
    {
        return true;
    }
    // Python 3 reads Python 2's builtins by their new names
    // (`_compat_pickle.NAME_MAPPING`).
    let builtin = match name {
        "long" => "int",
        "unicode" => "str",
        "xrange" => "range",
        "unichr" => "chr",
        other => other,
    };
    if module == "builtins" && !SAFE_BUILTINS.contains(&builtin) {
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
    // one before it (`argparse._os`), a dunder that reaches the
    // interpreter, or a function or method reached through a class
    // (`pathlib.Path.write_text`, `socket.socket.bind`). Serializers
    // write dotted names only for nested classes (`Net.Config`).
    parts.len() > 1
        && parts.iter().enumerate().any(|(i, p)| {
            (p.starts_with("__") && p.ends_with("__"))
                || MODULES.contains(&p.trim_start_matches('_'))
                || *p == "builtins"
                || *p == "__builtin__"
                || (i > 0 && !p.starts_with(|c: char| c.is_ascii_uppercase()))
        })
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
    fn the_bypasses_reported_against_the_scanners_are_dangerous() {
        for (m, n) in [
            // Private aliases of denied modules.
            ("_functools", "partial"),
            ("_socket", "socket"),
            ("_winapi", "CreateProcess"),
            ("_pyio", "open"),
            ("argparse", "_os.spawnlp"),
            // Methods reached through a class.
            ("pathlib", "Path.write_text"),
            ("socket", "socket.bind"),
            ("code", "InteractiveInterpreter.runcode"),
            ("torch", "UntypedStorage.from_file"),
            // torch's own code runners and file writers.
            ("torch.fx.graph_module", "reduce_graph_module"),
            ("torch._C", "PyTorchFileWriter"),
            ("torch", "save"),
            ("torch.serialization", "_open_file"),
            ("torch.utils.cpp_extension", "load_inline"),
            ("torch.package.package_importer", "PackageImporter"),
            ("setuptools._distutils.file_util", "write_file"),
            // File writers of the stdlib and NumPy.
            ("codecs", "open"),
            ("gzip", "open"),
            ("dbm", "open"),
            ("numpy", "save"),
            ("numpy.lib.format", "read_array"),
            // Python 2 names Python 3 maps onto denied modules.
            ("commands", "getoutput"),
            ("SocketServer", "TCPServer"),
            ("__builtin__", "basestring"),
        ] {
            assert!(is_dangerous(m, n), "{m}.{n}");
        }
    }

    #[test]
    fn private_and_python_2_names_serializers_write_are_not() {
        for (m, n) in [
            ("_codecs", "encode"),
            ("_io", "BytesIO"),
            ("__builtin__", "long"),
            ("__builtin__", "unicode"),
            ("torch.serialization", "_get_layout"),
            ("__main__", "RunInfo"),
            ("omegaconf.dictconfig", "DictConfig"),
            ("numpy._core.numeric", "_frombuffer"),
            ("typing", "Any"),
        ] {
            assert!(!is_dangerous(m, n), "{m}.{n}");
        }
        assert!(is_dangerous("_codecs", "decode"));
        assert!(is_dangerous("_io", "FileIO"));
    }
}
