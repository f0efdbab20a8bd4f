use std::{fmt, sync::Arc};

/// A user id (the JWT `sub`). It becomes part of Redis keys and channel names
/// (`herald:{u:<user>}`), so braces, whitespace and control characters are
/// refused: a `}` would move the key to another cluster slot.
///
/// Cloning is cheap (shared string): the hub and every stream of a user hold one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

pub const MAX_USER_ID_LEN: usize = 128;

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("user id is empty".into());
        }
        if raw.len() > MAX_USER_ID_LEN {
            return Err(format!("user id is longer than {MAX_USER_ID_LEN} bytes"));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}') {
            return Err("user id must not contain whitespace, control characters or braces".into());
        }
        Ok(Self(Arc::from(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets the hub look users up by the `&str` a channel name yields, without
/// allocating. Sound because `Arc<str>` hashes and compares as `str`.
impl std::borrow::Borrow<str> for UserId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", &self.0)
    }
}

/// A publisher's idempotency key: 1–200 visible ASCII characters, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > 200 {
            return Err("idempotency_key must be 1 to 200 characters".into());
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("idempotency_key must be visible ASCII without spaces".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_that_would_break_keys_are_refused() {
        assert!(UserId::parse("alice").is_ok());
        assert!(UserId::parse("user:42@example.com").is_ok());
        for bad in ["", "a b", "a}b", "{u", "a\nb", &"x".repeat(129)] {
            assert!(UserId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn idempotency_keys_are_bounded() {
        assert!(IdempotencyKey::parse("order-991-shipped").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(201)).is_err());
    }
}
