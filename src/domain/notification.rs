//! A notification as publishers send it, validated once, and its rendering
//! for clients.
//!
//! What is stored in history is the publisher's notification as compact JSON,
//! `priority` filled in. The fields only history knows (`id`, `created_at`,
//! `read`, `clicked`) are added when it is rendered, by splicing them in front
//! of the stored object: no parse and re-encode per event. `functions.lua`
//! applies the same rules to notifications published with `FCALL`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::EntryId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

/// A notification in a publish request. Unknown fields are refused: a typo
/// (`titel`) should fail loudly, not vanish.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNotification {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

/// A validated notification, ready to store: its compact JSON (`priority`
/// filled in, no raw line breaks) and its `type`, which preferences need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNotification {
    pub json: String,
    pub kind: String,
}

/// The size limits from config (`[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct NotificationLimits {
    pub max_payload_bytes: usize,
    pub max_title_chars: usize,
    pub max_body_chars: usize,
}

pub const MAX_TYPE_LEN: usize = 64;
pub const MAX_URL_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A field breaks a rule (HTTP 422).
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    /// The whole notification is over `limits.max_payload_bytes` (HTTP 413).
    #[error("notification is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ValidationError {
    ValidationError::Invalid { field, message: message.into() }
}

impl NewNotification {
    /// Checks every rule and returns what to store.
    pub fn validate(&self, limits: &NotificationLimits) -> Result<StoredNotification, ValidationError> {
        if !is_valid_type(&self.kind) {
            return Err(invalid(
                "notification.type",
                format!(
                    "must be 1-{MAX_TYPE_LEN} characters of a-z 0-9 _ - in dot-separated parts, like `comment.mention`"
                ),
            ));
        }
        let title_chars = self.title.chars().count();
        if title_chars == 0 || title_chars > limits.max_title_chars {
            return Err(invalid("notification.title", format!("must be 1-{} characters", limits.max_title_chars)));
        }
        if let Some(body) = &self.body
            && body.chars().count() > limits.max_body_chars
        {
            return Err(invalid("notification.body", format!("must be at most {} characters", limits.max_body_chars)));
        }
        for (field, value) in [("notification.url", &self.url), ("notification.icon", &self.icon)] {
            if value.as_deref().is_some_and(|v| !is_safe_link(v)) {
                return Err(invalid(
                    field,
                    format!(
                        "must be an http or https URL or a relative reference, at most {MAX_URL_LEN} bytes, \
                         without spaces or control characters"
                    ),
                ));
            }
        }
        let mut json = serde_json::to_string(self).expect("a notification always serializes");
        // `data` is kept as sent, so it may hold line breaks between tokens
        // (never inside strings, where JSON escapes them). An SSE data line
        // must not: they become spaces, as in functions.lua.
        if json.contains(['\n', '\r']) {
            json = json.replace(['\n', '\r'], " ");
        }
        if json.len() > limits.max_payload_bytes {
            return Err(ValidationError::TooLarge { size: json.len(), limit: limits.max_payload_bytes });
        }
        Ok(StoredNotification { json, kind: self.kind.clone() })
    }
}

/// `type` is `category(.part)*`, lowercase; its category drives preferences.
fn is_valid_type(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= MAX_TYPE_LEN
        && kind.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
}

/// Schemes `url` and `icon` may name. Integrators render them as links and
/// images: `javascript:`, `data:` or `vbscript:` there would run script.
const LINK_SCHEMES: [&str; 2] = ["http", "https"];

/// A link an integrator can render safely: at most [`MAX_URL_LEN`] bytes, no
/// ASCII space or control byte (URL parsers drop tabs and newlines, so
/// `java\tscript:` would slip past a scheme check), and a scheme, if it has
/// one (text before a `:` that comes before any `/`, `?` or `#`), from
/// [`LINK_SCHEMES`]. Relative references (`/docs/42`, `?tab=2`, `#c7`) have
/// none. `functions.lua` applies the same rule (`bad_link`).
fn is_safe_link(link: &str) -> bool {
    if link.len() > MAX_URL_LEN || link.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return false;
    }
    match link.find([':', '/', '?', '#']) {
        Some(i) if link.as_bytes()[i] == b':' => LINK_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(&link[..i])),
        _ => true,
    }
}

