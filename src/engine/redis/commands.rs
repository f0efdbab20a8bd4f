//! One runtime's command connection, replaced when Redis stops answering
//! on it.
//!
//! The redis crate's [`ConnectionManager`] reconnects when its connection
//! drops. A connection that stays open and never answers (a black hole on
//! the network, a peer that vanished without a reset) drops nothing: every
//! command just times out, for as long as the kernel keeps the socket,
//! which is forever for a socket that sends little. So a command that times
//! out here swaps in a new manager (in the background, once at a time), and
//! the calls after it use that one. The fault suite's black-hole scenario
//! (docs/RELIABILITY.md) fails without this.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use redis::{
    Client, RedisError, RedisResult,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

/// Between attempts to open a connection that answers.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Longest one attempt to open a connection that answers may take.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(10);

pub struct Commands {
    /// Read on every call (a clone of the manager: an `Arc`), written only
    /// when a replacement is ready; never held across an `.await`.
    current: RwLock<ConnectionManager>,
    /// A replacement is being connected: later timeouts wait for it rather
    /// than open more connections.
    replacing: AtomicBool,
    client: Client,
    config: ConnectionManagerConfig,
}

impl Commands {
    pub async fn connect(client: Client, config: ConnectionManagerConfig) -> RedisResult<Arc<Self>> {
        let manager = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
        Ok(Arc::new(Self { current: RwLock::new(manager), replacing: AtomicBool::new(false), client, config }))
    }

    /// The connection to send a command on.
    pub fn get(&self) -> ConnectionManager {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// To be told of every failed command: a timeout replaces the
    /// connection. Other errors are the manager's own business (it
    /// reconnects on a dropped connection) or the caller's.
    pub fn failed(self: &Arc<Self>, error: &RedisError) {
        if !error.is_timeout() || self.replacing.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!("Redis did not answer in time on the command connection; opening a new one");
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            // Only a connection that answered a PING replaces the old one: a
            // new connection into the same black hole would fail the same
            // way. Ends when one answers, or when the engine is gone.
            while let Some(commands) = this.upgrade() {
                if let Some(manager) = commands.proven_connection().await {
                    *commands.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = manager;
                    commands.replacing.store(false, Ordering::Release);
                    tracing::info!("the new command connection answers");
                    return;
                }
                drop(commands);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        });
    }

    /// A new connection that has answered a PING within the connection and
    /// response timeouts, or `None`.
    async fn proven_connection(&self) -> Option<ConnectionManager> {
        let attempt = async {
            let mut manager =
                ConnectionManager::new_with_config(self.client.clone(), self.config.clone()).await.ok()?;
            redis::cmd("PING").query_async::<()>(&mut manager).await.ok()?;
            Some(manager)
        };
        // The manager's own timeouts bound this; the outer one is for a
        // handshake they might not cover.
        tokio::time::timeout(ATTEMPT_LIMIT, attempt).await.ok().flatten()
    }
}
