//! The steady workload every fault scenario runs under, and its verdict.
//!
//! A [`Cluster`] is one `redis-server` (optionally behind the
//! [`FaultProxy`](super::proxy::FaultProxy)) and a few `herald` processes.
//! A [`Workload`] on it holds hundreds of streams (several tabs for some
//! users, every fourth stream also following the topic `faults`) that
//! behave like `EventSource` behind a load balancer: when a stream ends,
//! errs or goes silent past the keep-alive, it comes back on the next node
//! after its `retry:`, with its cursor. A publisher sends a steady rate
//! through both paths (`POST /v1/publish` and `FCALL`), each notification
//! carrying its sequence number, and retries a failed publish with the same
//! idempotency key until it is acknowledged, as a careful backend does.
//!
//! The verdict ([`Workload::finish`]) checks every stream against what was
//! acknowledged: each notification of its user and topics exactly once and
//! in publish order, or a `reset` where history was really trimmed.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use herald::domain::EntryId;
use serde_json::{Value, json};

use super::proxy::FaultProxy;
use crate::helpers::{Engine, HeraldProcess, Parser, RedisServer, publisher_token, signal, user_token};

/// The public topic a quarter of the streams follow.
pub const TOPIC: &str = "faults";

/// A stream that hears nothing (not even a keep-alive) for this long takes
/// its node for dead and goes elsewhere. Three keep-alive intervals.
const SILENCE: Duration = Duration::from_secs(3);
/// How long a client waits for a node's response head.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Streams opened per second when the workload starts.
const OPEN_RATE: u32 = 2_000;
/// A publish attempt that takes longer than this has hung.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);
/// A publisher gives up on a notification after retrying this long.
const GIVE_UP_AFTER: Duration = Duration::from_secs(40);

/// What runs, and how much of it.
#[derive(Clone)]
pub struct Shape {
    pub nodes: usize,
    pub users: usize,
    /// Publishes per second, to users and the topic together.
    pub rate: u32,
    /// Nodes reach Redis through a fault-injecting proxy.
    pub through_proxy: bool,
    /// Settings for the nodes over the workload's own (dotted keys).
    pub settings: Vec<(&'static str, &'static str)>,
    /// Every stream starts on the first node (else they are spread).
    pub all_on_first_node: bool,
}

impl Default for Shape {
    fn default() -> Self {
        Self { nodes: 3, users: 150, rate: 100, through_proxy: false, settings: Vec::new(), all_on_first_node: false }
    }
}

/// Redis (with AOF, `appendfsync always`) and the nodes.
pub struct Cluster {
    pub redis: RedisServer,
    pub proxy: Option<FaultProxy>,
    pub nodes: Vec<HeraldProcess>,
}

impl Cluster {
    async fn start(shape: &Shape) -> Self {
        let redis = RedisServer::start_with_aof();
        let upstream = format!("127.0.0.1:{}", redis.port).parse().unwrap();
        let proxy = if shape.through_proxy { Some(FaultProxy::start(upstream).await) } else { None };
        let url = proxy.as_ref().map_or_else(|| redis.url(), |p| p.url());
        let mut settings: Vec<(String, String)> = vec![
            ("stream.keep_alive".into(), "1s".into()),
            ("stream.retry".into(), "500ms".into()),
            ("limits.user_requests_per_second".into(), "0".into()),
            ("topics.public".into(), TOPIC.into()),
            ("server.max_streams".into(), "5000".into()),
            ("log.level".into(), "info".into()),
        ];
        settings.extend(shape.settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let engine = Engine::Redis(url);
        let nodes = futures_util::future::join_all(
            (0..shape.nodes).map(|_| HeraldProcess::start_with_settings(&engine, &settings)),
        )
        .await;
        Self { redis, proxy, nodes }
    }

    pub fn proxy(&self) -> &FaultProxy {
        self.proxy.as_ref().expect("the shape asked for the proxy")
    }

    /// A command connection straight to Redis (not through the proxy).
    pub async fn redis_conn(&self) -> redis::aio::MultiplexedConnection {
        self.redis.client().get_multiplexed_async_connection().await.unwrap()
    }

    pub fn freeze_node(&self, i: usize) {
        signal(self.nodes[i].pid(), "STOP");
    }

    pub fn thaw_node(&self, i: usize) {
        signal(self.nodes[i].pid(), "CONT");
    }
}

/// Who a notification was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    User(usize),
    Topic,
}

