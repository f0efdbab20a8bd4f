//! Web Push: the worker every node runs, which drains the engine's push
//! queue and sends each push to the user's devices.
//!
//! ```text
//! publish ─ engine decides, queues a PushJob (same atomic step)
//!   → worker claims it (one node at a time; see engine::push)
//!   → reads the entry and the devices; drops it if deleted (or read, for
//!     unread_after)
//!   → payload.rs: the notification as the stream shows it, within 4 KiB
//!   → sender.rs: encrypt per device, VAPID, POST to the push service
//!   → settles: sent / device gone (forgotten) / retry later / dead letter
//! ```
//!
//! A push is sent at least once: a node that dies mid-send leaves its push
//! pending, and another node takes it over after `push.visibility_timeout`.
//! A node that stops (SIGTERM) does better: it claims no more, hands back
//! what it claimed but did not start, for another node to send at once, and
//! finishes its sends in flight ([`PushDrain`]).
//! The `Topic` header (the collapse key or the entry id) and the service
//! worker's `tag` make a push sent twice show once.

pub mod encryption;
pub mod payload;
pub mod sender;

use std::{sync::Arc, time::Duration};

use tokio::sync::{Semaphore, mpsc, watch};

use self::{
    payload::PushMessage,
    sender::{SendOutcome, Sender},
};
use crate::{
    config::PushSettings,
    domain::VapidKey,
    engine::{AnyEngine, DeadLetter, PushJob, PushQueue, PushRetry, PushSettlement, push::CLAIM_WAIT},
    hub::NodeTask,
    metrics::PushOutcome,
};

/// Stops a node's push worker: see [`PushDrain::drain`].
#[derive(Clone)]
pub struct PushDrain {
    stop: Arc<watch::Sender<bool>>,
    drained: watch::Receiver<bool>,
}

impl PushDrain {
    /// Stops claiming, hands back the pushes claimed but not started, and
    /// waits up to `within` for the sends in flight to finish and settle, so
    /// none is sent again by another node. Whether it finished in time.
    pub async fn drain(&self, within: Duration) -> bool {
        let _ = self.stop.send(true);
        let mut drained = self.drained.clone();
        tokio::time::timeout(within, drained.wait_for(|done| *done)).await.is_ok()
    }
}

/// The worker of one node.
pub struct PushWorker {
    engine: AnyEngine,
    sender: Sender,
    settings: PushSettings,
    /// Its consumer name in the queue: the node id.
    name: String,
}

impl PushWorker {
    pub fn new(engine: AnyEngine, key: VapidKey, settings: &PushSettings, node_id: &str) -> anyhow::Result<Self> {
        let sender = Sender::new(key, settings.subject.clone(), settings.send_timeout)?;
        Ok(Self { engine, sender, settings: settings.clone(), name: node_id.to_owned() })
    }

    /// The worker, as a node task, and the handle that stops it: a claimer
    /// that keeps up to `push.concurrency` claimed pushes waiting, and a
    /// dispatcher that sends each on a task of its own, at most
    /// `push.concurrency` at once. With the claims ahead of the sends, a send
    /// that ends finds the next push here rather than a claim's round trips
    /// away (claiming only when a send ended left a fifth of the core idle:
    /// docs/BENCHMARKS.md, "Web Push").
    pub fn task(self) -> (NodeTask, PushDrain) {
        let (stop, stopping) = watch::channel(false);
        let (drained, drained_rx) = watch::channel(false);
        let drain = PushDrain { stop: Arc::new(stop), drained: drained_rx };
        let task = Box::pin(async move {
            // A connection driven by the runtime this task runs on.
            let engine = match self.engine.on_this_runtime().await {
                Ok(engine) => engine,
                Err(e) => {
                    tracing::error!(error = %e, "push worker cannot reach the engine; retrying on its own");
                    self.engine.clone()
                }
            };
            let worker = Arc::new(Self { engine, ..self });
            let concurrency = worker.settings.concurrency;
            let (claimed, mut waiting) = mpsc::channel(concurrency);
            let claimer = tokio::spawn(worker.clone().claim(claimed, stopping.clone()));
            let room = Arc::new(Semaphore::new(concurrency));
            let mut stop = stopping;
            let mut unsent = Vec::new();
            loop {
                let job = tokio::select! {
                    biased;
                    _ = stop.wait_for(|stop| *stop) => break,
                    job = waiting.recv() => match job {
                        Some(job) => job,
                        None => break,
                    },
                };
                // Waiting for room can take a send's whole time: a stop
                // meanwhile hands this job back rather than sending it.
                let permit = tokio::select! {
                    biased;
                    _ = stop.wait_for(|stop| *stop) => {
                        unsent.push(job);
                        break;
                    }
                    permit = room.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                };
                let worker = worker.clone();
                tokio::spawn(async move {
                    worker.run(job).await;
                    drop(permit);
                });
            }
            // Stopping. The claimer ends after its claim in progress (it
            // hands that back itself); then what waits here goes back too.
            let _ = claimer.await;
            while let Ok(job) = waiting.try_recv() {
                unsent.push(job);
            }
            worker.release(&unsent).await;
            // Every permit back: no send in flight.
            let _ = room.acquire_many(concurrency as u32).await;
            tracing::info!(handed_back = unsent.len(), "push worker stopped");
            let _ = drained.send(true);
        });
        (task, drain)
    }

