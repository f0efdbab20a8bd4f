//! Matching what the server sent against what the docs show.
//!
//! Literal text must be equal. `{{*}}` matches anything. `{{name}}` matches
//! the variable's value if it is known, and otherwise matches anything
//! non-empty and remembers it (so an id first seen in a response can be used
//! in later requests and expected in later events). JSON is compared by
//! structure: same keys, same array lengths, equal literals.

use std::collections::HashMap;

use serde_json::Value;

pub type Vars = HashMap<String, String>;

enum Seg {
    Lit(String),
    Any,
    Capture(String),
}

/// Cuts a pattern into literal text and `{{holes}}`; known variables
/// become literal text.
fn segments(pattern: &str, vars: &Vars) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find("{{") {
        let Some(len) = rest[open + 2..].find("}}") else { break };
        if open > 0 {
            out.push(Seg::Lit(rest[..open].to_owned()));
        }
        let name = rest[open + 2..open + 2 + len].trim();
        out.push(match (name, vars.get(name)) {
            ("*", _) => Seg::Any,
            (_, Some(value)) => Seg::Lit(value.clone()),
            (_, None) => Seg::Capture(name.to_owned()),
        });
        rest = &rest[open + 2 + len + 2..];
    }
    if !rest.is_empty() {
        out.push(Seg::Lit(rest.to_owned()));
    }
    out
}

/// Whether `actual` fits the segments; holes take as little as lets the rest
/// fit. Captures are pushed onto `caught`.
fn fits(segs: &[Seg], actual: &str, caught: &mut Vec<(String, String)>) -> bool {
    match segs.split_first() {
        None => actual.is_empty(),
        Some((Seg::Lit(text), rest)) => actual.strip_prefix(text.as_str()).is_some_and(|a| fits(rest, a, caught)),
        Some((hole, rest)) => {
            let min = if matches!(hole, Seg::Capture(_)) { 1 } else { 0 };
            for end in (min..=actual.len()).filter(|i| actual.is_char_boundary(*i)) {
                let mark = caught.len();
                if let Seg::Capture(name) = hole {
                    caught.push((name.clone(), actual[..end].to_owned()));
                }
                if fits(rest, &actual[end..], caught) {
                    return true;
                }
                caught.truncate(mark);
            }
            false
        }
    }
}

pub fn match_str(pattern: &str, actual: &str, vars: &mut Vars) -> Result<(), String> {
    let mut caught = Vec::new();
    if !fits(&segments(pattern, vars), actual, &mut caught) {
        return Err(format!("expected `{pattern}`, got `{actual}`"));
    }
    vars.extend(caught);
    Ok(())
}

pub fn match_json(expected: &Value, actual: &Value, path: &str, vars: &mut Vars) -> Result<(), String> {
    let at = |why: String| format!("at {path}: {why}");
    match (expected, actual) {
        (Value::String(pattern), Value::String(actual)) => match_str(pattern, actual, vars).map_err(at),
        // `"{{*}}"` or `"{{n}}"` for a number, a bool, an object...
        (Value::String(pattern), other) if pattern.contains("{{") => {
            match_str(pattern, &other.to_string(), vars).map_err(at)
        }
        (Value::Object(want), Value::Object(got)) => {
            let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
            let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
            if !missing.is_empty() || !extra.is_empty() {
                return Err(at(format!("keys differ: missing {missing:?}, not documented {extra:?}")));
            }
            want.iter().try_for_each(|(k, v)| match_json(v, &got[k], &format!("{path}.{k}"), vars))
        }
        (Value::Array(want), Value::Array(got)) => {
            if want.len() != got.len() {
                return Err(at(format!("expected {} items, got {}: {actual}", want.len(), got.len())));
            }
            want.iter().zip(got).enumerate().try_for_each(|(i, (w, g))| match_json(w, g, &format!("{path}[{i}]"), vars))
        }
        _ if expected == actual => Ok(()),
        _ => Err(at(format!("expected {expected}, got {actual}"))),
    }
}

/// A body: JSON if the docs show JSON, else text.
pub fn match_body(expected: &str, actual: &str, vars: &mut Vars) -> Result<(), String> {
    let json = (expected.starts_with('{') || expected.starts_with('[')) && !expected.starts_with("{{");
    if !json {
        return match_str(expected, actual.trim(), vars);
    }
    let want: Value = serde_json::from_str(expected).map_err(|e| format!("the documented JSON is invalid: {e}"))?;
    let got: Value = serde_json::from_str(actual).map_err(|e| format!("the server sent no JSON ({e}): {actual}"))?;
    match_json(&want, &got, "$", vars).map_err(|e| format!("{e}\n  whole body: {actual}"))
}

/// One SSE message (`field: value` lines, comments start with `:`). `data`
/// holding JSON is compared as JSON.
pub fn match_message(expected: &str, actual: &str, vars: &mut Vars) -> Result<(), String> {
    let mismatch = |why: String| format!("{why}\n  expected message:\n{expected}\n  received message:\n{actual}");
    let (want, got): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    if want.len() != got.len() {
        return Err(mismatch(format!("expected {} lines, got {}", want.len(), got.len())));
    }
    for (w, g) in want.iter().zip(&got) {
        let ((wf, wv), (gf, gv)) = (field(w), field(g));
        if wf != gf {
            return Err(mismatch(format!("expected field `{wf}`, got `{gf}`")));
        }
        if wf == "data" && wv.starts_with('{') {
            match_body(wv, gv, vars).map_err(mismatch)?;
        } else {
            match_str(wv, gv, vars).map_err(mismatch)?;
        }
    }
    Ok(())
}

/// `field: value` (one optional space after the colon); a comment is the
/// field `:` with its text.
fn field(line: &str) -> (&str, &str) {
    match line.strip_prefix(':') {
        Some(comment) => (":", comment.trim_start()),
        None => {
            let (f, v) = line.split_once(':').unwrap_or((line, ""));
            (f, v.strip_prefix(' ').unwrap_or(v))
        }
    }
}

pub fn is_comment_only(message: &str) -> bool {
    message.lines().all(|l| l.starts_with(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_capture_and_known_variables_must_match() {
        let mut vars = Vars::new();
        assert!(match_str("id {{a}} at {{*}}", "id 1-0 at noon", &mut vars).is_ok());
        assert_eq!(vars["a"], "1-0");
        assert!(match_str("{{a}}", "1-1", &mut vars).is_err());
        let want = serde_json::json!({"id": "{{a}}", "n": "{{*}}"});
        assert!(match_json(&want, &serde_json::json!({"id": "1-0", "n": 3}), "$", &mut vars).is_ok());
        assert!(match_json(&want, &serde_json::json!({"id": "1-0", "n": 3, "x": 1}), "$", &mut vars).is_err());
    }
}
