//! Domain values, parsed once at the edge and valid everywhere after.

mod cursor;
mod entry_id;
mod live;
mod notification;
mod preferences;
mod push;
mod topic;
mod user;

pub use cursor::{BadCursor, Cursor, MAX_CURSOR_LEN, MAX_CURSOR_TOPICS, TopicTag};
pub use entry_id::{BadEntryId as BadEntryIdError, EntryId};
pub use live::{ByeReason, InboxChange, LiveEvent};
pub use notification::{NewNotification, NotificationLimits, Priority, StoredNotification, ValidationError};
pub use preferences::{Channels, Preferences, PreferencesError, QuietHours};
pub use push::{EndpointRules, MAX_ENDPOINT_LEN, PushSubscription, SubscriptionError, VapidKey};
pub use topic::{MAX_TOPIC_LEN, TOPIC_RULE, TopicGrant, TopicName, allowed as topic_allowed};
pub use user::{IdempotencyKey, UserId};
