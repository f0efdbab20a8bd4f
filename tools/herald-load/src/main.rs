//! `herald-load`: Herald's own load tool.
//!
//! `herald-load run` opens many SSE streams to one Herald node, publishes at a
//! steady rate to random users (over HTTP or `FCALL herald_publish`), and
//! checks that every notification reached every stream of its user exactly
//! once and in order, with its publish-to-receipt latency. With `--topic` it
//! broadcasts instead: every stream follows one topic, every publish goes to
//! it, and the report adds the time until the last follower had each message.
//! It samples the server's memory and CPU from `/proc`. `herald-load
//! summarize` takes the JSON lines of repeated runs and prints their medians.
//!
//! Only servers on this machine are loaded: every address must be loopback.
//!
//! | module | job |
//! | --- | --- |
//! | `run` | one run, phase by phase: open, settle, publish, grace, report |
//! | `streams` | the receiving side: one lean task per SSE stream |
//! | `publish` | the sending side: a rate scheduler and publish lanes |
//! | `ledger` | what was acknowledged, what arrived, latencies |
//! | `wire` | HTTP/1.1 head, chunked decoding, SSE parsing |
//! | `procstat` | RSS and CPU time from `/proc` |
//! | `report` | the human lines, the JSON line, medians of runs |
//! | `target` | the loopback-only guard |
//! | `clock` | the time base of send and receipt stamps |

mod clock;
mod ledger;
mod procstat;
mod publish;
mod report;
mod run;
mod streams;
mod target;
mod wire;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "herald-load",
    version,
    about = "Load tool for Herald: many SSE streams, steady publishing, loss and latency checked"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One load run against a Herald node on this machine.
    Run(Box<RunArgs>),
    /// Medians of repeated runs, from the JSON lines `run` printed last.
    Summarize {
        /// Files holding JSON summary lines (other lines are skipped).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// The kind of server under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerKind {
    /// Herald: `GET /v1/events` with a minted token; publishes per `--via`.
    Herald,
    /// Nchan (nginx), the peer of issue #4 (see bench/nchan/nginx.conf):
    /// `GET /sub/<user>` as EventSource, no token; publishes are
    /// `POST /pub/<user>` with the notification as the body.
    Nchan,
}

impl ServerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerKind::Herald => "herald",
            ServerKind::Nchan => "nchan",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// `POST /v1/publish` on keep-alive connections.
    Http,
    /// `FCALL herald_publish` on one multiplexed Redis connection.
    Redis,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Http => "http",
            Via::Redis => "redis",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Herald's address, host:port (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub target: String,
    /// The kind of server at `--target`.
    #[arg(long, value_enum, default_value_t = ServerKind::Herald)]
    pub server: ServerKind,
    /// The HMAC secret Herald verifies tokens with (not used for Nchan).
    #[arg(long, env = "HERALD__AUTH__SECRET", hide_env_values = true, default_value = "")]
    pub secret: String,
    /// SSE streams to open.
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
    /// Streams per user (users = streams / this, rounded up).
    #[arg(long, default_value_t = 1)]
    pub streams_per_user: usize,
    /// Broadcast: every stream (each of its own user) follows this topic and
    /// every publish goes to it. Herald: `?topics=<name>` with a token whose
    /// `topics` claim grants it, publishes `"to":{"topic":..}` or `FCALL
    /// herald_publish_topic`; Nchan: one channel, `/sub/<name>` and
    /// `/pub/<name>`. Publishes go out one at a time, in order, on one lane.
    #[arg(long, conflicts_with = "streams_per_user")]
    pub topic: Option<String>,
    /// Users are named <prefix><index>.
    #[arg(long, default_value = "load-")]
    pub user_prefix: String,
    /// Streams opened per second.
    #[arg(long, default_value_t = 2000)]
    pub ramp_rate: u32,
    /// How long a stream may take to open (connect + response head).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub open_timeout: Duration,
    /// Pause after the streams opened, before memory is sampled and publishing starts.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// How long to hold the open streams idle (no publishing) after the
    /// settle pause, to measure the server's idle CPU (keep-alives).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
    /// How notifications are published (Nchan: `http` only, to its publisher).
    #[arg(long, value_enum, default_value_t = Via::Http)]
    pub via: Via,
    /// Redis for `--via redis` (loopback only).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Notifications per second (each to one random user).
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// How long to publish.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Concurrent publishers: HTTP keep-alive connections, or FCALLs in
    /// flight on the one Redis connection.
    #[arg(long, default_value_t = 8)]
    pub lanes: usize,
    /// How long after publishing stopped to wait for missing deliveries.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// The Herald server's pid, to sample its RSS and CPU.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The Redis server's pid, to sample its CPU.
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// A name for this run in the summary (e.g. `http-1`); `summarize`
    /// groups runs by label with a trailing `-<run number>` dropped.
    #[arg(long, default_value = "run")]
    pub label: String,
    /// Seed of the random user choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Lifetime of the minted tokens (keep it above the run's length).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,
    /// Runtime worker threads; 0 means one per CPU this process may use.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Reconnect streams that end, after this delay, with `Last-Event-ID`
    /// (as EventSource does), and report how long they were down. Off by
    /// default: a stream that ends stays closed.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub reconnect: Option<Duration>,
    /// Exit 2 if any notification was lost, duplicated or reordered, or any
    /// stream or publish failed.
    #[arg(long)]
    pub fail_on_loss: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if args.threads > 0 {
                runtime.worker_threads(args.threads);
            }
            let runtime = match runtime.enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => return fail(anyhow::anyhow!("cannot start the runtime: {e}")),
            };
            // Every phase is bounded; this is the backstop.
            let hard_deadline = run::time_budget(&args) + Duration::from_secs(5);
            let outcome = runtime.block_on(async {
                match tokio::time::timeout(hard_deadline, run::run(*args)).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        Err(anyhow::anyhow!("the run passed its hard deadline of {:.0} s", hard_deadline.as_secs_f64()))
                    }
                }
            });
            // Streams still open are dropped with the runtime; do not wait on them.
            runtime.shutdown_timeout(Duration::from_secs(1));
            match outcome {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(2),
                Err(e) => fail(e),
            }
        }
        Command::Summarize { files } => match report::summarize(&files) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
    }
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("herald-load: {e:#}");
    ExitCode::from(1)
}
