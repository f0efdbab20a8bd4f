//! Web Push in the engines: each user's devices, the decision a publish
//! makes, and the durable queue the push workers drain.
//!
//! A publish decides, in the same atomic step that stores the notification,
//! whether it is to be pushed ([`PushDecision`]), by the same rules on both
//! publish paths: push is on (a VAPID key is configured), the user has a
//! device, the category allows `push`, it is outside the user's quiet hours
//! (unless `priority: "high"`), and the user is not looking ([`PushPolicy`]).
//! A queued push is a [`PushJob`] naming the user and the entry, not the
//! notification itself: the worker reads the entry when it sends, so a
//! notification deleted (or, with `unread_after`, read) meanwhile is not
//! pushed.
//!
//! The queue hands each job to one worker at a time. A job a worker claimed
//! and never settled (the node died mid-send) is handed to another after
//! `push.visibility_timeout`; so a push may be sent twice, never lost, and
//! the `Topic` header and the notification's tag make the device show it
//! once.

use std::{future::Future, time::Duration};

use crate::{
    config::{PushWhen, Settings},
    domain::{EntryId, PushSubscription, UserId},
    engine::{EngineError, StoredEntry},
};

/// Longest a worker's claim waits for new pushes before it looks again for
/// delayed ones that came due (so a delay is kept to within about this).
pub const CLAIM_WAIT: Duration = Duration::from_millis(500);

/// When a publish queues a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushPolicy {
    /// No VAPID key: push is off, every result says `"push": "none"`.
    Off,
    /// Queued now, if no node held a stream of the user at publish time.
    Offline,
    /// Queued for `delay` later, whether or not the user was looking; sent
    /// then only if the notification is still unread.
    UnreadAfter { delay_ms: u64 },
}

impl PushPolicy {
    /// From `[push]`; `Off` unless a VAPID key is configured.
    pub fn from_settings(settings: &Settings) -> Self {
        if !settings.push.enabled() {
            return PushPolicy::Off;
        }
        match settings.push.when {
            PushWhen::Offline => PushPolicy::Offline,
            PushWhen::UnreadAfter => PushPolicy::UnreadAfter { delay_ms: settings.push.delay.as_millis() as u64 },
        }
    }
}

/// What one publish did about Web Push for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushDecision {
    /// Push is off on this deployment.
    None,
    Queued,
    Skipped(SkipReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A node held a stream of the user (`push.when = "offline"`).
    Online,
    /// The user has no push subscription.
    NoSubscriptions,
    /// The category's `push` preference is off.
    Preferences,
    /// Inside the user's quiet hours, and not `priority: "high"`.
    QuietHours,
    /// The idempotency key was seen before: nothing new was stored.
    Duplicate,
}

impl PushDecision {
    /// The publish result's `push` field.
    pub fn as_str(self) -> &'static str {
        match self {
            PushDecision::None => "none",
            PushDecision::Queued => "queued",
            PushDecision::Skipped(_) => "skipped",
        }
    }

    /// The publish result's `push_skipped` field.
    pub fn skip_reason(self) -> Option<&'static str> {
        match self {
            PushDecision::Skipped(reason) => Some(reason.as_str()),
            _ => None,
        }
    }
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Online => "online",
            SkipReason::NoSubscriptions => "no_subscriptions",
            SkipReason::Preferences => "preferences",
            SkipReason::QuietHours => "quiet_hours",
            SkipReason::Duplicate => "duplicate",
        }
    }

    /// The reason a publish function returned.
    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Online, Self::NoSubscriptions, Self::Preferences, Self::QuietHours, Self::Duplicate]
            .into_iter()
            .find(|r| r.as_str() == raw)
    }
}

/// One push to send: a user's notification, to all of their devices or, on
/// a retry, to the one that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushJob {
    /// The queue's own handle on the job, for [`PushQueue::push_settle`].
    pub ticket: String,
    pub user: UserId,
    pub id: EntryId,
    /// Sends tried before this one (0 for a new push).
    pub attempt: u32,
    /// `None`: every device of the user. `Some`: a retry to this endpoint.
    pub endpoint: Option<String>,
    /// Send only if the notification is still unread (`unread_after`).
    pub unread_only: bool,
}

/// What a worker needs to send a job: the entry (if still in history) and
/// the user's devices.
#[derive(Debug, Clone, Default)]
pub struct PushTarget {
    pub entry: Option<StoredEntry>,
    pub devices: Vec<PushSubscription>,
}

/// A push to try again later, to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRetry {
    pub endpoint: String,
    /// The attempt the retry will be (the failed one plus one).
    pub attempt: u32,
    pub after: Duration,
}

/// A push given up on: kept in the dead-letter list for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub user: UserId,
    pub id: EntryId,
    pub endpoint: String,
    pub attempts: u32,
    /// The last failure, e.g. `HTTP 503` or `timeout`.
    pub reason: String,
    /// When it was given up on (unix ms).
    pub at_ms: u64,
}

/// How a claimed job ended: it leaves the queue, and any retries and dead
/// letters take its place, in one step.
#[derive(Debug, Clone, Default)]
pub struct PushSettlement {
    pub retries: Vec<PushRetry>,
    pub dead: Vec<DeadLetter>,
}

/// The push side of an engine: devices and the queue.
pub trait PushQueue: Send + Sync {
    /// Stores a device (replacing the one with the same endpoint, which
    /// becomes the newest) and drops the oldest past `max`; returns how many
    /// the user has.
    fn push_subscribe(
        &self,
        user: &UserId,
        subscription: &PushSubscription,
        max: usize,
    ) -> impl Future<Output = Result<usize, EngineError>> + Send;

    /// Removes a device; whether it was there.
    fn push_unsubscribe(&self, user: &UserId, endpoint: &str)
    -> impl Future<Output = Result<bool, EngineError>> + Send;

    /// The user's devices, oldest first.
    fn push_subscriptions(
        &self,
        user: &UserId,
    ) -> impl Future<Output = Result<Vec<PushSubscription>, EngineError>> + Send;

    /// Up to `max` jobs for `worker`: those whose delay has passed, those
    /// another worker claimed more than `stale` ago and never settled, and
    /// new ones, waiting up to `wait` when there are none.
    fn push_claim(
        &self,
        worker: &str,
        max: usize,
        stale: Duration,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<PushJob>, EngineError>> + Send;

    /// The entry and the devices a job is for.
    fn push_target(&self, job: &PushJob) -> impl Future<Output = Result<PushTarget, EngineError>> + Send;

    /// Ends a claimed job, queueing its retries and dead letters.
    fn push_settle(
        &self,
        job: &PushJob,
        settlement: &PushSettlement,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Hands jobs `worker` claimed but will not send (it is stopping) back to
    /// the queue, for any worker to claim at once rather than after the
    /// visibility timeout.
    fn push_release(&self, worker: &str, jobs: &[PushJob]) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// The newest dead letters, newest first.
    fn push_dead_letters(&self, limit: usize) -> impl Future<Output = Result<Vec<DeadLetter>, EngineError>> + Send;

    /// Jobs waiting or in flight (queued, delayed and claimed).
    fn push_depth(&self) -> impl Future<Output = Result<u64, EngineError>> + Send;
}
