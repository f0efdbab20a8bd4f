//! What a user's open streams are told live, as typed values: the engines
//! produce these, the hub encodes them (once per node, in `wire`), and the
//! engines never see a byte of the wire format.

use super::EntryId;

/// One live event for one user, as an engine hands it to the hub. It
/// borrows from where the engine holds it (a pub/sub message, an inbox), so
/// a user with no stream on this node costs no copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveEvent<'a> {
    /// A new notification in the inbox: `stored` is its JSON as stored
    /// (see `domain::notification`), `unread` the count right after it.
    Notification { id: EntryId, stored: &'a [u8], unread: u64 },
    /// Another tab or device changed the inbox. `payload` is the change's
    /// JSON (`{"ids":[...]}` or `{"id":...}`), `unread` the new count.
    Change { change: InboxChange, payload: &'a [u8], unread: u64 },
}

/// A change to stored notifications that every tab must mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxChange {
    Read,
    Deleted,
}

impl InboxChange {
    /// The SSE event name the contract gives it.
    pub fn event_name(self) -> &'static str {
        match self {
            InboxChange::Read => "read",
            InboxChange::Deleted => "deleted",
        }
    }
}

/// Why the server ended a stream: the `reason` of its last event, `bye`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByeReason {
    TokenExpired = 0,
    Shutdown = 1,
    SlowConsumer = 2,
    Replaced = 3,
}

impl ByeReason {
    pub const ALL: [ByeReason; 4] =
        [ByeReason::TokenExpired, ByeReason::Shutdown, ByeReason::SlowConsumer, ByeReason::Replaced];

    pub fn as_str(self) -> &'static str {
        match self {
            ByeReason::TokenExpired => "token_expired",
            ByeReason::Shutdown => "shutdown",
            ByeReason::SlowConsumer => "slow_consumer",
            ByeReason::Replaced => "replaced",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bye_reason_is_listed_in_discriminant_order() {
        // `metrics` indexes its per-reason counters by the discriminant.
        for (i, reason) in ByeReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, i, "{}", reason.as_str());
        }
    }
}
