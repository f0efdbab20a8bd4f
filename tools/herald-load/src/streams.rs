//! The receiving side: one task per SSE stream, opened at a steady rate.
//!
//! A stream is a tokio task holding a raw `TcpStream`, two small buffers
//! (raw bytes, dechunked body) and the SSE parser's scratch: about 2 KiB
//! once warm, so 10,000 streams fit in a few tens of MB. Every receipt is
//! stamped on arrival (once per socket read) and written to the ledger.
//!
//! The receive path stays lean because in a broadcast one core may read
//! well over 100,000 events a second: a notification is not parsed as JSON,
//! the tool only finds its load markers (`"run":`, `"seq":`, ...) inside
//! its `data` object and reads their digits.

use std::{
    net::SocketAddr,
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use memchr::memmem::Finder;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
    time::{Instant, timeout_at},
};

use crate::{
    ServerKind, clock,
    ledger::{Ledger, Receipt},
    wire::{Chunked, SseParser, parse_head},
};

/// What every stream shares.
pub struct StreamPlan {
    pub addr: SocketAddr,
    pub server: ServerKind,
    pub secret: String,
    pub user_prefix: String,
    pub token_ttl: Duration,
    pub run_id: u32,
    /// Connect, send the request and read the head within this.
    pub open_timeout: Duration,
    /// No stream task outlives this, whatever happens.
    pub deadline: Instant,
    /// Reconnect an open stream that ended, after this delay, sending the
    /// last event id as `Last-Event-ID` (as EventSource does); `None`: a
    /// stream that ends stays closed.
    pub reconnect: Option<Duration>,
    /// Broadcast: the topic every stream follows.
    pub topic: Option<String>,
}

/// The load data every notification of a run carries (see `publish.rs`).
#[derive(Debug, PartialEq, Eq)]
struct LoadData {
    run: u32,
    u: u32,
    seq: u32,
    due_us: u64,
    sent_us: u64,
}

static DATA: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""data":{"#));
static MARKERS: LazyLock<[Finder<'static>; 5]> = LazyLock::new(|| {
    [r#""run":"#, r#""u":"#, r#""seq":"#, r#""due_us":"#, r#""sent_us":"#].map(|m| Finder::new(m.as_bytes()))
});

impl LoadData {
    /// The load markers of one notification, in any key order (a server may
    /// re-serialize `data`); `None` for anything that lacks one.
    fn scan(notification: &[u8]) -> Option<Self> {
        let data = &notification[DATA.find(notification)? + DATA.needle().len()..];
        let mut values = [0u64; 5];
        for (value, marker) in values.iter_mut().zip(MARKERS.iter()) {
            let digits = &data[marker.find(data)? + marker.needle().len()..];
            let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
            *value = std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?;
        }
        let [run, u, seq, due_us, sent_us] = values;
        Some(Self {
            run: u32::try_from(run).ok()?,
            u: u32::try_from(u).ok()?,
            seq: u32::try_from(seq).ok()?,
            due_us,
            sent_us,
        })
    }
}

/// Opens `count` streams at `per_second`, stream `i` for user `user_of(i)`.
/// Returns once all are spawned (they open in the background).
pub async fn ramp(
    tasks: &mut JoinSet<()>,
    plan: &Arc<StreamPlan>,
    ledger: &Arc<Mutex<Ledger>>,
    count: usize,
    per_second: u32,
    user_of: impl Fn(usize) -> u32,
) {
    let start = Instant::now();
    let step = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
    for stream in 0..count {
        let due = start + step.mul_f64(stream as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        if Instant::now() >= plan.deadline {
            break;
        }
        tasks.spawn(hold(plan.clone(), ledger.clone(), stream, user_of(stream)));
    }
}

/// Runs one stream until it ends (for good, with `--reconnect`), the
/// deadline passes or the task is aborted, and records how it went.
async fn hold(plan: Arc<StreamPlan>, ledger: Arc<Mutex<Ledger>>, stream: usize, user: u32) {
    let connection = async {
        let mut last_id = Vec::new();
        loop {
            let reason = read_stream(&plan, &ledger, stream, user, &mut last_id).await;
            let Some(delay) = plan.reconnect else { return reason };
            if !lock(&ledger).is_open(stream) {
                return reason; // never opened: a failure, not an outage
            }
            lock(&ledger).disconnected(stream, clock::now_us(), reason, !last_id.is_empty());
            tokio::time::sleep(delay).await;
        }
    };
    let reason = match timeout_at(plan.deadline, connection).await {
        Ok(reason) => reason,
        Err(_) => "deadline".to_owned(),
    };
    lock(&ledger).ended(stream, reason);
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens the stream and reads it; returns why it ended.
/// `last_id` is the last event id seen, kept across reconnections.
async fn read_stream(
    plan: &StreamPlan,
    ledger: &Mutex<Ledger>,
    stream: usize,
    user: u32,
    last_id: &mut Vec<u8>,
) -> String {
    let open_by = Instant::now() + plan.open_timeout;
    let (mut socket, mut raw, chunked) = match timeout_at(open_by, open(plan, user, last_id)).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(reason)) => return reason,
        Err(_) => return "open timed out".to_owned(),
    };
    lock(ledger).opened(stream, clock::now_us());

    let mut chunks = chunked.then(Chunked::default);
    let mut body = Vec::new();
    let mut parser = SseParser::default();
    parser.last_id = std::mem::take(last_id);
    let reason = read_events(plan, ledger, stream, &mut socket, &mut raw, &mut chunks, &mut body, &mut parser).await;
    *last_id = parser.last_id;
    reason
}

