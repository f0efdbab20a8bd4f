//! The SSE cursor: where a stream is in every part it follows.
//!
//! A stream that follows only its user's inbox uses the inbox entry id
//! itself (`<ms>-<seq>`), as every client before topics did. A stream that
//! also follows topics needs one position per topic in the same `id:`, so
//! its cursor is composite: `c` and then, in unpadded base64url, a version
//! byte, the inbox id, and for each topic a 4-byte tag of its name with its
//! position, ending in a 4-byte check. Positions are LEB128 varints, a
//! topic's milliseconds relative to the inbox's, so the cursor does not
//! grow with time: ten topics take about 120 characters. Clients never
//! parse it. The check only catches a cursor that was cut or changed: it
//! is not a secret, and need not be one, because a cursor chooses only
//! where to resume among what the token may read anyway.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use super::{EntryId, TopicName};

/// Composite cursors start with this; an entry id never does.
const COMPOSITE: u8 = b'c';
const VERSION: u8 = 1;
/// Most topics one cursor may hold.
pub const MAX_CURSOR_TOPICS: usize = 64;
/// The longest composite cursor [`Cursor::write_to`] can write, in bytes
/// before base64: version, inbox ms and seq, topic count, then per topic a
/// tag, a ms delta and a seq, then the check (a varint of a `u64` takes
/// at most 10 bytes).
const MAX_RAW_LEN: usize = 1 + 10 + 10 + 1 + MAX_CURSOR_TOPICS * (4 + 10 + 10) + 4;
/// Longest cursor text accepted: every cursor Herald writes (the property
/// test in tests/it/properties.rs writes the longest), and still well below
/// header limits. (It was 1,024 until that test found a stream of 64 topics
/// whose cursor its own parser refused.)
pub const MAX_CURSOR_LEN: usize = 1 + (MAX_RAW_LEN * 4).div_ceil(3);

/// A topic as a cursor names it: the first four bytes of the SHA-256 of its
/// name. Two followed topics whose tags collide (odds of about one in 10^8
/// for ten topics) would share a position; a stream never follows such a
/// pair (see [`TopicTag::of`] callers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicTag(u32);

impl TopicTag {
    pub fn of(topic: &TopicName) -> Self {
        let digest = Sha256::digest(topic.as_str().as_bytes());
        Self(u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]))
    }
}

