//! The dependency rule of ARCHITECTURE.md, checked on the sources: each
//! module of `crates/ckpt/src` names only modules of its own layer or the
//! layers below (through a `crate::` path or a name the crate root
//! re-exports). (`crates/ckpt-cli/tests/architecture.rs` checks that no
//! command of the CLI names another.)
//!
//! ```text
//! 0 core     dtype cast tensor value state_dict tree json parallel
//!            (and error, the one enum, which names data of every layer)
//! 1 storage  where bytes live: local files, S3, the atomic replace
//! 2 format   one module per single-file format, over bytes
//! 3 layout   multi-file layouts: indexes, shards, ranks, chunks, folders
//! 4 entry    load (and its rules), save, verify
//! 5 runs     store, checkpoint
//! 6 models   spec, package, export, compress
//! ```

mod rules;

use std::collections::HashMap;
use std::path::Path;

use rules::{code, rust_files};

const LAYERS: &[&[&str]] = &[
    &[
        "dtype",
        "cast",
        "tensor",
        "value",
        "state_dict",
        "tree",
        "error",
        "json",
        "parallel",
    ],
    &["storage"],
    &["format"],
    &["layout"],
    &["load", "save", "verify", "report"],
    &["store", "checkpoint"],
    &["spec", "package", "export", "compress", "convert"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The names the crate root re-exports (`pub use module::...::{A, B}`),
/// mapped to the top-level module that defines them.
fn root_names(lib: &str) -> HashMap<String, String> {
    let mut names = HashMap::new();
    let flat = lib.replace('\n', " ");
    for item in flat.split(';') {
        let Some(rest) = item.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = rest.split("::").next().unwrap().trim().to_owned();
        let list = match rest.find('{') {
            Some(open) => &rest[open + 1..rest.rfind('}').unwrap()],
            None => rest.rsplit("::").next().unwrap(),
        };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            names.insert(name.to_owned(), module.clone());
        }
    }
    names
}

/// Every top-level module a line names through `crate::`.
fn named_modules(line: &str, root: &HashMap<String, String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let idents: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end].split(',').map(str::trim).collect()
        } else {
            vec![rest]
        };
        for ident in idents {
            let name: String = ident
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if layer(&name).is_some() {
                found.push(name);
            } else if let Some(module) = root.get(&name) {
                found.push(module.clone());
            }
        }
    }
    found
}

#[test]
fn core_modules_point_down_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let root = root_names(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = Path::new(first).file_stem().unwrap().to_string_lossy();
        // The crate's one error enum carries data of every layer (a
        // `Format`, a `LoadReport`) and calls nothing: everyone uses it.
        if module == "lib" || module == "error" {
            continue;
        }
        let own = layer(&module).unwrap_or_else(|| panic!("{module} has no layer here"));
        let text = std::fs::read_to_string(file).unwrap();
        // A `#[cfg(test)]` module may use anything: tests are not a dependency.
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for (n, line) in code(text) {
            for named in named_modules(&line, &root) {
                if layer(&named).unwrap() > own {
                    wrong.push(format!(
                        "{}:{n}: {module} names {named}",
                        relative.display()
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_rule_sees_what_it_checks() {
    let root = root_names("pub use load::{load, read};\npub use store::CheckpointManager;");
    assert_eq!(
        named_modules("use crate::{read, Error}; crate::store::RunReader", &root),
        ["load", "store"]
    );
    assert_eq!(
        named_modules("x(crate::CheckpointManager::open)", &root),
        ["store"]
    );
}
