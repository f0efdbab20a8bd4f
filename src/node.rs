//! A node, assembled in one place from [`Settings`]: the hub, the engine
//! chosen by `engine.kind` and built on it, and the node's long-running
//! tasks (the hub's tick, the Redis engine's pub/sub connection, the memory
//! engine's pruning, the Web Push worker when a VAPID key is set). The HTTP server and the conformance tests both start
//! one this way.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::{
    config::{EngineKind, Settings},
    engine::{AnyEngine, PushPolicy, Retention, memory::MemoryEngine, redis::RedisEngine},
    hub::{self, Hub, HubCapacity, NodeTask},
    push::{PushDrain, PushWorker},
};

pub struct Node {
    pub hub: Arc<Hub>,
    /// Its command connection is driven by the runtime it was built on;
    /// each HTTP worker takes its own (see [`AnyEngine::on_this_runtime`]).
    pub engine: AnyEngine,
    /// Not running yet: see [`Node::take_tasks`].
    tasks: Vec<NodeTask>,
    /// Stops the push worker on shutdown; `None` with push off.
    pub push: Option<PushDrain>,
}

impl Node {
    /// Builds the hub and the engine, and connects it (for `redis`: loads
    /// the function library). Nothing is delivered live and no stream is
    /// ticked until the tasks are spawned.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let capacity = HubCapacity::from_settings(settings);
        let keep_alive = settings.stream.keep_alive;
        let retention = Retention::from_settings(settings);
        let (hub, engine, engine_task) = match settings.engine.kind {
            EngineKind::Memory => {
                // The memory engine hands every event to the hub itself:
                // there is nothing to subscribe to.
                let hub = Arc::new(Hub::new(capacity, keep_alive, None));
                let engine = MemoryEngine::new(
                    hub.clone(),
                    retention,
                    Retention::for_topics(settings),
                    PushPolicy::from_settings(settings),
                );
                let pruner = engine.pruner();
                (hub, AnyEngine::Memory(engine), pruner)
            }
            EngineKind::Redis => {
                let (commands, subscriptions) = mpsc::unbounded_channel();
                let hub = Arc::new(Hub::new(capacity, keep_alive, Some(commands)));
                let (engine, pubsub) = RedisEngine::connect(settings, hub.clone(), subscriptions).await?;
                (hub, AnyEngine::Redis(engine), pubsub)
            }
        };
        crate::metrics::get(); // the recorder, before any handle is used
        let ticker = hub::ticker(&hub, settings.stream.token_expiring_before);
        let mut tasks = vec![engine_task, ticker];
        let mut push = None;
        match settings.push.vapid_key()? {
            Some(key) => {
                if let AnyEngine::Redis(redis) = &engine {
                    redis.prepare_push_queue().await?;
                }
                tracing::info!(public_key = %key.public_base64url(), when = settings.push.when.as_str(), "Web Push is on");
                let (worker, drain) = PushWorker::new(engine.clone(), key, &settings.push, &settings.node_id())?.task();
                tasks.push(worker);
                push = Some(drain);
            }
            None => tracing::info!("Web Push is off: no push.vapid_private_key or push.vapid_private_key_file is set"),
        }
        Ok(Self { hub, engine, tasks, push })
    }

    /// The node's tasks, for the caller to spawn on the runtime their I/O
    /// should run on (the HTTP server: its first worker's; see `app.rs`).
    /// Empty after the first call.
    pub fn take_tasks(&mut self) -> Vec<NodeTask> {
        std::mem::take(&mut self.tasks)
    }

    /// Spawns the node's tasks on the current runtime.
    pub fn spawn_tasks(&mut self) {
        for task in self.take_tasks() {
            tokio::spawn(task);
        }
    }
}
