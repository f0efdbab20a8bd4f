//! Every Redis name Herald uses. `functions.lua` derives the per-user keys
//! from the base name below (its header lists them all); this module is the
//! Rust side's single source of those names.

use crate::{
    domain::{TopicName, UserId},
    hub::Channel,
};

const USER_PREFIX: &str = "herald:{u:";
const TOPIC_PREFIX: &str = "herald:{t:";

/// `herald:{u:<user>}`: the user's base key (`KEYS[1]` of every function)
/// and their pub/sub channel. The hash tag puts all of a user's keys in one
/// cluster slot.
pub fn user_base(user: &UserId) -> String {
    let mut s = String::with_capacity(USER_PREFIX.len() + user.as_str().len() + 1);
    s.push_str(USER_PREFIX);
    s.push_str(user.as_str());
    s.push('}');
    s
}

/// `herald:{t:<topic>}`: the topic's base key (`KEYS[1]` of its functions)
/// and its pub/sub channel. Every key of a topic shares the hash tag.
pub fn topic_base(topic: &TopicName) -> String {
    let mut s = String::with_capacity(TOPIC_PREFIX.len() + topic.as_str().len() + 1);
    s.push_str(TOPIC_PREFIX);
    s.push_str(topic.as_str());
    s.push('}');
    s
}

/// The Web Push queue (a stream), read through the consumer group
/// [`PUSH_GROUP`]. The queue's keys share the hash tag `{push}`.
pub const PUSH_QUEUE: &str = "herald:{push}:queue";
pub const PUSH_GROUP: &str = "herald-push";
/// Pushes to send later, by when (a sorted set).
pub const PUSH_DELAYED: &str = "herald:{push}:delayed";
/// Pushes given up on (a stream).
pub const PUSH_DEAD: &str = "herald:{push}:dead";

/// A channel's name in Redis.
pub fn channel_name(channel: &Channel) -> String {
    match channel {
        Channel::User(user) => user_base(user),
        Channel::Topic(topic) => topic_base(topic),
    }
}

/// `herald:{u:<user>}:prefs`: the preferences document (read directly; the
/// functions write it).
pub fn preferences(user: &UserId) -> String {
    format!("{}:prefs", user_base(user))
}

/// The user a channel name belongs to, without allocating.
pub fn user_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix(USER_PREFIX)?.strip_suffix('}')
}

/// The topic a channel name belongs to, without allocating.
pub fn topic_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix(TOPIC_PREFIX)?.strip_suffix('}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        let alice = UserId::parse("alice").unwrap();
        assert_eq!(user_base(&alice), "herald:{u:alice}");
        assert_eq!(user_of_channel("herald:{u:alice}"), Some("alice"));
        assert_eq!(user_of_channel("herald:{t:news}"), None);
        let news = TopicName::parse("news").unwrap();
        assert_eq!(topic_base(&news), "herald:{t:news}");
        assert_eq!(channel_name(&Channel::Topic(news)), "herald:{t:news}");
        assert_eq!(topic_of_channel("herald:{t:news}"), Some("news"));
        assert_eq!(topic_of_channel("herald:{u:alice}"), None);
    }
}
