//! The memory engine's Web Push: each user's devices live in their inbox,
//! and the queue is in-process, with the Redis queue's semantics (a job is
//! claimed by one worker; one claimed and never settled is handed out again
//! after the stale time; delayed jobs wait for their time; dead letters are
//! kept). Like everything in this engine it does not outlive the process.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use super::{Inbox, MemoryEngine};
use crate::{
    clock::now_unix_ms,
    domain::{EntryId, Priority, PushSubscription, UserId},
    engine::{
        DeadLetter, EngineError, PushDecision, PushJob, PushPolicy, PushQueue, PushSettlement, PushTarget, SkipReason,
    },
};

/// Dead letters kept; older ones are dropped (`herald push dead-letters`
/// reads the newest). The Redis engine caps its list the same.
pub const DEAD_LETTERS_KEPT: usize = 10_000;

#[derive(Default)]
pub(super) struct Queue {
    ready: VecDeque<PushJob>,
    /// By (due unix ms, ticket number): the oldest due first.
    delayed: BTreeMap<(u64, u64), PushJob>,
    claimed: HashMap<String, (PushJob, Instant)>,
    dead: VecDeque<DeadLetter>,
    next_ticket: u64,
}

impl Queue {
    fn ticket(&mut self) -> String {
        self.next_ticket += 1;
        format!("m{}", self.next_ticket)
    }

    /// Queues a job due at `due_ms` (now or later).
    fn add(&mut self, mut job: PushJob, due_ms: u64, now_ms: u64) {
        job.ticket = self.ticket();
        if due_ms <= now_ms {
            self.ready.push_back(job);
        } else {
            self.delayed.insert((due_ms, self.next_ticket), job);
        }
    }
}

/// The queue and what wakes a worker waiting on it.
#[derive(Default)]
pub(super) struct PushState {
    queue: std::sync::Mutex<Queue>,
    added: Notify,
}

impl PushState {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The publish path's decision for one stored entry, by the rules of
/// `functions.lua`'s `push_decision`; queues the job when it says so.
/// Called under the inboxes lock, with how many streams the entry reached.
pub(super) fn decide(
    engine: &MemoryEngine,
    user: &UserId,
    inbox: &Inbox,
    id: EntryId,
    kind: &str,
    priority: Priority,
    streams_reached: usize,
) -> PushDecision {
    let policy = engine.inner.push_policy;
    let delay_ms = match policy {
        PushPolicy::Off => return PushDecision::None,
        PushPolicy::Offline if streams_reached > 0 => return PushDecision::Skipped(SkipReason::Online),
        PushPolicy::Offline => 0,
        PushPolicy::UnreadAfter { delay_ms } => delay_ms,
    };
    if inbox.devices.is_empty() {
        return PushDecision::Skipped(SkipReason::NoSubscriptions);
    }
    if let Some(prefs) = &inbox.preferences {
        if !prefs.channels_for(kind).push {
            return PushDecision::Skipped(SkipReason::Preferences);
        }
        if priority != Priority::High && prefs.in_quiet_hours(jiff::Timestamp::now()) {
            return PushDecision::Skipped(SkipReason::QuietHours);
        }
    }
    let job = PushJob {
        ticket: String::new(),
        user: user.clone(),
        id,
        attempt: 0,
        endpoint: None,
        unread_only: matches!(policy, PushPolicy::UnreadAfter { .. }),
    };
    let now = now_unix_ms();
    engine.inner.push.queue().add(job, now + delay_ms, now);
    engine.inner.push.added.notify_waiters();
    PushDecision::Queued
}

impl PushQueue for MemoryEngine {
    async fn push_subscribe(
        &self,
        user: &UserId,
        subscription: &PushSubscription,
        max: usize,
    ) -> Result<usize, EngineError> {
        let mut users = self.users();
        let inbox = users.inbox(user);
        inbox.devices.retain(|d| d.endpoint != subscription.endpoint);
        inbox.devices.push(subscription.clone());
        if inbox.devices.len() > max {
            let over = inbox.devices.len() - max;
            inbox.devices.drain(..over);
        }
        inbox.active_ms = now_unix_ms();
        Ok(inbox.devices.len())
    }

