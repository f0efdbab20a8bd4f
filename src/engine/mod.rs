//! Storage and fan-out behind one trait.
//!
//! An engine keeps each user's history (the inbox) and read state, and each
//! topic's history, and publishes atomically: store, count, and hand the
//! entry to every node that holds a stream of the user (or a follower of
//! the topic). Two implementations exist and one conformance
//! suite (`tests/it/conformance.rs`) runs against both:
//!
//! * [`memory::MemoryEngine`]: embedded, one process, no Redis;
//! * [`redis::RedisEngine`]: one Redis server, any number of nodes.

pub mod memory;
pub mod push;
pub mod redis;

use std::future::Future;

pub use self::push::{
    DeadLetter, PushDecision, PushJob, PushPolicy, PushQueue, PushRetry, PushSettlement, PushTarget, SkipReason,
};
use crate::domain::{EntryId, IdempotencyKey, Preferences, PushSubscription, StoredNotification, TopicName, UserId};

/// The outcome of one publish to one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub id: EntryId,
    /// Whether any node held a stream of the user at that moment.
    pub online: bool,
    /// The idempotency key was seen before: nothing was stored, this is the
    /// first publish's result.
    pub duplicate: bool,
    /// Whether a Web Push was queued, decided in the same step.
    pub push: PushDecision,
}

/// What a publish to one user did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    Stored(Published),
    /// The user's preferences turn this category off in-app: nothing was
    /// stored or streamed.
    Dropped,
}

impl PublishOutcome {
    pub fn stored(self) -> Option<Published> {
        match self {
            PublishOutcome::Stored(p) => Some(p),
            PublishOutcome::Dropped => None,
        }
    }
}

/// The outcome of one publish to a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicPublished {
    pub id: EntryId,
    /// The idempotency key was seen before for this topic: nothing was
    /// stored, this is the first publish's id.
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

/// Why a replay cannot continue from the client's cursor: the client must
/// refetch its list (the stream sends `reset` with this reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// The cursor was older than what history keeps: entries were trimmed
    /// after it, so the page starts at the oldest kept entry instead.
    HistoryTrimmed,
    /// The cursor is newer than any id this inbox has given (history
    /// restored from an older snapshot, a lagging replica, an evicted or
    /// expired inbox, a clock step): nothing after it would ever be sent, so
    /// the stream continues after `newest` instead, and the page is empty.
    CursorAhead { newest: EntryId },
}

impl Reset {
    /// The `reason` of the `reset` event.
    pub fn reason(self) -> &'static str {
        match self {
            Reset::HistoryTrimmed => "history_trimmed",
            Reset::CursorAhead { .. } => "cursor_ahead",
        }
    }
}

/// A page of history after a cursor.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    pub reset: Option<Reset>,
    pub entries: Vec<StoredEntry>,
    /// The unread count when the page was read.
    pub unread: u64,
}

/// A page of the notification list, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub items: Vec<StoredEntry>,
    pub unread: u64,
    /// Pass as `before` for the next (older) page; `None` on the last. A
    /// list of unread entries that examined [`LIST_SCAN`] entries stops
    /// there, so its page may hold fewer than `limit` items and still have
    /// a `next`.
    pub next: Option<EntryId>,
}

#[derive(Debug, Clone, Copy)]
pub struct ListQuery {
    /// Only entries older than this (exclusive); `None` starts at the newest.
    pub before: Option<EntryId>,
    pub limit: usize,
    pub unread_only: bool,
}

/// What `mark_read` marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadTarget {
    Ids(Vec<EntryId>),
    All,
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
    /// No such notification in this user's history (or not theirs).
    #[error("no notification {0} in this user's history")]
    NotFound(String),
    /// The backing store cannot be reached or failed; retry later.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
}

/// The operations every engine provides. Live delivery is not here: engines
/// hand typed live events ([`crate::domain::LiveEvent`]) to the
/// [`crate::hub::Hub`] they were built with, which encodes them.
pub trait Engine: Send + Sync {
    /// Stores a validated notification in `user`'s
    /// inbox, trims history, and fans it out; all in one atomic step. The
    /// user's `in_app` preference for its category may drop it instead.
    fn publish(
        &self,
        user: &UserId,
        notification: &StoredNotification,
        key: Option<&IdempotencyKey>,
    ) -> impl Future<Output = Result<PublishOutcome, EngineError>> + Send;

    /// Up to `limit` entries after `after` (exclusive), oldest first.
    fn read_after(
        &self,
        user: &UserId,
        after: EntryId,
        limit: usize,
    ) -> impl Future<Output = Result<HistoryPage, EngineError>> + Send;

    fn stream_start(&self, user: &UserId) -> impl Future<Output = Result<StreamStart, EngineError>> + Send;

    /// Ready to serve: store reachable, functions loaded, live connection alive.
    fn check_ready(&self) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// The notification list, newest first.
    fn list(&self, user: &UserId, query: ListQuery) -> impl Future<Output = Result<ListPage, EngineError>> + Send;

