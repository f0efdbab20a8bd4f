use std::{fmt, sync::Arc};

/// A topic's name: what many users follow (`announcements`, `team:42`,
/// `product:991:price`). It becomes part of Redis keys and channel names
/// (`herald:{t:<name>}`), so it is kept to a small character set: ASCII
/// letters, digits and `_ - . : @`, 1 to [`MAX_TOPIC_LEN`] bytes. `*` is not
/// in it, so a grant ending in `*` is always a prefix (see [`TopicGrant`]).
///
/// Cloning is cheap (shared string): the hub and every follower's stream
/// hold one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

pub const MAX_TOPIC_LEN: usize = 64;

/// What [`TopicName::parse`] says about a name it refuses.
pub const TOPIC_RULE: &str = "must be 1-64 characters of A-Z a-z 0-9 _ - . : @";

fn topic_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@')
}

impl TopicName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_TOPIC_LEN || !raw.bytes().all(topic_byte) {
            return Err(format!("topic `{}` {TOPIC_RULE}", raw.chars().take(80).collect::<String>()));
        }
        Ok(Self(Arc::from(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets the hub look topics up by the `&str` a channel name yields, without
/// allocating. Sound because `Arc<str>` hashes and compares as `str`.
impl std::borrow::Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicName({})", &self.0)
    }
}

/// One entry of a token's `topics` claim, or of `topics.public` in config:
/// a topic name, or a prefix ending in `*` (`team:*` allows `team:42` and
/// every other topic that starts with `team:`; `*` alone allows every
/// topic). Anything else in a claim is ignored: it allows nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicGrant {
    Exact(TopicName),
    Prefix(String),
}

impl TopicGrant {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.strip_suffix('*') {
            Some(prefix) if prefix.bytes().all(topic_byte) && prefix.len() < MAX_TOPIC_LEN => {
                Ok(TopicGrant::Prefix(prefix.to_owned()))
            }
            Some(_) => Err(format!("topic grant `{raw}`: a prefix before `*` {TOPIC_RULE}")),
            None => TopicName::parse(raw).map(TopicGrant::Exact),
        }
    }

    pub fn allows(&self, topic: &TopicName) -> bool {
        match self {
            TopicGrant::Exact(name) => name == topic,
            TopicGrant::Prefix(prefix) => topic.as_str().starts_with(prefix.as_str()),
        }
    }
}

/// Whether any of `grants` allows `topic`.
pub fn allowed(grants: &[TopicGrant], topic: &TopicName) -> bool {
    grants.iter().any(|g| g.allows(topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_break_keys_are_refused() {
        for good in ["announcements", "team:42", "product.991_price-drop", "a@b", &"x".repeat(64)] {
            assert!(TopicName::parse(good).is_ok(), "{good:?} refused");
        }
        for bad in ["", "a b", "a}b", "{t", "a\nb", "team:*", "é", "a,b", &"x".repeat(65)] {
            let error = TopicName::parse(bad).unwrap_err();
            assert!(error.contains(TOPIC_RULE), "{bad:?}: {error}");
        }
    }

    #[test]
    fn grants_are_exact_names_or_prefixes() {
        let topic = |s: &str| TopicName::parse(s).unwrap();
        let team = TopicGrant::parse("team:*").unwrap();
        assert!(team.allows(&topic("team:42")));
        assert!(!team.allows(&topic("teams")), "the prefix includes its `:`");
        let exact = TopicGrant::parse("announcements").unwrap();
        assert!(exact.allows(&topic("announcements")));
        assert!(!exact.allows(&topic("announcements2")));
        assert!(TopicGrant::parse("*").unwrap().allows(&topic("anything")));
        assert!(!allowed(&[], &topic("announcements")), "no grant, nothing allowed");
        for bad in ["a*b", "te am:*", "**", ""] {
            assert!(TopicGrant::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
