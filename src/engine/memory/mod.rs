//! The embedded engine: one process, no Redis, the same semantics.
//!
//! All users' inboxes live in one map behind a std mutex. Publishing stores,
//! trims and delivers to the hub under that lock, so a user's entries reach
//! their streams in id order, as Redis pub/sub guarantees for the other engine.
//!
//! A user inactive for [`Retention::expiry_ms`] (no publish to them, no
//! stream opened, no new preferences) is forgotten whole by the pruning task
//! ([`MemoryEngine::pruner`]), as their keys expire in Redis; so is a topic
//! nobody published to for its own expiry. Topics live in the same map's
//! lock, so a topic's entries reach its followers in id order too.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

mod push;

pub use self::push::DEAD_LETTERS_KEPT;
use super::{
    Engine, EngineError, HistoryPage, LIST_SCAN, ListPage, ListQuery, PublishOutcome, Published, PushDecision,
    PushPolicy, ReadTarget, Reset, Retention, SkipReason, StoredEntry, StreamStart, TopicPublished, topic_document,
};
use crate::{
    clock::now_unix_ms,
    domain::{
        EntryId, IdempotencyKey, InboxChange, LiveEvent, Preferences, PushSubscription, StoredNotification, TopicName,
        UserId,
    },
    hub::{Hub, NodeTask},
};

#[derive(Clone)]
pub struct MemoryEngine {
    inner: Arc<Inner>,
}

struct Inner {
    users: Mutex<Users>,
    hub: Arc<Hub>,
    retention: Retention,
    topic_retention: Retention,
    push_policy: PushPolicy,
    push: push::PushState,
}

#[derive(Default)]
struct Users {
    inboxes: HashMap<UserId, Inbox>,
    topics: HashMap<TopicName, TopicLog>,
    /// The newest id of every inbox pruned so far: a user's new inbox starts
    /// after it, so their ids keep growing across a prune even if the clock
    /// stepped back (a client's old cursor is never ahead of new entries).
    id_floor: EntryId,
}

impl Users {
    /// The user's inbox, made (starting after the id floor) if they have none.
    fn inbox(&mut self, user: &UserId) -> &mut Inbox {
        let floor = self.id_floor;
        self.inboxes.entry(user.clone()).or_insert_with(|| Inbox { last_id: floor, ..Inbox::default() })
    }
}

/// One topic's history. Like an inbox without read state: ids only grow,
/// and a cursor before `trimmed_up_to` gets `reset`.
#[derive(Default)]
struct TopicLog {
    entries: VecDeque<StoredEntry>,
    last_id: EntryId,
    trimmed_up_to: Option<EntryId>,
    idempotency: HashMap<String, (EntryId, Instant)>,
    /// When the topic was last published to (unix ms).
    active_ms: u64,
}

impl TopicLog {
    fn next_id(&mut self, now_ms: u64) -> EntryId {
        self.last_id = next_after(self.last_id, now_ms);
        self.last_id
    }

    /// The inboxes' batched rule.
    fn trim(&mut self, retention: &Retention, now_ms: u64) {
        trim(&mut self.entries, retention, now_ms, |e| self.trimmed_up_to = Some(e.id));
    }
}

/// Retention's batched rule (see [`Retention::len_slack`]) over a history,
/// oldest first; `removed` is told of each entry taken off the front. The
/// Redis engine applies it from a mark that may be early, so it may remove
/// an expired entry sooner than this, within the slack.
fn trim(entries: &mut VecDeque<StoredEntry>, retention: &Retention, now_ms: u64, mut removed: impl FnMut(StoredEntry)) {
    if entries.len() as u64 > retention.max_len + retention.len_slack() {
        while entries.len() as u64 > retention.max_len {
            removed(entries.pop_front().expect("longer than max_len"));
        }
    }
    let cutoff = now_ms.saturating_sub(retention.max_age_ms);
    let due = cutoff.saturating_sub(retention.age_slack_ms());
    if entries.front().is_some_and(|e| e.id.ms < due) {
        while entries.front().is_some_and(|e| e.id.ms < cutoff) {
            removed(entries.pop_front().expect("a front was seen"));
        }
    }
}

