//! The crate's layers, checked over its source: a module imports only from
//! layers below its own (the map in `src/lib.rs` and docs/ARCHITECTURE.md),
//! the engines never see the wire format, and no module outside `wire`
//! writes SSE syntax.

use std::{collections::BTreeSet, path::Path};

/// Lowest first. Modules of one layer do not import each other.
const LAYERS: &[&[&str]] = &[
    &["clock", "domain"],
    &["config"],
    &["telemetry", "metrics", "rate_limit"],
    &["wire"],
    &["hub"],
    &["engine"],
    &["push"],
    &["node"],
    &["sse"],
    &["error"],
    &["auth"],
    &["routes"],
    &["app"],
    &["cli"],
    &["main"],
];

/// Allowed by the layers, refused anyway: storage hands the hub typed
/// events, so that a new event type never touches an engine.
const FORBIDDEN: &[(&str, &str)] = &[("engine", "wire")];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("src/{module}: not in the layer list of tests/it/layers.rs (and src/lib.rs)"))
}

/// Every `.rs` file under `dir`, with the top-level module it belongs to.
fn sources(dir: &Path, top: Option<&str>, out: &mut Vec<(String, String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            sources(&path, Some(top.unwrap_or(&name)), out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let module = top.unwrap_or(&name).to_owned();
            if module != "lib" {
                out.push((module, path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
}

/// The top-level modules a source names through `crate::`, comments left
/// out (a line's own, and a trailing one after ` //`).
fn imports(source: &str) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{}\n", l.split(" //").next().unwrap_or_default()))
        .collect();
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}, e}`: the names at the group's own depth.
            let (mut depth, mut start) = (0, true);
            for (i, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && depth == 0 && (c.is_ascii_alphabetic() || c == '_') => {
                        found.insert(ident(&group[i..]).to_owned());
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest).to_owned());
        }
    }
    found
}

fn ident(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

fn crate_sources() -> Vec<(String, String, String)> {
    let mut files = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), None, &mut files);
    assert!(files.len() > 20, "found the crate's source files");
    files
}

#[test]
fn modules_import_only_from_layers_below() {
    let mut wrong = Vec::new();
    for (module, path, source) in crate_sources() {
        let own = layer_of(&module);
        for dep in imports(&source) {
            if dep == module {
                continue;
            }
            if layer_of(&dep) >= own {
                wrong.push(format!("{path}: `{module}` (layer {own}) imports `{dep}` (layer {})", layer_of(&dep)));
            }
            if FORBIDDEN.contains(&(module.as_str(), dep.as_str())) {
                wrong.push(format!("{path}: `{module}` must not import `{dep}`"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));
}

#[test]
fn only_wire_writes_sse_syntax() {
    let fields = ["\"event: ", "\"data: ", "\"id: ", "\"retry: ", "\\nevent: ", "\\ndata: "];
    let mut wrong = Vec::new();
    for (module, path, source) in crate_sources() {
        if module == "wire" {
            continue;
        }
        // Tests read SSE; only the code before them is the module's own.
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        for field in fields.iter().filter(|f| code.contains(**f)) {
            wrong.push(format!("{path}: writes {field}"));
        }
    }
    assert!(wrong.is_empty(), "SSE syntax outside src/wire/:\n{}", wrong.join("\n"));
}

#[test]
fn the_import_reader_sees_grouped_and_nested_paths() {
    let source = "use crate::{\n    clock::now, // crate::app in a comment\n    hub::{Hub, Next},\n    wire,\n};\n// use crate::routes;\nfn f() { crate::metrics::get(); }\n";
    assert_eq!(imports(source), ["clock", "hub", "metrics", "wire"].map(String::from).into());
}
