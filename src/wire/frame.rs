//! The `text/event-stream` syntax of every event a stream carries.
//!
//! A live event is encoded once per node ([`live`]) and the same `Bytes` is
//! queued for every open tab of its user (a refcount, not a copy). Replayed
//! entries are encoded per stream, since replay is per stream.

use std::{num::NonZeroU32, time::Duration};

use bytes::Bytes;
use time::OffsetDateTime;

use super::notification::{render_notification, render_topic_notification, write_json_line};
use crate::{
    clock::rfc3339,
    domain::{ByeReason, Cursor, EntryId, InboxChange, LiveEvent, TopicName},
};

/// An encoded SSE message, with the history id it carries (if any) so a
/// stream can drop what it already delivered.
///
/// One is built per live event and cloned into every tab's queue. The
/// unread offset is a `u32` in it, not a second `Bytes` (32 bytes and a
/// second refcount per tab): it costs no allocation and no work per event,
/// and 8 bytes per queued frame (56 to 64; `part` and `id_len` fit in the
/// padding).
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: Option<EntryId>,
    pub bytes: Bytes,
    /// Where the trailing `unread` event starts in `bytes`, if the frame
    /// ends with one. A stream that drops the frame as already replayed
    /// still sends this part: the count is newer than any queued before it
    /// (see [`Frame::unread_part`]).
    pub unread_at: Option<NonZeroU32>,
    /// What the frame belongs to, for the stream it is queued on: 0 its
    /// user's inbox (and everything that is not history), `n` the stream's
    /// `n`th topic. Set by the hub per stream, since each follower lists
    /// its topics in its own order.
    pub part: u8,
    /// The length of the `id: ...\n` line `bytes` starts with (0 if none).
    /// A stream that follows topics writes its composite cursor instead.
    pub id_len: u8,
}

impl Frame {
    /// A frame without a trailing `unread`.
    pub fn plain(id: Option<EntryId>, bytes: Bytes) -> Self {
        Self { id, bytes, unread_at: None, part: 0, id_len: 0 }
    }

    /// `bytes` without the leading `id:` line.
    pub fn without_id(&self) -> Bytes {
        self.bytes.slice(self.id_len as usize..)
    }

    /// The trailing `unread` event, as a slice of the same buffer (no copy).
    ///
    /// A `read` queued before a replay carries an older count than the
    /// replay's closing `unread`; a notification queued after it, dropped as
    /// replayed, would take the newest count with it. Sending the dropped
    /// frame's count keeps the counts in queue order, so the last `unread`
    /// a client sees is the true one.
    pub fn unread_part(&self) -> Option<Bytes> {
        self.unread_at.map(|at| self.bytes.slice(at.get() as usize..))
    }
}

/// Seals `out` as a frame whose `unread` event starts at `unread_at`, and
/// that starts with an `id:` line of `id_len` bytes.
fn with_unread(id: Option<EntryId>, out: Vec<u8>, unread_at: usize, id_len: usize) -> Frame {
    // Past u32 (not a real frame) the count is simply not kept apart.
    let unread_at = u32::try_from(unread_at).ok().and_then(NonZeroU32::new);
    // An entry id's line is at most 46 bytes.
    let id_len = u8::try_from(id_len).expect("an id line fits in a u8");
    Frame { id, bytes: out.into(), unread_at, part: 0, id_len }
}

/// What a stream quiet for a whole keep-alive interval is sent, so that
/// proxies and load balancers do not close it (`stream.heartbeat_events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// A `:` comment, which `EventSource` ignores.
    Comment,
    /// A `heartbeat` event with the time, for clients that watch for one.
    Heartbeat,
}

impl KeepAlive {
    pub fn from_heartbeat_events(heartbeat_events: bool) -> Self {
        if heartbeat_events { KeepAlive::Heartbeat } else { KeepAlive::Comment }
    }

    /// The comment is static (no allocation per stream); a heartbeat is
    /// written per stream, with the time it is sent.
    pub fn bytes(self) -> Bytes {
        match self {
            KeepAlive::Comment => Bytes::from_static(b": keep-alive\n\n"),
            KeepAlive::Heartbeat => heartbeat(OffsetDateTime::now_utc()),
        }
    }
}

/// Appends one `notification` event of the inbox, with the entry id as its
/// `id:` (a stream that follows only the inbox; see [`write_id`]).
pub fn write_notification(out: &mut Vec<u8>, id: EntryId, stored: &[u8], read: bool, clicked: bool) {
    out.extend_from_slice(b"id: ");
    id.write_to(out);
    out.push(b'\n');
    write_inbox_event(out, id, stored, read, clicked);
}