/// A notification a publisher got an id for.
#[derive(Debug, Clone)]
struct Ack {
    target: Target,
    seq: u64,
    entry: EntryId,
}

/// A stretch a `reset` announced: after the last entry before it (if any),
/// before the first entry after it (if any).
type Gap = (Option<EntryId>, Option<EntryId>);

/// What one stream saw, in order.
#[derive(Debug, Clone)]
enum Seen {
    Notification {
        target: Target,
        seq: u64,
        entry: EntryId,
    },
    /// `reset` for the inbox (`None`) or the topic.
    Reset(Target),
}

#[derive(Default)]
struct StreamLog {
    seen: Vec<Seen>,
    /// What `seen` holds, kept as it grows: polled while the test waits.
    got: HashSet<(Target, u64)>,
    /// Targets a `reset` was received for.
    reset: HashSet<Target>,
    opens: u64,
    /// Why the last attempt to open failed, for a test that times out.
    last_refusal: Option<String>,
}

/// One simulated browser tab.
struct Stream {
    user: usize,
    follows_topic: bool,
    log: Arc<Mutex<StreamLog>>,
    /// While set, the tab is gone (closed laptop): no stream open.
    away: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Ledger {
    acks: Vec<Ack>,
    /// Attempts that failed (an error status, a Redis error, a timeout)
    /// and were retried.
    failed_attempts: u64,
    /// Attempts that did not answer within [`PUBLISH_TIMEOUT`].
    hung_attempts: u64,
    /// Notifications never acknowledged within [`GIVE_UP_AFTER`].
    given_up: u64,
    /// The longest any HTTP attempt took to answer, success or error.
    slowest_answer: Duration,
}

/// The workload: streams, the publisher, and their records.
pub struct Workload {
    pub cluster: Cluster,
    shape: Shape,
    users: Vec<String>,
    streams: Vec<Stream>,
    ledger: Arc<Mutex<Ledger>>,
    /// Stops every client and the publisher.
    stop: Arc<AtomicBool>,
    publishing: Arc<AtomicBool>,
    next_seq: Arc<AtomicU64>,
    in_flight: Arc<tokio::sync::Semaphore>,
    publisher: Option<tokio::task::JoinHandle<()>>,
}

/// Most publishes waiting for an answer at once; past it a tick is skipped
/// (not attempted, so not expected).
const MAX_IN_FLIGHT: usize = 400;

impl Workload {
    /// Starts the cluster, opens every stream, waits until each has been
    /// open once, then starts publishing.
    pub async fn start(shape: Shape) -> Self {
        let cluster = Cluster::start(&shape).await;
        let run = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let users: Vec<String> = (0..shape.users).map(|i| format!("f{run}-{i}")).collect();
        let bases: Arc<Vec<String>> = Arc::new(cluster.nodes.iter().map(|n| format!("http://{}", n.addr)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        // One client for every tab: one connection per open stream, as a
        // browser per tab (HTTP/1.1), without a pool and resolver per tab.
        let http = reqwest::Client::new();
        let mut streams = Vec::new();
        for (u, name) in users.iter().enumerate() {
            for tab in 0..=(u % 3) {
                let follows_topic = streams.len() % 4 == 0;
                let log = Arc::new(Mutex::new(StreamLog::default()));
                let away = Arc::new(AtomicBool::new(false));
                let client = Client {
                    http: http.clone(),
                    user: u,
                    token: user_token(name),
                    follows_topic,
                    bases: bases.clone(),
                    first_node: if shape.all_on_first_node { 0 } else { u + tab },
                    log: log.clone(),
                    away: away.clone(),
                    stop: stop.clone(),
                };
                // The first opens are spread at OPEN_RATE: the storm is the
                // fault's, not the start's.
                let delay = Duration::from_secs(1) * streams.len() as u32 / OPEN_RATE;
                let task = tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    client.run().await
                });
                streams.push(Stream { user: u, follows_topic, log, away, task });
            }
        }
        let mut workload = Self {
            cluster,
            shape,
            users,
            streams,
            ledger: Arc::default(),
            stop,
            publishing: Arc::new(AtomicBool::new(true)),
            next_seq: Arc::new(AtomicU64::new(1)),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            publisher: None,
        };
        let opening = Instant::now();
        let deadline = opening + Duration::from_secs(90);
        loop {
            let open = workload.streams.iter().filter(|s| s.log.lock().unwrap().opens > 0).count();
            if open == workload.streams.len() {
                break;
            }
            if Instant::now() > deadline {
                let why: Vec<Option<String>> = workload
                    .streams
                    .iter()
                    .map(|s| s.log.lock().unwrap())
                    .filter(|l| l.opens == 0)
                    .map(|l| l.last_refusal.clone())
                    .take(5)
                    .collect();
                panic!("after 90 s, {open} of {} streams have opened; why not: {why:?}", workload.streams.len());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        workload.publisher = Some(tokio::spawn(workload.publisher().run()));
        workload
    }

    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Lets the workload run for `d` (the load's own clock: nothing is
    /// being waited for).
    pub async fn run_for(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// Publishes `count` notifications to each listed user at once, through
    /// the same ledger (a burst on top of the steady rate).
    pub async fn burst(&self, users: &[usize], count: usize) {
        let http = reqwest::Client::builder().timeout(PUBLISH_TIMEOUT).build().unwrap();
        let publisher = self.publisher();
        let fcall = publisher.fcall_connection().await;
        let mut publishes = Vec::new();
        for _ in 0..count {
            for &u in users {
                let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
                publishes.push(publisher.publish(&http, &fcall, seq, Target::User(u), Path::Http));
            }
        }
        futures_util::future::join_all(publishes).await;
    }

    /// Takes the tabs of `users` away (no stream open) or brings them back.
    pub fn set_away(&self, users: &[usize], away: bool) {
        for s in self.streams.iter().filter(|s| users.contains(&s.user)) {
            s.away.store(away, Ordering::Relaxed);
        }
    }

    /// How long after `since` (the end of a fault) a notification
    /// published then reaches every stream: one probe is published to every
    /// user and the topic at once, and each stream must receive its probes
    /// (live, or on resuming elsewhere).
    pub async fn recovered_since(&self, since: Instant) -> Duration {
        let first_probe = self.next_seq.load(Ordering::Relaxed);
        let http = reqwest::Client::builder().timeout(PUBLISH_TIMEOUT).build().unwrap();
        let publisher = self.publisher();
        let fcall = publisher.fcall_connection().await;
        // Few requests (a thousand recipients each), so the probes do not
        // add a storm of their own.
        let everyone: Vec<usize> = (0..self.users.len()).collect();
        let user_probes = everyone.chunks(1_000).map(|users| {
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            publisher.publish_to_users(&http, users, seq)
        });
        let topic_seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let topic_probe = publisher.publish(&http, &fcall, topic_seq, Target::Topic, Path::Http);
        futures_util::future::join(futures_util::future::join_all(user_probes), topic_probe).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let missing = self.missing(|ack| ack.seq >= first_probe);
            if missing == 0 {
                return since.elapsed();
            }
            if Instant::now() > deadline {
                for node in &self.cluster.nodes {
                    let logs = node.logs.lock().unwrap();
                    eprintln!(
                        "node {}: last log lines:\n{}",
                        node.addr,
                        logs[logs.len().saturating_sub(15)..].join("\n")
                    );
                }
                panic!("60 s after the fault, {missing} probes still missing");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Acknowledged notifications (chosen by `which`) that some stream has
    /// not received yet. A stream taken away, or one that was told history
    /// was trimmed, is not waited for.
    fn missing(&self, which: impl Fn(&Ack) -> bool) -> usize {
        let ledger = self.ledger.lock().unwrap();
        let mut by_target: HashMap<Target, Vec<&Ack>> = HashMap::new();
        for ack in ledger.acks.iter().filter(|a| which(a)) {
            by_target.entry(ack.target).or_default().push(ack);
        }
        let mut missing = 0;
        for s in &self.streams {
            if s.away.load(Ordering::Relaxed) {
                continue;
            }
            let log = s.log.lock().unwrap();
            for target in s.targets() {
                if log.reset.contains(&target) {
                    continue; // judged by the verdict, which knows the gap
                }
                missing += by_target
                    .get(&target)
                    .map_or(0, |acks| acks.iter().filter(|a| !log.got.contains(&(target, a.seq))).count());
            }
        }
        missing
    }

    /// Stops publishing, waits for every stream to catch up (bounded), stops
    /// the clients, and judges what each stream received. Writes the report
    /// row to `target/tmp/faults/<scenario>.md` and prints it.
    pub async fn finish(mut self, scenario: &str, workload: &str, recovery: Option<Duration>) -> Report {
        self.publishing.store(false, Ordering::Relaxed);
        if let Some(publisher) = self.publisher.take() {
            publisher.await.unwrap();
        }
        // Every publish in flight answers or gives up.
        let _all = tokio::time::timeout(
            GIVE_UP_AFTER + PUBLISH_TIMEOUT,
            self.in_flight.clone().acquire_many_owned(MAX_IN_FLIGHT as u32),
        )
        .await
        .expect("every publish in flight ends");
        self.set_away(&(0..self.users.len()).collect::<Vec<_>>(), false);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.missing(|_| true) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        for s in &self.streams {
            s.task.abort();
        }
        let report = self.verdict(scenario, workload, recovery);
        report.write();
        report
    }

    fn verdict(&self, scenario: &str, workload: &str, recovery: Option<Duration>) -> Report {
        let ledger = self.ledger.lock().unwrap();
        let issued = self.next_seq.load(Ordering::Relaxed);
        let mut by_target: BTreeMap<Target, Vec<&Ack>> = BTreeMap::new();
        for ack in &ledger.acks {
            by_target.entry(ack.target).or_default().push(ack);
        }
        let mut report = Report {
            scenario: scenario.to_owned(),
            workload: workload.to_owned(),
            published: ledger.acks.len() as u64,
            failed_attempts: ledger.failed_attempts,
            hung_attempts: ledger.hung_attempts,
            given_up: ledger.given_up,
            slowest_answer: ledger.slowest_answer,
            recovery,
            ..Report::default()
        };
        for s in &self.streams {
            let log = s.log.lock().unwrap();
            report.opens += log.opens;
            let targets = s.targets();
            let mut seen_once: HashSet<(Target, u64)> = HashSet::new();
            let mut last_entry: HashMap<Target, EntryId> = HashMap::new();
            let mut gaps: HashMap<Target, Vec<Gap>> = HashMap::new();
            let mut open_gap: HashMap<Target, Option<EntryId>> = HashMap::new();
            for event in &log.seen {
                match event {
                    Seen::Reset(target) => {
                        report.resets += 1;
                        open_gap.insert(*target, last_entry.get(target).copied());
                    }
                    Seen::Notification { target, seq, entry } => {
                        report.delivered += 1;
                        // Attempted but never acknowledged may arrive; never attempted may not.
                        if !targets.contains(target) || *seq >= issued {
                            report.phantom += 1;
                        }
                        if !seen_once.insert((*target, *seq)) {
                            report.duplicated += 1;
                        }
                        if last_entry.get(target).is_some_and(|last| entry <= last) {
                            report.out_of_order += 1;
                        }
                        last_entry.insert(*target, *entry);
                        if let Some(before) = open_gap.remove(target) {
                            gaps.entry(*target).or_default().push((before, Some(*entry)));
                        }
                    }
                }
            }
            for (target, before) in open_gap {
                gaps.entry(target).or_default().push((before, None));
            }
            for target in targets {
                for ack in by_target.get(&target).into_iter().flatten() {
                    if seen_once.contains(&(target, ack.seq)) {
                        continue;
                    }
                    let in_a_gap = gaps.get(&target).into_iter().flatten().any(|(before, after)| {
                        before.is_none_or(|b| ack.entry > b) && after.is_none_or(|a| ack.entry < a)
                    });
                    if in_a_gap {
                        report.trimmed += 1;
                    } else {
                        report.lost += 1;
                        if report.lost_examples.len() < 5 {
                            report.lost_examples.push(format!("{target:?} seq {} ({})", ack.seq, ack.entry));
                        }
                    }
                }
            }
        }
        report
    }

    fn publisher(&self) -> PublisherHandle {
        PublisherHandle {
            ledger: self.ledger.clone(),
            publishing: self.publishing.clone(),
            next_seq: self.next_seq.clone(),
            in_flight: self.in_flight.clone(),
            bases: self.cluster.nodes.iter().map(|n| format!("http://{}", n.addr)).collect(),
            users: self.users.clone(),
            redis: self.cluster.redis.client(),
            rate: self.shape.rate,
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.publishing.store(false, Ordering::Relaxed);
        for s in &self.streams {
            s.task.abort();
        }
        if let Some(p) = &self.publisher {
            p.abort();
        }
    }
}

impl Stream {
    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![Target::User(self.user)];
        if self.follows_topic {
            targets.push(Target::Topic);
        }
        targets
    }
}

#[derive(Clone, Copy)]
enum Path {
    Http,
    Fcall,
}

/// The publisher's side of the workload, owned by its task.
#[derive(Clone)]
struct PublisherHandle {
    ledger: Arc<Mutex<Ledger>>,
    publishing: Arc<AtomicBool>,
    next_seq: Arc<AtomicU64>,
    in_flight: Arc<tokio::sync::Semaphore>,
    bases: Vec<String>,
    users: Vec<String>,
    redis: redis::Client,
    rate: u32,
}

impl PublisherHandle {
    /// Backends talk to Redis directly: their connection reconnects by
    /// itself after a Redis restart.
    async fn fcall_connection(&self) -> redis::aio::ConnectionManager {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        loop {
            match redis::aio::ConnectionManager::new_with_config(self.redis.clone(), config.clone()).await {
                Ok(conn) => return conn,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn run(self) {
        let http = reqwest::Client::builder().timeout(PUBLISH_TIMEOUT).build().unwrap();
        let fcall = self.fcall_connection().await;
        let mut tick = tokio::time::interval(Duration::from_secs(1) / self.rate);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while self.publishing.load(Ordering::Relaxed) {
            tick.tick().await;
            let Ok(permit) = self.in_flight.clone().try_acquire_owned() else { continue };
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            let target =
                if seq.is_multiple_of(10) { Target::Topic } else { Target::User(seq as usize % self.users.len()) };
            let path = if seq.is_multiple_of(2) { Path::Http } else { Path::Fcall };
            let (me, http, fcall) = (self.clone(), http.clone(), fcall.clone());
            tokio::spawn(async move {
                me.publish(&http, &fcall, seq, target, path).await;
                drop(permit);
            });
        }
    }

    /// Publishes `seq` until it is acknowledged (or [`GIVE_UP_AFTER`]),
    /// each retry with the same idempotency key, HTTP retries on the next
    /// node.
    async fn publish(
        &self,
        http: &reqwest::Client,
        fcall: &redis::aio::ConnectionManager,
        seq: u64,
        target: Target,
        path: Path,
    ) {
        let key = format!("seq-{seq}");
        let notification = json!({"type": "fault.seq", "title": format!("#{seq}"), "data": {"seq": seq}});
        let started = Instant::now();
        for attempt in 0usize.. {
            let answer = match path {
                Path::Http => {
                    self.http_attempt(
                        http,
                        &self.bases[(seq as usize + attempt) % self.bases.len()],
                        target,
                        &notification,
                        &key,
                    )
                    .await
                }
                Path::Fcall => self.fcall_attempt(fcall.clone(), target, &notification, &key).await,
            };
            {
                let mut ledger = self.ledger.lock().unwrap();
                match answer {
                    Attempt::Acked(entry) => {
                        ledger.acks.push(Ack { target, seq, entry });
                        return;
                    }
                    Attempt::Failed => ledger.failed_attempts += 1,
                    Attempt::Hung => ledger.hung_attempts += 1,
                }
                if started.elapsed() > GIVE_UP_AFTER {
                    ledger.given_up += 1;
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Publishes `seq` to several users in one request, retried (same
    /// idempotency key) until acknowledged.
    async fn publish_to_users(&self, http: &reqwest::Client, users: &[usize], seq: u64) {
        let names: Vec<&str> = users.iter().map(|&u| self.users[u].as_str()).collect();
        let body = json!({
            "to": {"users": names},
            "notification": {"type": "fault.seq", "title": format!("#{seq}"), "data": {"seq": seq}},
            "idempotency_key": format!("seq-{seq}"),
        });
        let started = Instant::now();
        for attempt in 0usize.. {
            let base = &self.bases[(seq as usize + attempt) % self.bases.len()];
            let response =
                http.post(format!("{base}/v1/publish")).bearer_auth(publisher_token()).json(&body).send().await;
            let results = match response {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                _ => None,
            };
            let entries: Option<Vec<EntryId>> = results
                .and_then(|r| r["results"].as_array()?.iter().map(|one| one["id"].as_str()?.parse().ok()).collect());
            {
                let mut ledger = self.ledger.lock().unwrap();
                match entries {
                    Some(entries) if entries.len() == users.len() => {
                        for (&u, entry) in users.iter().zip(entries) {
                            ledger.acks.push(Ack { target: Target::User(u), seq, entry });
                        }
                        return;
                    }
                    _ => ledger.failed_attempts += 1,
                }
                if started.elapsed() > GIVE_UP_AFTER {
                    ledger.given_up += users.len() as u64;
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn http_attempt(
        &self,
        http: &reqwest::Client,
        base: &str,
        target: Target,
        notification: &Value,
        key: &str,
    ) -> Attempt {
        let to = match target {
            Target::User(u) => json!({"users": [self.users[u]]}),
            Target::Topic => json!({"topic": TOPIC}),
        };
        let started = Instant::now();
        let response = http
            .post(format!("{base}/v1/publish"))
            .bearer_auth(publisher_token())
            .json(&json!({"to": to, "notification": notification, "idempotency_key": key}))
            .send()
            .await;
        {
            let mut ledger = self.ledger.lock().unwrap();
            ledger.slowest_answer = ledger.slowest_answer.max(started.elapsed());
        }
        let response = match response {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Attempt::Hung,
            Err(_) => return Attempt::Failed,
        };
        if !response.status().is_success() {
            return Attempt::Failed;
        }
        let Ok(body) = response.json::<Value>().await else { return Attempt::Failed };
        let id = match target {
            Target::User(_) => &body["results"][0]["id"],
            Target::Topic => &body["id"],
        };
        id.as_str().and_then(|id| id.parse().ok()).map_or(Attempt::Failed, Attempt::Acked)
    }

    async fn fcall_attempt(
        &self,
        mut conn: redis::aio::ConnectionManager,
        target: Target,
        notification: &Value,
        key: &str,
    ) -> Attempt {
        let (function, redis_key) = match target {
            Target::User(u) => (
                "herald_publish",
                herald::engine::redis::user_base(&herald::domain::UserId::parse(&self.users[u]).unwrap()),
            ),
            Target::Topic => (
                "herald_publish_topic",
                herald::engine::redis::topic_base(&herald::domain::TopicName::parse(TOPIC).unwrap()),
            ),
        };
        let mut command = redis::cmd("FCALL");
        command.arg(function).arg(1).arg(redis_key).arg(notification.to_string()).arg(key);
        let call = command.query_async::<Option<String>>(&mut conn);
        match tokio::time::timeout(PUBLISH_TIMEOUT, call).await {
            Ok(Ok(Some(id))) => id.parse().map_or(Attempt::Failed, Attempt::Acked),
            Ok(_) => Attempt::Failed,
            Err(_) => Attempt::Hung,
        }
    }
}

enum Attempt {
    Acked(EntryId),
    Failed,
    Hung,
}

/// One tab's `EventSource`, behind a load balancer that sends each
/// (re)connection to the next node.
struct Client {
    http: reqwest::Client,
    user: usize,
    token: String,
    follows_topic: bool,
    bases: Arc<Vec<String>>,
    first_node: usize,
    log: Arc<Mutex<StreamLog>>,
    away: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Client {
    async fn run(self) {
        let http = &self.http;
        let mut cursor: Option<String> = None;
        let mut retry = Duration::from_millis(500);
        for attempt in self.first_node.. {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            if self.away.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let base = &self.bases[attempt % self.bases.len()];
            let query = if self.follows_topic { format!("?topics={TOPIC}") } else { String::new() };
            let mut request = http.get(format!("{base}/v1/events{query}")).bearer_auth(&self.token);
            if let Some(c) = &cursor {
                request = request.header("Last-Event-ID", c);
            }
            match tokio::time::timeout(CONNECT_TIMEOUT, request.send()).await {
                Ok(Ok(response)) if response.status().is_success() => {
                    self.log.lock().unwrap().opens += 1;
                    self.read(response, &mut cursor, &mut retry).await;
                }
                Ok(Ok(response)) => self.log.lock().unwrap().last_refusal = Some(response.status().to_string()),
                Ok(Err(e)) => self.log.lock().unwrap().last_refusal = Some(e.to_string()),
                Err(_) => self.log.lock().unwrap().last_refusal = Some("no response head in time".into()),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Reads one stream until it ends, errs, goes silent, or the tab goes
    /// away.
    async fn read(&self, mut response: reqwest::Response, cursor: &mut Option<String>, retry: &mut Duration) {
        let mut parser = Parser::default();
        let mut events = Vec::new();
        loop {
            if self.away.load(Ordering::Relaxed) || self.stop.load(Ordering::Relaxed) {
                return;
            }
            let Ok(Ok(Some(chunk))) = tokio::time::timeout(SILENCE, response.chunk()).await else { return };
            parser.feed(&chunk, &mut events);
            for event in events.drain(..) {
                if let Some(ms) = event.retry {
                    *retry = Duration::from_millis(ms);
                }
                let seen = match event.event.as_str() {
                    "notification" => {
                        let n = event.json();
                        let target = if n.get("topic").is_some() { Target::Topic } else { Target::User(self.user) };
                        let seq = n["data"]["seq"].as_u64().expect("a workload notification has a seq");
                        let entry = n["id"].as_str().and_then(|id| id.parse().ok()).expect("an entry id");
                        Some(Seen::Notification { target, seq, entry })
                    }
                    "reset" => {
                        let scope = event.json()["scope"].as_str().unwrap_or("inbox").to_owned();
                        Some(Seen::Reset(if scope == "inbox" { Target::User(self.user) } else { Target::Topic }))
                    }
                    _ => None,
                };
                if let Some(seen) = seen {
                    let mut log = self.log.lock().unwrap();
                    match seen {
                        Seen::Notification { target, seq, .. } => log.got.insert((target, seq)),
                        Seen::Reset(target) => log.reset.insert(target),
                    };
                    log.seen.push(seen);
                }
                // EventSource keeps the id of every event that has one.
                if let Some(id) = event.id.filter(|id| !id.is_empty()) {
                    *cursor = Some(id);
                }
            }
        }
    }
}

/// One row of the table in docs/RELIABILITY.md.
#[derive(Debug, Default)]
pub struct Report {
    pub scenario: String,
    pub workload: String,
    /// Notifications acknowledged to their publisher.
    pub published: u64,
    /// Notifications received, over all streams.
    pub delivered: u64,
    pub lost: u64,
    pub lost_examples: Vec<String>,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Received, but never published to that stream's user or topics.
    pub phantom: u64,
    pub resets: u64,
    /// Not received, and inside a gap a `reset` announced.
    pub trimmed: u64,
    pub opens: u64,
    pub failed_attempts: u64,
    pub hung_attempts: u64,
    pub given_up: u64,
    pub slowest_answer: Duration,
    pub recovery: Option<Duration>,
}

impl Report {
    /// The promise: nothing acknowledged lost, nothing twice, nothing out
    /// of order, nothing foreign, no publish left hanging.
    pub fn assert_kept(&self) {
        assert!(
            self.lost == 0
                && self.duplicated == 0
                && self.out_of_order == 0
                && self.phantom == 0
                && self.hung_attempts == 0
                && self.given_up == 0,
            "the promise was broken: {self:#?}"
        );
        assert!(self.published > 0 && self.delivered >= self.published, "the workload ran: {self:#?}");
    }

    pub fn row(&self) -> String {
        let recovery = self.recovery.map_or("–".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.scenario,
            self.workload,
            self.published,
            self.delivered,
            self.lost,
            self.duplicated,
            self.resets,
            recovery,
            self.failed_attempts,
            format_args!("{:.1} s", self.slowest_answer.as_secs_f64()),
        )
    }

    fn write(&self) {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults");
        std::fs::create_dir_all(&dir).unwrap();
        let name: String = self.scenario.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        std::fs::write(dir.join(format!("{name}.md")), format!("{}\n", self.row())).unwrap();
        println!("{}\n{self:?}", self.row());
    }
}
