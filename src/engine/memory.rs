//! The embedded engine: one process, no Redis, the same semantics.
//!
//! All users' inboxes live in one map behind a std mutex. Publishing stores,
//! trims and delivers to the hub under that lock, so a user's entries reach
//! their streams in id order, as Redis pub/sub guarantees for the other engine.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{Engine, EngineError, HistoryPage, Published, Retention, StoredEntry, StreamStart};
use crate::{
    domain::{EntryId, IdempotencyKey, UserId},
    hub::Hub,
    stream::frame,
};

#[derive(Clone)]
pub struct MemoryEngine {
    inner: Arc<Inner>,
}

struct Inner {
    inboxes: Mutex<HashMap<UserId, Inbox>>,
    hub: Arc<Hub>,
    retention: Retention,
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
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Inbox {
    /// Like Redis `XADD *`: the clock's millisecond, or the last one plus a
    /// sequence number if the clock has not moved on (or went back).
    fn next_id(&mut self, now_ms: u64) -> EntryId {
        self.last_id = if now_ms > self.last_id.ms {
            EntryId::new(now_ms, 0)
        } else {
            EntryId::new(self.last_id.ms, self.last_id.seq + 1)
        };
        self.last_id
    }

    fn remove_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            if !e.read {
                self.unread -= 1;
            }
            self.trimmed_up_to = Some(e.id);
        }
    }

    fn trim(&mut self, retention: &Retention, now_ms: u64) {
        while self.entries.len() as u64 > retention.max_len {
            self.remove_front();
        }
        let cutoff = now_ms.saturating_sub(retention.max_age_ms);
        while self.entries.front().is_some_and(|e| e.id.ms < cutoff) {
            self.remove_front();
        }
    }
}

impl MemoryEngine {
    pub fn new(hub: Arc<Hub>, retention: Retention) -> Self {
        Self {
            inner: Arc::new(Inner {
                inboxes: Mutex::new(HashMap::new()),
                hub,
                retention,
            }),
        }
    }

    fn inboxes(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Inbox>> {
        self.inner.inboxes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Engine for MemoryEngine {
    async fn publish(
        &self,
        user: &UserId,
        stored: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Published, EngineError> {
        let retention = &self.inner.retention;
        let now = now_ms();
        let mut inboxes = self.inboxes();
        let inbox = inboxes.entry(user.clone()).or_default();
        if let Some(key) = key {
            let window = Duration::from_millis(retention.idempotency_window_ms);
            inbox.idempotency.retain(|_, (_, at)| at.elapsed() < window);
            if let Some((first, _)) = inbox.idempotency.get(key.as_str()) {
                return Ok(Published {
                    duplicate: true,
                    ..*first
                });
            }
        }
        let id = inbox.next_id(now);
        inbox.entries.push_back(StoredEntry {
            id,
            body: stored.to_owned(),
            read: false,
            clicked: false,
        });
        inbox.unread += 1;
        inbox.trim(retention, now);
        let unread = inbox.unread;
        // Delivered under the lock: the next publish to this user cannot
        // overtake this one on its way to the streams.
        let reached = self.inner.hub.deliver(user.as_str(), || {
            frame::live_notification(id, stored.as_bytes(), unread)
        });
        let published = Published {
            id,
            online: reached > 0,
            duplicate: false,
        };
        if let Some(key) = key {
            inbox
                .idempotency
                .insert(key.as_str().to_owned(), (published, Instant::now()));
        }
        Ok(published)
    }

    async fn read_after(
        &self,
        user: &UserId,
        after: EntryId,
        limit: usize,
    ) -> Result<HistoryPage, EngineError> {
        let inboxes = self.inboxes();
        let Some(inbox) = inboxes.get(user) else {
            return Ok(HistoryPage::default());
        };
        let reset = inbox.trimmed_up_to.is_some_and(|t| after < t);
        let start = if reset {
            0
        } else {
            inbox.entries.partition_point(|e| e.id <= after)
        };
        let entries = inbox
            .entries
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect();
        Ok(HistoryPage { reset, entries })
    }

    async fn stream_start(&self, user: &UserId) -> Result<StreamStart, EngineError> {
        let inboxes = self.inboxes();
        Ok(inboxes
            .get(user)
            .map(|i| StreamStart {
                last_id: i.last_id,
                unread: i.unread,
            })
            .unwrap_or(StreamStart {
                last_id: EntryId::ZERO,
                unread: 0,
            }))
    }

    async fn check_ready(&self) -> Result<(), EngineError> {
        Ok(())
    }
}
