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

use std::rc::Rc;

/// Modules every name of which (and every submodule) is dangerous.
const MODULES: &[&str] = &[
    "__builtins__",
    "_aix_support",
    "_ctypes",
    "_distutils_hack",
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
    "_winreg",
    "_xxsubinterpreters",
    "aifc",
    "aiohttp",
    "antigravity",
    "asynchat",
    "asyncio",
    "asyncore",
    "atexit",
    "bdb",
    "bz2",
    "cgitb",
    "cloudpickle",
    "code",
    "codeop",
    "commands",
    "compileall",
    "cProfile",
    "ctypes",
    "dbm",
    "difflib",
    "dill",
    "distutils",
    "doctest",
    "ensurepip",
    "fickling",
    "filecmp",
    "fileinput",
    "ftplib",
    "functools",
    "gc",
    "glob",
    "gzip",
    "http",
    "httplib",
    "httpx",
    "huggingface_hub",
    "idlelib",
    "imaplib",
    "imp",
    "importlib",
    "inspect",
    "IPython",
    "joblib",
    "lib2to3",
    "linecache",
    "logging",
    "lzma",
    "mailbox",
    "mailcap",
    "marshal",
    "mmap",
    "modelaudit",
    "modelscan",
    "msvcrt",
    "multiprocessing",
    "nntplib",
    "nt",
    "numpy.ctypeslib",
    "numpy.distutils",
    "numpy.f2py",
    "numpy.lib._npyio_impl",
    "numpy.lib.format",
    "numpy.lib.npyio",
    "numpy.testing",
    "operator",
    "os",
    "pandas.io.pickle",
    "pdb",
    "pexpect",
    "pickle",
    "picklescan",
    "pip",
    "pipes",
    "pkg_resources",
    "pkgutil",
    "platform",
    "poplib",
    "posix",
    "profile",
    "pty",
    "py_compile",
    "pydoc",
    "readline",
    "requests",
    "resource",
    "runpy",
    "saferpickle",
    "select",
    "selectors",
    "setuptools",
    "shelve",
    "shutil",
    "signal",
    "site",
    "smtpd",
    "smtplib",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "subprocess",
    "sunau",
    "sys",
    "syslog",
    "tarfile",
    "telnetlib",
    "tempfile",
    "test",
    "threading",
    "timeit",
    "Tkinter",
    "tkinter",
    "torch._C",
    "torch._dynamo",
    "torch._export",
    "torch._inductor",
    "torch.compile",
    "torch.distributed.rpc",
    "torch.fx.graph_module",
    "torch.hub",
    "torch.jit",
    "torch.multiprocessing",
    "torch.package",
    "torch.serialization",
    "torch.testing._internal",
    "torch.utils._config_module",
    "torch.utils.bottleneck",
    "torch.utils.collect_env",
    "torch.utils.cpp_extension",
    "torch.utils.model_zoo",
    "trace",
    "transformers.dynamic_module_utils",
    "turtle",
    "types",
    "unittest",
    "urllib",
    "urllib2",
    "urllib3",
    "uuid",
    "venv",
    "wave",
    "webbrowser",
    "winreg",
    "wsgiref",
    "xmlrpc",
    "zipapp",
    "zipfile",
    "zipimport",
];

/// Single dangerous names in otherwise harmless modules (a name also
/// covers its attributes: `ConfigModule` covers `ConfigModule.load_config`).
const NAMES: &[(&str, &[&str])] = &[
    ("_io", &["FileIO", "open", "open_code"]),
    ("io", &["FileIO", "open", "open_code"]),
    ("codecs", &["open", "EncodedFile"]),
    (
        "numpy",
        &[
            "load",
            "loadtxt",
            "fromfile",
            "memmap",
            "save",
            "savez",
            "savez_compressed",
            "savetxt",
            "genfromtxt",
            "fromregex",
            "DataSource",
        ],
    ),
    ("pandas", &["read_pickle"]),
    ("torch", &["load", "save", "compile", "from_file"]),
    ("torch.export", &["load"]),
    (
        "torch.fx.experimental.symbolic_shapes",
        &["ShapeEnv.evaluate_guards_expression"],
    ),
    ("torch.storage", &["_load_from_bytes"]),
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
    // How torch.save writes a tensor's layout (`torch.sparse_coo`).
    ("torch.serialization", "_get_layout"),
];

