//! Every input the fuzzer ever crashed on, replayed through the same checks
//! the fuzz targets run (`fuzz/src/checks.rs`, included here as is), so a
//! crash found once is a failing test until fixed and a passing one after.
//! The seed corpus is replayed too: the seeds must pass the checks.
//!
//! A new crash from `scripts/fuzz.sh` goes in `fuzz/regressions/<target>/`
//! under a name that says what it found.

use std::path::Path;

#[path = "../../fuzz/src/checks.rs"]
mod checks;

/// Runs `check` on every file in `fuzz/{corpus,regressions}/<target>/`,
/// and names every file that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let (mut replayed, mut failed) = (0, Vec::new());
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                continue;
            }
            let input = std::fs::read(&path).unwrap();
            if std::panic::catch_unwind(|| check(&input)).is_err() {
                failed.push(path.display().to_string());
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no input found for {target}: the seed corpus is missing");
    assert!(failed.is_empty(), "fail their fuzz check (each panic is above): {failed:#?}");
}

#[test]
fn cursor_inputs_pass() {
    replay("cursor", checks::cursor);
}

#[test]
fn publish_inputs_pass() {
    replay("publish", checks::publish);
}

#[test]
fn sse_inputs_pass() {
    replay("sse", checks::sse);
}
