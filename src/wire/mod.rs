//! The wire format: every byte Herald writes to a client about a
//! notification. [`frame`] is the `text/event-stream` syntax of each SSE
//! event; [`notification`] is a stored notification's JSON as clients see
//! it (an event's `data:` line, a list item).
//!
//! Below the hub and the engines, above `domain` only (and `metrics`, which
//! counts repaired entries): nothing above this module writes SSE syntax.

pub mod frame;
pub mod notification;

pub use frame::{Frame, KeepAlive};
