//! The Redis engine's Web Push: devices in `herald:{u:<user>}:push`, and
//! the queue in `herald:{push}:…` (`functions.lua` lists them all).
//!
//! The queue is a stream read through the consumer group `herald-push`,
//! one consumer per node: `XREADGROUP` hands each push to one node, the
//! push stays pending until `herald_push_settle` acknowledges it, and a
//! push pending longer than the stale time (its node died mid-send) is
//! taken over by another node with `XAUTOCLAIM`. Delayed pushes
//! (`unread_after`, retries) wait in a sorted set until
//! `herald_push_promote` moves them into the stream.
//!
//! The blocking `XREADGROUP` runs on a connection of its own from a small
//! pool: on the shared multiplexed connection it would hold up every
//! command pipelined behind it.

use std::time::Duration;

use redis::{
    AsyncCommands as _, Value,
    streams::{StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply},
};

use super::{RedisEngine, keys, parse_id, unavailable, user_base};
use crate::{
    domain::{PushSubscription, UserId},
    engine::{DeadLetter, EngineError, PushJob, PushQueue, PushSettlement, PushTarget, StoredEntry},
};

/// Delayed pushes moved into the queue per claim.
const PROMOTE_BATCH: usize = 100;

/// A blocking read waits at most this long past its own `BLOCK` for the
/// reply before the connection is deemed dead.
const BLOCK_MARGIN: Duration = Duration::from_secs(5);

/// The pool the push worker's blocking reads use: one connection per
/// worker, each allowed to wait out its `BLOCK` (the default response
/// timeout is shorter than a block).
pub(super) fn blocking_pool(url: &str, longest_block: Duration) -> anyhow::Result<deadpool_redis::Pool> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(longest_block + BLOCK_MARGIN));
    let manager = deadpool_redis::Manager::new_with_config(url, config)?;
    Ok(deadpool_redis::Pool::builder(manager)
        .max_size(2)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .build()?)
}

