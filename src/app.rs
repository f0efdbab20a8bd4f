//! The application: binds, wires state and routes, runs until shutdown.

use std::{
    net::{SocketAddr, TcpListener},
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::{
    App, Error, HttpServer,
    body::MessageBody,
    dev::{Server, ServerHandle, ServiceRequest, ServiceResponse},
    middleware::{Next, from_fn},
    web,
};
use anyhow::Context;
use tokio::sync::mpsc;

use crate::{
    auth::Authenticator,
    config::{EngineKind, Settings},
    domain::NotificationLimits,
    engine::{AnyEngine, NodeTask, Retention, memory::MemoryEngine, redis::RedisEngine},
    error,
    hub::{Hub, HubLimits},
    limits::UserLimiter,
    routes,
    stream::{ByeReason, frame},
};

/// What every handler shares. One per HTTP worker: the hub, the limiter and
/// the settings are the node's (shared), the engine's command connection is
/// the worker's own (see [`AnyEngine::on_this_runtime`]).
#[derive(Clone)]
pub struct AppState {
    pub engine: AnyEngine,
    pub publish_limiter: Arc<crate::limits::PublishLimiter>,
    pub hub: Arc<Hub>,
    pub settings: Arc<Settings>,
    pub limits: NotificationLimits,
    pub node_id: Arc<str>,
}

/// Node-wide tasks (the pub/sub connection, the hub's tick), spawned by the
/// first HTTP worker on its own runtime. A live event then goes from the
/// pub/sub socket through the hub into the streams it wakes without
/// crossing threads (with one worker, the default on one core, all of a
/// node's I/O runs on one thread; a `perf` profile of the publish path was
/// dominated by the context switches this avoids: docs/BENCHMARKS.md).
type NodeTasks = Arc<std::sync::Mutex<Vec<NodeTask>>>;

pub struct Application {
    addr: SocketAddr,
    server: Server,
    handle: AppHandle,
}

/// Stops a running application gracefully (tests hold one per node).
#[derive(Clone)]
pub struct AppHandle {
    hub: Arc<Hub>,
    server: ServerHandle,
    shutdown_timeout: Duration,
    retry: Duration,
}

impl Application {
    /// Connects the engine and binds the listener (port 0 picks a free port;
    /// read it back with [`Application::local_addr`]).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let authenticator =
            web::Data::new(Authenticator::from_settings(&settings.auth, settings.auth.secret.as_ref())?);
        // One for the node, shared by every worker (as the authenticator is),
        // so a user's budget does not multiply with the worker count.
        let user_limiter =
            Arc::new(UserLimiter::new(settings.limits.user_requests_per_second, settings.limits.user_burst));
        let node_id = settings.node_id();
        let limits = HubLimits {
            max_streams: settings.server.max_streams,
            max_per_user: settings.stream.max_per_user,
            queue_capacity: settings.stream.queue_capacity,
        };
        let mut node_tasks = Vec::new();
        let (hub, engine) = match settings.engine.kind {
            EngineKind::Memory => {
                let hub = Arc::new(Hub::new(limits, settings.stream.keep_alive, None));
                let engine = MemoryEngine::new(hub.clone(), Retention::from_settings(&settings));
                node_tasks.push(engine.pruner());
                (hub, AnyEngine::Memory(engine))
            }
            EngineKind::Redis => {
                let (commands, subscriptions) = mpsc::unbounded_channel();
                let hub = Arc::new(Hub::new(limits, settings.stream.keep_alive, Some(commands)));
                let (engine, pubsub) = RedisEngine::connect(&settings, hub.clone(), subscriptions).await?;
                node_tasks.push(pubsub);
                (hub, AnyEngine::Redis(engine))
            }
            EngineKind::RedisCluster => {
                anyhow::bail!("engine.kind: redis-cluster is not available yet")
            }
        };
        crate::metrics::get(); // the recorder, before any handle is used
        node_tasks.push(ticker(&hub, &settings, user_limiter.clone()));
        let node_tasks: NodeTasks = Arc::new(std::sync::Mutex::new(node_tasks));

        let listener = TcpListener::bind(settings.server.listen)
            .with_context(|| format!("server.listen: cannot bind {}", settings.server.listen))?;
        let addr = listener.local_addr()?;
        // A stream whose client stopped reading stalls in actix's write
        // buffer, where its body is no longer polled and cannot end itself.
        // The kernel ends it instead: data unacknowledged this long
        // (zero-window probes included) aborts the connection, and the client
        // resumes from history. Set on the listener, every accepted socket
        // inherits it: no per-connection syscall, and no per-connection
        // `on_connect` data (actix allocates an extensions map for each).
        socket2::SockRef::from(&listener)
            .set_tcp_user_timeout(Some(settings.server.write_timeout))
            .context("cannot set TCP_USER_TIMEOUT on the listener")?;
        let state = AppState {
            engine: engine.clone(),
            publish_limiter: Arc::new(crate::limits::PublishLimiter::new(settings.limits.publish_per_second)),
            hub: hub.clone(),
            settings: settings.clone(),
            limits: NotificationLimits {
                max_payload_bytes: settings.limits.max_payload_bytes,
                max_title_chars: settings.limits.max_title_chars,
                max_body_chars: settings.limits.max_body_chars,
            },
            node_id: node_id.as_str().into(),
        };
        let demo_mode = settings.demo.enabled;
        let max_body = settings.server.max_body_bytes;
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let server = HttpServer::new(move || {
            let (state, node_tasks) = (state.clone(), node_tasks.clone());
            App::new()
                .data_factory(move || worker_state(state.clone(), node_tasks.clone()))
                .app_data(authenticator.clone())
                .app_data(web::Data::from(user_limiter.clone()))
                .app_data(web::JsonConfig::default().limit(max_body).error_handler(error::json_error))
                .app_data(web::QueryConfig::default().error_handler(error::query_error))
                .app_data(web::PayloadConfig::new(max_body))
                .wrap(
                    actix_web::middleware::ErrorHandlers::new()
                        .default_handler_client(error::json_body_for_plain_errors)
                        .default_handler_server(error::json_body_for_plain_errors),
                )
                .wrap(from_fn(access_log))
                // A panicking handler answers 500 instead of dropping the connection.
                .wrap(actix_web_lab::middleware::CatchPanic::default())
                .configure(|cfg| routes::configure(cfg, demo_mode))
                .default_service(web::to(error::no_route))
        })
        .workers(workers)
        .backlog(4096)
        // Notice a client that went away at once, not after two writes.
        .h1_allow_half_closed(false)
        // SIGTERM is ours to handle: streams must say `bye` first.
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout.as_secs().max(1))
        .listen(listener)?
        .run();

        tracing::info!(listen = %addr, engine = engine.kind(), node = %node_id, "herald serving");
        let handle = AppHandle {
            hub,
            server: server.handle(),
            shutdown_timeout: settings.server.shutdown_timeout,
            retry: settings.stream.retry,
        };
        Ok(Self { addr, server, handle })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn handle(&self) -> AppHandle {
        self.handle.clone()
    }

    /// Serves until the server stops or SIGTERM / Ctrl-C asks it to.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.handle.clone();
        let mut server = std::pin::pin!(self.server);
        tokio::select! {
            result = &mut server => return Ok(result?),
            _ = shutdown_signal() => tracing::info!("shutdown requested"),
        }
        // `stop` waits for the server future to acknowledge, so both must be
        // polled together.
        let (_, result) = tokio::join!(handle.shutdown(), server);
        Ok(result?)
    }
}