/// Reads events off an open stream until it ends; returns why.
#[allow(clippy::too_many_arguments)]
async fn read_events(
    plan: &StreamPlan,
    ledger: &Mutex<Ledger>,
    stream: usize,
    socket: &mut TcpStream,
    raw: &mut Vec<u8>,
    chunks: &mut Option<Chunked>,
    body: &mut Vec<u8>,
    parser: &mut SseParser,
) -> String {
    let mut bye = None;
    loop {
        let received_us = clock::now_us();
        // Herald names its events; Nchan sends the published body as an
        // unnamed event (`message`).
        let mut on_event = |name: &[u8], data: &[u8]| match (plan.server, name) {
            (ServerKind::Herald, b"notification") | (ServerKind::Nchan, b"message" | b"notification") => {
                record(ledger, stream, plan.run_id, data, received_us)
            }
            (ServerKind::Herald, b"bye") => bye = Some(String::from_utf8_lossy(data).into_owned()),
            _ => {}
        };
        let parsed = match chunks.as_mut() {
            Some(chunks) => chunks.decode(raw, body).and_then(|()| parser.feed(body, &mut on_event)),
            None => parser.feed(raw, &mut on_event),
        };
        if let Err(e) = parsed {
            return format!("protocol: {e}");
        }
        if let Some(bye) = bye {
            return format!("bye {bye}");
        }
        if chunks.as_ref().is_some_and(Chunked::is_done) {
            return "server ended the body".to_owned();
        }
        if raw.capacity() - raw.len() < 512 {
            raw.reserve(1024);
        }
        match socket.read_buf(raw).await {
            Ok(0) => return "eof".to_owned(),
            Ok(_) => {}
            Err(e) => return format!("read: {}", e.kind()),
        }
    }
}

/// Connects, asks for the stream, and reads the response head. Returns the
/// socket, bytes already read past the head, and whether the body is chunked.
async fn open(plan: &StreamPlan, user: u32, last_id: &[u8]) -> Result<(TcpStream, Vec<u8>, bool), String> {
    let request = request(plan, user, last_id)?;
    let mut socket = TcpStream::connect(plan.addr).await.map_err(|e| format!("connect: {}", e.kind()))?;
    socket.set_nodelay(true).map_err(|e| format!("nodelay: {}", e.kind()))?;
    socket.write_all(request.as_bytes()).await.map_err(|e| format!("write: {}", e.kind()))?;
    let mut raw = Vec::with_capacity(1024);
    loop {
        if let Some(head) = parse_head(&raw).map_err(|e| format!("protocol: {e}"))? {
            if head.status != 200 {
                return Err(format!("http {}", head.status));
            }
            raw.drain(..head.len);
            return Ok((socket, raw, head.chunked));
        }
        if raw.capacity() - raw.len() < 512 {
            raw.reserve(1024);
        }
        match socket.read_buf(&mut raw).await {
            Ok(0) => return Err("eof before the response head".to_owned()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {}", e.kind())),
        }
    }
}

/// The stream's request: Herald's `/v1/events` with a minted token, or
/// Nchan's `/sub/<user>` (with `--topic`, `?topics=<topic>` and a token
/// granting it, or `/sub/<topic>`). A stream that saw an event id sends it back as
/// `Last-Event-ID`, verbatim, as EventSource does: Herald's ids are Redis
/// stream ids (`1732480000000-0`), Nchan's are `<time>:<tag>`
/// (`1732480000:3`), and both servers resume after that id.
fn request(plan: &StreamPlan, user: u32, last_id: &[u8]) -> Result<String, String> {
    let user_id = format!("{}{user}", plan.user_prefix);
    let path = match (plan.server, &plan.topic) {
        (ServerKind::Herald, topic) => {
            let exp = herald::clock::now_unix() + plan.token_ttl.as_secs();
            let mut claims = herald::auth::Claims::new(&user_id, exp, false);
            claims.topics = topic.as_ref().map(|t| vec![t.clone()]);
            let token = herald::auth::mint_claims(&plan.secret, &claims).map_err(|e| format!("mint token: {e}"))?;
            match topic {
                Some(topic) => format!("/v1/events?access_token={token}&topics={topic}"),
                None => format!("/v1/events?access_token={token}"),
            }
        }
        (ServerKind::Nchan, Some(topic)) => format!("/sub/{topic}"),
        (ServerKind::Nchan, None) => format!("/sub/{user_id}"),
    };
    let resume = if last_id.is_empty() {
        String::new()
    } else {
        format!("Last-Event-ID: {}\r\n", String::from_utf8_lossy(last_id))
    };
    Ok(format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{resume}User-Agent: herald-load\r\n\r\n",
        plan.addr
    ))
}

