//! One run, phase by phase: open the streams, let them settle, publish,
//! wait out the grace period, report. Every phase is bounded in time, and
//! the whole run by a hard deadline computed from its settings.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use tokio::{
    net::TcpStream,
    task::JoinSet,
    time::{Instant, sleep, timeout, timeout_at},
};

use crate::{
    RunArgs, ServerKind, Via, clock,
    ledger::{Ledger, Percentiles},
    procstat::{self, MachineSample, Process, Sample},
    publish::{self, PublishPlan, Sink},
    report::{Measures, ProcessFigures, Summary},
    streams::{self, StreamPlan},
    target,
};

/// Files this process needs besides its streams: lanes, Redis, stdio, slack.
const SPARE_FILES: u64 = 64;
/// How long lanes may take to finish after the schedule ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Most streams per user Herald allows by default (`stream.max_per_user`).
const MAX_PER_USER: usize = 32;

/// The longest a run with these settings may take: every phase's bound, plus
/// slack. Stream tasks end at it; `main` aborts the run a little after it.
pub fn time_budget(args: &RunArgs) -> Duration {
    let ramp_time = Duration::from_secs_f64(args.streams as f64 / f64::from(args.ramp_rate.max(1)));
    ramp_time
        + args.open_timeout
        + args.settle
        + args.idle
        + args.duration
        + DRAIN_TIMEOUT
        + args.grace
        + Duration::from_secs(10)
}

