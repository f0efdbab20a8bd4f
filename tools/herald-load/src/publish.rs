//! The sending side: notifications at a steady rate to random users, over
//! HTTP (`POST /v1/publish`) or straight into Redis (`FCALL herald_publish`).
//!
//! A scheduler picks a random user per tick and hands it to one of a few
//! lanes; a user always goes to the same lane (`user % lanes`), and a lane
//! sends one publish at a time and waits for its answer. So each user's
//! publishes reach the server in sequence order, and a stream seeing them out
//! of order is the server's doing, not the tool's.
//!
//! A lane is one keep-alive HTTP connection, or one in-flight `FCALL` on the
//! shared multiplexed Redis connection (lanes pipeline on it).
//!
//! A broadcast (`--topic`) has one publishing "user", the topic, so its
//! publishes go out one at a time on one lane, in sequence order.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
    task::JoinSet,
    time::{Instant, timeout, timeout_at},
};

use crate::{
    clock,
    ledger::Ledger,
    wire::{Chunked, parse_head},
};

/// Longest wait for one publish's answer.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Publishes a lane may have queued before the scheduler waits for it.
const LANE_QUEUE: usize = 256;
/// How long past its duration a schedule that fell behind may go on.
const OVERRUN: Duration = Duration::from_secs(1);

/// One publish for a lane: the user, and when the schedule wanted it sent.
struct Job {
    user: u32,
    due_us: u64,
}

/// Where publishes go.
pub enum Sink {
    Http {
        addr: SocketAddr,
        token: String,
    },
    /// Nchan's HTTP publisher: `POST /pub/<user>`, the notification as the body.
    Nchan {
        addr: SocketAddr,
    },
    Redis(redis::aio::MultiplexedConnection),
}

