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

use crate::{
    auth::Authenticator, config::Settings, domain::ByeReason, error, hub::Hub, hub::NodeTask, node::Node,
    push::PushDrain, rate_limit::UserRateLimiter, routes, routes::AppState,
};

/// Node-wide tasks (the pub/sub connection, the hub's tick), spawned by the
/// first HTTP worker on its own runtime. A live event then goes from the
/// pub/sub socket through the hub into the streams it wakes without
/// crossing threads (with one worker, the default on one core, all of a
/// node's I/O runs on one thread; docs/BENCHMARKS.md has the profile that
/// showed the context switches this avoids).
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
    push: Option<PushDrain>,
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
            Arc::new(UserRateLimiter::new(settings.limits.user_requests_per_second, settings.limits.user_burst));
        let mut node = Node::build(&settings).await?;
        let mut node_tasks = node.take_tasks();
        node_tasks.push(Box::pin(user_limiter.forget_idle_users()));
        let node_tasks: NodeTasks = Arc::new(std::sync::Mutex::new(node_tasks));

        let listener = bind(settings.server.listen)
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
        let state = AppState::new(settings.clone(), node.hub.clone(), node.engine.clone());
        let demo_mode = settings.demo.enabled;
        let cors_settings = settings.server.cors.clone();
        let max_body = settings.server.max_body_bytes;
        let body_read_timeout = settings.server.body_read_timeout;
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
                // Inside the error handlers, so that a refused preflight gets
                // a JSON body and an access-log line like any other error.
                .wrap(routes::cors(&cors_settings))
                .app_data(web::Data::new(routes::body::BodyReadTimeout(body_read_timeout)))
                .wrap(from_fn(routes::body::read_deadline))
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
        // Slowloris: a head still arriving after this is answered 408.
        .client_request_timeout(settings.server.request_head_timeout)
        // Notice a client that went away at once, not after two writes.
        .h1_allow_half_closed(false)
        // SIGTERM is ours to handle: streams must say `bye` first.
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout.as_secs().max(1))
        .listen(listener)?
        .run();

        tracing::info!(listen = %addr, engine = node.engine.kind(), node = %settings.node_id(), "herald serving");
        let handle = AppHandle {
            hub: node.hub,
            server: server.handle(),
            shutdown_timeout: settings.server.shutdown_timeout,
            retry: settings.stream.retry,
            push: node.push.clone(),
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

/// Connections the kernel may hold for the listener before `accept`. The
/// reconnect storm (every stream of a dead node arriving within a second or
/// two) needs thousands: with the 128 that `std::net::TcpListener::bind`
/// asks for, the rest of the SYNs are dropped and each client waits out
/// TCP's retransmission backoff (1 s, 3 s, 7 s…). The kernel caps it at
/// `net.core.somaxconn` (4096 by default). docs/RELIABILITY.md has the
/// figures.
const LISTEN_BACKLOG: i32 = 8192;

/// Binds the listener with [`LISTEN_BACKLOG`] (`HttpServer::backlog` applies
/// only to sockets actix binds itself, not to one handed to it).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As std's bind does: a restarted node may take its port back at once.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

impl AppHandle {
    /// Tells every stream `bye` (`shutdown`) with a jittered `retry:` and
    /// drains the push worker, waits for both (bounded by
    /// `server.shutdown_timeout`), then stops.
    pub async fn shutdown(&self) {
        self.hub.close_all(ByeReason::Shutdown, || Some(crate::sse::jittered_retry(self.retry)));
        let pushes = async {
            if let Some(push) = &self.push
                && !push.drain(self.shutdown_timeout).await
            {
                tracing::warn!("pushes still in flight at the shutdown timeout; another node sends them again");
            }
        };
        // Past the timeout, clients still reading their `bye` are cut off.
        let streams = tokio::time::timeout(self.shutdown_timeout, self.hub.all_streams_ended());
        let _ = tokio::join!(streams, pushes);
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
    template.on_this_runtime().await
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