/// Matches a received notification against the ledger.
fn record(ledger: &Mutex<Ledger>, stream: usize, run_id: u32, data: &[u8], received_us: u64) {
    let load = LoadData::scan(data).filter(|d| d.run == run_id);
    let mut ledger = lock(ledger);
    match load {
        Some(d) => ledger
            .received(stream, Receipt { user: d.u, seq: d.seq, due_us: d.due_us, sent_us: d.sent_us, received_us }),
        None => ledger.foreign(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(server: ServerKind) -> StreamPlan {
        StreamPlan {
            addr: "127.0.0.1:9".parse().unwrap(),
            server,
            secret: "a-load-test-secret-of-32-bytes-or-more".into(),
            user_prefix: "load-".into(),
            token_ttl: Duration::from_secs(60),
            run_id: 1,
            open_timeout: Duration::from_secs(1),
            deadline: Instant::now() + Duration::from_secs(60),
            reconnect: Some(Duration::from_millis(250)),
            topic: None,
        }
    }

    #[test]
    fn load_markers_are_found_in_any_key_order_inside_data() {
        let sent = br#"{"id":"1-0","type":"load.test","title":"t","data":{"run":7,"u":3,"seq":12,"due_us":100,"sent_us":105},"topic":"news"}"#;
        let expected = LoadData { run: 7, u: 3, seq: 12, due_us: 100, sent_us: 105 };
        assert_eq!(LoadData::scan(sent), Some(expected));
        let sorted = br#"{"data":{"due_us":100,"run":7,"sent_us":105,"seq":12,"u":3},"type":"x"}"#;
        assert_eq!(LoadData::scan(sorted).map(|d| (d.seq, d.u)), Some((12, 3)));
        // Markers outside `data` do not count; a missing one or a non-number fails.
        assert_eq!(LoadData::scan(br#"{"run":1,"u":1,"seq":1,"due_us":1,"sent_us":1}"#), None);
        assert_eq!(LoadData::scan(br#"{"data":{"run":7,"u":3,"seq":12,"due_us":100}}"#), None);
        assert_eq!(LoadData::scan(br#"{"data":{"run":"7","u":3,"seq":12,"due_us":1,"sent_us":1}}"#), None);
    }

    #[test]
    fn broadcast_streams_follow_the_topic() {
        let mut herald = plan(ServerKind::Herald);
        herald.topic = Some("news".into());
        let request = request(&herald, 4, b"").unwrap();
        assert!(request.contains("&topics=news HTTP/1.1\r\n"), "{request}");
        let token = request.split("access_token=").nth(1).unwrap().split('&').next().unwrap();
        let claims = token.split('.').nth(1).unwrap();
        let claims = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap();
        assert_eq!((claims["sub"].as_str(), &claims["topics"]), (Some("load-4"), &serde_json::json!(["news"])));
        let mut nchan = plan(ServerKind::Nchan);
        nchan.topic = Some("news".into());
        assert!(request_of(&nchan).starts_with("GET /sub/news HTTP/1.1\r\n"));
    }

    fn request_of(plan: &StreamPlan) -> String {
        request(plan, 4, b"").unwrap()
    }

    #[test]
    fn nchan_streams_resume_with_the_last_nchan_id() {
        let plan = plan(ServerKind::Nchan);
        // What Nchan's EventSource subscriber sends: a comment at connect,
        // then `id: <time>:<tag>` and the published body as unnamed events.
        let mut body = b": hi\n\nid: 1795562315:0\ndata: {\"a\":1}\n\nid: 1795562315:1\ndata: {\"a\":2}\n\n".to_vec();
        let mut parser = SseParser::default();
        let mut names = Vec::new();
        parser.feed(&mut body, |name, _| names.push(name.to_vec())).unwrap();
        assert_eq!(names, [b"message".to_vec(), b"message".to_vec()]);
        assert_eq!(parser.last_id, b"1795562315:1");

        let first = request(&plan, 7, b"").unwrap();
        assert!(first.starts_with("GET /sub/load-7 HTTP/1.1\r\n"), "{first}");
        assert!(!first.contains("Last-Event-ID"), "no id yet, no cursor: {first}");
        let again = request(&plan, 7, &parser.last_id).unwrap();
        assert!(again.contains("\r\nLast-Event-ID: 1795562315:1\r\n"), "{again}");
        assert!(again.ends_with("\r\n\r\n"));
    }

    #[test]
    fn herald_streams_carry_a_token_and_the_last_id() {
        let plan = plan(ServerKind::Herald);
        let again = request(&plan, 3, b"1732480000000-0").unwrap();
        assert!(again.starts_with("GET /v1/events?access_token="), "{again}");
        assert!(again.contains("\r\nLast-Event-ID: 1732480000000-0\r\n"), "{again}");
    }
}
