//! The fault suite: each scenario injects one fault while a steady workload
//! runs (hundreds of streams over three nodes, publishing through HTTP and
//! `FCALL`), then checks that every stream received every acknowledged
//! notification exactly once and in order (or a `reset` where history was
//! trimmed), and that it recovered within 5 s of the fault's end.
//!
//! Run alone: `cargo nextest run --test it -E 'test(faults::)'`. Each test
//! writes its row of the table in docs/RELIABILITY.md to
//! `target/tmp/faults/`.

mod abusers;
mod proxy;
mod workload;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use proxy::Fault;
use workload::{Shape, Workload};

use crate::helpers::{HeraldProcess, RedisServer};

/// The figure every scenario must reach (docs/RELIABILITY.md).
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

const STEADY: Duration = Duration::from_secs(3);

fn describe(w: &Workload, shape: &Shape) -> String {
    format!("{} streams, {} nodes, {}/s", w.streams(), shape.nodes, shape.rate)
}

/// Runs the steady workload around `fault` (which returns when the fault
/// has ended), then judges and reports.
async fn scenario(name: &str, shape: Shape, fault: impl AsyncFnOnce(&mut Workload)) -> workload::Report {
    let mut w = Workload::start(shape.clone()).await;
    w.run_for(STEADY).await;
    fault(&mut w).await;
    let ended = Instant::now();
    let recovery = w.recovered_since(ended).await;
    w.run_for(STEADY).await;
    let description = describe(&w, &shape);
    let report = w.finish(name, &description, Some(recovery)).await;
    report.assert_kept();
    assert!(recovery < RECOVERY_BOUND, "recovered in {recovery:?}: {report:#?}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed() {
    scenario("a node SIGKILLed", Shape::default(), async |w| {
        w.cluster.nodes[0].kill();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_for_10_s() {
    // Its clients hear no keep-alive and leave it for the others; when it
    // wakes, nothing it held is delivered twice.
    scenario("a node SIGSTOPped 10 s", Shape::default(), async |w| {
        w.cluster.freeze_node(0);
        w.run_for(Duration::from_secs(10)).await;
        w.cluster.thaw_node(0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted() {
    scenario("Redis SIGKILLed, restarted (AOF, appendfsync always)", Shape::default(), async |w| {
        tokio::task::block_in_place(|| w.cluster.redis.restart());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_for_5_s() {
    scenario("Redis SIGSTOPped 5 s", Shape::default(), async |w| {
        crate::helpers::signal(w.cluster.redis.pid(), "STOP");
        w.run_for(Duration::from_secs(5)).await;
        crate::helpers::signal(w.cluster.redis.pid(), "CONT");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_connections_killed() {
    // Commands still work; only live delivery is cut. Nodes resubscribe and
    // fill each stream's gap from history.
    let report = scenario("CLIENT KILL TYPE pubsub", Shape::default(), async |w| {
        let mut conn = w.cluster.redis_conn().await;
        let killed: u64 =
            redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut conn).await.unwrap();
        assert!(killed >= 3, "every node's pub/sub connection was killed ({killed})");
    })
    .await;
    assert!(report.published > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_library_flushed() {
    // FCALL publishes fail until a node reloads the library; none is half
    // applied, and the publisher's retry with its key stores it once.
    scenario("FUNCTION FLUSH", Shape::default(), async |w| {
        let mut conn = w.cluster.redis_conn().await;
        let () = redis::cmd("FUNCTION").arg("FLUSH").query_async(&mut conn).await.unwrap();
    })
    .await;
}

/// A fault on the link between the nodes and Redis, held for `held`.
async fn on_the_redis_link(name: &str, fault: Fault, held: Duration) {
    let shape = Shape { through_proxy: true, ..Shape::default() };
    scenario(name, shape, async |w| {
        w.cluster.proxy().set(fault);
        w.run_for(held).await;
        w.cluster.proxy().set(Fault::None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_on_the_redis_link() {
    on_the_redis_link(
        "proxy: +200 ms latency, 5 s",
        Fault::Latency(Duration::from_millis(200)),
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_link() {
    on_the_redis_link("proxy: link stalled 4 s", Fault::Stall, Duration::from_secs(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_replies_cut_mid_way() {
    on_the_redis_link("proxy: connections reset mid-reply, 3 s", Fault::ResetMidReply, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_on_the_redis_link() {
    on_the_redis_link("proxy: black hole 8 s", Fault::BlackHole, Duration::from_secs(8)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_trimmed_under_resuming_tabs() {
    // Ten users close every tab; forty notifications each (past
    // history.max_len) arrive meanwhile; the tabs come back with their
    // cursors and must get `reset`, never a silent gap.
    let shape = Shape { settings: vec![("history.max_len", "20")], ..Shape::default() };
    let away: Vec<usize> = (0..10).collect();
    let report = scenario("history trimmed under resuming tabs", shape, async |w| {
        w.set_away(&away, true);
        w.burst(&away, 40).await;
        w.set_away(&away, false);
    })
    .await;
    assert!(report.resets >= away.len() as u64 && report.trimmed > 0, "every returning tab got reset: {report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_churning_clients() {
    // On the first node, beside its share of the workload: 50 streams that
    // are never read and 10 read a byte a second, for ten users who get 7 KB
    // notifications fast enough to fill any socket; and a churner opening
    // and dropping streams as fast as it can. The workload's streams lose
    // nothing; the stalled ones are ended as slow consumers; the node keeps
    // answering.
    let shape = Shape { settings: vec![("server.write_timeout", "5s")], ..Shape::default() };
    let mut churned = 0;
    let report = scenario("slow and churning clients", shape, async |w| {
        let node = w.cluster.nodes[0].addr;
        let hogs: Vec<String> = (0..10).map(|i| crate::helpers::unique_user(&format!("hog{i}"))).collect();
        let until = Instant::now() + Duration::from_secs(15);
        let stalled = abusers::never_read(node, &hogs, 5).await;
        let trickling = abusers::one_byte_a_second(node, &hogs, until).await;
        let churners: Vec<String> = (0..10).map(|i| crate::helpers::unique_user(&format!("churn{i}"))).collect();
        let churn = tokio::spawn(abusers::churn(node, churners, 3_000, 20, until));
        // 900 notifications of 7 KB to each hog: 6 MB per stalled stream,
        // past the node's socket send buffer (4 MB at most here) and the
        // stream's queue (256 frames).
        let http = reqwest::Client::new();
        let big = "x".repeat(7_000);
        for _ in 0..900 {
            let body = serde_json::json!({"to": {"users": hogs}, "notification": {"type": "hog", "title": "big", "data": {"pad": big}}});
            let response =
                http.post(format!("http://{node}/v1/publish")).bearer_auth(crate::helpers::publisher_token()).json(&body).send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.text().await.unwrap());
        }
        // Each stalled stream is ended by the node (as a slow consumer, or
        // by server.write_timeout once its socket is full): reading what it
        // holds reaches the end.
        let ended = stalled.into_iter().map(|mut socket| async move {
            let mut sink = vec![0u8; 64 * 1024];
            loop {
                match tokio::io::AsyncReadExt::read(&mut socket, &mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), futures_util::future::join_all(ended))
            .await
            .expect("the node ended every stream that was never read within 30 s");
        churned = churn.await.unwrap();
        for task in trickling {
            task.abort();
        }
    })
    .await;
    println!("the churner opened and dropped {churned} streams");
    assert!(churned >= 500, "the churner opened {churned} streams: {report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm() {
    // Every stream on one node; it dies; all of them come back at once to
    // the other node with their cursors; the jittered `retry:` spreads them.
    // 2,000 streams by default: this harness's clients (a debug build, one
    // reqwest request per stream) saturate two cores well before the node
    // does. The 10,000-stream storm is measured with herald-load in release
    // (docs/RELIABILITY.md); FAULTS_STORM_STREAMS sets the size here.
    let streams: usize = std::env::var("FAULTS_STORM_STREAMS").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000);
    let shape = Shape {
        nodes: 2,
        users: streams.div_ceil(2), // one to three tabs each, two on average
        all_on_first_node: true,
        settings: vec![("server.max_streams", "15000"), ("stream.retry", "1s")],
        ..Shape::default()
    };
    let mut w = Workload::start(shape.clone()).await;
    w.run_for(STEADY).await;
    let cpu = CpuPeak::watch(w.cluster.nodes[1].pid());
    w.cluster.nodes[0].kill();
    let ended = Instant::now();
    let recovery = w.recovered_since(ended).await;
    let peak = cpu.stop();
    w.run_for(STEADY).await;
    let description = format!("{}; survivor's peak CPU {:.0} % of a core", describe(&w, &shape), peak * 100.0);
    let name = format!("reconnect storm: a node with {} streams SIGKILLed", w.streams());
    let report = w.finish(&name, &description, Some(recovery)).await;
    report.assert_kept();
    assert!(recovery < RECOVERY_BOUND, "all back in {recovery:?}: {report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_over_connects_and_publishes() {
    // Equal rounds (FAULTS_MEMORY_ROUNDS, 3) of stream opens and closes and
    // of publishes, each to users never seen before. Whatever a node keeps
    // per user or per stream must be gone after: the last round may not
    // leave the node's RSS more than 5 % above the highest before it (the
    // first rounds warm the allocator; between rounds RSS wanders by a few
    // per cent). Counts are per round; FAULTS_MEMORY_SCALE=5 runs the
    // issue's figures (100,000 opens and 1,000,000 publishes in two rounds).
    let scale: u64 = std::env::var("FAULTS_MEMORY_SCALE").ok().and_then(|n| n.parse().ok()).unwrap_or(1);
    let (cycles, users, publishes_per_user) = (10_000 * scale, 10_000 * scale, 10);
    let redis = RedisServer::start();
    let settings = [
        ("log.level".to_owned(), "warn,herald::app=info".to_owned()),
        ("server.max_streams".to_owned(), "5000".to_owned()),
    ];
    let node = HeraldProcess::start_with_settings(&crate::helpers::Engine::Redis(redis.url()), &settings).await;
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).unwrap();
        let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB");
        kb.trim().parse::<u64>().unwrap() * 1024
    };
    let start = rss();
    let mut after = Vec::new();
    let rounds: usize = std::env::var("FAULTS_MEMORY_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(3);
    for round in 0..rounds {
        let names: Vec<String> = (0..users).map(|u| format!("mem{round}-{u}")).collect();
        let until = Instant::now() + Duration::from_secs(600);
        let opened = abusers::churn(node.addr, names.clone(), cycles, 20, until).await;
        assert!(opened >= cycles, "{opened} of {cycles} streams opened");
        let published = publish_to_each(node.addr, &names, publishes_per_user).await;
        assert_eq!(published, users * publishes_per_user);
        // Freed memory goes back to the system after the allocator's decay
        // (about 10 s): the figure is taken once it has settled.
        let mut last = rss();
        let settled = Instant::now() + Duration::from_secs(30);
        while Instant::now() < settled {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = rss();
            if now >= last {
                break;
            }
            last = now;
        }
        after.push(last);
    }
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1_048_576.0);
    let (last, earlier) = after.split_last().unwrap();
    let high = *earlier.iter().max().unwrap();
    let line = format!(
        "| memory: {rounds} rounds of {cycles} stream opens and closes and {} publishes to {users} new users | RSS at start {}, after each round {} ({:+.1} % over the highest before) |",
        users * publishes_per_user,
        mb(start),
        after.iter().map(|&b| mb(b)).collect::<Vec<_>>().join(", "),
        (*last as f64 / high as f64 - 1.0) * 100.0
    );
    println!("{line}");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("memory.md"), format!("{line}\n")).unwrap();
    assert!(*last as f64 <= high as f64 * 1.05, "the last round grew the node: {line}");
}

/// `per_user` notifications to each of `users`, a thousand recipients per
/// request, four requests at a time; how many were stored.
async fn publish_to_each(node: std::net::SocketAddr, users: &[String], per_user: u64) -> u64 {
    let http = reqwest::Client::new();
    let requests: Vec<&[String]> = (0..per_user).flat_map(|_| users.chunks(1_000)).collect();
    let stored = futures_util::stream::iter(requests)
        .map(|to| {
            let http = http.clone();
            async move {
                let body = serde_json::json!({"to": {"users": to}, "notification": {"type": "mem", "title": "hello"}});
                let response = crate::helpers::post_publish(&http, &format!("http://{node}"), &body).await;
                response["results"].as_array().unwrap().iter().filter(|r| r["id"].is_string()).count() as u64
            }
        })
        .buffer_unordered(4);
    stored.fold(0, async |sum, n| sum + n).await
}

/// The highest CPU use of a process, sampled every 100 ms from
/// `/proc/<pid>/stat`, as a share of one core.
struct CpuPeak {
    task: tokio::task::JoinHandle<()>,
    peak: std::sync::Arc<std::sync::Mutex<f64>>,
}

impl CpuPeak {
    fn watch(pid: u32) -> Self {
        let peak = std::sync::Arc::new(std::sync::Mutex::new(0.0f64));
        let sink = peak.clone();
        let task = tokio::spawn(async move {
            // utime + stime, in clock ticks (100 per second on Linux).
            let ticks = || -> Option<u64> {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // Fields after the command name, which ends with ')'.
                let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                Some(fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?)
            };
            let (mut last, mut at) = (ticks().unwrap_or(0), Instant::now());
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let Some(now) = ticks() else { return };
                let share = (now - last) as f64 / 100.0 / at.elapsed().as_secs_f64();
                let mut peak = sink.lock().unwrap();
                *peak = peak.max(share);
                (last, at) = (now, Instant::now());
            }
        });
        Self { task, peak }
    }

    fn stop(self) -> f64 {
        self.task.abort();
        *self.peak.lock().unwrap()
    }
}
