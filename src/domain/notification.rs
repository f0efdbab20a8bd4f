//! A notification as publishers send it, validated once.
//!
//! What is stored in history is the publisher's notification as compact JSON,
//! `priority` filled in; `wire::notification` renders it for clients.
//! `functions.lua` applies the same rules to notifications published with
//! `FCALL`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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
    /// Notifications that share it replace one another where they are shown:
    /// a Web Push `Topic` (an undelivered push is replaced by the next) and
    /// the service worker's notification `tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    /// How long a push service keeps this notification's push for a device
    /// that is off, in seconds (`push.ttl` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

/// A validated notification, ready to store: its compact JSON (`priority`
/// filled in, no raw line breaks), and its `type` and `priority`, which
/// preferences and Web Push decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNotification {
    pub json: String,
    pub kind: String,
    pub priority: Priority,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }
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
pub const MAX_COLLAPSE_KEY_LEN: usize = 64;
/// RFC 8030 §5.2: push services keep a push at most this long (28 days).
pub const MAX_TTL_SECONDS: u64 = 28 * 86_400;
/// Why `data` was refused; `functions.lua` says the same.
const DATA_NUMBERS: &str = "numbers must fit a 64-bit float (at most about 1.8e308), as JSON parsers read them";

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
        if let Some(key) = &self.collapse_key
            && !is_valid_collapse_key(key)
        {
            return Err(invalid(
                "notification.collapse_key",
                format!("must be 1-{MAX_COLLAPSE_KEY_LEN} characters of A-Z a-z 0-9 . _ - :"),
            ));
        }
        if self.ttl.is_some_and(|ttl| ttl > MAX_TTL_SECONDS) {
            return Err(invalid("notification.ttl", format!("must be 0 to {MAX_TTL_SECONDS} seconds (28 days)")));
        }
        // `data` parsed as raw JSON checks only its grammar, which allows a
        // number no double holds (`1e400`). Many JSON parsers refuse one
        // (serde_json, Go's), and the push path's own parse did, so such a
        // notification could not be fitted into a push. One parse of
        // `data` per publish, not per recipient.
        if let Some(data) = &self.data
            && serde_json::from_str::<serde_json::Value>(data.get()).is_err()
        {
            return Err(invalid("notification.data", DATA_NUMBERS));
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
        Ok(StoredNotification { json, kind: self.kind.clone(), priority: self.priority })
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

/// A collapse key is sent as a header and an id in the browser: a short
/// run of visible ASCII that needs no escaping anywhere. `functions.lua`
/// has the same rule.
fn is_valid_collapse_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_COLLAPSE_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
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
    fn data_numbers_beyond_a_double_are_refused() {
        // Found by the fuzzer (fuzz/regressions/publish/data-number-out-of-range).
        for bad in ["1e400", "-1e400", "[1, {\"k\": 9e999}]", &"9".repeat(400)] {
            let n = parse(&format!(r#"{{"type":"a","title":"t","data":{bad}}}"#)).unwrap();
            assert!(
                matches!(n.validate(&LIMITS), Err(ValidationError::Invalid { field: "notification.data", .. })),
                "{bad}"
            );
        }
        for ok in ["1e308", "1e-400", "18446744073709551616", "-0.0"] {
            let n = parse(&format!(r#"{{"type":"a","title":"t","data":{ok}}}"#)).unwrap();
            assert!(n.validate(&LIMITS).is_ok(), "{ok}");
        }
    }

    #[test]
    fn line_breaks_in_data_become_spaces() {
        let n = parse("{\"type\":\"a\",\"title\":\"t\",\"data\":{\n  \"k\": \"v\\nw\"\r\n}}").unwrap();
        let stored = n.validate(&LIMITS).unwrap().json;
        assert!(!stored.contains(['\n', '\r']), "{stored}");
        let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(v["data"]["k"], "v\nw", "escaped newlines in strings are kept");
    }
}