/// Python's private stdlib modules (`sys.stdlib_module_names` of 3.11 to
/// 3.13 that start with `_`): internal names no serializer writes, and
/// aliases of denied modules (`_functools.partial`, `_socket`, `_winapi`
/// `CreateProcess`, `_pyio.open`). All are dangerous but
/// [`PRIVATE_ALLOWED`].
const PRIVATE_STDLIB: &[&str] = &[
    "_abc",
    "_aix_support",
    "_android_support",
    "_apple_support",
    "_ast",
    "_asyncio",
    "_bisect",
    "_blake2",
    "_bootsubprocess",
    "_bz2",
    "_codecs",
    "_codecs_cn",
    "_codecs_hk",
    "_codecs_iso2022",
    "_codecs_jp",
    "_codecs_kr",
    "_codecs_tw",
    "_collections",
    "_collections_abc",
    "_colorize",
    "_compat_pickle",
    "_compression",
    "_contextvars",
    "_crypt",
    "_csv",
    "_ctypes",
    "_curses",
    "_curses_panel",
    "_datetime",
    "_dbm",
    "_decimal",
    "_dummy_thread",
    "_elementtree",
    "_frozen_importlib",
    "_frozen_importlib_external",
    "_functools",
    "_gdbm",
    "_hashlib",
    "_heapq",
    "_imp",
    "_interpchannels",
    "_interpqueues",
    "_interpreters",
    "_io",
    "_ios_support",
    "_json",
    "_locale",
    "_lsprof",
    "_lzma",
    "_markupbase",
    "_md5",
    "_msi",
    "_multibytecodec",
    "_multiprocessing",
    "_opcode",
    "_opcode_metadata",
    "_operator",
    "_osx_support",
    "_overlapped",
    "_pickle",
    "_posixshmem",
    "_posixsubprocess",
    "_py_abc",
    "_pydatetime",
    "_pydecimal",
    "_pyio",
    "_pylong",
    "_pyrepl",
    "_queue",
    "_random",
    "_scproxy",
    "_sha1",
    "_sha2",
    "_sha256",
    "_sha3",
    "_sha512",
    "_signal",
    "_sitebuiltins",
    "_socket",
    "_sqlite3",
    "_sre",
    "_ssl",
    "_stat",
    "_statistics",
    "_string",
    "_strptime",
    "_struct",
    "_suggestions",
    "_symtable",
    "_sysconfig",
    "_thread",
    "_threading_local",
    "_tkinter",
    "_tokenize",
    "_tracemalloc",
    "_typing",
    "_uuid",
    "_warnings",
    "_weakref",
    "_weakrefset",
    "_winapi",
    "_wmi",
    "_xxsubinterpreters",
    "_zoneinfo",
    "__future__",
];

/// The private stdlib globals serializers do write: `_codecs.encode`
/// (how protocol 2 writes bytes) and `_io`'s buffers (its file openers
/// are in [`NAMES`]).
const PRIVATE_ALLOWED: &[(&str, Option<&str>)] = &[("_codecs", Some("encode")), ("_io", None)];

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

