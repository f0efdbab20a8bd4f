//! Domain values, parsed once at the edge and valid everywhere after.

mod entry_id;
mod live;
mod notification;
mod preferences;
mod user;

pub use entry_id::{BadEntryId as BadEntryIdError, EntryId};
pub use live::{ByeReason, InboxChange, LiveEvent};
pub use notification::{NewNotification, NotificationLimits, Priority, StoredNotification, ValidationError};
pub use preferences::{Channels, Preferences, PreferencesError, QuietHours};
pub use user::{IdempotencyKey, UserId};
