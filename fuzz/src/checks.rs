//! What each fuzz target checks, in one place: the AFL++ binaries
//! (`fuzz/src/bin/`) call these, and the main crate's
//! `tests/it/fuzz_regressions.rs` includes this file to replay every saved
//! input through the same checks. A broken rule is a panic, which AFL++
//! records as a crash.
//!
//! Each check takes raw bytes, as an attacker (or another Redis client)
//! could send them, and never returns an error: an input the code rightly
//! refuses is simply not interesting further.

use herald::{
    domain::{Cursor, EntryId, MAX_CURSOR_LEN, NewNotification, NotificationLimits},
    routes::{Audience, PublishRequest},
    wire::frame::write_notification,
};
use serde_json::{Map, Value};

/// Small limits, so that short inputs reach every edge (the rules are the
/// same at any size; `max_payload_bytes` is the least config accepts).
const LIMITS: NotificationLimits =
    NotificationLimits { max_payload_bytes: 256, max_title_chars: 20, max_body_chars: 40 };
const MAX_RECIPIENTS: usize = 4;

/// `Last-Event-ID` / `?last_event_id=`: any text is a cursor or a clean
/// error; a cursor that parses writes back, within the length the parser
/// accepts, as text that parses to the same cursor.
pub fn cursor(data: &[u8]) {
    // Headers and query strings reach the parser as `&str` only.
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let Ok(cursor) = Cursor::parse(raw) else { return };
    let written = cursor.to_string();
    assert!(written.len() <= MAX_CURSOR_LEN, "a parsed cursor writes back too long: {written}");
    let again =
        Cursor::parse(&written).unwrap_or_else(|e| panic!("{raw:?} parsed, its written form {written:?} not: {e}"));
    assert_eq!(again, cursor, "{raw:?} → {written:?} parses back differently");
}

/// `POST /v1/publish`: the body as the route reads it (`web::Json` is
/// `serde_json::from_slice`), then the route's own checks. What passes is
/// stored as one line of JSON within the size limit, is itself a valid
/// notification that stores to the same bytes, and encodes to exactly one
/// SSE event whose data is that JSON with the history fields in front.
pub fn publish(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<PublishRequest>(data) else { return };
    let Ok(checked) = request.check(&LIMITS, MAX_RECIPIENTS) else { return };
    match &checked.audience {
        Audience::Users(users) => {
            assert!((1..=MAX_RECIPIENTS).contains(&users.len()), "{} recipients", users.len());
            for (i, user) in users.iter().enumerate() {
                assert!(!users[..i].contains(user), "{user} is listed twice");
            }
        }
        Audience::Topic(_) => {}
    }
    let stored = &checked.stored;
    assert!(!stored.json.contains(['\n', '\r']), "stored JSON holds a line break: {:?}", stored.json);
    assert!(stored.json.len() <= LIMITS.max_payload_bytes, "stored {} bytes", stored.json.len());
    let again: NewNotification =
        serde_json::from_str(&stored.json).unwrap_or_else(|e| panic!("stored JSON is not a notification: {e}"));
    assert_eq!(again.validate(&LIMITS).as_ref(), Ok(stored), "stored JSON does not store to itself");

    let id = EntryId::new(1_732_473_600_000, 7);
    let mut out = Vec::new();
    write_notification(&mut out, id, stored.json.as_bytes(), false, false);
    let data = one_notification_event(&out, id);
    let rendered: Map<String, Value> =
        serde_json::from_str(&data).unwrap_or_else(|e| panic!("data line is not JSON ({e}): {data}"));
    let members: Map<String, Value> = serde_json::from_str(&stored.json).expect("checked above");
    for (key, value) in &members {
        assert_eq!(rendered.get(key), Some(value), "`{key}` changed on the wire: {data}");
    }
    assert_eq!(rendered["id"], Value::from(id.to_string()));
}

/// A stored notification, whatever bytes another Redis client wrote into
/// the stream entry: it encodes to exactly one `notification` event, with
/// its entry id and one `data:` line, and no other field. The first 17
/// input bytes choose the id and the read and clicked flags; the rest is
/// the stored entry.
pub fn sse(data: &[u8]) {
    let mut head = [0u8; 17];
    let split = data.len().min(head.len());
    head[..split].copy_from_slice(&data[..split]);
    let stored = &data[split..];
    let ms = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let seq = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
    let id = EntryId::new(ms, seq);
    let mut out = Vec::new();

    write_notification(&mut out, id, stored, head[16] & 1 == 1, head[16] & 2 == 2);

    one_notification_event(&out, id);
}

/// Asserts that `stream` is exactly one `notification` event with `id` and
/// a single `data:` line, and returns that line.
fn one_notification_event(stream: &[u8], id: EntryId) -> String {
    let events = parse_event_stream(stream);
    let shown = String::from_utf8_lossy(stream);
    assert_eq!(events.len(), 1, "not one event: {shown:?}");
    let event = events.into_iter().next().expect("one");
    assert_eq!(event.event.as_deref(), Some("notification"), "{shown:?}");
    assert_eq!(event.id, Some(id.to_string()), "{shown:?}");
    assert!(event.other.is_empty(), "fields an EventSource would not expect: {:?} in {shown:?}", event.other);
    assert_eq!(event.retry, None, "{shown:?}");
    let [data] = <[String; 1]>::try_from(event.data).unwrap_or_else(|d| panic!("{} data lines: {shown:?}", d.len()));
    data
}

/// One dispatched event, with every field the stream set.
#[derive(Debug, Default, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Vec<String>,
    pub retry: Option<String>,
    /// Lines naming any other field: an EventSource ignores them, but
    /// Herald never writes one, so one here was injected.
    pub other: Vec<String>,
}

/// The WHATWG HTML event-stream parser ("Parsing an event stream"), strict
/// where it may be: the bytes are UTF-8 decoded with replacement, one
/// leading BOM is dropped, a line ends at CRLF, a lone CR or a lone LF, a
/// blank line dispatches, a line starting with `:` is a comment, and
/// `field: value` loses one space after the colon. Unlike a browser it
/// also asserts that the stream ends on a dispatched event (a trailing
/// partial event would be silently dropped, hiding a cut frame).
pub fn parse_event_stream(bytes: &[u8]) -> Vec<Event> {
    let text = String::from_utf8_lossy(bytes);
    let mut rest = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut events = Vec::new();
    let mut current = Event::default();
    let mut pending = false;
    while !rest.is_empty() {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        let line = &rest[..end];
        let after = &rest[end..];
        rest = after.strip_prefix("\r\n").or_else(|| after.strip_prefix(['\r', '\n'])).unwrap_or(after);
        if line.is_empty() {
            // An event with no data is not dispatched by a browser; Herald
            // never writes one, so it counts here (and fails the checks).
            if pending {
                events.push(std::mem::take(&mut current));
                pending = false;
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        pending = true;
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "id" => current.id = Some(value),
            "event" => current.event = Some(value),
            "data" => current.data.push(value),
            "retry" => current.retry = Some(value),
            _ => current.other.push(line.to_owned()),
        }
    }
    assert!(!pending, "the stream ends inside an event: {text:?}");
    events
}