/// Renders a stored notification as clients see it, appending to `out`.
///
/// `stored` is a JSON object as written by `validate` or `functions.lua`
/// (starts with `{`, holds at least `type`), so the history fields can be
/// spliced in front of its first member.
pub fn render_notification(out: &mut Vec<u8>, id: EntryId, stored: &[u8], read: bool, clicked: bool) {
    out.extend_from_slice(b"{\"id\":\"");
    id.write_to(out);
    out.extend_from_slice(b"\",\"created_at\":\"");
    write_created_at(out, id.ms);
    out.extend_from_slice(b"\",\"read\":");
    out.extend_from_slice(if read { b"true" } else { b"false" });
    out.extend_from_slice(b",\"clicked\":");
    out.extend_from_slice(if clicked { b"true" } else { b"false" });
    match stored.iter().position(|&b| b == b'{') {
        Some(open) if stored[open + 1..].iter().any(|b| !b.is_ascii_whitespace() && *b != b'}') => {
            out.push(b',');
            write_json_line(out, &stored[open + 1..]);
        }
        _ => out.push(b'}'),
    }
}

/// Appends JSON that came from Redis (a stored entry, a pub/sub payload) so
/// that it stays one SSE `data:` line, whatever wrote it. The publish paths
/// never store a raw line break, but another Redis client may (XADD,
/// PUBLISH), and a raw line break would end the line and let the rest add
/// fields (`event: bye`, `id:`). So raw `\r` and `\n` become spaces (as
/// the publish paths do; JSON whitespace between tokens), other raw control
/// bytes inside a string are escaped as `\u00XX` (browsers' `JSON.parse`
/// refuses them raw), and outside strings a tab is kept (whitespace) and
/// the rest become spaces. Each repair counts in `repaired_entries`.
///
/// Per event (live and replayed): one scan of the bytes for a byte below
/// 0x20 or 0x7F, then the plain copy it would have made anyway. Only a
/// payload with such a byte (a tab between tokens, or a bad writer's) takes
/// the byte-by-byte path.
pub fn write_json_line(out: &mut Vec<u8>, json: &[u8]) {
    if !json.iter().any(|&b| is_control(b)) {
        out.extend_from_slice(json);
        return;
    }
    if repair_json_line(out, json) {
        crate::metrics::get().repaired_entries.increment(1);
    }
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// The slow path of [`write_json_line`]: tracks whether each byte is inside
/// a string, since that decides what a control byte may become. Returns
/// whether anything was changed.
fn repair_json_line(out: &mut Vec<u8>, json: &[u8]) -> bool {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (mut in_string, mut escaped, mut repaired) = (false, false, false);
    out.reserve(json.len());
    for &b in json {
        if !is_control(b) {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
            } else if b == b'"' {
                in_string = true;
            }
            out.push(b);
            continue;
        }
        match b {
            b'\t' if !in_string => {
                out.push(b);
                continue;
            }
            b'\r' | b'\n' if !escaped => out.push(b' '),
            _ if in_string => {
                // After a backslash the escape is already open: `\` then
                // `u00XX` is the escaped byte, not an escaped backslash.
                if !escaped {
                    out.push(b'\\');
                }
                out.extend_from_slice(&[b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
            }
            _ => out.push(b' '),
        }
        escaped = false;
        repaired = true;
    }
    repaired
}

/// `created_at` is the entry id's millisecond timestamp, as RFC 3339 UTC.
fn write_created_at(out: &mut Vec<u8>, ms: u64) {
    let at =
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let d = at.date();
    let t = at.time();
    use std::io::Write;
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    );
}

/// RFC 3339 for events that carry a time (`heartbeat`, `token_expiring`).
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: NotificationLimits =
        NotificationLimits { max_payload_bytes: 8192, max_title_chars: 20, max_body_chars: 50 };

    fn parse(json: &str) -> Result<NewNotification, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn valid_notifications_are_stored_compact_with_priority() {
        let n = parse(r#"{"type":"comment.mention","title":"Hi","data": {"doc": 42}}"#).unwrap();
        let stored = n.validate(&LIMITS).unwrap();
        assert_eq!(stored.json, r#"{"type":"comment.mention","title":"Hi","priority":"normal","data":{"doc": 42}}"#);
        assert_eq!(stored.kind, "comment.mention");
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(parse(r#"{"type":"a","title":"t","titel":"x"}"#).is_err());
        assert!(parse(r#"{"type":"a","title":"t","priority":"urgent"}"#).is_err());
        let check = |json: &str| parse(json).unwrap().validate(&LIMITS).unwrap_err();
        assert!(matches!(
            check(r#"{"type":"Bad Type","title":"t"}"#),
            ValidationError::Invalid { field: "notification.type", .. }
        ));
        assert!(matches!(
            check(r#"{"type":"a..b","title":"t"}"#),
            ValidationError::Invalid { field: "notification.type", .. }
        ));
        assert!(matches!(
            check(r#"{"type":"a","title":""}"#),
            ValidationError::Invalid { field: "notification.title", .. }
        ));
        assert!(matches!(
            check(&format!(r#"{{"type":"a","title":"{}"}}"#, "é".repeat(21))),
            ValidationError::Invalid { field: "notification.title", .. }
        ));
        let big = format!(r#"{{"type":"a","title":"t","data":"{}"}}"#, "x".repeat(9000));
        assert!(matches!(check(&big), ValidationError::TooLarge { .. }));
    }

    #[test]
    fn links_are_http_https_or_relative() {
        for ok in [
            "https://x.test/a?b#c",
            "HTTP://x.test",
            "/docs/42#c7",
            "docs/42",
            "?tab=2",
            "#c7",
            "//cdn.test/i.png",
            "/a:b",
        ] {
            assert!(is_safe_link(ok), "{ok}");
        }
        for bad in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            " javascript:alert(1)",
            "java\tscript:alert(1)",
            "data:text/html,<script>",
            "vbscript:x",
            "mailto:a@b.test",
            "https://x.test/a b",
            "\u{1}https://x.test",
        ] {
            assert!(!is_safe_link(bad), "{bad:?}");
        }
        assert!(!is_safe_link(&format!("/{}", "a".repeat(MAX_URL_LEN))));
    }

    #[test]
    fn line_breaks_in_data_become_spaces() {
        let n = parse("{\"type\":\"a\",\"title\":\"t\",\"data\":{\n  \"k\": \"v\\nw\"\r\n}}").unwrap();
        let stored = n.validate(&LIMITS).unwrap().json;
        assert!(!stored.contains(['\n', '\r']), "{stored}");
        let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(v["data"]["k"], "v\nw", "escaped newlines in strings are kept");
    }

    fn repaired_so_far() -> u64 {
        let text = crate::metrics::handle().render();
        text.lines()
            .find_map(|l| l.strip_prefix("herald_repaired_entries_total "))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    fn render(stored: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        render_notification(&mut out, EntryId::new(1732473600000, 3), stored, false, false);
        out
    }

    #[test]
    fn stored_line_breaks_can_never_break_the_stream() {
        crate::metrics::get();
        let before = repaired_so_far();
        let evil = b"{\"type\":\"a\",\"title\":\"x\n\nevent: bye\ndata: x\r\n\r\nid: 9-9\"}";
        let out = render(evil);
        assert!(!out.contains(&b'\n') && !out.contains(&b'\r'), "{}", String::from_utf8_lossy(&out));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["title"], "x  event: bye data: x    id: 9-9");
        assert_eq!(repaired_so_far(), before + 1, "each repair is counted");
    }

    #[test]
    fn stored_control_bytes_are_escaped_inside_strings() {
        let out = render(b"{\"type\":\"a\",\"title\":\"t\x01\tu\x7f\",\"body\":\"\\\x02\"}");
        assert!(out.iter().all(|&b| b >= 0x20 && b != 0x7f), "{}", String::from_utf8_lossy(&out));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["title"], "t\u{1}\tu\u{7f}");
        assert_eq!(v["body"], "\u{2}", "a raw byte after a backslash completes the escape");
    }

    #[test]
    fn tabs_between_tokens_are_valid_json_and_kept() {
        crate::metrics::get();
        let before = repaired_so_far();
        let stored = b"{\"type\":\"a\",\t\"title\":\"t\",\"data\":{\t\"k\": 1}}";
        let out = render(stored);
        assert!(out.ends_with(&stored[1..]), "kept as stored: {}", String::from_utf8_lossy(&out));
        assert_eq!(repaired_so_far(), before, "nothing was repaired");
    }

    #[test]
    fn rendering_splices_history_fields() {
        let mut out = Vec::new();
        render_notification(&mut out, EntryId::new(1732473600000, 3), br#"{"type":"a","title":"t"}"#, true, false);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], "1732473600000-3");
        assert_eq!(v["created_at"], "2024-11-24T18:40:00.000Z");
        assert_eq!(v["read"], true);
        assert_eq!(v["clicked"], false);
        assert_eq!(v["type"], "a");
    }
}
