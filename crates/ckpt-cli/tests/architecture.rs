//! The CLI's dependency rule (ARCHITECTURE.md): commands use the shared
//! modules, never each other, and shared code names no command.

use std::path::Path;

#[path = "../../ckpt/tests/rules/mod.rs"]
mod rules;

use rules::{code, rust_files};

#[test]
fn cli_commands_do_not_name_each_other() {
    let cli = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let commands = cli.join("commands");
    let mut files = Vec::new();
    rust_files(&commands, &mut files);
    files.retain(|f| f.file_name().unwrap() != "mod.rs");
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.len() > 5, "commands found: {names:?}");
    let mut wrong = Vec::new();
    for file in &files {
        let own = file.file_stem().unwrap().to_string_lossy();
        for (n, line) in code(&std::fs::read_to_string(file).unwrap()) {
            for other in names.iter().filter(|o| **o != own) {
                if line.contains(&format!("commands::{other}"))
                    || line.contains(&format!("super::{other}"))
                {
                    wrong.push(format!("commands/{own}.rs:{n}: names {other}"));
                }
            }
        }
    }
    let mut shared = Vec::new();
    rust_files(&cli.join("shared"), &mut shared);
    for file in &shared {
        for (n, line) in code(&std::fs::read_to_string(file).unwrap()) {
            if line.contains("commands::") {
                wrong.push(format!(
                    "{}:{n}: shared code names a command",
                    file.display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "commands naming each other:\n{}",
        wrong.join("\n")
    );
}
