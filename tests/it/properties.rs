//! Property tests (proptest) for the entry points that take outside input
//! or produce the wire format: the cursor parser and the SSE encoder.
//!
//! - Any string is a valid cursor or a clean error, never a panic, and a
//!   cursor Herald writes parses back to itself.
//! - Any stored notification, whatever bytes another Redis client wrote
//!   into it, encodes to exactly one `notification` event with one `data:`
//!   line under a strict reading of the SSE format (WHATWG HTML, "Parsing an
//!   event stream"); one Herald validated decodes back to the same JSON.

use herald::{
    domain::{Cursor, EntryId, TopicName, TopicTag},
    wire::frame::write_notification,
};
use proptest::{collection::vec, prelude::*};
use serde_json::{Map, Value};

/// One event as an EventSource sees it.
#[derive(Debug, Default, PartialEq)]
struct Event {
    id: Option<String>,
    event: Option<String>,
    data: Vec<String>,
    /// Fields an EventSource would ignore, but which must never appear.
    other: Vec<String>,
}

/// The WHATWG event-stream parser: lines end at CRLF, CR or LF; a blank
/// line dispatches; `field: value` with one optional space after the colon.
fn parse_stream(bytes: &[u8]) -> Vec<Event> {
    let text = String::from_utf8(bytes.to_vec()).expect("the stream is UTF-8");
    let mut events = Vec::new();
    let mut current = Event::default();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        let line = &rest[..end];
        rest = &rest[end..];
        rest = rest
            .strip_prefix("\r\n")
            .or_else(|| rest.strip_prefix('\r'))
            .or_else(|| rest.strip_prefix('\n'))
            .unwrap_or(rest);
        if line.is_empty() {
            events.push(std::mem::take(&mut current));
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => current.id = Some(value.to_owned()),
            "event" => current.event = Some(value.to_owned()),
            "data" => current.data.push(value.to_owned()),
            _ => current.other.push(line.to_owned()),
        }
    }
    assert_eq!(current, Event::default(), "the stream ends with a dispatched event");
    events
}

fn entry_id() -> impl Strategy<Value = EntryId> {
    (1u64..4_000_000_000_000, 0u64..1_000).prop_map(|(ms, seq)| EntryId::new(ms, seq))
}

/// Text with the characters that break line-based formats mixed in.
fn hostile_text() -> impl Strategy<Value = String> {
    vec(prop_oneof![any::<char>(), Just('\n'), Just('\r'), Just('\0'), Just('"'), Just('\\'), Just('\u{2028}')], 0..40)
        .prop_map(|chars| chars.into_iter().collect())
}

/// The longest cursor there is: every varint at its widest.
#[test]
fn the_widest_cursor_herald_can_write_parses() {
    let widest = EntryId::new(u64::MAX, u64::MAX);
    let topics = (0..herald::domain::MAX_CURSOR_TOPICS)
        .map(|i| (TopicTag::of(&TopicName::parse(&format!("t{i}")).unwrap()), EntryId::new(0, u64::MAX)))
        .collect();
    let cursor = Cursor { inbox: widest, topics };
    let text = cursor.to_string();
    assert!(text.len() <= herald::domain::MAX_CURSOR_LEN, "{} > {}", text.len(), herald::domain::MAX_CURSOR_LEN);
    assert_eq!(Cursor::parse(&text).unwrap(), cursor);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_string_is_a_cursor_or_a_clean_error(raw in "\\PC{0,300}|[A-Za-z0-9_~.-]{0,300}") {
        if let Ok(cursor) = Cursor::parse(&raw) {
            let again = Cursor::parse(&cursor.to_string()).expect("a parsed cursor writes back parseably");
            prop_assert_eq!(again, cursor);
        }
    }

    #[test]
    fn a_written_cursor_parses_back_to_itself(inbox in entry_id(), topics in vec(("[a-z]{1,12}", entry_id()), 0..64)) {
        let topics: Vec<(TopicTag, EntryId)> = topics
            .iter()
            .map(|(name, id)| (TopicTag::of(&TopicName::parse(name).unwrap()), *id))
            .collect();
        let cursor = Cursor { inbox, topics };
        prop_assert_eq!(Cursor::parse(&cursor.to_string()).unwrap(), cursor);
    }

    #[test]
    fn a_valid_notification_is_one_event_that_decodes_to_the_same_json(
        id in entry_id(),
        title in hostile_text(),
        body in hostile_text(),
        read: bool,
        clicked: bool,
    ) {
        // As the publish path stores it: serde's compact JSON.
        let mut stored = Map::new();
        stored.insert("type".into(), Value::from("a.b"));
        stored.insert("title".into(), Value::from(title));
        stored.insert("body".into(), Value::from(body));
        let bytes = serde_json::to_vec(&Value::Object(stored.clone())).unwrap();
        let mut out = Vec::new();

        write_notification(&mut out, id, &bytes, read, clicked);

        let events = parse_stream(&out);
        prop_assert_eq!(events.len(), 1);
        let event = &events[0];
        prop_assert_eq!(event.event.as_deref(), Some("notification"));
        let id_text = id.to_string();
        prop_assert_eq!(event.id.as_deref(), Some(id_text.as_str()));
        prop_assert_eq!(event.data.len(), 1);
        prop_assert!(event.other.is_empty(), "{:?}", event.other);
        let decoded: Map<String, Value> = serde_json::from_str(&event.data[0]).unwrap();
        prop_assert_eq!(&decoded["id"], &Value::from(id.to_string()));
        prop_assert_eq!(&decoded["read"], &Value::from(read));
        prop_assert_eq!(&decoded["clicked"], &Value::from(clicked));
        for (key, value) in &stored {
            prop_assert_eq!(&decoded[key], value);
        }
    }

    #[test]
    fn raw_bytes_from_another_writer_never_add_an_event_or_a_field(
        id in entry_id(),
        inside in hostile_text(),
    ) {
        // What XADD from another client can hold: raw line breaks and
        // control characters inside a string, and an attempt to inject.
        let stored = format!("{{\"type\":\"a.b\",\"title\":\"{inside}\n\nevent: bye\ndata: {{}}\r\nid: 1-0\"}}");
        let mut out = Vec::new();

        write_notification(&mut out, id, stored.as_bytes(), false, false);

        let events = parse_stream(&out);
        prop_assert_eq!(events.len(), 1, "{}", String::from_utf8_lossy(&out));
        prop_assert_eq!(events[0].event.as_deref(), Some("notification"));
        let id_text = id.to_string();
        prop_assert_eq!(events[0].id.as_deref(), Some(id_text.as_str()));
        prop_assert_eq!(events[0].data.len(), 1);
        prop_assert!(events[0].other.is_empty());
    }
}