/// Like Redis `XADD *`: the clock's millisecond, or the last one plus a
/// sequence number if the clock has not moved on (or went back).
fn next_after(last: EntryId, now_ms: u64) -> EntryId {
    if now_ms > last.ms { EntryId::new(now_ms, 0) } else { EntryId::new(last.ms, last.seq + 1) }
}

#[derive(Default)]
struct Inbox {
    entries: VecDeque<StoredEntry>,
    /// Newest id ever given; ids only grow, even across trims.
    last_id: EntryId,
    /// Newest id removed by trimming: a cursor before it gets `reset`.
    trimmed_up_to: Option<EntryId>,
    unread: u64,
    idempotency: HashMap<String, (Published, Instant)>,
    preferences: Option<Preferences>,
    /// Web Push devices, oldest first.
    devices: Vec<PushSubscription>,
    /// When the user was last active (unix ms): the pruner forgets them
    /// [`Retention::expiry_ms`] after it.
    active_ms: u64,
}

impl Inbox {
    fn next_id(&mut self, now_ms: u64) -> EntryId {
        self.last_id = next_after(self.last_id, now_ms);
        self.last_id
    }

    fn position(&self, id: EntryId) -> Result<usize, EngineError> {
        self.entries.binary_search_by_key(&id, |e| e.id).map_err(|_| EngineError::NotFound(id.to_string()))
    }

    /// Marks entries read; returns the ids that were unread.
    fn mark_read(&mut self, positions: impl IntoIterator<Item = usize>) -> Vec<EntryId> {
        let mut changed = Vec::new();
        for i in positions {
            let entry = &mut self.entries[i];
            if !entry.read {
                entry.read = true;
                changed.push(entry.id);
            }
        }
        self.unread -= changed.len() as u64;
        changed
    }

    /// The batched rule ([`trim`]), keeping the unread count in step.
    fn trim(&mut self, retention: &Retention, now_ms: u64) {
        let Inbox { entries, unread, trimmed_up_to, .. } = self;
        trim(entries, retention, now_ms, |e| {
            if !e.read {
                *unread -= 1;
            }
            *trimmed_up_to = Some(e.id);
        });
    }
}

impl MemoryEngine {
    /// `retention` for inboxes, `topic_retention` for topics.
    pub fn new(hub: Arc<Hub>, retention: Retention, topic_retention: Retention, push_policy: PushPolicy) -> Self {
        Self {
            inner: Arc::new(Inner {
                users: Mutex::new(Users::default()),
                hub,
                retention,
                topic_retention,
                push_policy,
                push: push::PushState::default(),
            }),
        }
    }

    /// Forgets every user inactive for [`Retention::expiry_ms`] by `now_ms`,
    /// and every topic not published to for its own; returns how many users.
    pub fn prune(&self, now_ms: u64) -> usize {
        let expiry = self.inner.retention.expiry_ms();
        let topic_expiry = self.inner.topic_retention.expiry_ms();
        let mut users = self.users();
        let Users { inboxes, topics, id_floor } = &mut *users;
        let before = inboxes.len();
        inboxes.retain(|_, inbox| {
            let keep = now_ms < inbox.active_ms.saturating_add(expiry);
            if !keep {
                *id_floor = (*id_floor).max(inbox.last_id);
            }
            keep
        });
        topics.retain(|_, log| {
            let keep = now_ms < log.active_ms.saturating_add(topic_expiry);
            if !keep {
                *id_floor = (*id_floor).max(log.last_id);
            }
            keep
        });
        before - inboxes.len()
    }

    /// Users this engine holds anything of (history, read state, preferences).
    pub fn users_held(&self) -> usize {
        self.users().inboxes.len()
    }