/// An inbox `notification` event without its `id:` line.
pub fn write_inbox_event(out: &mut Vec<u8>, id: EntryId, stored: &[u8], read: bool, clicked: bool) {
    out.extend_from_slice(b"event: notification\ndata: ");
    render_notification(out, id, stored, read, clicked);
    out.extend_from_slice(b"\n\n");
}

/// A topic's `notification` event without its `id:` line: every stream that
/// follows the topic writes its own cursor before it.
pub fn write_topic_event(out: &mut Vec<u8>, id: EntryId, stored: &[u8]) {
    out.extend_from_slice(b"event: notification\ndata: ");
    render_topic_notification(out, id, stored);
    out.extend_from_slice(b"\n\n");
}

/// The `id:` line of a stream's cursor (composite when it follows topics).
pub fn write_id(out: &mut Vec<u8>, cursor: &Cursor) {
    out.extend_from_slice(b"id: ");
    cursor.write_to(out);
    out.push(b'\n');
}

pub fn write_unread(out: &mut Vec<u8>, count: u64) {
    out.extend_from_slice(b"event: unread\ndata: {\"count\":");
    out.extend_from_slice(itoa::Buffer::new().format(count).as_bytes());
    out.extend_from_slice(b"}\n\n");
}

/// A live event as every local tab of its user receives it.
pub fn live(event: &LiveEvent<'_>) -> Frame {
    match *event {
        LiveEvent::Notification { id, stored, unread } => live_notification(id, stored, unread),
        LiveEvent::Change { change, payload, unread } => inbox_change(change, payload, unread),
    }
}

/// A new notification, then the unread count.
fn live_notification(id: EntryId, stored: &[u8], unread: u64) -> Frame {
    let mut out = Vec::with_capacity(stored.len() + 200);
    write_notification(&mut out, id, stored, false, false);
    let id_len = out.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
    let unread_at = out.len();
    write_unread(&mut out, unread);
    with_unread(Some(id), out, unread_at, id_len)
}

/// A topic's new notification, as every follower on this node receives it
/// (each writes its own `id:` before it).
pub fn topic_notification(id: EntryId, stored: &[u8]) -> Frame {
    let mut out = Vec::with_capacity(stored.len() + 120);
    write_topic_event(&mut out, id, stored);
    Frame::plain(Some(id), out.into())
}

/// A state change from another tab or device (`read` or `deleted`, with its
/// JSON payload), then the new unread count. Carries no id: it is not history.
/// The payload comes from the pub/sub channel, which any Redis client can
/// publish to, so it is written as one line like a stored notification.
fn inbox_change(change: InboxChange, payload: &[u8], unread: u64) -> Frame {
    let mut out = Vec::with_capacity(payload.len() + 80);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(change.event_name().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    write_json_line(&mut out, payload);
    out.extend_from_slice(b"\n\n");
    let unread_at = out.len();
    write_unread(&mut out, unread);
    with_unread(None, out, unread_at, 0)
}

/// A message of its own that sets the client's reconnect delay.
pub fn retry(out: &mut Vec<u8>, retry: Duration) {
    write_retry_field(out, retry);
    out.push(b'\n');
}

fn write_retry_field(out: &mut Vec<u8>, retry: Duration) {
    out.extend_from_slice(b"retry: ");
    out.extend_from_slice(itoa::Buffer::new().format(retry.as_millis()).as_bytes());
    out.push(b'\n');
}

/// `reason` is one of `engine::Reset::reason`'s names (plain ASCII);
/// `topic` names the topic whose history it is about, `None` the inbox's:
/// a client refetches only that part.
pub fn write_reset(out: &mut Vec<u8>, reason: &str, topic: Option<&TopicName>) {
    out.extend_from_slice(b"event: reset\ndata: {\"reason\":\"");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\",\"scope\":\"");
    match topic {
        // A topic name is ASCII without quotes or backslashes.
        Some(topic) => {
            out.extend_from_slice(b"topic:");
            out.extend_from_slice(topic.as_str().as_bytes());
        }
        None => out.extend_from_slice(b"inbox"),
    }
    out.extend_from_slice(b"\"}\n\n");
}

pub fn bye(reason: ByeReason, retry_after: Option<Duration>) -> Bytes {
    let mut out = Vec::with_capacity(80);
    if let Some(d) = retry_after {
        // In the same block as the event: one message tells the client both.
        write_retry_field(&mut out, d);
    }
    out.extend_from_slice(b"event: bye\ndata: {\"reason\":\"");
    out.extend_from_slice(reason.as_str().as_bytes());
    out.extend_from_slice(b"\"}\n\n");
    out.into()
}