/// True when a file's first bytes are a pickle written without a `PROTO`
/// opcode (protocols 0 and 1, which `pickle.load` and torch's legacy
/// loader still run): after up to four `MARK`s, a `GLOBAL` or `INST` of a
/// dotted identifier, a quoted text string, a text `dict`/`list` with its
/// memo (`(dp0`), or protocol 1's empty container and memo (`}q`).
pub(crate) fn text_pickle(head: &[u8]) -> bool {
    let start = head.iter().take(4).take_while(|&&b| b == b'(').count();
    let rest = &head[start..];
    let ident = |s: &[u8]| {
        let end = s.iter().position(|&b| b == b'\n').unwrap_or(s.len());
        end > 0
            && (s[0].is_ascii_alphabetic() || s[0] == b'_')
            && s[..end]
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            && (end < s.len() || s.len() >= 8)
    };
    match rest {
        [b'c' | b'i', tail @ ..] => ident(tail),
        [b'S', b'\'' | b'"', ..] => true,
        [b'd' | b'l' | b't', b'p', d, ..] => start > 0 && d.is_ascii_digit(),
        [b'}' | b']' | b')', b'q', ..] => start == 0,
        _ => false,
    }
}

/// The first dangerous global a pickle stream names, found by reading its
/// opcodes without running them (as the scanners do): `(offset, global)`,
/// `module.name` as written. It knows every opcode of protocols 0 to 5,
/// the text ones too (`GLOBAL`, `INST`), and follows the stack as Python's
/// unpickler would (marks, pops, containers, the memo), so `STACK_GLOBAL`
/// resolves to the strings it would take; one whose module or name is not
/// a plain string (computed, or a text string with escapes) is refused as
/// such. It stops where Python would stop: at `STOP`, an opcode it does
/// not know, or a malformed one. The restricted reader checks every
/// global it meets; this finds the ones a stream names where the reader
/// stops early (a text opcode it refuses, a broken stream) or never runs
/// (a NumPy object array, an archive's other pickles).
pub(crate) fn scan(bytes: &[u8]) -> Option<(usize, String)> {
    let mut scan = Scan {
        bytes,
        pos: 0,
        stack: Vec::new(),
        memo: std::collections::HashMap::new(),
    };
    loop {
        let at = scan.pos;
        match scan.step()? {
            Step::Next => {}
            Step::Global(module, name) => {
                if is_dangerous(&module, &name) {
                    return Some((at, format!("{module}.{name}")));
                }
            }
            Step::Unresolved => return Some((at, "a STACK_GLOBAL of a computed name".to_owned())),
        }
    }
}

/// What the scan knows of a stack entry.
#[derive(Clone)]
enum Item {
    Mark,
    /// A plain string; shared, so recalling a long one from the memo many
    /// times copies nothing.
    Str(Rc<str>),
    /// A text string whose escapes the scan does not decode.
    Escaped,
    Other,
}

/// One opcode's effect that matters to the scan.
enum Step {
    Next,
    Global(Rc<str>, Rc<str>),
    Unresolved,
}

struct Scan<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    memo: std::collections::HashMap<u64, Item>,
}