    /// The pruning task: a sweep every age slack (the shorter of the
    /// inboxes' and the topics', between 100 ms and a minute). One sweep
    /// walks every user and topic under the engine's lock, a few nanoseconds
    /// each, so a minute apart it costs little even with a million users,
    /// and nothing outlives its expiry by more than a minute. Ends when the
    /// engine is gone.
    pub fn pruner(&self) -> NodeTask {
        let slack = self.inner.retention.age_slack_ms().min(self.inner.topic_retention.age_slack_ms());
        let every = Duration::from_millis(slack).clamp(Duration::from_millis(100), Duration::from_secs(60));
        let engine: Weak<Inner> = Arc::downgrade(&self.inner);
        Box::pin(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = engine.upgrade() else { return };
                MemoryEngine { inner }.prune(now_unix_ms());
            }
        })
    }

    /// Tells the user's streams of a state change (`read`, `deleted`), as the
    /// Redis engine does through the user's channel. Called under the
    /// inboxes lock, so changes reach the streams in the order they happened.
    fn sync(&self, user: &UserId, change: InboxChange, payload: &str, unread: u64) {
        self.inner.hub.deliver(user.as_str(), LiveEvent::Change { change, payload: payload.as_bytes(), unread });
    }

    fn users(&self) -> std::sync::MutexGuard<'_, Users> {
        self.inner.users.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Engine for MemoryEngine {
    async fn publish(
        &self,
        user: &UserId,
        notification: &StoredNotification,
        key: Option<&IdempotencyKey>,
    ) -> Result<PublishOutcome, EngineError> {
        let stored = notification.json.as_str();
        let retention = &self.inner.retention;
        let now = now_unix_ms();
        let mut users = self.users();
        let inbox = users.inbox(user);
        // A user who is sent notifications is active, kept or not.
        inbox.active_ms = now;
        if let Some(prefs) = &inbox.preferences
            && !prefs.channels_for(&notification.kind).in_app
        {
            return Ok(PublishOutcome::Dropped);
        }
        if let Some(key) = key {
            let window = Duration::from_millis(retention.idempotency_window_ms);
            inbox.idempotency.retain(|_, (_, at)| at.elapsed() < window);
            if let Some((first, _)) = inbox.idempotency.get(key.as_str()) {
                let push = match first.push {
                    PushDecision::None => PushDecision::None,
                    _ => PushDecision::Skipped(SkipReason::Duplicate),
                };
                return Ok(PublishOutcome::Stored(Published { duplicate: true, push, ..*first }));
            }
        }
        let id = inbox.next_id(now);
        inbox.entries.push_back(StoredEntry { id, body: stored.to_owned(), read: false, clicked: false });
        inbox.unread += 1;
        inbox.trim(retention, now);
        let unread = inbox.unread;
        // Delivered under the lock: the next publish to this user cannot
        // overtake this one on its way to the streams.
        let reached =
            self.inner.hub.deliver(user.as_str(), LiveEvent::Notification { id, stored: stored.as_bytes(), unread });
        let push = push::decide(self, user, inbox, id, &notification.kind, notification.priority, reached);
        let published = Published { id, online: reached > 0, duplicate: false, push };
        if let Some(key) = key {
            inbox.idempotency.insert(key.as_str().to_owned(), (published, Instant::now()));
        }
        Ok(PublishOutcome::Stored(published))
    }

    async fn read_after(&self, user: &UserId, after: EntryId, limit: usize) -> Result<HistoryPage, EngineError> {
        let users = self.users();
        let Some(inbox) = users.inboxes.get(user) else { return Ok(page_after(None, after, limit)) };
        let page = page_after(Some((&inbox.entries, inbox.last_id, inbox.trimmed_up_to)), after, limit);
        Ok(HistoryPage { unread: inbox.unread, ..page })
    }

    async fn stream_start(&self, user: &UserId) -> Result<StreamStart, EngineError> {
        let mut users = self.users();
        let Some(inbox) = users.inboxes.get_mut(user) else {
            return Ok(StreamStart { last_id: EntryId::ZERO, unread: 0 });
        };
        // History trims on publish; a user who gets nothing new must still
        // not see (or count) expired entries.
        let now = now_unix_ms();
        inbox.trim(&self.inner.retention, now);
        inbox.active_ms = now;
        Ok(StreamStart { last_id: inbox.last_id, unread: inbox.unread })
    }

    async fn check_ready(&self) -> Result<(), EngineError> {
        Ok(())
    }

    async fn list(&self, user: &UserId, query: ListQuery) -> Result<ListPage, EngineError> {
        let mut users = self.users();
        let Some(inbox) = users.inboxes.get_mut(user) else { return Ok(ListPage::default()) };
        inbox.trim(&self.inner.retention, now_unix_ms());
        let end = match query.before {
            Some(before) => inbox.entries.partition_point(|e| e.id < before),
            None => inbox.entries.len(),
        };
        // The same walk as herald_list's: newest first; a list of unread
        // entries stops once it has passed as many as the inbox counts, or
        // after LIST_SCAN entries (then `next` is the last one examined).
        let (mut items, mut next) = (Vec::new(), None);
        let (mut unread_seen, mut examined) = (0, 0);
        for entry in inbox.entries.range(..end).rev() {
            if query.unread_only && unread_seen >= inbox.unread {
                break;
            }
            if !entry.read {
                unread_seen += 1;
            }
            if !query.unread_only || !entry.read {
                if items.len() == query.limit {
                    next = items.last().map(|e: &StoredEntry| e.id);
                    break;
                }
                items.push(entry.clone());
            }
            examined += 1;
            if query.unread_only && examined >= LIST_SCAN && unread_seen < inbox.unread {
                next = Some(entry.id);
                break;
            }
        }
        Ok(ListPage { items, unread: inbox.unread, next })
    }

    async fn mark_read(&self, user: &UserId, target: &ReadTarget) -> Result<u64, EngineError> {
        let mut users = self.users();
        let Some(inbox) = users.inboxes.get_mut(user) else {
            // Nothing to mark, and nothing to make for a stranger.
            return match target {
                ReadTarget::Ids(ids) => {
                    Err(EngineError::NotFound(ids.first().map(ToString::to_string).unwrap_or_default()))
                }
                ReadTarget::All => {
                    self.sync(user, InboxChange::Read, r#"{"all":true,"up_to":"0-0"}"#, 0);
                    Ok(0)
                }
            };
        };
        let payload = match target {
            ReadTarget::Ids(ids) => {
                // Every id first: an unknown one changes nothing.
                let positions = ids.iter().map(|id| inbox.position(*id)).collect::<Result<Vec<_>, _>>()?;
                let changed = inbox.mark_read(positions);
                if changed.is_empty() {
                    return Ok(inbox.unread);
                }
                ids_json(&changed)
            }
            ReadTarget::All => {
                inbox.mark_read(0..inbox.entries.len());
                let up_to = inbox.entries.back().map(|e| e.id).unwrap_or_default();
                format!(r#"{{"all":true,"up_to":"{up_to}"}}"#)
            }
        };
        let unread = inbox.unread;
        self.sync(user, InboxChange::Read, &payload, unread);
        Ok(unread)
    }

    async fn mark_clicked(&self, user: &UserId, id: EntryId) -> Result<u64, EngineError> {
        let mut users = self.users();
        let inbox = users.inboxes.get_mut(user).ok_or_else(|| EngineError::NotFound(id.to_string()))?;
        let i = inbox.position(id)?;
        inbox.entries[i].clicked = true;
        let changed = inbox.mark_read([i]);
        let unread = inbox.unread;
        if !changed.is_empty() {
            self.sync(user, InboxChange::Read, &ids_json(&changed), unread);
        }
        Ok(unread)
    }

    async fn delete(&self, user: &UserId, id: EntryId) -> Result<u64, EngineError> {
        let mut users = self.users();
        let inbox = users.inboxes.get_mut(user).ok_or_else(|| EngineError::NotFound(id.to_string()))?;
        let i = inbox.position(id)?;
        let removed = inbox.entries.remove(i).expect("position is in range");
        if !removed.read {
            inbox.unread -= 1;
        }
        let unread = inbox.unread;
        self.sync(user, InboxChange::Deleted, &ids_json(&[id]), unread);
        Ok(unread)
    }

    async fn preferences(&self, user: &UserId) -> Result<Preferences, EngineError> {
        Ok(self.users().inboxes.get(user).and_then(|i| i.preferences.clone()).unwrap_or_default())
    }

    async fn set_preferences(&self, user: &UserId, prefs: &Preferences) -> Result<(), EngineError> {
        let mut users = self.users();
        let inbox = users.inbox(user);
        inbox.preferences = Some(prefs.clone());
        inbox.active_ms = now_unix_ms();
        Ok(())
    }

    async fn publish_topic(
        &self,
        topic: &TopicName,
        notification: &StoredNotification,
        key: Option<&IdempotencyKey>,
    ) -> Result<TopicPublished, EngineError> {
        let retention = &self.inner.topic_retention;
        let now = now_unix_ms();
        let mut users = self.users();
        let floor = users.id_floor;
        let log =
            users.topics.entry(topic.clone()).or_insert_with(|| TopicLog { last_id: floor, ..TopicLog::default() });
        log.active_ms = now;
        if let Some(key) = key {
            let window = Duration::from_millis(retention.idempotency_window_ms);
            log.idempotency.retain(|_, (_, at)| at.elapsed() < window);
            if let Some((id, _)) = log.idempotency.get(key.as_str()) {
                return Ok(TopicPublished { id: *id, duplicate: true });
            }
        }
        let id = log.next_id(now);
        let body = topic_document(topic, &notification.json);
        // Delivered under the lock: the next publish to this topic cannot
        // overtake this one on its way to the followers.
        self.inner.hub.deliver_topic(topic.as_str(), id, body.as_bytes());
        log.entries.push_back(StoredEntry { id, body, read: false, clicked: false });
        log.trim(retention, now);
        if let Some(key) = key {
            log.idempotency.insert(key.as_str().to_owned(), (id, Instant::now()));
        }
        Ok(TopicPublished { id, duplicate: false })
    }

    async fn read_topic_after(
        &self,
        topic: &TopicName,
        after: EntryId,
        limit: usize,
    ) -> Result<HistoryPage, EngineError> {
        let users = self.users();
        let log = users.topics.get(topic);
        Ok(page_after(log.map(|l| (&l.entries, l.last_id, l.trimmed_up_to)), after, limit))
    }

    async fn topic_start(&self, topic: &TopicName) -> Result<EntryId, EngineError> {
        let mut users = self.users();
        let Some(log) = users.topics.get_mut(topic) else { return Ok(EntryId::ZERO) };
        log.trim(&self.inner.topic_retention, now_unix_ms());
        Ok(log.last_id)
    }

    async fn list_topic(
        &self,
        topic: &TopicName,
        before: Option<EntryId>,
        limit: usize,
    ) -> Result<ListPage, EngineError> {
        let mut users = self.users();
        let Some(log) = users.topics.get_mut(topic) else { return Ok(ListPage::default()) };
        log.trim(&self.inner.topic_retention, now_unix_ms());
        let end = before.map_or(log.entries.len(), |before| log.entries.partition_point(|e| e.id < before));
        let mut items: Vec<StoredEntry> = log.entries.range(..end).rev().take(limit + 1).cloned().collect();
        let next = (items.len() > limit).then(|| {
            items.truncate(limit);
            items.last().map(|e| e.id)
        });
        Ok(ListPage { items, unread: 0, next: next.flatten() })
    }
}

/// Up to `limit` entries after `after` of a history (its entries, newest id
/// ever given, newest id trimmed), with the `reset` a replay from there
/// needs; `unread` 0. `None` is a history that does not exist (never
/// written, or pruned): any cursor but the zero one is ahead of it, as for
/// a Redis stream that is gone. Inboxes and topics replay alike.
fn page_after(
    history: Option<(&VecDeque<StoredEntry>, EntryId, Option<EntryId>)>,
    after: EntryId,
    limit: usize,
) -> HistoryPage {
    let Some((kept, last_id, trimmed_up_to)) = history else {
        let reset = (after > EntryId::ZERO).then_some(Reset::CursorAhead { newest: EntryId::ZERO });
        return HistoryPage { reset, ..HistoryPage::default() };
    };
    let trimmed = trimmed_up_to.is_some_and(|t| after < t);
    let start = if trimmed { 0 } else { kept.partition_point(|e| e.id <= after) };
    let entries: Vec<StoredEntry> = kept.iter().skip(start).take(limit).cloned().collect();
    let reset = if trimmed {
        Some(Reset::HistoryTrimmed)
    } else if entries.is_empty() && after > last_id {
        Some(Reset::CursorAhead { newest: last_id })
    } else {
        None
    };
    HistoryPage { reset, entries, unread: 0 }
}

/// `{"ids":["1-0",...]}`, the payload of `read` and `deleted`.
fn ids_json(ids: &[EntryId]) -> String {
    let quoted: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
    format!(r#"{{"ids":[{}]}}"#, quoted.join(","))
}
