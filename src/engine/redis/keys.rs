//! Every Redis name Herald uses. `functions.lua` derives the per-user keys
//! from the base name below (its header lists them all); this module is the
//! Rust side's single source of those names.

use crate::domain::UserId;

const USER_PREFIX: &str = "herald:{u:";

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

/// `herald:{u:<user>}:prefs`: the preferences document (read directly; the
/// functions write it).
pub fn preferences(user: &UserId) -> String {
    format!("{}:prefs", user_base(user))
}

/// The user a channel name belongs to, without allocating.
pub fn user_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix(USER_PREFIX)?.strip_suffix('}')
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
    }
}
