//! The Redis engine: history in Redis Streams, fan-out over pub/sub.
//!
//! * Commands go over one multiplexed [`ConnectionManager`] per HTTP worker
//!   ([`RedisEngine::on_this_runtime`]), plus the start-up one that loads the
//!   function library: every call here is a short `FCALL`, so pipelining them
//!   on one socket beats a pool (no checkout, no idle sockets), and the
//!   manager reconnects by itself. A pool
//!   earns its place only for blocking commands (push workers' `XREADGROUP
//!   BLOCK`), which the gateway does not issue.
//! * Live traffic comes over one dedicated pub/sub connection per node
//!   ([`pubsub`]), subscribed only to the users this node holds streams of.
//! * All writes go through the function library in `functions.lua`.

mod keys;
mod pubsub;

use std::{sync::Arc, time::Duration};

use redis::{
    Client,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tokio::sync::mpsc;

pub use self::keys::user_base;
use self::pubsub::PubSubHealth;
use super::{
    Engine, EngineError, HistoryPage, ListPage, ListQuery, NodeTask, PublishOutcome, Published, ReadTarget, Reset,
    Retention, StoredEntry, StreamStart,
};
use crate::{
    config::Settings,
    domain::{EntryId, IdempotencyKey, Preferences, StoredNotification, UserId},
    hub::{Hub, SubscriptionCommand},
};

const LIBRARY_TEMPLATE: &str = include_str!("functions.lua");

#[derive(Clone)]
pub struct RedisEngine {
    inner: Arc<Inner>,
}

struct Inner {
    /// Driven by the runtime it was opened on: see [`RedisEngine::on_this_runtime`].
    commands: ConnectionManager,
    node: Arc<NodeShared>,
}

/// What every connection of the node shares.
struct NodeShared {
    client: Client,
    config: ConnectionManagerConfig,
    /// The library source with this node's limits filled in.
    library: String,
    version: String,
    pubsub: Arc<PubSubHealth>,
}

/// Fills the function library's placeholders from config.
pub fn library_source(settings: &Settings) -> (String, String) {
    let retention = Retention::from_settings(settings);
    let numbers = [
        ("MAX_LEN", retention.max_len.to_string()),
        ("MAX_AGE_MS", retention.max_age_ms.to_string()),
        ("MAX_PAYLOAD", settings.limits.max_payload_bytes.to_string()),
        ("MAX_TITLE", settings.limits.max_title_chars.to_string()),
        ("MAX_BODY", settings.limits.max_body_chars.to_string()),
        ("IDEM_TTL_MS", retention.idempotency_window_ms.to_string()),
    ];
    // Follow from the settings above, so the version leaves them out.
    let derived =
        [("LEN_SLACK", retention.len_slack().to_string()), ("AGE_SLACK_MS", retention.age_slack_ms().to_string())];
    // The library's own hash too: nodes of one crate version built from
    // different library code (say, during a rolling upgrade between commits)
    // must not look alike.
    let version = format!(
        "{}+{}:{}",
        env!("CARGO_PKG_VERSION"),
        &redis::Script::new(LIBRARY_TEMPLATE).get_hash()[..8],
        numbers.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(",")
    );
    let mut source = LIBRARY_TEMPLATE.replace("{{VERSION}}", &version);
    for (name, value) in numbers.iter().chain(&derived) {
        source = source.replace(&format!("{{{{{name}}}}}"), value);
    }
    (source, version)
}

impl Retention {
    pub fn from_settings(settings: &Settings) -> Self {
        Retention {
            max_len: settings.history.max_len,
            max_age_ms: settings.history.max_age.as_millis() as u64,
            idempotency_window_ms: settings.publish.idempotency_window.as_millis() as u64,
        }
    }
}

fn unavailable(e: redis::RedisError) -> EngineError {
    crate::metrics::get().engine_errors.increment(1);
    EngineError::Unavailable(e.to_string())
}

/// Maps a function's error reply to the engine's errors.
fn from_redis(e: redis::RedisError) -> EngineError {
    match e.code() {
        Some("HERALD_INVALID") => EngineError::Rejected(e.detail().unwrap_or("invalid notification").to_owned()),
        Some("HERALD_TOO_LARGE") => EngineError::TooLarge(e.detail().unwrap_or("notification too large").to_owned()),
        Some("HERALD_NOT_FOUND") => EngineError::NotFound(e.detail().unwrap_or("").to_owned()),
        _ => unavailable(e),
    }
}

fn is_missing_function(e: &redis::RedisError) -> bool {
    e.detail().is_some_and(|d| d.contains("Function not found"))
}

impl RedisEngine {
    /// Connects and loads the function library. Returns the engine and the
    /// pub/sub task that feeds `hub` with the channels it asks for through
    /// `subscriptions`; nothing is delivered live until that task is spawned.
    pub async fn connect(
        settings: &Settings,
        hub: Arc<Hub>,
        subscriptions: mpsc::UnboundedReceiver<SubscriptionCommand>,
    ) -> anyhow::Result<(Self, NodeTask)> {
        use anyhow::Context;
        let url = &settings.engine.redis_url;
        let client = Client::open(url.as_str()).with_context(|| format!("engine.redis_url: cannot parse `{url}`"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let commands = ConnectionManager::new_with_config(client.clone(), config.clone())
            .await
            .with_context(|| format!("cannot connect to Redis at {url}"))?;
        let (library, version) = library_source(settings);
        let pubsub = Arc::new(PubSubHealth::new(settings.engine.pubsub_ping_interval));
        let node = Arc::new(NodeShared { client: client.clone(), config, library, version, pubsub: pubsub.clone() });
        let engine = Self { inner: Arc::new(Inner { commands, node }) };
        engine
            .load_library()
            .await
            .context("cannot load the Redis function library `herald` (Redis >= 7 is required)")?;
        let reloader = engine.clone();
        let on_reconnect: pubsub::OnReconnect = Box::new(move || {
            let engine = reloader.clone();
            Box::pin(async move {
                if let Err(e) = engine.load_library().await {
                    tracing::warn!(error = %e, "could not reload the function library after a reconnect");
                }
            })
        });
        let task = Box::pin(pubsub::task(client, hub, subscriptions, pubsub, on_reconnect));
        Ok((engine, task))
    }

    /// The same engine with its own command connection, driven by the
    /// runtime this is awaited on. Each HTTP worker opens one: a request's
    /// `FCALL` then goes out and comes back on the worker's own thread,
    /// instead of waking another thread twice per call.
    pub async fn on_this_runtime(&self) -> Result<Self, EngineError> {
        let node = self.inner.node.clone();
        let commands =
            ConnectionManager::new_with_config(node.client.clone(), node.config.clone()).await.map_err(unavailable)?;
        Ok(Self { inner: Arc::new(Inner { commands, node }) })
    }

    async fn load_library(&self) -> redis::RedisResult<()> {
        let mut conn = self.inner.commands.clone();
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(&self.inner.node.library)
            .query_async::<String>(&mut conn)
            .await?;
        Ok(())
    }

    /// Runs a function call; if Redis lost the library (a restart without
    /// persistence, a FLUSHALL), loads it again and retries once.
    async fn call<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, EngineError> {
        let mut conn = self.inner.commands.clone();
        match cmd.query_async::<T>(&mut conn).await {
            Err(e) if is_missing_function(&e) => {
                tracing::warn!("the herald function library is missing in Redis; loading it again");
                self.load_library().await.map_err(unavailable)?;
                cmd.query_async::<T>(&mut conn).await.map_err(from_redis)
            }
            other => other.map_err(from_redis),
        }
    }
}

fn parse_id(raw: &str) -> Result<EntryId, EngineError> {
    raw.parse().map_err(|_| EngineError::Unavailable(format!("Redis returned a malformed id `{raw}`")))
}

impl Engine for RedisEngine {
    async fn publish(
        &self,
        user: &UserId,
        notification: &StoredNotification,
        key: Option<&IdempotencyKey>,
    ) -> Result<PublishOutcome, EngineError> {
        let mut cmd = redis::cmd("FCALL");
        // Validated already (NewNotification::validate): the function trusts
        // it, and needs its type for the user's in_app preference.
        cmd.arg("herald_publish_detail")
            .arg(1)
            .arg(user_base(user))
            .arg(&notification.json)
            .arg(key.map(IdempotencyKey::as_str).unwrap_or(""))
            .arg(&notification.kind);
        let (id, subscribers, duplicate, dropped): (String, i64, i64, i64) = self.call(&cmd).await?;
        if dropped == 1 {
            return Ok(PublishOutcome::Dropped);
        }
        Ok(PublishOutcome::Stored(Published { id: parse_id(&id)?, online: subscribers > 0, duplicate: duplicate == 1 }))
    }

    async fn read_after(&self, user: &UserId, after: EntryId, limit: usize) -> Result<HistoryPage, EngineError> {
        let mut cmd = redis::cmd("FCALL_RO");
        cmd.arg("herald_read_page").arg(1).arg(user_base(user)).arg(after.to_string()).arg(limit);
        let (reset, rows, unread, newest): (i64, Vec<EntryRow>, i64, String) = self.call(&cmd).await?;
        let reset = match reset {
            0 => None,
            1 => Some(Reset::HistoryTrimmed),
            _ => Some(Reset::CursorAhead { newest: parse_id(&newest)? }),
        };
        Ok(HistoryPage { reset, entries: entries(rows)?, unread: unread.max(0) as u64 })
    }

    async fn stream_start(&self, user: &UserId) -> Result<StreamStart, EngineError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("herald_stream_start").arg(1).arg(user_base(user));
        let (last_id, unread): (String, i64) = self.call(&cmd).await?;
        Ok(StreamStart { last_id: parse_id(&last_id)?, unread: unread.max(0) as u64 })
    }

    async fn check_ready(&self) -> Result<(), EngineError> {
        let version: String = self.call(redis::cmd("FCALL_RO").arg("herald_version").arg(0)).await?;
        if version != self.inner.node.version {
            tracing::warn!(loaded = %version, ours = %self.inner.node.version, "another node loaded a different function library");
        }
        self.inner.node.pubsub.check()
    }

    async fn list(&self, user: &UserId, query: ListQuery) -> Result<ListPage, EngineError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("herald_list").arg(1).arg(user_base(user));
        match query.before {
            Some(before) => cmd.arg(before.to_string()),
            None => cmd.arg("+"),
        };
        cmd.arg(query.limit).arg(if query.unread_only { "1" } else { "0" });
        let (unread, next, rows): (i64, String, Vec<EntryRow>) = self.call(&cmd).await?;
        let next = if next.is_empty() { None } else { Some(parse_id(&next)?) };
        Ok(ListPage { items: entries(rows)?, unread: unread.max(0) as u64, next })
    }

    async fn mark_read(&self, user: &UserId, target: &ReadTarget) -> Result<u64, EngineError> {
        let mut cmd = redis::cmd("FCALL");
        match target {
            ReadTarget::All => cmd.arg("herald_mark_all_read").arg(1).arg(user_base(user)),
            ReadTarget::Ids(ids) => {
                cmd.arg("herald_mark_read").arg(1).arg(user_base(user));
                ids.iter().fold(&mut cmd, |cmd, id| cmd.arg(id.to_string()))
            }
        };
        let reply: Vec<redis::Value> = self.call(&cmd).await?;
        unread_of(&reply)
    }

    async fn mark_clicked(&self, user: &UserId, id: EntryId) -> Result<u64, EngineError> {
        let reply: Vec<redis::Value> = self
            .call(redis::cmd("FCALL").arg("herald_mark_clicked").arg(1).arg(user_base(user)).arg(id.to_string()))
            .await?;
        unread_of(&reply)
    }

    async fn delete(&self, user: &UserId, id: EntryId) -> Result<u64, EngineError> {
        let reply: Vec<redis::Value> =
            self.call(redis::cmd("FCALL").arg("herald_delete").arg(1).arg(user_base(user)).arg(id.to_string())).await?;
        unread_of(&reply)
    }

    async fn preferences(&self, user: &UserId) -> Result<Preferences, EngineError> {
        let mut conn = self.inner.commands.clone();
        let raw: Option<String> =
            redis::cmd("GET").arg(keys::preferences(user)).query_async(&mut conn).await.map_err(unavailable)?;
        match raw {
            None => Ok(Preferences::default()),
            Some(raw) => Preferences::parse(raw.as_bytes())
                .map_err(|e| EngineError::Unavailable(format!("stored preferences are invalid: {e}"))),
        }
    }

    async fn set_preferences(&self, user: &UserId, prefs: &Preferences) -> Result<(), EngineError> {
        let json = serde_json::to_string(prefs).expect("preferences serialize");
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("herald_set_preferences").arg(1).arg(user_base(user)).arg(json);
        for (category, in_app) in prefs.in_app_flags() {
            cmd.arg(category).arg(if in_app { "1" } else { "0" });
        }
        let _: String = self.call(&cmd).await?;
        Ok(())
    }
}

/// A history entry as the functions return it: id, JSON, read, clicked.
/// The JSON comes as bytes: the functions refuse what is not UTF-8, but an
/// entry written by another client or an older library may not be, and
/// decoding it as a `String` would fail the whole page (and so every read
/// and resume of the user) for one entry.
type EntryRow = (String, Vec<u8>, i64, i64);

fn entries(rows: Vec<EntryRow>) -> Result<Vec<StoredEntry>, EngineError> {
    rows.into_iter()
        .map(|(id, body, read, clicked)| {
            Ok(StoredEntry { id: parse_id(&id)?, body: lenient_utf8(body), read: read == 1, clicked: clicked == 1 })
        })
        .collect()
}

/// The stored JSON as text, invalid bytes replaced by U+FFFD (counted in
/// `herald_repaired_entries_total`). A replacement character never ends a
/// JSON string, so valid JSON stays valid.
fn lenient_utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| {
        crate::metrics::get().repaired_entries.increment(1);
        String::from_utf8_lossy(e.as_bytes()).into_owned()
    })
}

/// The unread count, first in every state-changing function's reply.
fn unread_of(reply: &[redis::Value]) -> Result<u64, EngineError> {
    match reply.first() {
        Some(redis::Value::Int(n)) => Ok((*n).max(0) as u64),
        other => Err(EngineError::Unavailable(format!("unexpected reply from Redis: {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_names_the_library_code_and_its_settings() {
        let settings = Settings::with_overrides(&[("history.max_len", "200")]).unwrap();
        let (source, version) = library_source(&settings);
        let script = redis::Script::new(LIBRARY_TEMPLATE);
        let hash = &script.get_hash()[..8];
        assert_eq!(version, format!("{}+{hash}:200,2592000000,8192,200,2000,86400000", env!("CARGO_PKG_VERSION")));
        assert!(source.contains(&format!("local VERSION = '{version}'")));
        assert!(source.contains("local LEN_SLACK = 2\n"), "the slack follows max_len");
        assert!(!source.contains("= {{") && !source.contains("'{{"), "every placeholder is filled");
    }
}