pub fn token_expiring(expires_at: u64) -> Frame {
    let at = OffsetDateTime::from_unix_timestamp(expires_at as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let text = format!("event: token_expiring\ndata: {{\"expires_at\":\"{}\"}}\n\n", rfc3339(at));
    Frame::plain(None, text.into())
}

fn heartbeat(now: OffsetDateTime) -> Bytes {
    format!("event: heartbeat\ndata: {{\"ts\":\"{}\"}}\n\n", rfc3339(now)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_frame_carries_the_notification_then_the_count() {
        let f = live(&LiveEvent::Notification {
            id: EntryId::new(1, 2),
            stored: br#"{"type":"a","title":"t"}"#,
            unread: 7,
        });
        assert_eq!(f.id, Some(EntryId::new(1, 2)));
        let text = std::str::from_utf8(&f.bytes).unwrap();
        assert!(text.starts_with("id: 1-2\nevent: notification\ndata: {\"id\":\"1-2\""), "{text}");
        assert!(text.ends_with("\n\nevent: unread\ndata: {\"count\":7}\n\n"), "{text}");
        assert_eq!(text.matches("\n\n").count(), 2);
        assert_eq!(&f.unread_part().unwrap()[..], b"event: unread\ndata: {\"count\":7}\n\n");
    }

    #[test]
    fn a_live_frame_knows_its_id_line_and_a_topic_frame_has_none() {
        let f = live(&LiveEvent::Notification {
            id: EntryId::new(1, 2),
            stored: br#"{"type":"a","title":"t"}"#,
            unread: 7,
        });
        assert_eq!(&f.bytes[..f.id_len as usize], b"id: 1-2\n");
        assert!(f.without_id().starts_with(b"event: notification\n"));
        let t = topic_notification(EntryId::new(3, 0), br#"{"topic":"news","type":"a","title":"t"}"#);
        assert_eq!((t.id, t.id_len, t.part), (Some(EntryId::new(3, 0)), 0, 0));
        let text = std::str::from_utf8(&t.bytes).unwrap();
        assert!(text.starts_with("event: notification\ndata: {\"id\":\"3-0\",\"created_at\":"), "{text}");
        assert!(!text.contains("\"read\""), "a topic notification has no read state: {text}");
        assert!(text.contains("\"topic\":\"news\""), "{text}");
    }

    #[test]
    fn a_reset_names_its_scope() {
        let mut out = Vec::new();
        write_reset(&mut out, "history_trimmed", None);
        write_reset(&mut out, "history_trimmed", Some(&TopicName::parse("team:42").unwrap()));
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "event: reset\ndata: {\"reason\":\"history_trimmed\",\"scope\":\"inbox\"}\n\n\
             event: reset\ndata: {\"reason\":\"history_trimmed\",\"scope\":\"topic:team:42\"}\n\n"
        );
    }

    #[test]
    fn a_frame_is_64_bytes() {
        // Queued per tab for every live event (see `Frame`).
        assert_eq!(std::mem::size_of::<Frame>(), 64);
    }

    #[test]
    fn a_sync_frame_keeps_its_count_apart_and_plain_frames_have_none() {
        let f = live(&LiveEvent::Change { change: InboxChange::Read, payload: br#"{"ids":["1-2"]}"#, unread: 4 });
        assert_eq!(&f.unread_part().unwrap()[..], b"event: unread\ndata: {\"count\":4}\n\n");
        assert!(token_expiring(0).unread_part().is_none());
    }

    #[test]
    fn a_sync_payload_from_pub_sub_cannot_add_events() {
        let payload = b"{\"ids\":[\"1-2\n\nevent: bye\ndata: x\n\nid: 9-9\"]}";
        let f = live(&LiveEvent::Change { change: InboxChange::Read, payload, unread: 4 });
        let text = std::str::from_utf8(&f.bytes).unwrap();
        assert_eq!(text.matches("\n\n").count(), 2, "a read and an unread only: {text}");
        assert!(!text.contains("\nevent: bye") && !text.contains("\nid:"), "{text}");
        let data = text.strip_prefix("event: read\ndata: ").unwrap().split("\n\n").next().unwrap();
        serde_json::from_str::<serde_json::Value>(data).unwrap();
    }

    #[test]
    fn bye_may_carry_a_retry() {
        let b = bye(ByeReason::Shutdown, Some(Duration::from_millis(1500)));
        assert_eq!(&b[..], b"retry: 1500\nevent: bye\ndata: {\"reason\":\"shutdown\"}\n\n");
    }
}
