//! The response body of one SSE stream: the one place that combines the
//! engine (history) and the hub (live frames).
//!
//! It sends the prelude (`retry:` and `unread`), replays history after the
//! cursor page by page, then takes live frames from the stream's queue.
//! The hub queues live frames from the moment the stream registered (before
//! any replay), so the seam has no gap; frames at or before the last id
//! already sent are dropped, so it has no duplicate either (their trailing
//! `unread` is still sent, so the last count is the newest). The same replay
//! runs again whenever the node asks for a resync (after a pub/sub outage).

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::{
    domain::EntryId,
    engine::{AnyEngine, Engine, EngineError, HistoryPage, Reset, StreamStart},
    hub::{Next, Registration},
    wire::{KeepAlive, frame},
};

/// Attempts after the first before a failed replay ends the stream.
const REPLAY_RETRIES: u64 = 4;

/// Where a new stream starts, and how it talks.
#[derive(Debug, Clone, Copy)]
pub struct Opening {
    /// The resume cursor, if the client sent one: history after it is
    /// replayed first. Without one the stream is live from the inbox's
    /// newest entry.
    pub cursor: Option<EntryId>,
    pub start: StreamStart,
    /// The reconnect delay the stream tells the client (`retry:`).
    pub retry: Duration,
    pub keep_alive: KeepAlive,
    pub page_size: usize,
}

pub struct SseBody {
    /// Keeps the stream in the hub; dropped with the body when the client
    /// goes away.
    registration: Registration,
    engine: AnyEngine,
    /// A boxed slice, not `Bytes`: 16 bytes instead of 32 in a struct every
    /// idle stream keeps (actix boxes the body), and it becomes `Bytes`
    /// without a copy.
    prelude: Option<Box<[u8]>>,
    /// The page being read, while replaying. Boxed so that an idle live
    /// stream carries no replay state.
    replay: Option<BoxFuture<'static, Result<HistoryPage, EngineError>>>,
    /// The newest history id this stream has sent (or its starting cursor).
    last_id: EntryId,
    page_size: u32,
    keep_alive: KeepAlive,
    done: bool,
}

impl SseBody {
    /// The registration's subscription must be confirmed already, and
    /// `opening.start` read after it: every live entry from then on is in
    /// the stream's queue.
    pub fn new(registration: Registration, engine: AnyEngine, opening: Opening) -> Self {
        let last_id = opening.cursor.unwrap_or(opening.start.last_id);
        let mut prelude = Vec::with_capacity(80);
        frame::retry(&mut prelude, opening.retry);
        frame::write_opening_unread(&mut prelude, last_id, opening.start.unread);
        let mut body = Self {
            registration,
            engine,
            prelude: Some(prelude.into()),
            replay: None,
            last_id,
            page_size: u32::try_from(opening.page_size).unwrap_or(u32::MAX),
            keep_alive: opening.keep_alive,
            done: false,
        };
        if opening.cursor.is_some() {
            body.start_replay();
        }
        body
    }

    fn start_replay(&mut self) {
        crate::metrics::get().replays.increment(1);
        let engine = self.engine.clone();
        let user = self.registration.queue().user.clone();
        let (after, limit) = (self.last_id, self.page_size as usize);
        self.replay = Some(Box::pin(async move {
            // A replay right after a Redis restart may meet a command
            // connection still reconnecting: retry briefly before giving up.
            let mut attempt = 0;
            loop {
                match engine.read_after(&user, after, limit).await {
                    Err(EngineError::Unavailable(_)) if attempt < REPLAY_RETRIES => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                    }
                    result => return result,
                }
            }
        }));
    }

    /// Encodes a page (per stream: read state is the user's), remembering
    /// the last id sent. Starts the next page if this one was full.
    fn take_page(&mut self, page: HistoryPage) -> Option<Bytes> {
        let mut out = Vec::new();
        if let Some(reset) = page.reset {
            frame::write_reset(&mut out, reset.reason());
            // Nothing after the cursor will ever exist: go on from the
            // inbox's newest id. Live frames already queued at or before it
            // are dropped like replayed ones; the client refetches its list
            // on `reset`, which covers them.
            if let Reset::CursorAhead { newest } = reset {
                self.last_id = newest;
            }
        }
        let full = page.entries.len() >= self.page_size as usize;
        crate::metrics::get().replayed_entries.increment(page.entries.len() as u64);
        for entry in &page.entries {
            // After a reset every kept entry is newer than the cursor too.
            if entry.id > self.last_id {
                frame::write_notification(&mut out, entry.id, entry.body.as_bytes(), entry.read, entry.clicked);
                self.last_id = entry.id;
            }
        }
        if full {
            self.start_replay();
        } else {
            // Caught up. The count may have changed while live events were
            // lost (a pub/sub outage before a resync), so restate it.
            frame::write_unread(&mut out, page.unread);
        }
        (!out.is_empty()).then(|| out.into())
    }
}

impl MessageBody for SseBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Infallible>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(prelude) = this.prelude.take() {
                return Poll::Ready(Some(Ok(prelude.into())));
            }
            if let Some(page) = this.replay.as_mut() {
                // Live frames wait in the queue meanwhile.
                match page.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => {
                        // End the stream: the client reconnects with its
                        // cursor and the replay starts again elsewhere.
                        tracing::warn!(user = %this.registration.queue().user, error = %e, "replay failed; ending the stream");
                        this.done = true;
                        return Poll::Ready(None);
                    }
                    Poll::Ready(Ok(page)) => {
                        this.replay = None;
                        if let Some(bytes) = this.take_page(page) {
                            return Poll::Ready(Some(Ok(bytes)));
                        }
                        continue;
                    }
                }
            }
            match this.registration.queue().poll_next(cx) {
                Next::Frame(frame) => {
                    if let Some(id) = frame.id {
                        if id <= this.last_id {
                            // Already sent by replay, but not its count,
                            // which is newer than any queued before it.
                            match frame.unread_part() {
                                Some(unread) => return Poll::Ready(Some(Ok(unread))),
                                None => continue,
                            }
                        }
                        this.last_id = id;
                    }
                    return Poll::Ready(Some(Ok(frame.bytes)));
                }
                Next::KeepAlive => return Poll::Ready(Some(Ok(this.keep_alive.bytes()))),
                Next::Resync => this.start_replay(),
                Next::Bye(bytes) => {
                    this.done = true;
                    return Poll::Ready(Some(Ok(bytes)));
                }
                Next::Pending => return Poll::Pending,
            }
        }
    }
}
