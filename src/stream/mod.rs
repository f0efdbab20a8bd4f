//! One SSE stream: its wire frames, the bounded queue the hub fills, and the
//! response body that replays history and then goes live.

mod body;
mod connection;
pub mod frame;

pub use body::EventStream;
pub use connection::{ByeReason, Connection, Next};
pub use frame::Frame;