    /// Marks notifications read; returns the unread count. An unknown id
    /// changes nothing (`NotFound`). Every stream of the user gets `read`.
    fn mark_read(&self, user: &UserId, target: &ReadTarget) -> impl Future<Output = Result<u64, EngineError>> + Send;

    /// Marks one clicked, and so read; returns the unread count.
    fn mark_clicked(&self, user: &UserId, id: EntryId) -> impl Future<Output = Result<u64, EngineError>> + Send;

    /// Deletes one; returns the unread count. Every stream gets `deleted`.
    fn delete(&self, user: &UserId, id: EntryId) -> impl Future<Output = Result<u64, EngineError>> + Send;

    /// The stored preferences, or the defaults.
    fn preferences(&self, user: &UserId) -> impl Future<Output = Result<Preferences, EngineError>> + Send;

    fn set_preferences(
        &self,
        user: &UserId,
        prefs: &Preferences,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Stores a validated notification in the topic's history (with a
    /// `topic` member naming it), trims, and fans it out to every node
    /// with a follower; in one atomic step.
    fn publish_topic(
        &self,
        topic: &TopicName,
        notification: &StoredNotification,
        key: Option<&IdempotencyKey>,
    ) -> impl Future<Output = Result<TopicPublished, EngineError>> + Send;

    /// Up to `limit` of the topic's entries after `after`, oldest first
    /// (`read` and `clicked` false, `unread` 0: a topic has no per-user state).
    fn read_topic_after(
        &self,
        topic: &TopicName,
        after: EntryId,
        limit: usize,
    ) -> impl Future<Output = Result<HistoryPage, EngineError>> + Send;

    /// The newest id the topic ever gave (zero if none): a follower whose
    /// cursor has no place for the topic starts after it.
    fn topic_start(&self, topic: &TopicName) -> impl Future<Output = Result<EntryId, EngineError>> + Send;

    /// The topic's history, newest first (`unread` 0).
    fn list_topic(
        &self,
        topic: &TopicName,
        before: Option<EntryId>,
        limit: usize,
    ) -> impl Future<Output = Result<ListPage, EngineError>> + Send;
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

    /// The same engine with its connections driven by the runtime this is
    /// awaited on (one per HTTP worker; see `RedisEngine::on_this_runtime`).
    pub async fn on_this_runtime(&self) -> Result<AnyEngine, EngineError> {
        Ok(match self {
            AnyEngine::Memory(e) => AnyEngine::Memory(e.clone()),
            AnyEngine::Redis(e) => AnyEngine::Redis(e.on_this_runtime().await?),
        })
    }
}

/// Forwards a call to whichever engine is configured.
macro_rules! delegate {
    ($self:ident, $e:ident => $call:expr) => {
        match $self {
            AnyEngine::Memory($e) => $call.await,
            AnyEngine::Redis($e) => $call.await,
        }
    };
}

impl Engine for AnyEngine {
    async fn publish(
        &self,
        user: &UserId,
        notification: &StoredNotification,
        key: Option<&IdempotencyKey>,
    ) -> Result<PublishOutcome, EngineError> {
        delegate!(self, e => e.publish(user, notification, key))
    }

    async fn read_after(&self, user: &UserId, after: EntryId, limit: usize) -> Result<HistoryPage, EngineError> {
        delegate!(self, e => e.read_after(user, after, limit))
    }

    async fn stream_start(&self, user: &UserId) -> Result<StreamStart, EngineError> {
        delegate!(self, e => e.stream_start(user))
    }

    async fn check_ready(&self) -> Result<(), EngineError> {
        delegate!(self, e => e.check_ready())
    }

    async fn list(&self, user: &UserId, query: ListQuery) -> Result<ListPage, EngineError> {
        delegate!(self, e => e.list(user, query))
    }

    async fn mark_read(&self, user: &UserId, target: &ReadTarget) -> Result<u64, EngineError> {
        delegate!(self, e => e.mark_read(user, target))
    }

    async fn mark_clicked(&self, user: &UserId, id: EntryId) -> Result<u64, EngineError> {
        delegate!(self, e => e.mark_clicked(user, id))
    }

    async fn delete(&self, user: &UserId, id: EntryId) -> Result<u64, EngineError> {
        delegate!(self, e => e.delete(user, id))
    }

    async fn preferences(&self, user: &UserId) -> Result<Preferences, EngineError> {
        delegate!(self, e => e.preferences(user))
    }

    async fn set_preferences(&self, user: &UserId, prefs: &Preferences) -> Result<(), EngineError> {
        delegate!(self, e => e.set_preferences(user, prefs))
    }

    async fn publish_topic(
        &self,
        topic: &TopicName,
        notification: &StoredNotification,
        key: Option<&IdempotencyKey>,
    ) -> Result<TopicPublished, EngineError> {
        delegate!(self, e => e.publish_topic(topic, notification, key))
    }

    async fn read_topic_after(
        &self,
        topic: &TopicName,
        after: EntryId,
        limit: usize,
    ) -> Result<HistoryPage, EngineError> {
        delegate!(self, e => e.read_topic_after(topic, after, limit))
    }

