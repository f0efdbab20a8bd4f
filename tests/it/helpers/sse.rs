use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

/// One parsed server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
    pub retry: Option<u64>,
}

impl SseEvent {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

/// Incremental `text/event-stream` parser (comments dropped).
#[derive(Default)]
pub struct Parser {
    buf: Vec<u8>,
    current: SseEvent,
    has_fields: bool,
}

impl Parser {
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        self.buf.extend_from_slice(bytes);
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).trim_end_matches('\r').to_owned();
            if line.is_empty() {
                if self.has_fields {
                    let mut event = std::mem::take(&mut self.current);
                    if event.event.is_empty() {
                        event.event = "message".into();
                    }
                    out.push(event);
                }
                self.has_fields = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            self.has_fields = true;
            match field {
                "id" => self.current.id = Some(value.to_owned()),
                "event" => self.current.event = value.to_owned(),
                "data" => {
                    if !self.current.data.is_empty() {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                }
                "retry" => self.current.retry = value.parse().ok(),
                _ => {}
            }
        }
    }
}

/// An open SSE stream read by a background task; events wait in a channel.
pub struct SseStream {
    events: mpsc::UnboundedReceiver<Option<SseEvent>>,
    task: tokio::task::JoinHandle<()>,
    closed: bool,
}

impl SseStream {
    /// Opens a stream; `Err` says why not (refused connection, or the
    /// status and error body).
    pub async fn open(request: reqwest::RequestBuilder) -> Result<Self, String> {
        let response = request.header("Accept", "text/event-stream").send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("{} {}", response.status(), response.text().await.unwrap_or_default()));
        }
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut parser = Parser::default();
            let mut out = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                parser.feed(&chunk, &mut out);
                for event in out.drain(..) {
                    if tx.send(Some(event)).is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send(None); // end of stream
        });
        Ok(Self { events, task, closed: false })
    }

    /// The next event, `None` if the stream ended; panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        if self.closed {
            return None;
        }
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Ok(Some(Some(event))) => Some(event),
            Ok(_) => {
                self.closed = true;
                None
            }
            Err(_) => panic!("no SSE event within {timeout:?}"),
        }
    }

    /// The next event of kind `event`, skipping others.
    pub async fn next_of(&mut self, event: &str, timeout: Duration) -> SseEvent {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left.max(Duration::from_millis(1))).await {
                Some(e) if e.event == event => return e,
                Some(_) => continue,
                None => panic!("stream ended while waiting for `{event}`"),
            }
        }
    }

    /// `n` notifications (skipping other events), each within `timeout`.
    pub async fn notifications(&mut self, n: usize, timeout: Duration) -> Vec<SseEvent> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            got.push(self.next_of("notification", timeout).await);
        }
        got
    }

    /// Asserts that no notification arrives within `window`.
    pub async fn assert_no_notification(&mut self, window: Duration) {
        let deadline = tokio::time::Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match tokio::time::timeout(left, self.events.recv()).await {
                Err(_) => return,
                Ok(Some(Some(e))) if e.event == "notification" => {
                    panic!("unexpected notification: {e:?}")
                }
                Ok(Some(Some(_))) => continue,
                Ok(_) => return,
            }
        }
    }

    /// Stops reading and closes the connection.
    pub fn close(self) {
        self.task.abort();
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parses every event in a raw HTTP response (headers skipped).
pub fn read_raw_events(raw: &[u8]) -> Vec<SseEvent> {
    let body_start = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4).unwrap_or(0);
    let body = &raw[body_start..];
    // Chunked transfer encoding: strip chunk-size lines.
    let mut plain = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < eol + 2 + size {
            plain.extend_from_slice(&rest[(eol + 2).min(rest.len())..(eol + 2 + size).min(rest.len())]);
            break;
        }
        plain.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[(eol + 4 + size).min(rest.len())..];
    }
    let mut out = Vec::new();
    Parser::default().feed(&plain, &mut out);
    out
}