pub struct PublishPlan {
    pub rate: u32,
    pub duration: Duration,
    pub users: u32,
    pub lanes: usize,
    pub user_prefix: String,
    /// Broadcast: every publish goes to this topic (`users` is 1).
    pub topic: Option<String>,
    pub run_id: u32,
    pub seed: u64,
    /// Lanes still busy this long after the schedule ended are abandoned.
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct PublishReport {
    /// rate × duration.
    pub target: u64,
    /// Handed to a lane within the duration (and a short overrun).
    pub scheduled: u64,
    /// From the first publish to the last answer.
    pub elapsed: Duration,
    pub lanes_abandoned: usize,
}

/// Publishes for `plan.duration`, then waits for the lanes to finish.
pub async fn run(plan: &PublishPlan, sink: Sink, ledger: &Arc<Mutex<Ledger>>) -> PublishReport {
    let lanes = plan.lanes.max(1);
    let mut senders = Vec::with_capacity(lanes);
    let mut tasks = JoinSet::new();
    let shared = Arc::new(LaneShared {
        user_prefix: plan.user_prefix.clone(),
        topic: plan.topic.clone(),
        run_id: plan.run_id,
        lanes,
        ledger: ledger.clone(),
    });
    for _ in 0..lanes {
        let (tx, rx) = mpsc::channel(LANE_QUEUE);
        senders.push(tx);
        let users_here = (plan.users as usize).div_ceil(lanes);
        let lane = Lane { shared: shared.clone(), next_seq: vec![1; users_here] };
        match &sink {
            Sink::Http { addr, token } => {
                tasks.spawn(lane.http(rx, *addr, token.clone()));
            }
            Sink::Redis(conn) => {
                tasks.spawn(lane.redis(rx, conn.clone()));
            }
            Sink::Nchan { addr } => {
                tasks.spawn(lane.nchan(rx, *addr));
            }
        }
    }

    let target = (f64::from(plan.rate) * plan.duration.as_secs_f64()).round() as u64;
    let step = Duration::from_secs_f64(1.0 / f64::from(plan.rate.max(1)));
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let start = Instant::now();
    let start_us = clock::now_us();
    let stop = start + plan.duration + OVERRUN;
    let mut scheduled = 0;
    // Open loop: publish `i` is due at start + i/rate. When behind, the due
    // ones go out at once, each carrying its due time; a schedule still
    // behind at `stop` ends there, and the shortfall shows in the report.
    while scheduled < target {
        let offset = step.mul_f64(scheduled as f64);
        let due = start + offset;
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let user = rng.random_range(0..plan.users);
        let job = Job { user, due_us: start_us + offset.as_micros() as u64 };
        match timeout_at(stop, senders[user as usize % lanes].send(job)).await {
            Ok(Ok(())) => scheduled += 1,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    drop(senders);
    let drained = timeout(plan.drain_timeout, async { while tasks.join_next().await.is_some() {} }).await;
    let lanes_abandoned = if drained.is_err() {
        let left = tasks.len();
        tasks.abort_all();
        left
    } else {
        0
    };
    PublishReport { target, scheduled, elapsed: start.elapsed(), lanes_abandoned }
}

struct LaneShared {
    user_prefix: String,
    topic: Option<String>,
    run_id: u32,
    lanes: usize,
    ledger: Arc<Mutex<Ledger>>,
}

struct Lane {
    shared: Arc<LaneShared>,
    /// Next sequence number of each user of this lane (user / lanes).
    next_seq: Vec<u32>,
}

impl Lane {
    fn take_seq(&mut self, user: u32) -> u32 {
        let slot = &mut self.next_seq[user as usize / self.shared.lanes];
        let seq = *slot;
        *slot += 1;
        seq
    }

    /// The notification, stamped now: the send stamp is taken as late as
    /// possible, just before the bytes are written.
    fn notification(&self, job: &Job, seq: u32) -> String {
        format!(
            r#"{{"type":"load.test","title":"t","data":{{"run":{},"u":{},"seq":{seq},"due_us":{},"sent_us":{}}}}}"#,
            self.shared.run_id,
            job.user,
            job.due_us,
            clock::now_us()
        )
    }

    fn settle(&self, user: u32, seq: u32, result: Result<(), String>) {
        let mut ledger = self.shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => ledger.acked(user, seq),
            Err(reason) => ledger.publish_failed(reason),
        }
    }

    async fn http(mut self, mut jobs: mpsc::Receiver<Job>, addr: SocketAddr, token: String) {
        let mut conn: Option<HttpConn> = None;
        let auth = format!("Authorization: Bearer {token}\r\n");
        while let Some(job) = jobs.recv().await {
            let (user, seq) = (job.user, self.take_seq(job.user));
            let notification = self.notification(&job, seq);
            let body = match &self.shared.topic {
                Some(topic) => format!(r#"{{"to":{{"topic":"{topic}"}},"notification":{notification}}}"#),
                None => format!(
                    r#"{{"to":{{"users":["{}{user}"]}},"notification":{notification}}}"#,
                    self.shared.user_prefix
                ),
            };
            let result = post(&mut conn, addr, "/v1/publish", &auth, &body, |status| status == 202).await;
            self.settle(user, seq, result);
        }
    }

    /// Nchan answers 201 when the channel has subscribers, 202 when not.
    async fn nchan(mut self, mut jobs: mpsc::Receiver<Job>, addr: SocketAddr) {
        let mut conn: Option<HttpConn> = None;
        while let Some(job) = jobs.recv().await {
            let (user, seq) = (job.user, self.take_seq(job.user));
            let path = match &self.shared.topic {
                Some(topic) => format!("/pub/{topic}"),
                None => format!("/pub/{}{user}", self.shared.user_prefix),
            };
            let body = self.notification(&job, seq);
            let result = post(&mut conn, addr, &path, "", &body, |status| (200..=202).contains(&status)).await;
            self.settle(user, seq, result);
        }
    }

    async fn redis(mut self, mut jobs: mpsc::Receiver<Job>, mut conn: redis::aio::MultiplexedConnection) {
        while let Some(job) = jobs.recv().await {
            let (user, seq) = (job.user, self.take_seq(job.user));
            let (function, key) = match &self.shared.topic {
                Some(topic) => ("herald_publish_topic", format!("herald:{{t:{topic}}}")),
                None => ("herald_publish", format!("herald:{{u:{}{user}}}", self.shared.user_prefix)),
            };
            let mut cmd = redis::cmd("FCALL");
            cmd.arg(function).arg(1).arg(key).arg(self.notification(&job, seq));
            let result = match timeout(PUBLISH_TIMEOUT, cmd.query_async::<String>(&mut conn)).await {
                Ok(Ok(_id)) => Ok(()),
                Ok(Err(e)) => Err(format!("redis: {}", e.code().unwrap_or("io error"))),
                Err(_) => Err("timed out".to_owned()),
            };
            self.settle(user, seq, result);
        }
    }
}

/// A keep-alive HTTP/1.1 connection that posts one request at a time.
struct HttpConn {
    socket: TcpStream,
    raw: Vec<u8>,
    scratch: Vec<u8>,
}

impl HttpConn {
    async fn connect(addr: SocketAddr) -> Result<Self, String> {
        let socket = timeout(PUBLISH_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("connect: {}", e.kind()))?;
        socket.set_nodelay(true).map_err(|e| format!("nodelay: {}", e.kind()))?;
        Ok(Self { socket, raw: Vec::with_capacity(4096), scratch: Vec::new() })
    }

    /// Posts to `path` (`extra_headers`: complete header lines, or empty);
    /// returns the status once the whole response was read (so the
    /// connection is ready for the next request).
    async fn post(&mut self, addr: SocketAddr, path: &str, extra_headers: &str, body: &str) -> Result<u16, String> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{extra_headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.socket.write_all(request.as_bytes()).await.map_err(|e| format!("write: {}", e.kind()))?;
        self.raw.clear();
        let head = loop {
            if let Some(head) = parse_head(&self.raw).map_err(|e| format!("protocol: {e}"))? {
                break head;
            }
            self.read_more().await?;
        };
        self.raw.drain(..head.len);
        if head.chunked {
            let mut chunks = Chunked::default();
            loop {
                self.scratch.clear();
                chunks.decode(&mut self.raw, &mut self.scratch).map_err(|e| format!("protocol: {e}"))?;
                if chunks.is_done() {
                    break;
                }
                self.read_more().await?;
            }
        } else {
            let length = head.content_length.unwrap_or(0);
            while self.raw.len() < length {
                self.read_more().await?;
            }
        }
        Ok(head.status)
    }

    async fn read_more(&mut self) -> Result<(), String> {
        if self.raw.capacity() - self.raw.len() < 1024 {
            self.raw.reserve(4096);
        }
        match self.socket.read_buf(&mut self.raw).await {
            Ok(0) => Err("eof".to_owned()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read: {}", e.kind())),
        }
    }
}

/// One POST on a lane's keep-alive connection, connecting first if needed.
/// After any failure the connection's state is unknown, so it is dropped
/// and the next publish starts afresh.
async fn post(
    conn: &mut Option<HttpConn>,
    addr: SocketAddr,
    path: &str,
    headers: &str,
    body: &str,
    accepted: impl Fn(u16) -> bool,
) -> Result<(), String> {
    let result = async {
        if conn.is_none() {
            *conn = Some(HttpConn::connect(addr).await?);
        }
        let c = conn.as_mut().expect("just connected");
        match timeout(PUBLISH_TIMEOUT, c.post(addr, path, headers, body)).await {
            Ok(Ok(status)) if accepted(status) => Ok(()),
            Ok(Ok(status)) => Err(format!("http {status}")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("timed out".to_owned()),
        }
    }
    .await;
    if result.is_err() {
        *conn = None;
    }
    result
}