impl Scan<'_> {
    /// Runs one opcode; `None` where Python's unpickler would stop.
    fn step(&mut self) -> Option<Step> {
        let op = *self.bytes.get(self.pos)?;
        self.pos += 1;
        match op {
            b'.' => return None,
            b'c' | b'i' => return self.text_global(op),
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                self.stack.push(Item::Other);
                return Some(match (module, name) {
                    (Item::Str(m), Item::Str(n)) => Step::Global(m, n),
                    _ => Step::Unresolved,
                });
            }
            b'S' | b'V' => {
                let line = self.line()?;
                let text = String::from_utf8_lossy(line);
                let item = if text.contains('\\') {
                    Item::Escaped
                } else if op == b'S' {
                    Item::Str(text.trim_matches(|c| c == '\'' || c == '"').into())
                } else {
                    Item::Str(text.into())
                };
                self.stack.push(item);
            }
            // Binary strings: SHORT_BINUNICODE, BINUNICODE(8), BINSTRING.
            0x8c | b'U' => self.string(1)?,
            b'X' | b'T' => self.string(4)?,
            0x8d => self.string(8)?,
            _ => self.other(op)?,
        }
        Some(Step::Next)
    }

    /// `GLOBAL` or `INST`: module and name on two lines.
    fn text_global(&mut self, op: u8) -> Option<Step> {
        let module: Rc<str> = String::from_utf8_lossy(self.line()?).into();
        let name: Rc<str> = String::from_utf8_lossy(self.line()?).into();
        if op == b'i' {
            self.pop_mark()?;
        }
        self.stack.push(Item::Other);
        Some(Step::Global(module, name))
    }

    /// Every opcode that names no global: its argument skipped, its
    /// effect on the stack and the memo followed.
    fn other(&mut self, op: u8) -> Option<()> {
        let (pops, pushes) = match op {
            b'(' => {
                self.stack.push(Item::Mark);
                return Some(());
            }
            b'N' | b')' | b']' | b'}' | 0x88 | 0x89 | 0x8f | 0x97 => (0, 1),
            b'I' | b'L' | b'F' | b'P' => {
                self.line()?;
                (0, 1)
            }
            b'K' | 0x82 => self.skip(1, (0, 1))?,
            b'M' | 0x83 => self.skip(2, (0, 1))?,
            b'J' | 0x84 => self.skip(4, (0, 1))?,
            b'G' => self.skip(8, (0, 1))?,
            0x80 => self.skip(1, (0, 0))?,
            0x95 => self.skip(8, (0, 0))?,
            0x8a | b'C' => self.sized(1, (0, 1))?,
            0x8b | b'B' => self.sized(4, (0, 1))?,
            0x8e | 0x96 => self.sized(8, (0, 1))?,
            b'0' | b'a' | b'b' => (1, 0),
            b's' => (2, 0),
            b'Q' | 0x85 | 0x98 => (1, 1),
            b'R' | 0x81 | 0x86 => (2, 1),
            0x87 | 0x92 => (3, 1),
            b'2' => {
                let top = self.stack.last()?.clone();
                self.stack.push(top);
                return Some(());
            }
            b'1' | b'e' | b'u' | 0x90 => {
                self.pop_mark()?;
                return Some(());
            }
            b't' | b'l' | b'd' | b'o' | 0x91 => {
                self.pop_mark()?;
                (0, 1)
            }
            b'p' | b'q' | b'r' | 0x94 => return self.put(op),
            b'g' | b'h' | b'j' => return self.get(op),
            _ => return None,
        };
        for _ in 0..pops {
            self.pop()?;
        }
        for _ in 0..pushes {
            self.stack.push(Item::Other);
        }
        Some(())
    }

    fn put(&mut self, op: u8) -> Option<()> {
        let key = match op {
            b'p' => self.line_int()?,
            b'q' => self.le(1)?,
            b'r' => self.le(4)?,
            _ => self.memo.len() as u64,
        };
        let top = match self.stack.last()? {
            Item::Mark => return None,
            item => item.clone(),
        };
        self.memo.insert(key, top);
        Some(())
    }

    fn get(&mut self, op: u8) -> Option<()> {
        let key = match op {
            b'g' => self.line_int()?,
            b'h' => self.le(1)?,
            _ => self.le(4)?,
        };
        let item = self.memo.get(&key)?.clone();
        self.stack.push(item);
        Some(())
    }

    fn pop(&mut self) -> Option<Item> {
        match self.stack.pop()? {
            Item::Mark => None,
            item => Some(item),
        }
    }

    fn pop_mark(&mut self) -> Option<()> {
        while !matches!(self.stack.pop()?, Item::Mark) {}
        Some(())
    }

    /// A string whose length takes `len_bytes` bytes before it.
    fn string(&mut self, len_bytes: usize) -> Option<()> {
        let n = usize::try_from(self.le(len_bytes)?).ok()?;
        let data = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        self.stack
            .push(Item::Str(String::from_utf8_lossy(data).into()));
        Some(())
    }

    /// Skips `n` bytes of argument; `effect` is (pops, pushes).
    fn skip(&mut self, n: usize, effect: (usize, usize)) -> Option<(usize, usize)> {
        self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(effect)
    }

    /// Skips a length-prefixed argument.
    fn sized(&mut self, len_bytes: usize, effect: (usize, usize)) -> Option<(usize, usize)> {
        let n = usize::try_from(self.le(len_bytes)?).ok()?;
        self.skip(n, effect)
    }

    /// A little-endian unsigned integer of `n` bytes, consumed.
    fn le(&mut self, n: usize) -> Option<u64> {
        let b = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(b.iter().rev().fold(0u64, |v, &x| (v << 8) | x as u64))
    }

    /// A text line, consumed with its newline.
    fn line(&mut self) -> Option<&[u8]> {
        let rest = self.bytes.get(self.pos..)?;
        let end = rest.iter().position(|&b| b == b'\n')?;
        self.pos += end + 1;
        Some(&rest[..end])
    }

    fn line_int(&mut self) -> Option<u64> {
        String::from_utf8_lossy(self.line()?).trim().parse().ok()
    }
}