/// Runs the load; returns whether the run passed (`--fail-on-loss`).
pub async fn run(args: RunArgs) -> anyhow::Result<bool> {
    ensure!(args.streams > 0, "--streams: must be at least 1");
    ensure!((1..=MAX_PER_USER).contains(&args.streams_per_user), "--streams-per-user: must be 1 to {MAX_PER_USER}");
    if let Some(topic) = &args.topic {
        herald::domain::TopicName::parse(topic).map_err(|why| anyhow::anyhow!("--topic: {why}"))?;
    }
    ensure!(args.rate > 0, "--rate: must be at least 1");
    ensure!(args.ramp_rate > 0, "--ramp-rate: must be at least 1");
    ensure!(!args.duration.is_zero(), "--duration: must be above zero");
    ensure!(args.lanes > 0, "--lanes: must be at least 1");
    match args.server {
        ServerKind::Herald => ensure!(!args.secret.is_empty(), "--secret (or HERALD__AUTH__SECRET): Herald needs it"),
        ServerKind::Nchan => ensure!(args.via == Via::Http, "--via: Nchan is published to over HTTP only"),
    }
    let addr = target::loopback(&args.target)?;
    let redis = match args.via {
        Via::Redis => Some(target::loopback_redis(&args.redis_url)?),
        Via::Http => None,
    };
    check_open_files(args.streams as u64 + args.lanes as u64 + SPARE_FILES)?;
    // Broadcast: stream `i` belongs to user `i` (its token), but the ledger
    // books every stream under one publishing "user", the topic, whose
    // sequence numbers every follower must see.
    let spu = if args.topic.is_some() { 1 } else { args.streams_per_user };
    let users = u32::try_from(args.streams.div_ceil(spu)).context("--streams: too many users")?;
    let ledger_users = if args.topic.is_some() { 1 } else { users };
    let ledger_user_of = |stream: usize| if args.topic.is_some() { 0 } else { (stream / spu) as u32 };

    let budget = time_budget(&args);
    let deadline = Instant::now() + budget;
    eprintln!(
        "herald-load: {} streams ({users} users × {spu}{}) to {} at {addr} at {}/s, then {}/s for {:?} via {}; hard deadline in {:.0} s",
        args.streams,
        args.topic.as_ref().map(|t| format!(", all following topic {t}")).unwrap_or_default(),
        args.server.as_str(),
        args.ramp_rate,
        args.rate,
        args.duration,
        args.via.as_str(),
        budget.as_secs_f64()
    );
    timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {addr} timed out"))?
        .with_context(|| format!("nothing answers at {addr}: is the server running?"))?;
    let sink = match redis {
        Some(client) => {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(5)));
            Sink::Redis(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .with_context(|| format!("cannot connect to Redis at {}", args.redis_url))?,
            )
        }
        None if args.server == ServerKind::Nchan => Sink::Nchan { addr },
        None => Sink::Http {
            addr,
            token: herald::auth::mint_token(&args.secret, "herald-load-publisher", args.token_ttl, true)?,
        },
    };

    let server = args.server_pid.map(|pid| Process::pid(args.server.as_str(), pid));
    let redis_process = args.redis_pid.map(|pid| Process::pid("redis", pid));
    let this = Process::current();
    for process in [&server, &redis_process].into_iter().flatten() {
        process.sample()?; // a wrong pid fails here, before any load
    }
    let run_id: u32 = rand::random();
    let ledger = Arc::new(Mutex::new(Ledger::new(ledger_users as usize, (0..args.streams).map(ledger_user_of))));
    let plan = Arc::new(StreamPlan {
        addr,
        server: args.server,
        secret: args.secret.clone(),
        user_prefix: args.user_prefix.clone(),
        token_ttl: args.token_ttl,
        run_id,
        open_timeout: args.open_timeout,
        deadline,
        reconnect: args.reconnect,
        topic: args.topic.clone(),
    });

    // Phase 1: open the streams.
    let server_idle = sample(&server);
    let ramp_started = Instant::now();
    let mut stream_tasks = JoinSet::new();
    streams::ramp(&mut stream_tasks, &plan, &ledger, args.streams, args.ramp_rate, |i| (i / spu) as u32).await;
    let open_by = (Instant::now() + args.open_timeout).min(deadline);
    while lock(&ledger).open_counts().2 > 0 && Instant::now() < open_by {
        sleep(Duration::from_millis(20)).await;
    }
    let ramp_elapsed = ramp_started.elapsed();
    let server_ramped = sample(&server);
    let (opened, failed, _) = lock(&ledger).open_counts();
    eprintln!("herald-load: {opened} streams open, {failed} failed, in {:.2} s", ramp_elapsed.as_secs_f64());
    if opened == 0 {
        bail!("no stream opened: {:?}", lock(&ledger).stream_failures);
    }

    // Phase 2: settle, then take the memory figures.
    sleep(args.settle).await;
    let server_open = sample(&server);
    let this_open = this.sample()?;

    // Phase 2b (optional): hold the streams idle; the server's CPU now is
    // its keep-alive and bookkeeping cost.
    let cpu_idle = if args.idle.is_zero() {
        None
    } else {
        let idle_before = sample(&server);
        sleep(args.idle).await;
        cpu(idle_before, sample(&server))
    };

    // Phase 3: publish.
    lock(&ledger).start_tracking(clock::now_us());
    let before = (sample(&server), sample(&redis_process), this.sample()?);
    let machine_before = MachineSample::take()?;
    let publish_plan = PublishPlan {
        rate: args.rate,
        duration: args.duration,
        users: ledger_users,
        lanes: args.lanes,
        topic: args.topic.clone(),
        user_prefix: args.user_prefix.clone(),
        run_id,
        seed: args.seed,
        drain_timeout: DRAIN_TIMEOUT,
    };
    let published = publish::run(&publish_plan, sink, &ledger).await;
    let after = (sample(&server), sample(&redis_process), this.sample()?);
    let machine_cpu = MachineSample::take()?.cpu_since(&machine_before);
    eprintln!(
        "herald-load: published {} of {} in {:.2} s",
        published.scheduled,
        published.target,
        published.elapsed.as_secs_f64()
    );

    // Phase 4: grace, for deliveries still on their way.
    let grace_started = Instant::now();
    let _ = timeout(args.grace, async {
        while lock(&ledger).outstanding() > 0 {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let grace_used = grace_started.elapsed();
    // From the first publish until the last delivery (or the grace's end):
    // the CPU each process spent delivering what was published.
    let delivered_by = (sample(&server), this.sample()?);
    stream_tasks.abort_all();

    // Phase 5: report.
    let (tally, latencies, to_last_stream, failures) = {
        let mut l = lock(&ledger);
        let failures = (l.stream_failures.clone(), l.stream_closes.clone(), l.publish_failures.clone());
        (l.tally(), l.take_latencies(), l.to_last_stream(), failures)
    };
    let outages = args.reconnect.map(|_| lock(&ledger).outages());
    let (acked, publish_failed) = {
        let l = lock(&ledger);
        (l.acked, l.publish_failed)
    };
    let summary = Summary {
        label: args.label.clone(),
        server_kind: args.server,
        via: args.via,
        target: addr,
        topic: args.topic.clone(),
        measures: Measures {
            streams_requested: args.streams as u64,
            streams_opened: opened,
            streams_failed: failed,
            streams_per_user: spu as u64,
            users: u64::from(users),
            ramp_rate: args.ramp_rate,
            ramp_elapsed,
            rate: args.rate,
            duration: args.duration,
            publish_target: published.target,
            publish_scheduled: published.scheduled,
            publish_acked: acked,
            publish_failed,
            publish_elapsed: published.elapsed,
            lanes: args.lanes,
            lanes_abandoned: published.lanes_abandoned,
            grace: args.grace,
            grace_used,
            tally,
            latency: Percentiles::of(latencies.from_send),
            latency_from_schedule: Percentiles::of(latencies.from_schedule),
            to_last_stream: Percentiles::of(to_last_stream),
            timeline: latencies.timeline,
        },
        server: server.as_ref().map(|_| ProcessFigures {
            rss_idle_kib: server_idle.map(|s| s.rss_kib),
            rss_open_kib: server_open.map(|s| s.rss_kib),
            rss_end_kib: after.0.map(|s| s.rss_kib),
            cpu_ramp_pct: cpu(server_idle, server_ramped),
            cpu_idle_pct: cpu_idle,
            cpu_publish_pct: cpu(before.0, after.0),
            cpu_delivering_s: cpu_seconds(before.0, delivered_by.0),
        }),
        redis: redis_process.as_ref().map(|_| ProcessFigures {
            rss_idle_kib: None,
            rss_open_kib: None,
            rss_end_kib: after.1.map(|s| s.rss_kib),
            cpu_ramp_pct: None,
            cpu_idle_pct: None,
            cpu_publish_pct: cpu(before.1, after.1),
            cpu_delivering_s: None,
        }),
        load: ProcessFigures {
            rss_idle_kib: None,
            rss_open_kib: Some(this_open.rss_kib),
            rss_end_kib: Some(after.2.rss_kib),
            cpu_ramp_pct: None,
            cpu_idle_pct: None,
            cpu_publish_pct: Some(after.2.cpu_percent_since(&before.2)),
            cpu_delivering_s: Some(delivered_by.1.cpu_seconds_since(&before.2)),
        },
        machine_cpu,
        failures,
        outages,
    };
    summary.print();
    Ok(!args.fail_on_loss || summary.passed())
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|p| p.into_inner())
}

/// CPU between two samples of one process, in percent of one core.
fn cpu(earlier: Option<Sample>, later: Option<Sample>) -> Option<f64> {
    Some(later?.cpu_percent_since(&earlier?))
}

/// CPU seconds between two samples of one process.
fn cpu_seconds(earlier: Option<Sample>, later: Option<Sample>) -> Option<f64> {
    Some(later?.cpu_seconds_since(&earlier?))
}

/// Samples a process. One that went away mid-run is reported, not fatal:
/// the run's other figures still stand.
fn sample(process: &Option<Process>) -> Option<Sample> {
    match process.as_ref()?.sample() {
        Ok(sample) => Some(sample),
        Err(e) => {
            eprintln!("herald-load: {e:#}");
            None
        }
    }
}

/// Each stream is a socket: refuse early, with the fix, rather than fail
/// thousands of connects with EMFILE.
fn check_open_files(needed: u64) -> anyhow::Result<()> {
    let Some((soft, hard)) = procstat::open_files_limit() else {
        return Ok(()); // not Linux: let the connects tell
    };
    if soft >= needed {
        return Ok(());
    }
    if hard >= needed {
        bail!("this run needs about {needed} open files but the soft limit is {soft}: run `ulimit -n {hard}` first");
    }
    bail!("this run needs about {needed} open files but the hard limit is {hard}: open fewer streams");
}