    async fn topic_start(&self, topic: &TopicName) -> Result<EntryId, EngineError> {
        delegate!(self, e => e.topic_start(topic))
    }

    async fn list_topic(
        &self,
        topic: &TopicName,
        before: Option<EntryId>,
        limit: usize,
    ) -> Result<ListPage, EngineError> {
        delegate!(self, e => e.list_topic(topic, before, limit))
    }
}

impl PushQueue for AnyEngine {
    async fn push_subscribe(
        &self,
        user: &UserId,
        subscription: &PushSubscription,
        max: usize,
    ) -> Result<usize, EngineError> {
        delegate!(self, e => e.push_subscribe(user, subscription, max))
    }

    async fn push_unsubscribe(&self, user: &UserId, endpoint: &str) -> Result<bool, EngineError> {
        delegate!(self, e => e.push_unsubscribe(user, endpoint))
    }

    async fn push_subscriptions(&self, user: &UserId) -> Result<Vec<PushSubscription>, EngineError> {
        delegate!(self, e => e.push_subscriptions(user))
    }

    async fn push_claim(
        &self,
        worker: &str,
        max: usize,
        stale: std::time::Duration,
        wait: std::time::Duration,
    ) -> Result<Vec<PushJob>, EngineError> {
        delegate!(self, e => e.push_claim(worker, max, stale, wait))
    }

    async fn push_target(&self, job: &PushJob) -> Result<PushTarget, EngineError> {
        delegate!(self, e => e.push_target(job))
    }

    async fn push_settle(&self, job: &PushJob, settlement: &PushSettlement) -> Result<(), EngineError> {
        delegate!(self, e => e.push_settle(job, settlement))
    }

    async fn push_release(&self, worker: &str, jobs: &[PushJob]) -> Result<(), EngineError> {
        delegate!(self, e => e.push_release(worker, jobs))
    }

    async fn push_dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, EngineError> {
        delegate!(self, e => e.push_dead_letters(limit))
    }

    async fn push_depth(&self) -> Result<u64, EngineError> {
        delegate!(self, e => e.push_depth())
    }
}

/// History limits, shared by both engines (`[history]` and `[publish]`).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_len: u64,
    pub max_age_ms: u64,
    pub idempotency_window_ms: u64,
}

/// An inbox is trimmed in batches: cut back to `max_len` once it holds more
/// than `max_len + len_slack()` entries, and rid of what is older than
/// `max_age` once its oldest entry is more than `max_age + age_slack_ms()`
/// old. Each trim scans the inbox's head, so a full inbox trimmed on every
/// publish cost Redis more than the append itself; with a hundredth of each
/// limit as slack, a busy user's publishes share one trim. Every path of an
/// engine (publish, stream start, list) applies the rule, so a read never
/// changes an unread count by a trim a publish would not make. The Redis
/// engine decides when the age is due from a mark that may be early, never
/// late, so it may remove an expired entry sooner than the memory engine
/// does, within the slack.
impl Retention {
    /// From `[history]` and `[publish]`; both engines keep these limits.
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Retention {
            max_len: settings.history.max_len,
            max_age_ms: settings.history.max_age.as_millis() as u64,
            idempotency_window_ms: settings.publish.idempotency_window.as_millis() as u64,
        }
    }

    /// A topic's limits: `[topics]`'s history, `[publish]`'s window. A topic
    /// is trimmed by the same batched rule as an inbox.
    pub fn for_topics(settings: &crate::config::Settings) -> Self {
        Retention {
            max_len: settings.topics.max_len,
            max_age_ms: settings.topics.max_age.as_millis() as u64,
            idempotency_window_ms: settings.publish.idempotency_window.as_millis() as u64,
        }
    }

    pub fn len_slack(&self) -> u64 {
        self.max_len / 100
    }

    pub fn age_slack_ms(&self) -> u64 {
        self.max_age_ms / 100
    }

    /// How long all of a user's state outlives their last activity (a
    /// publish to them, kept or dropped, a stream opened, new preferences):
    /// `max_age` plus twice its slack. The expiry moves at most once per
    /// slack, so every entry has aged out and been trimmed before it fires.
    pub fn expiry_ms(&self) -> u64 {
        self.max_age_ms + 2 * self.age_slack_ms()
    }
}

/// A topic's notification as stored: `{"topic":"<name>",` spliced in front
/// of the validated object's members. A topic name needs no escaping.
pub fn topic_document(topic: &TopicName, json: &str) -> String {
    let members = json.strip_prefix('{').unwrap_or(json);
    let mut out = String::with_capacity(json.len() + topic.as_str().len() + 12);
    out.push_str("{\"topic\":\"");
    out.push_str(topic.as_str());
    out.push('"');
    if !members.trim_start().starts_with('}') {
        out.push(',');
    }
    out.push_str(members);
    out
}

/// Most entries a list of unread notifications examines per call (then
/// `next` is the last one examined): an inbox read entry by entry must not
/// cost a scan of all of it. `functions.lua` has the same number.
pub const LIST_SCAN: usize = 500;
