//! Tidy checks as an ordinary test (rust-analyzer's `tidy.rs`): the conventions a reviewer
//! would otherwise have to remember.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_follows_the_house_rules() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&crates, &mut files);
    assert!(
        files.len() > 20,
        "found only {} files under {}",
        files.len(),
        crates.display()
    );

    let mut problems = Vec::new();
    // Built from pieces so this file does not trip its own checks.
    let ignore = ["#[", "ignore]"].concat();
    let should_panic = ["#[", "should_panic]"].concat();
    for file in &files {
        let shown = file
            .strip_prefix(&crates)
            .unwrap_or(file)
            .display()
            .to_string();
        let text = std::fs::read_to_string(file).unwrap();
        if file.file_name().is_some_and(|name| name == "mod.rs") {
            problems.push(format!("{shown}: named mod.rs; use foo.rs beside foo/"));
        }
        if !text.starts_with("//!") {
            problems.push(format!(
                "{shown}: does not open with a //! comment saying what it owns"
            ));
        }
        for (idx, line) in text.lines().enumerate() {
            let at = format!("{shown}:{}", idx + 1);
            if line.ends_with(' ') || line.ends_with('\t') {
                problems.push(format!("{at}: trailing whitespace"));
            }
            if line.trim_start().starts_with(&ignore) {
                problems.push(format!("{at}: ignored test; fix it or delete it"));
            }
            if line.trim_start().starts_with(&should_panic) {
                problems.push(format!(
                    "{at}: should_panic test; assert on a returned error instead"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "tidy problems:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_workspace_crate_inherits_the_workspace_lints() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for entry in std::fs::read_dir(&crates).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        if !manifest.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&manifest).unwrap();
        assert!(
            text.contains("[lints]\nworkspace = true"),
            "{} does not inherit [workspace.lints]",
            manifest.display()
        );
    }
}
