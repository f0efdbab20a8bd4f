//! Domain values, parsed once at the edge and valid everywhere after.

mod entry_id;
mod notification;
mod preferences;
mod user;

pub use entry_id::{BadEntryId as BadEntryIdError, EntryId};
pub use notification::{
    NewNotification, NotificationLimits, Priority, StoredNotification, ValidationError, render_notification, rfc3339,
    write_json_line,
};
pub use preferences::{Channels, Preferences, PreferencesError, QuietHours};
pub use user::{IdempotencyKey, UserId};