/// [`scan`] as the error that refuses the file: `entry` of `path` names
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

    #[test]
    fn the_scan_finds_globals_the_reader_never_reaches() {
        // Protocol 0: INST after a text string (the reader refuses `S`).
        let inst = b"(S'touch x'\nios\nsystem\n.";
        assert_eq!(scan(inst), Some((12, "os.system".to_owned())));
        // STACK_GLOBAL from strings recalled from the memo.
        let memo = b"\x80\x04\x8c\x05posix\x94\x8c\x06system\x94h\x00h\x01\x93.";
        assert_eq!(scan(memo).map(|(_, g)| g), Some("posix.system".to_owned()));
        // Harmless globals, and anything after STOP, are not reported.
        let clean = b"\x80\x02ccollections\nOrderedDict\n)R.cos\nsystem\n";
        assert_eq!(scan(clean), None);
        assert_eq!(scan(b"\x80\x04\x8c\x05posix"), None);
        assert_eq!(scan(b""), None);
        // Marks and containers are followed: `posix`, then a mark and an
        // empty tuple popped back off, then `system`.
        let marked = b"\x80\x04\x8c\x05posix(1\x8c\x06system\x93.";
        assert_eq!(
            scan(marked).map(|(_, g)| g),
            Some("posix.system".to_owned())
        );
        let tupled = b"\x80\x04\x8c\x05posix(K\x01t0\x8c\x06system\x93.";
        assert_eq!(
            scan(tupled).map(|(_, g)| g),
            Some("posix.system".to_owned())
        );
        // A text string with escapes is not taken at its word.
        let escaped = b"S'\\x70osix'\nS'system'\n\x93.";
        assert!(
            scan(escaped).unwrap().1.contains("computed"),
            "{:?}",
            scan(escaped)
        );
        // A long string recalled a million times costs nothing.
        let mut recalled = b"\x80\x04\x8d\x00\x00\x10\x00\x00\x00\x00\x00".to_vec();
        recalled.extend(std::iter::repeat_n(b'a', 1 << 20));
        recalled.push(0x94);
        recalled.extend(std::iter::repeat_n(*b"h\x000", 1 << 20).flatten());
        assert_eq!(scan(&recalled), None);
    }

    #[test]
    fn text_pickles_are_recognised_and_text_is_not() {
        assert!(text_pickle(b"cos\nsystem\n(S'to"));
        assert!(text_pickle(b"(S'touch ckpt_ma"));
        assert!(text_pickle(b"(cos\nsystem\nU\x11t"));
        assert!(text_pickle(b"(dp0\nS'w'\np1\n"));
        assert!(text_pickle(b"}q\x00(X\x01\x00\x00\x00w"));
        assert!(text_pickle(b"ctorch._utils\n_re"));
        assert!(!text_pickle(b"cargo build --re"));
        assert!(!text_pickle(b"config: {lr: 0.1"));
        assert!(!text_pickle(b"{\"weight_map\": {"));
        assert!(!text_pickle(b"(hello world)..."));
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