    /// Hands `jobs` back to the queue; on failure they are taken over after
    /// the visibility timeout instead.
    async fn release(&self, jobs: &[PushJob]) {
        if let Err(e) = self.engine.push_release(&self.name, jobs).await {
            tracing::warn!(error = %e, jobs = jobs.len(), "pushes not handed back; another node takes them later");
        }
    }

    /// Claims pushes while there is room for them in `claimed`, until
    /// `stop`.
    async fn claim(self: Arc<Self>, claimed: mpsc::Sender<PushJob>, mut stop: watch::Receiver<bool>) {
        let metrics = crate::metrics::get();
        let mut failures = 0u32;
        let mut depth_checked = tokio::time::Instant::now();
        loop {
            // Room for one at least; as many as there is room for.
            let slot = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return,
                slot = claimed.reserve() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            let room = 1 + claimed.capacity();
            let stale = self.settings.visibility_timeout;
            // Not cancelled by `stop`: a claim cut short would leave what it
            // read pending under this node until the visibility timeout.
            let jobs = match self.engine.push_claim(&self.name, room, stale, CLAIM_WAIT).await {
                Ok(jobs) => {
                    failures = 0;
                    jobs
                }
                Err(e) => {
                    failures = (failures + 1).min(6);
                    tracing::warn!(error = %e, "push worker cannot claim pushes; retrying");
                    drop(slot);
                    tokio::time::sleep(Duration::from_millis(100 << failures)).await;
                    continue;
                }
            };
            if *stop.borrow() {
                self.release(&jobs).await;
                return;
            }
            let mut jobs = jobs.into_iter();
            match jobs.next() {
                Some(first) => slot.send(first),
                None => drop(slot),
            }
            for job in jobs {
                // Only this task sends, and it claimed no more than there
                // was room for: this never waits.
                if claimed.send(job).await.is_err() {
                    return;
                }
            }
            if depth_checked.elapsed() >= Duration::from_secs(5) {
                depth_checked = tokio::time::Instant::now();
                if let Ok(depth) = self.engine.push_depth().await {
                    metrics.push_queue_depth.set(depth as f64);
                }
            }
        }
    }

    /// Sends one job and settles it. A failure to reach the engine leaves
    /// the job pending: it is taken over after the visibility timeout.
    async fn run(&self, job: PushJob) {
        let metrics = crate::metrics::get();
        let settlement = match self.send(&job).await {
            Ok(settlement) => settlement,
            Err(e) => {
                tracing::warn!(error = %e, user = %job.user, id = %job.id, "push not sent; it stays queued");
                return;
            }
        };
        if let Err(e) = self.engine.push_settle(&job, &settlement).await {
            // Sent, not settled: it will be sent again after the visibility
            // timeout, and shown once (same Topic, same tag).
            tracing::warn!(error = %e, user = %job.user, id = %job.id, "push sent but not settled");
            metrics.engine_errors.increment(1);
        }
    }