impl AppHandle {
    /// Tells every stream `bye` (`shutdown`) with a jittered `retry:`, waits
    /// for them to close (bounded by `server.shutdown_timeout`), then stops.
    pub async fn shutdown(&self) {
        let base = self.retry.as_millis() as u64;
        self.hub.close_all(ByeReason::Shutdown, || {
            Some(Duration::from_millis(base / 2 + rand::random::<u64>() % (base + 1)))
        });
        let deadline = Instant::now() + self.shutdown_timeout;
        while self.hub.stream_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.server.stop(true).await;
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs on each HTTP worker's runtime as it starts: the first one spawns the
/// node's tasks there, and each gets its own engine connection.
async fn worker_state(template: AppState, node_tasks: NodeTasks) -> anyhow::Result<AppState> {
    let tasks = std::mem::take(&mut *node_tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    for task in tasks {
        tokio::spawn(task);
    }
    let engine = template.engine.on_this_runtime().await?;
    Ok(AppState { engine, ..template })
}

/// How often the per-user rate limiter forgets idle users. Its map grows by
/// one entry per user ever seen and never shrinks by itself; an entry whose
/// budget has refilled holds nothing worth keeping. Seconds apart: each pass
/// locks every shard of the map in turn.
const FORGET_IDLE_USERS: Duration = Duration::from_secs(5);

/// The hub's node-wide tick (one timer for all streams): expiry,
/// `token_expiring`, keep-alives; every few seconds, the user limiter's
/// clean-up. Ends when the hub is gone. The hub's stall watch starts as the
/// task is made, not when the hub was.
fn ticker(hub: &Arc<Hub>, settings: &Settings, user_limiter: Arc<UserLimiter>) -> NodeTask {
    hub.watch_ticks_from_now();
    let hub = Arc::downgrade(hub);
    let warn_before = settings.stream.token_expiring_before;
    let heartbeat_events = settings.stream.heartbeat_events;
    Box::pin(async move {
        let mut tick = tokio::time::interval(crate::hub::TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut forgot_idle_users = Instant::now();
        loop {
            tick.tick().await;
            if forgot_idle_users.elapsed() >= FORGET_IDLE_USERS {
                user_limiter.retain_recent();
                forgot_idle_users = Instant::now();
            }
            let Some(hub) = hub.upgrade() else { return };
            let now = crate::clock::now_unix();
            let keep_alive = if heartbeat_events {
                frame::heartbeat(time::OffsetDateTime::now_utc())
            } else {
                frame::KEEP_ALIVE.clone()
            };
            hub.tick(now, warn_before, &keep_alive);
        }
    })
}

/// Access log with the path only: the query string may hold a token.
async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    // Off (the level above info), it costs one check, not two copies.
    if !tracing::enabled!(target: "herald::access", tracing::Level::INFO) {
        return next.call(req).await;
    }
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let response = next.call(req).await?;
    tracing::info!(
        target: "herald::access",
        %method,
        %path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
    );
    Ok(response)
}