/// Where a stream is: its inbox position, and one position per topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    pub inbox: EntryId,
    pub topics: Vec<(TopicTag, EntryId)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{shown}` is not a valid event id: {why} (send back an `id:` exactly as received)")]
pub struct BadCursor {
    shown: String,
    why: &'static str,
}

fn bad(raw: &str, why: &'static str) -> BadCursor {
    BadCursor { shown: raw.chars().take(64).collect(), why }
}

impl Cursor {
    pub fn inbox_only(inbox: EntryId) -> Self {
        Self { inbox, topics: Vec::new() }
    }

    /// The position for `tag`, if the cursor has one.
    pub fn topic(&self, tag: TopicTag) -> Option<EntryId> {
        self.topics.iter().find(|(t, _)| *t == tag).map(|(_, id)| *id)
    }

    pub fn parse(raw: &str) -> Result<Self, BadCursor> {
        if raw.len() > MAX_CURSOR_LEN {
            return Err(bad(raw, "too long"));
        }
        let Some(encoded) = raw.strip_prefix(COMPOSITE as char) else {
            return raw
                .parse()
                .map(Self::inbox_only)
                .map_err(|_| bad(raw, "expected an entry id or a composite cursor"));
        };
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| bad(raw, "not base64url"))?;
        let (body, check) = bytes.split_at_checked(bytes.len().saturating_sub(4)).ok_or_else(|| bad(raw, "cut"))?;
        if check.len() != 4 || check != &Sha256::digest(body)[..4] {
            return Err(bad(raw, "its check does not match (cut or changed)"));
        }
        let mut r = Reader { bytes: body };
        if r.byte() != Some(VERSION) {
            return Err(bad(raw, "unknown version"));
        }
        let malformed = || bad(raw, "malformed");
        let inbox = EntryId::new(r.varint().ok_or_else(malformed)?, r.varint().ok_or_else(malformed)?);
        let count = r.varint().ok_or_else(malformed)? as usize;
        if count == 0 || count > MAX_CURSOR_TOPICS {
            return Err(bad(raw, "holds no topic, or too many"));
        }
        let mut topics = Vec::with_capacity(count);
        for _ in 0..count {
            let tag = TopicTag(u32::from_be_bytes(r.array().ok_or_else(malformed)?));
            let delta = unzigzag(r.varint().ok_or_else(malformed)?);
            let ms = inbox.ms.wrapping_add_signed(delta);
            topics.push((tag, EntryId::new(ms, r.varint().ok_or_else(malformed)?)));
        }
        if !r.bytes.is_empty() {
            return Err(malformed());
        }
        Ok(Self { inbox, topics })
    }

    /// Writes the cursor as a client receives it in `id:`: the inbox id
    /// alone when there are no topics, else the composite form.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        if self.topics.is_empty() {
            return self.inbox.write_to(out);
        }
        // On the stack for up to ten topics: written for every event of a
        // stream that follows topics.
        let mut raw: smallvec::SmallVec<[u8; 160]> = smallvec::SmallVec::new();
        raw.push(VERSION);
        write_varint(&mut raw, self.inbox.ms);
        write_varint(&mut raw, self.inbox.seq);
        write_varint(&mut raw, self.topics.len() as u64);
        for (tag, id) in &self.topics {
            raw.extend_from_slice(&tag.0.to_be_bytes());
            write_varint(&mut raw, zigzag((id.ms as i64).wrapping_sub(self.inbox.ms as i64)));
            write_varint(&mut raw, id.seq);
        }
        let check = Sha256::digest(&raw);
        raw.extend_from_slice(&check[..4]);
        out.push(COMPOSITE);
        let start = out.len();
        out.resize(start + base64::encoded_len(raw.len(), false).expect("small"), 0);
        let written = URL_SAFE_NO_PAD.encode_slice(&raw, &mut out[start..]).expect("sized above");
        out.truncate(start + written);
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.write_to(&mut out);
        f.write_str(std::str::from_utf8(&out).expect("ASCII"))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(b)
    }

    fn array(&mut self) -> Option<[u8; 4]> {
        let (head, rest) = self.bytes.split_first_chunk::<4>()?;
        self.bytes = rest;
        Some(*head)
    }

    /// LEB128, at most ten bytes, no bits past 64.
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return None;
            }
            value |= part << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
}

fn write_varint(out: &mut impl Extend<u8>, mut value: u64) {
    while value >= 0x80 {
        out.extend([(value as u8 & 0x7f) | 0x80]);
        value >>= 7;
    }
    out.extend([value as u8]);
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str) -> TopicTag {
        TopicTag::of(&TopicName::parse(name).unwrap())
    }

    fn composite(topics: usize) -> Cursor {
        Cursor {
            inbox: EntryId::new(1_795_552_804_016, 3),
            topics: (0..topics)
                .map(|i| (tag(&format!("team:{i}")), EntryId::new(1_795_552_804_016 + 7 - 3 * i as u64, i as u64)))
                .collect(),
        }
    }

    #[test]
    fn an_inbox_only_cursor_is_the_entry_id() {
        let cursor = Cursor::inbox_only(EntryId::new(1_795_552_804_016, 0));
        assert_eq!(cursor.to_string(), "1795552804016-0");
        assert_eq!(Cursor::parse("1795552804016-0").unwrap(), cursor, "today's clients' cursors resume");
        assert_eq!(Cursor::parse("0-0").unwrap(), Cursor::inbox_only(EntryId::ZERO));
    }

    #[test]
    fn composite_cursors_round_trip_and_stay_small() {
        for n in [1, 2, 10, MAX_CURSOR_TOPICS] {
            let cursor = composite(n);
            let text = cursor.to_string();
            assert!(text.starts_with('c') && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(Cursor::parse(&text).unwrap(), cursor, "{n} topics");
            if n == 10 {
                assert!(text.len() <= 130, "ten topics take {} characters", text.len());
            }
        }
        let cursor = composite(3);
        assert_eq!(cursor.topic(tag("team:1")), Some(EntryId::new(1_795_552_804_020, 1)));
        assert_eq!(cursor.topic(tag("elsewhere")), None);
        // Positions far from the inbox's (an empty inbox, an old topic).
        let far = Cursor { inbox: EntryId::ZERO, topics: vec![(tag("a"), EntryId::new(u64::MAX >> 1, u64::MAX))] };
        assert_eq!(Cursor::parse(&far.to_string()).unwrap(), far);
    }

    #[test]
    fn cut_changed_and_oversized_cursors_are_refused() {
        let text = composite(2).to_string();
        let cut = &text[..text.len() - 3];
        let mut changed = text.clone().into_bytes();
        let i = changed.len() / 2;
        changed[i] = if changed[i] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(changed).unwrap();
        let long = format!("c{}", "A".repeat(MAX_CURSOR_LEN));
        for bad in [cut, changed.as_str(), long.as_str(), "c", "c!!", "cAAAA", "x1-0", "1-0-0", ""] {
            let error = Cursor::parse(bad).unwrap_err().to_string();
            assert!(error.contains("is not a valid event id"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn varints_refuse_overflow() {
        let mut r = Reader { bytes: &[0xff; 11] };
        assert_eq!(r.varint(), None);
        let mut out = Vec::new();
        write_varint(&mut out, u64::MAX);
        assert_eq!(Reader { bytes: &out }.varint(), Some(u64::MAX));
        for n in [0i64, 1, -1, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(n)), n);
        }
    }
}
