//! A stored notification as clients see it: the JSON of a `notification`
//! event's `data:` line and of a list item.
//!
//! History stores the publisher's notification as compact JSON. The fields
//! only history knows (`id`, `created_at`, `read`, `clicked`) are added
//! here, by splicing them in front of the stored object: no parse and
//! re-encode per event.

use time::OffsetDateTime;

use crate::domain::EntryId;

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
    write_members(out, stored);
}

/// Renders a stored topic notification: like [`render_notification`], but
/// without `read` and `clicked`, which a topic has no per-user state for.
/// Its `topic` member is stored with it.
pub fn render_topic_notification(out: &mut Vec<u8>, id: EntryId, stored: &[u8]) {
    out.extend_from_slice(b"{\"id\":\"");
    id.write_to(out);
    out.extend_from_slice(b"\",\"created_at\":\"");
    write_created_at(out, id.ms);
    out.push(b'"');
    write_members(out, stored);
}

/// The stored object's members after those written in front of them, and
/// the closing brace.
fn write_members(out: &mut Vec<u8>, stored: &[u8]) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