    async fn push_unsubscribe(&self, user: &UserId, endpoint: &str) -> Result<bool, EngineError> {
        let mut users = self.users();
        let Some(inbox) = users.inboxes.get_mut(user) else { return Ok(false) };
        let before = inbox.devices.len();
        inbox.devices.retain(|d| d.endpoint != endpoint);
        Ok(inbox.devices.len() < before)
    }

    async fn push_subscriptions(&self, user: &UserId) -> Result<Vec<PushSubscription>, EngineError> {
        Ok(self.users().inboxes.get(user).map(|i| i.devices.clone()).unwrap_or_default())
    }

    async fn push_claim(
        &self,
        _worker: &str,
        max: usize,
        stale: Duration,
        wait: Duration,
    ) -> Result<Vec<PushJob>, EngineError> {
        let state = &self.inner.push;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so an add between the look and the
            // wait still wakes this worker.
            let added = state.added.notified();
            let next_due = {
                let mut queue = state.queue();
                let now = now_unix_ms();
                while let Some(entry) = queue.delayed.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let job = entry.remove();
                    queue.ready.push_back(job);
                }
                let stale_tickets: Vec<String> =
                    queue.claimed.iter().filter(|(_, (_, at))| at.elapsed() >= stale).map(|(t, _)| t.clone()).collect();
                for ticket in stale_tickets {
                    let (job, _) = queue.claimed.remove(&ticket).expect("listed above");
                    queue.ready.push_back(job);
                }
                let take = queue.ready.len().min(max);
                let jobs: Vec<PushJob> = queue.ready.drain(..take).collect();
                if !jobs.is_empty() {
                    for job in &jobs {
                        queue.claimed.insert(job.ticket.clone(), (job.clone(), Instant::now()));
                    }
                    return Ok(jobs);
                }
                queue.delayed.first_key_value().map(|((due, _), _)| *due)
            };
            let until_due = next_due.map(|due| Duration::from_millis(due.saturating_sub(now_unix_ms())));
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let sleep = until_due.map_or(deadline - now, |d| d.min(deadline - now));
            let _ = tokio::time::timeout(sleep, added).await;
        }
    }

    async fn push_target(&self, job: &PushJob) -> Result<PushTarget, EngineError> {
        let users = self.users();
        let Some(inbox) = users.inboxes.get(&job.user) else { return Ok(PushTarget::default()) };
        let entry = inbox.position(job.id).ok().map(|i| inbox.entries[i].clone());
        Ok(PushTarget { entry, devices: inbox.devices.clone() })
    }

    async fn push_settle(&self, job: &PushJob, settlement: &PushSettlement) -> Result<(), EngineError> {
        let mut queue = self.inner.push.queue();
        // A job settled after it went stale and was handed out again is
        // still settled once: the other claim finds no ticket to settle.
        if queue.claimed.remove(&job.ticket).is_none() {
            return Ok(());
        }
        let now = now_unix_ms();
        for retry in &settlement.retries {
            let again = PushJob { attempt: retry.attempt, endpoint: Some(retry.endpoint.clone()), ..job.clone() };
            queue.add(again, now + retry.after.as_millis() as u64, now);
        }
        for dead in &settlement.dead {
            if queue.dead.len() == DEAD_LETTERS_KEPT {
                queue.dead.pop_front();
            }
            queue.dead.push_back(dead.clone());
        }
        drop(queue);
        if !settlement.retries.is_empty() {
            self.inner.push.added.notify_waiters();
        }
        Ok(())
    }

    async fn push_release(&self, _worker: &str, jobs: &[PushJob]) -> Result<(), EngineError> {
        {
            let mut queue = self.inner.push.queue();
            // Back in front, in their order: they were next.
            for job in jobs.iter().rev() {
                if let Some((job, _)) = queue.claimed.remove(&job.ticket) {
                    queue.ready.push_front(job);
                }
            }
        }
        self.inner.push.added.notify_waiters();
        Ok(())
    }

    async fn push_dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, EngineError> {
        Ok(self.inner.push.queue().dead.iter().rev().take(limit).cloned().collect())
    }

    async fn push_depth(&self) -> Result<u64, EngineError> {
        let queue = self.inner.push.queue();
        Ok((queue.ready.len() + queue.delayed.len() + queue.claimed.len()) as u64)
    }
}
