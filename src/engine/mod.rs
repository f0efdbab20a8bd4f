//! Storage and fan-out behind one trait.
//!
//! An engine keeps each user's history (the inbox) and read state, and
//! publishes atomically: store, count, and hand the entry to every node that
//! holds a stream of the user. Two implementations exist and one conformance
//! suite (`tests/it/conformance.rs`) runs against both:
//!
//! * [`memory::MemoryEngine`]: embedded, one process, no Redis;
//! * [`redis::RedisEngine`]: one Redis server, any number of nodes.

pub mod memory;
pub mod redis;

use std::future::Future;

use crate::domain::{EntryId, IdempotencyKey, UserId};

/// The outcome of one publish to one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub id: EntryId,
    /// Whether any node held a stream of the user at that moment.
    pub online: bool,
    /// The idempotency key was seen before: nothing was stored, this is the
    /// first publish's result.
    pub duplicate: bool,
}

/// One notification in history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub id: EntryId,
    /// The notification JSON as stored (see `domain::notification`).
    pub body: String,
    pub read: bool,
    pub clicked: bool,
}

/// A page of history after a cursor.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    /// The cursor was older than what history keeps: entries were trimmed
    /// after it, so the page starts at the oldest kept entry instead.
    pub reset: bool,
    pub entries: Vec<StoredEntry>,
}

/// What a new stream needs before it goes live.
#[derive(Debug, Clone, Copy)]
pub struct StreamStart {
    /// The newest id ever given in this inbox (zero if none): a stream
    /// opened without a cursor starts after it.
    pub last_id: EntryId,
    pub unread: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The input breaks a rule (from the `FCALL` path's own validation).
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    TooLarge(String),
    /// The backing store cannot be reached or failed; retry later.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
}

/// The operations every engine provides. Live delivery is not here: engines
/// push live events into the [`crate::hub::Hub`] they were built with.
pub trait Engine: Send + Sync {
    /// Stores a validated notification (`stored` is its JSON) in `user`'s
    /// inbox, trims history, and fans it out; all in one atomic step.
    fn publish(
        &self,
        user: &UserId,
        stored: &str,
        key: Option<&IdempotencyKey>,
    ) -> impl Future<Output = Result<Published, EngineError>> + Send;

    /// Up to `limit` entries after `after` (exclusive), oldest first.
    fn read_after(
        &self,
        user: &UserId,
        after: EntryId,
        limit: usize,
    ) -> impl Future<Output = Result<HistoryPage, EngineError>> + Send;

    fn stream_start(
        &self,
        user: &UserId,
    ) -> impl Future<Output = Result<StreamStart, EngineError>> + Send;

    /// Ready to serve: store reachable, functions loaded, live connection alive.
    fn check_ready(&self) -> impl Future<Output = Result<(), EngineError>> + Send;
}

/// The engine chosen by `engine.kind`. Cheap to clone (shared inside).
#[derive(Clone)]
pub enum AnyEngine {
    Memory(memory::MemoryEngine),
    Redis(redis::RedisEngine),
}

impl AnyEngine {
    pub fn kind(&self) -> &'static str {
        match self {
            AnyEngine::Memory(_) => "memory",
            AnyEngine::Redis(_) => "redis",
        }
    }
}

impl Engine for AnyEngine {
    async fn publish(
        &self,
        user: &UserId,
        stored: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Published, EngineError> {
        match self {
            AnyEngine::Memory(e) => e.publish(user, stored, key).await,
            AnyEngine::Redis(e) => e.publish(user, stored, key).await,
        }
    }

    async fn read_after(
        &self,
        user: &UserId,
        after: EntryId,
        limit: usize,
    ) -> Result<HistoryPage, EngineError> {
        match self {
            AnyEngine::Memory(e) => e.read_after(user, after, limit).await,
            AnyEngine::Redis(e) => e.read_after(user, after, limit).await,
        }
    }

    async fn stream_start(&self, user: &UserId) -> Result<StreamStart, EngineError> {
        match self {
            AnyEngine::Memory(e) => e.stream_start(user).await,
            AnyEngine::Redis(e) => e.stream_start(user).await,
        }
    }

    async fn check_ready(&self) -> Result<(), EngineError> {
        match self {
            AnyEngine::Memory(e) => e.check_ready().await,
            AnyEngine::Redis(e) => e.check_ready().await,
        }
    }
}

/// History limits, shared by both engines (`[history]` and `[publish]`).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_len: u64,
    pub max_age_ms: u64,
    pub idempotency_window_ms: u64,
}
