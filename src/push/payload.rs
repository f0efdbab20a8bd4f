//! What a push carries: the notification as a stream's `notification`
//! event carries it, cut to fit one encrypted record, and the headers that
//! tell the push service how to treat it.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{domain::EntryId, engine::StoredEntry};

/// Push services take at most 4096 bytes of body (RFC 8291 §4 asks them to
/// take at least that; FCM and Mozilla take no more). An `aes128gcm` body
/// is an 86-byte header (salt 16, record size 4, key id length 1, the
/// 65-byte key) and one record: the plaintext, a 1-byte delimiter and a
/// 16-byte tag. So this much plaintext fits.
pub const MAX_PLAINTEXT: usize = 4096 - 86 - 1 - 16;

/// The longest `Topic` header (RFC 8030 §5.4): 32 characters of the URL-safe
/// base64 alphabet.
const MAX_TOPIC: usize = 32;

/// The stored fields that set a push's headers.
#[derive(Deserialize, Default)]
struct Fields {
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    ttl: Option<u64>,
    #[serde(default)]
    collapse_key: Option<String>,
}

/// One notification, ready to encrypt for each device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushMessage {
    pub plaintext: Vec<u8>,
    /// `TTL`, seconds: the notification's `ttl`, else `push.ttl`.
    pub ttl_seconds: u64,
    /// `Urgency`: from the priority (`low`, `normal`, `high`).
    pub urgency: &'static str,
    /// `Topic`: a push with the same topic replaces one the service still
    /// holds for the device. The collapse key where there is one, else the
    /// entry id, so a push sent twice (a retry after a crash) is held once.
    pub topic: String,
}

/// Why a notification cannot be pushed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the notification does not fit a push even without `data`, `icon` and most of `body`")]
pub struct TooLarge;

impl PushMessage {
    /// The message for a stored entry; `default_ttl` (seconds) where the
    /// notification names none.
    pub fn new(entry: &StoredEntry, default_ttl: u64) -> Result<Self, TooLarge> {
        let fields: Fields = serde_json::from_str(&entry.body).unwrap_or_default();
        let mut rendered = Vec::with_capacity(entry.body.len() + 96);
        crate::wire::notification::render_notification(
            &mut rendered,
            entry.id,
            entry.body.as_bytes(),
            entry.read,
            entry.clicked,
        );
        Ok(Self {
            plaintext: fit(rendered)?,
            ttl_seconds: fields.ttl.unwrap_or(default_ttl),
            urgency: match fields.priority.as_deref() {
                Some("low") => "low",
                Some("high") => "high",
                _ => "normal",
            },
            topic: topic(fields.collapse_key.as_deref(), entry.id),
        })
    }
}

/// The notification within [`MAX_PLAINTEXT`]: as it is if it fits; else
/// without `data`, then with `body` cut (ending in `…`), then without
/// `icon`, then with `title` cut. Never more than the limit.
pub fn fit(rendered: Vec<u8>) -> Result<Vec<u8>, TooLarge> {
    if rendered.len() <= MAX_PLAINTEXT {
        return Ok(rendered);
    }
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(&rendered) else { return Err(TooLarge) };
    let size = |o: &serde_json::Map<String, Value>| serde_json::to_vec(o).map(|v| v.len()).unwrap_or(usize::MAX);
    object.remove("data");
    if size(&object) <= MAX_PLAINTEXT {
        return Ok(serde_json::to_vec(&object).expect("a JSON object serializes"));
    }
    for field in ["body", "icon", "title"] {
        if field == "icon" {
            object.remove("icon");
        } else if let Some(Value::String(text)) = object.get(field).cloned() {
            // The longest prefix (in characters) that fits, found by halving.
            let chars: Vec<char> = text.chars().collect();
            let (mut keep, mut over) = (0, chars.len());
            while keep + 1 < over {
                let mid = (keep + over) / 2;
                object.insert(field.into(), Value::String(cut(&chars, mid)));
                if size(&object) <= MAX_PLAINTEXT { keep = mid } else { over = mid }
            }
            object.insert(field.into(), Value::String(cut(&chars, keep)));
        }
        if size(&object) <= MAX_PLAINTEXT {
            return Ok(serde_json::to_vec(&object).expect("a JSON object serializes"));
        }
    }
    Err(TooLarge)
}

fn cut(chars: &[char], keep: usize) -> String {
    let mut s: String = chars[..keep].iter().collect();
    s.push('…');
    s
}

/// The `Topic` header for a notification.
fn topic(collapse_key: Option<&str>, id: EntryId) -> String {
    match collapse_key {
        Some(key)
            if key.len() <= MAX_TOPIC && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            key.to_owned()
        }
        // `.` and `:` are not in the alphabet, and a key may be longer: a
        // digest keeps keys apart within the length.
        Some(key) => URL_SAFE_NO_PAD.encode(Sha256::digest(key.as_bytes()))[..MAX_TOPIC].to_owned(),
        // `<ms>-<seq>`: digits and `-`, at most 32 characters in practice.
        None => {
            let id = id.to_string();
            if id.len() <= MAX_TOPIC {
                id
            } else {
                URL_SAFE_NO_PAD.encode(Sha256::digest(id.as_bytes()))[..MAX_TOPIC].to_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: serde_json::Value) -> StoredEntry {
        StoredEntry { id: EntryId::new(1_732_460_000_000, 3), body: body.to_string(), read: false, clicked: false }
    }

    #[test]
    fn a_small_notification_goes_as_the_stream_shows_it() {
        let m = PushMessage::new(
            &entry(serde_json::json!({"type": "a.b", "title": "Hi", "priority": "high", "ttl": 60})),
            86_400,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&m.plaintext).unwrap();
        assert_eq!(v["id"], "1732460000000-3");
        assert_eq!(v["title"], "Hi");
        assert_eq!(v["read"], false);
        assert_eq!((m.ttl_seconds, m.urgency, m.topic.as_str()), (60, "high", "1732460000000-3"));
        let m =
            PushMessage::new(&entry(serde_json::json!({"type": "a.b", "title": "Hi", "priority": "low"})), 99).unwrap();
        assert_eq!((m.ttl_seconds, m.urgency), (99, "low"));
    }

    #[test]
    fn collapse_keys_become_valid_topics() {
        let id = EntryId::new(1, 0);
        assert_eq!(topic(Some("order-991"), id), "order-991");
        let long = topic(Some("comment.thread:42"), id);
        assert_eq!(long.len(), 32);
        assert!(long.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{long}");
        assert_ne!(long, topic(Some("comment.thread:43"), id));
    }

    #[test]
    fn an_oversized_notification_loses_data_then_body_and_still_fits() {
        let big = "x".repeat(4000);
        let m = PushMessage::new(
            &entry(serde_json::json!({"type": "a.b", "title": "T", "body": "short", "data": {"blob": big}})),
            1,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&m.plaintext).unwrap();
        assert!(v.get("data").is_none());
        assert_eq!(v["body"], "short");

        let body = "é".repeat(5000);
        let m = PushMessage::new(&entry(serde_json::json!({"type": "a.b", "title": "T", "body": body})), 1).unwrap();
        assert!(m.plaintext.len() <= MAX_PLAINTEXT, "{}", m.plaintext.len());
        let v: Value = serde_json::from_slice(&m.plaintext).unwrap();
        let cut = v["body"].as_str().unwrap();
        assert!(cut.ends_with('…') && cut.chars().count() > 1000, "{cut}");
        // Every character kept: the cut was as long as would fit.
        assert!(m.plaintext.len() > MAX_PLAINTEXT - 4, "{}", m.plaintext.len());
    }
}