/// A stream entry's field as text ("" when absent).
fn field(entry: &StreamId, name: &str) -> String {
    match entry.map.get(name) {
        Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        Some(Value::Int(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// A queue entry as a job; `None` for one that is not Herald's (another
/// client's XADD), which is acknowledged and dropped.
fn job_of(entry: &StreamId) -> Option<PushJob> {
    let user = UserId::parse(&field(entry, "u")).ok()?;
    let id = field(entry, "id").parse().ok()?;
    let endpoint = field(entry, "e");
    Some(PushJob {
        ticket: entry.id.clone(),
        user,
        id,
        attempt: field(entry, "a").parse().unwrap_or(0),
        endpoint: (!endpoint.is_empty()).then_some(endpoint),
        unread_only: field(entry, "c") == "1",
    })
}

fn is_no_group(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

impl RedisEngine {
    /// Readies the queue for this node's worker: makes the consumer group
    /// (and the stream), reading from its start so nothing queued before is
    /// skipped. Already there is fine.
    pub async fn prepare_push_queue(&self) -> Result<(), EngineError> {
        let mut conn = self.inner.commands.get();
        let made: redis::RedisResult<()> = conn.xgroup_create_mkstream(keys::PUSH_QUEUE, keys::PUSH_GROUP, "0").await;
        match made {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(unavailable(e)),
            _ => Ok(()),
        }
    }

    async fn claim_once(
        &self,
        worker: &str,
        max: usize,
        stale: Duration,
        wait: Duration,
    ) -> redis::RedisResult<Vec<StreamId>> {
        let mut conn = self.inner.commands.get();
        let _: i64 =
            redis::cmd("FCALL").arg("herald_push_promote").arg(0).arg(PROMOTE_BATCH).query_async(&mut conn).await?;
        let taken: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(keys::PUSH_QUEUE)
            .arg(keys::PUSH_GROUP)
            .arg(worker)
            .arg(stale.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await?;
        let mut entries = taken.claimed;
        if !entries.is_empty() {
            return Ok(entries);
        }
        let mut blocking = self.inner.node.blocking.get().await.map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Io, "no connection for the push queue", e.to_string()))
        })?;
        let options = StreamReadOptions::default()
            .group(keys::PUSH_GROUP, worker)
            .count(max)
            .block(wait.as_millis().max(1) as usize);
        let read: Option<StreamReadReply> = blocking.xread_options(&[keys::PUSH_QUEUE], &[">"], &options).await?;
        for key in read.map(|r| r.keys).unwrap_or_default() {
            entries.extend(key.ids);
        }
        Ok(entries)
    }
}

/// The idle time a released job is given: thirty days, past any
/// `push.visibility_timeout`.
const RELEASED_IDLE_MS: u64 = 30 * 86_400_000;

impl PushQueue for RedisEngine {
    async fn push_subscribe(
        &self,
        user: &UserId,
        subscription: &PushSubscription,
        max: usize,
    ) -> Result<usize, EngineError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("herald_push_subscribe")
            .arg(1)
            .arg(user_base(user))
            .arg(&subscription.endpoint)
            .arg(subscription.to_json())
            .arg(max);
        let count: i64 = self.call(&cmd).await?;
        Ok(count.max(0) as usize)
    }

    async fn push_unsubscribe(&self, user: &UserId, endpoint: &str) -> Result<bool, EngineError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("herald_push_unsubscribe").arg(1).arg(user_base(user)).arg(endpoint);
        let removed: i64 = self.call(&cmd).await?;
        Ok(removed == 1)
    }

    async fn push_subscriptions(&self, user: &UserId) -> Result<Vec<PushSubscription>, EngineError> {
        let mut cmd = redis::cmd("FCALL_RO");
        cmd.arg("herald_push_subscriptions").arg(1).arg(user_base(user));
        let rows: Vec<String> = self.call(&cmd).await?;
        Ok(rows.iter().filter_map(|json| PushSubscription::from_stored(json)).collect())
    }

    async fn push_claim(
        &self,
        worker: &str,
        max: usize,
        stale: Duration,
        wait: Duration,
    ) -> Result<Vec<PushJob>, EngineError> {
        let entries = match self.claim_once(worker, max, stale, wait).await {
            Ok(entries) => entries,
            // The group is gone with its stream (a FLUSHALL, a restart
            // without persistence): make it again and read on.
            Err(e) if is_no_group(&e) => {
                self.prepare_push_queue().await?;
                return Ok(Vec::new());
            }
            Err(e) if super::is_missing_function(&e) => {
                // Through `call`, which reloads the library.
                let mut cmd = redis::cmd("FCALL");
                cmd.arg("herald_push_promote").arg(0).arg(0);
                let _: i64 = self.call(&cmd).await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(unavailable(e)),
        };
        let mut jobs = Vec::with_capacity(entries.len());
        for entry in &entries {
            match job_of(entry) {
                Some(job) => jobs.push(job),
                None => {
                    tracing::warn!(entry = %entry.id, "dropped a push queue entry Herald did not write");
                    let mut cmd = redis::cmd("FCALL");
                    cmd.arg("herald_push_settle").arg(0).arg(&entry.id);
                    let _: i64 = self.call(&cmd).await?;
                }
            }
        }
        Ok(jobs)
    }

    async fn push_target(&self, job: &PushJob) -> Result<PushTarget, EngineError> {
        let mut cmd = redis::cmd("FCALL_RO");
        cmd.arg("herald_push_target").arg(1).arg(user_base(&job.user)).arg(job.id.to_string());
        let (body, read, clicked, devices): (Option<Vec<u8>>, i64, i64, Vec<String>) = self.call(&cmd).await?;
        let entry = body.map(|body| StoredEntry {
            id: job.id,
            body: String::from_utf8_lossy(&body).into_owned(),
            read: read == 1,
            clicked: clicked == 1,
        });
        let devices = devices.iter().filter_map(|json| PushSubscription::from_stored(json)).collect();
        Ok(PushTarget { entry, devices })
    }

    async fn push_settle(&self, job: &PushJob, settlement: &PushSettlement) -> Result<(), EngineError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("herald_push_settle").arg(0).arg(&job.ticket);
        for retry in &settlement.retries {
            cmd.arg("r")
                .arg(retry.after.as_millis() as u64)
                .arg(job.user.as_str())
                .arg(job.id.to_string())
                .arg(retry.attempt)
                .arg(if job.unread_only { 1 } else { 0 })
                .arg(&retry.endpoint);
        }
        for dead in &settlement.dead {
            cmd.arg("d")
                .arg(dead.user.as_str())
                .arg(dead.id.to_string())
                .arg(&dead.endpoint)
                .arg(dead.attempts)
                .arg(&dead.reason);
        }
        let _: i64 = self.call(&cmd).await?;
        Ok(())
    }

    async fn push_release(&self, worker: &str, jobs: &[PushJob]) -> Result<(), EngineError> {
        if jobs.is_empty() {
            return Ok(());
        }
        // Still pending under this worker, but idle far past any visibility
        // timeout: the next XAUTOCLAIM of any node takes them.
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(keys::PUSH_QUEUE).arg(keys::PUSH_GROUP).arg(worker).arg(0);
        for job in jobs {
            cmd.arg(&job.ticket);
        }
        cmd.arg("IDLE").arg(RELEASED_IDLE_MS).arg("JUSTID");
        let mut conn = self.inner.commands.get();
        let _: redis::Value = cmd.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(())
    }

    async fn push_dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, EngineError> {
        read_dead_letters(&mut self.inner.commands.get(), limit).await
    }

    async fn push_depth(&self) -> Result<u64, EngineError> {
        let mut conn = self.inner.commands.get();
        let (queued, delayed): (u64, u64) = redis::pipe()
            .xlen(keys::PUSH_QUEUE)
            .zcard(keys::PUSH_DELAYED)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(queued + delayed)
    }
}

/// The newest dead letters, newest first, over any connection (the
/// `herald push dead-letters` command has no engine of its own).
pub async fn read_dead_letters(
    conn: &mut impl redis::aio::ConnectionLike,
    limit: usize,
) -> Result<Vec<DeadLetter>, EngineError> {
    let rows: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(keys::PUSH_DEAD)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(limit)
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    let mut letters = Vec::with_capacity(rows.ids.len());
    for row in &rows.ids {
        let Ok(user) = UserId::parse(&field(row, "u")) else { continue };
        letters.push(DeadLetter {
            user,
            id: parse_id(&field(row, "id"))?,
            endpoint: field(row, "e"),
            attempts: field(row, "a").parse().unwrap_or(0),
            reason: field(row, "why"),
            at_ms: row.id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or(0),
        });
    }
    Ok(letters)
}
