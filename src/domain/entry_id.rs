use std::{fmt, str::FromStr};

/// A history entry id, `<ms>-<seq>`: a Redis stream id, and the same shape in
/// the memory engine. Ordered as Redis orders stream ids.
///
/// It is also the SSE cursor (`id:` / `Last-Event-ID`). Clients treat it as
/// opaque; a stream that follows only the inbox needs nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    pub fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// Writes the id into `buf` without allocating (the hot path encodes it
    /// into every SSE frame).
    pub fn write_to(&self, buf: &mut Vec<u8>) {
        let mut b = itoa::Buffer::new();
        buf.extend_from_slice(b.format(self.ms).as_bytes());
        buf.push(b'-');
        buf.extend_from_slice(b.format(self.seq).as_bytes());
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid event id (expected <ms>-<seq>, as received in `id:`)")]
pub struct BadEntryId(pub String);

impl FromStr for EntryId {
    type Err = BadEntryId;

    /// Accepts `<ms>-<seq>` and, like Redis, a bare `<ms>` (meaning `<ms>-0`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadEntryId(s.chars().take(64).collect());
        let digits = |p: &str| -> Result<u64, BadEntryId> {
            if p.is_empty() || p.len() > 20 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        match s.split_once('-') {
            Some((ms, seq)) => Ok(Self::new(digits(ms)?, digits(seq)?)),
            None => Ok(Self::new(digits(s)?, 0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_stream_ids() {
        let id: EntryId = "1732460000000-7".parse().unwrap();
        assert_eq!(id, EntryId::new(1732460000000, 7));
        assert_eq!(id.to_string(), "1732460000000-7");
        let mut buf = Vec::new();
        id.write_to(&mut buf);
        assert_eq!(buf, b"1732460000000-7");
        assert_eq!("5".parse::<EntryId>().unwrap(), EntryId::new(5, 0));
    }

    #[test]
    fn orders_like_redis() {
        let a: EntryId = "9-5".parse().unwrap();
        let b: EntryId = "10-0".parse().unwrap();
        let c: EntryId = "10-1".parse().unwrap();
        assert!(a < b && b < c);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "-", "1-", "-1", "a-1", "1-b", "1-2-3", " 1-2", "99999999999999999999999-0"] {
            assert!(bad.parse::<EntryId>().is_err(), "{bad:?} accepted");
        }
    }
}