    async fn send(&self, job: &PushJob) -> Result<PushSettlement, crate::engine::EngineError> {
        let metrics = crate::metrics::get();
        let target = self.engine.push_target(job).await?;
        let mut settlement = PushSettlement::default();
        let Some(entry) = target.entry else {
            metrics.push(PushOutcome::SkippedDeleted).increment(1);
            return Ok(settlement);
        };
        if job.unread_only && entry.read {
            metrics.push(PushOutcome::SkippedRead).increment(1);
            return Ok(settlement);
        }
        let devices: Vec<_> = match &job.endpoint {
            Some(endpoint) => target.devices.into_iter().filter(|d| &d.endpoint == endpoint).collect(),
            None => target.devices,
        };
        let message = match PushMessage::new(&entry, self.settings.ttl.as_secs()) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(user = %job.user, id = %job.id, "{e}: not pushed");
                metrics.push(PushOutcome::TooLarge).increment(devices.len() as u64);
                return Ok(settlement);
            }
        };
        let sends = devices.iter().map(|device| async {
            let started = std::time::Instant::now();
            let outcome = self.sender.send(device, &message).await;
            metrics.push_send_seconds.record(started.elapsed().as_secs_f64());
            outcome
        });
        let outcomes = futures_util::future::join_all(sends).await;
        for (device, outcome) in devices.iter().zip(outcomes) {
            let retry = |reason: String, after: Option<Duration>, settlement: &mut PushSettlement| {
                let attempt = job.attempt + 1;
                if attempt < self.settings.max_attempts {
                    metrics.push(PushOutcome::Retried).increment(1);
                    let after = after.unwrap_or_else(|| backoff(&self.settings, job.attempt));
                    tracing::debug!(user = %job.user, id = %job.id, %reason, ?after, "push to retry");
                    settlement.retries.push(PushRetry { endpoint: device.endpoint.clone(), attempt, after });
                } else {
                    metrics.push(PushOutcome::Dead).increment(1);
                    tracing::warn!(user = %job.user, id = %job.id, %reason, attempts = attempt, "push given up");
                    settlement.dead.push(self.dead_letter(job, &device.endpoint, attempt, reason));
                }
            };
            match outcome {
                SendOutcome::Sent => metrics.push(PushOutcome::Sent).increment(1),
                SendOutcome::Gone => {
                    metrics.push(PushOutcome::Gone).increment(1);
                    self.engine.push_unsubscribe(&job.user, &device.endpoint).await?;
                }
                SendOutcome::TooLarge => {
                    metrics.push(PushOutcome::TooLarge).increment(1);
                    tracing::warn!(user = %job.user, id = %job.id, "push service refused the payload as too large");
                }
                SendOutcome::Retry { after, reason } => retry(reason, after, &mut settlement),
                SendOutcome::Failed { reason } => {
                    metrics.push(PushOutcome::Dead).increment(1);
                    tracing::warn!(user = %job.user, id = %job.id, %reason, "push refused");
                    settlement.dead.push(self.dead_letter(job, &device.endpoint, job.attempt + 1, reason));
                }
            }
        }
        Ok(settlement)
    }

    fn dead_letter(&self, job: &PushJob, endpoint: &str, attempts: u32, reason: String) -> DeadLetter {
        DeadLetter {
            user: job.user.clone(),
            id: job.id,
            endpoint: endpoint.to_owned(),
            attempts,
            reason,
            at_ms: crate::clock::now_unix_ms(),
        }
    }
}

/// The delay before retry number `attempt + 1`: `retry_backoff` doubled per
/// attempt, up to `retry_max_backoff`, less a random part of up to half of
/// it, so pushes that failed together do not come back together.
fn backoff(settings: &PushSettings, attempt: u32) -> Duration {
    let full = settings.retry_backoff.saturating_mul(1 << attempt.min(20)).min(settings.retry_max_backoff);
    full.mul_f64(1.0 - rand::random::<f64>() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let settings =
            crate::config::Settings::with_overrides(&[("push.retry_backoff", "1s"), ("push.retry_max_backoff", "10s")])
                .unwrap()
                .push;
        for _ in 0..100 {
            let first = backoff(&settings, 0);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1), "{first:?}");
            let third = backoff(&settings, 2);
            assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4), "{third:?}");
            assert!(backoff(&settings, 30) <= Duration::from_secs(10));
        }
    }
}
