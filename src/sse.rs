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
//!
//! A stream may also follow topics. Each followed part (the inbox, each
//! topic) keeps its own position and its own seam; a replay reads every
//! part that has something to replay and sends their entries merged in id
//! order, and every event's `id:` is then the composite cursor of all the
//! positions ([`Cursor`]), so one `Last-Event-ID` resumes them all.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;
use futures_util::future::{BoxFuture, try_join_all};

use crate::{
    domain::{Cursor, EntryId, TopicName, TopicTag},
    engine::{AnyEngine, Engine, EngineError, HistoryPage, Reset, StoredEntry, StreamStart},
    hub::{Following, Next, Registration},
    wire::{Frame, KeepAlive, frame},
};

/// Attempts after the first before a failed replay ends the stream.
const REPLAY_RETRIES: u64 = 4;

/// A reconnect delay drawn from half to one and a half times `retry`. Every
/// stream gets its own, at open and with a shutdown `bye`, so the clients of
/// a node that dies or stops come back spread over a second or more instead
/// of in one instant (the reconnect storm in docs/RELIABILITY.md).
pub fn jittered_retry(retry: Duration) -> Duration {
    let base = retry.as_millis().min(u64::MAX as u128) as u64;
    Duration::from_millis(base / 2 + rand::random::<u64>() % (base + 1))
}

/// Where a new stream starts, and how it talks.
pub struct Opening {
    /// The inbox's resume point, if the client sent a cursor: history after
    /// it is replayed first. Without one the inbox is live from its newest
    /// entry.
    pub cursor: Option<EntryId>,
    pub start: StreamStart,
    /// The topics the stream follows, if any.
    pub topics: Option<Topics>,
    /// The reconnect delay the stream tells the client (`retry:`).
    pub retry: Duration,
    pub keep_alive: KeepAlive,
    pub page_size: usize,
}

/// The topics a stream follows, in its order (its frames' parts 1, 2, ...):
/// its place among their followers, and where each starts.
pub struct Topics {
    pub following: Following,
    /// Per topic, in `following`'s order: the resume point from the client's
    /// cursor (replayed after), or `None` to go live from `start`.
    pub resume: Vec<Option<EntryId>>,
    /// Per topic: the newest id it had given when the stream subscribed.
    pub start: Vec<EntryId>,
}

/// What a stream that follows topics keeps besides the inbox's position.
struct Followed {
    /// Dropped with the body: the stream leaves its topics' followers.
    _following: Following,
    topics: Vec<TopicName>,
    /// Each topic's position (tag, last id sent), in `topics`' order; its
    /// `inbox` is set from [`SseBody::last_id`] whenever it is written.
    cursor: Cursor,
}

/// One part of a replay: the inbox (part 0) or a topic (part `n`).
#[derive(Default)]
struct PartReplay {
    /// Read but not sent yet: entries after what was sent, oldest first.
    buffered: VecDeque<StoredEntry>,
    /// Where the next page of this part starts (exclusive).
    after: EntryId,
    /// No more history after `buffered` (its last page was short), or the
    /// part is not being replayed.
    done: bool,
}

/// Pages being read, each with the part it belongs to.
type PagesRead = BoxFuture<'static, Result<Vec<(usize, HistoryPage)>, EngineError>>;

/// A replay in progress: one page of each part that needs one in flight,
/// or entries buffered to merge.
struct Replay {
    parts: Vec<PartReplay>,
    inflight: Option<PagesRead>,
    /// The inbox's unread count from its last page read, restated when the
    /// replay ends (live counts may have been lost meanwhile).
    unread: Option<u64>,
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
    /// Boxed, so that an idle live stream carries no replay state.
    replay: Option<Box<Replay>>,
    /// The newest inbox id this stream has sent (or its starting cursor).
    last_id: EntryId,
    /// `None` for a stream of the inbox alone (most streams): it then
    /// carries nothing for topics, and its cursor is the inbox id.
    followed: Option<Box<Followed>>,
    page_size: u32,
    keep_alive: KeepAlive,
    done: bool,
}

impl SseBody {
    /// The registration's subscriptions (the user's and every topic's) must
    /// be confirmed already, and `opening.start` and the topics' starts read
    /// after them: every live entry from then on is in the stream's queue.
    pub fn new(registration: Registration, engine: AnyEngine, opening: Opening) -> Self {
        let last_id = opening.cursor.unwrap_or(opening.start.last_id);
        let mut replay_from: Vec<Option<EntryId>> = vec![opening.cursor];
        let followed = opening.topics.map(|topics| {
            let names = topics.following.topics().to_vec();
            let mut positions = Vec::with_capacity(names.len());
            let mut list = Vec::with_capacity(names.len());
            for (i, name) in names.into_iter().enumerate() {
                let tag = TopicTag::of(&name);
                let resume = topics.resume.get(i).copied().flatten();
                positions.push((tag, resume.unwrap_or(topics.start[i])));
                replay_from.push(resume);
                list.push(name);
            }
            let cursor = Cursor { inbox: last_id, topics: positions };
            Box::new(Followed { _following: topics.following, topics: list, cursor })
        });
        let mut prelude = Vec::with_capacity(80);
        frame::retry(&mut prelude, opening.retry);
        let mut body = Self {
            registration,
            engine,
            prelude: None,
            replay: None,
            last_id,
            followed,
            page_size: u32::try_from(opening.page_size).unwrap_or(u32::MAX).max(1),
            keep_alive: opening.keep_alive,
            done: false,
        };
        // The opening `unread` carries the cursor the stream starts from as
        // its `id:`: a client that gets nothing else before a disconnect
        // still resumes from there, instead of reconnecting without
        // `Last-Event-ID` and missing what was published meanwhile.
        body.write_cursor_id(&mut prelude);
        frame::write_unread(&mut prelude, opening.start.unread);
        body.prelude = Some(prelude.into());
        if replay_from.iter().any(Option::is_some) {
            body.start_replay(&replay_from);
        }
        body
    }

    /// Writes the `id:` line of the stream's cursor now (what a client
    /// resuming from here sends): the inbox id alone, or the composite of
    /// every position. Nothing is allocated per event for it.
    fn write_cursor_id(&mut self, out: &mut Vec<u8>) {
        match &mut self.followed {
            Some(followed) => {
                followed.cursor.inbox = self.last_id;
                frame::write_id(out, &followed.cursor);
            }
            None => frame::write_id(out, &Cursor::inbox_only(self.last_id)),
        }
    }

    /// Starts a replay of every part with a resume point in `from` (part 0
    /// the inbox, then the topics in order).
    fn start_replay(&mut self, from: &[Option<EntryId>]) {
        crate::metrics::get().replays.increment(1);
        let parts = from
            .iter()
            .map(|after| match after {
                Some(after) => PartReplay { after: *after, ..PartReplay::default() },
                None => PartReplay { done: true, ..PartReplay::default() },
            })
            .collect();
        let mut replay = Box::new(Replay { parts, inflight: None, unread: None });
        self.fetch(&mut replay);
        self.replay = Some(replay);
    }

    /// A resync: every part replays from the position it has sent.
    fn resync(&mut self) {
        let mut from = vec![Some(self.last_id)];
        if let Some(followed) = &self.followed {
            from.extend(followed.cursor.topics.iter().map(|(_, id)| Some(*id)));
        }
        self.start_replay(&from);
    }

    /// Reads the next page of every part that is not done and has nothing
    /// buffered, at once.
    fn fetch(&self, replay: &mut Replay) {
        let limit = self.page_size as usize;
        let mut reads: Vec<BoxFuture<'static, Result<(usize, HistoryPage), EngineError>>> = Vec::new();
        for (part, state) in replay.parts.iter().enumerate() {
            if state.done || !state.buffered.is_empty() {
                continue;
            }
            let engine = self.engine.clone();
            let after = state.after;
            if part == 0 {
                let user = self.registration.queue().user.clone();
                reads.push(Box::pin(async move {
                    retrying(|| engine.read_after(&user, after, limit)).await.map(|page| (0, page))
                }));
            } else {
                let topic = self.followed.as_ref().expect("topic parts come with topics").topics[part - 1].clone();
                reads.push(Box::pin(async move {
                    retrying(|| engine.read_topic_after(&topic, after, limit)).await.map(|page| (part, page))
                }));
            }
        }
        replay.inflight = (!reads.is_empty()).then(|| -> BoxFuture<'static, _> { Box::pin(try_join_all(reads)) });
    }

    /// Takes the pages just read: their resets (written at once), their
    /// entries (buffered), whether each part has more.
    fn take_pages(&mut self, replay: &mut Replay, pages: Vec<(usize, HistoryPage)>, out: &mut Vec<u8>) {
        let limit = self.page_size as usize;
        for (part, page) in pages {
            crate::metrics::get().replayed_entries.increment(page.entries.len() as u64);
            if let Some(reset) = page.reset {
                let topic = (part > 0).then(|| &self.followed.as_ref().expect("topics").topics[part - 1]);
                frame::write_reset(out, reset.reason(), topic);
                // Nothing after the cursor will ever exist: go on from the
                // part's newest id. Live frames already queued at or before
                // it are dropped like replayed ones; the client refetches
                // that part on `reset`, which covers them.
                if let Reset::CursorAhead { newest } = reset {
                    self.set_position(part, newest);
                }
            }
            if part == 0 {
                replay.unread = Some(page.unread);
            }
            let state = &mut replay.parts[part];
            state.done = page.entries.len() < limit;
            if let Some(last) = page.entries.last() {
                state.after = last.id;
            }
            state.buffered.extend(page.entries);
        }
    }

    /// Sends buffered entries in id order across parts, as far as every
    /// part that may have more is known to reach: the part whose buffer
    /// ends first is drained and read again before anything newer goes.
    fn send_merged(&mut self, replay: &mut Replay, out: &mut Vec<u8>) {
        let bound = replay.parts.iter().filter(|p| !p.done).filter_map(|p| p.buffered.back().map(|e| e.id)).min();
        loop {
            let next = replay
                .parts
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.buffered.front().map(|e| (e.id, i)))
                .min()
                .filter(|(id, _)| bound.is_none_or(|b| *id <= b));
            let Some((_, part)) = next else { break };
            let entry = replay.parts[part].buffered.pop_front().expect("just seen");
            // After a reset every kept entry is newer than the cursor too.
            if entry.id > self.position(part) {
                self.set_position(part, entry.id);
                self.write_entry(part, &entry, out);
            }
        }
    }

    fn position(&self, part: usize) -> EntryId {
        match part {
            0 => self.last_id,
            n => self.followed.as_ref().expect("topics").cursor.topics[n - 1].1,
        }
    }

    fn set_position(&mut self, part: usize, id: EntryId) {
        match part {
            0 => self.last_id = id,
            n => self.followed.as_mut().expect("topics").cursor.topics[n - 1].1 = id,
        }
    }

    /// A replayed entry, with its `id:` (the composite cursor when the
    /// stream follows topics; positions are already moved past it).
    fn write_entry(&mut self, part: usize, entry: &StoredEntry, out: &mut Vec<u8>) {
        let body = entry.body.as_bytes();
        if self.followed.is_none() {
            return frame::write_notification(out, entry.id, body, entry.read, entry.clicked);
        }
        self.write_cursor_id(out);
        if part == 0 {
            frame::write_inbox_event(out, entry.id, body, entry.read, entry.clicked);
        } else {
            frame::write_topic_event(out, entry.id, body);
        }
    }

    /// A live frame as this stream sends it, or `None` if it was already
    /// replayed and has nothing newer to say.
    fn live(&mut self, frame: Frame) -> Option<Bytes> {
        let Some(id) = frame.id else { return Some(frame.bytes) };
        let part = frame.part as usize;
        if id <= self.position(part) {
            // Already sent by replay, but not its count, which is newer
            // than any queued before it.
            return frame.unread_part();
        }
        self.set_position(part, id);
        if self.followed.is_none() {
            return Some(frame.bytes);
        }
        let rest = frame.without_id();
        let mut out = Vec::with_capacity(rest.len() + 160);
        self.write_cursor_id(&mut out);
        out.extend_from_slice(&rest);
        Some(out.into())
    }
}

/// An engine read, retried briefly: a replay right after a Redis restart
/// may meet a command connection still reconnecting.
async fn retrying<F, Fut>(mut read: F) -> Result<HistoryPage, EngineError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<HistoryPage, EngineError>>,
{
    let mut attempt = 0;
    loop {
        match read().await {
            Err(EngineError::Unavailable(_)) if attempt < REPLAY_RETRIES => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            result => return result,
        }
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
            if let Some(mut replay) = this.replay.take() {
                // Live frames wait in the queue meanwhile.
                let mut out = Vec::new();
                if let Some(inflight) = replay.inflight.as_mut() {
                    match inflight.as_mut().poll(cx) {
                        Poll::Pending => {
                            this.replay = Some(replay);
                            return Poll::Pending;
                        }
                        Poll::Ready(Err(e)) => {
                            // End the stream: the client reconnects with its
                            // cursor and the replay starts again elsewhere.
                            tracing::warn!(user = %this.registration.queue().user, error = %e, "replay failed; ending the stream");
                            this.done = true;
                            return Poll::Ready(None);
                        }
                        Poll::Ready(Ok(pages)) => {
                            replay.inflight = None;
                            this.take_pages(&mut replay, pages, &mut out);
                        }
                    }
                }
                this.send_merged(&mut replay, &mut out);
                this.fetch(&mut replay);
                if replay.inflight.is_none() {
                    // Caught up. The count may have changed while live
                    // events were lost (a pub/sub outage before a resync),
                    // so restate it.
                    if let Some(unread) = replay.unread {
                        frame::write_unread(&mut out, unread);
                    }
                } else {
                    this.replay = Some(replay);
                }
                if !out.is_empty() {
                    return Poll::Ready(Some(Ok(out.into())));
                }
                continue;
            }
            match this.registration.queue().poll_next(cx) {
                Next::Frame(frame) => {
                    if let Some(bytes) = this.live(frame) {
                        return Poll::Ready(Some(Ok(bytes)));
                    }
                }
                Next::KeepAlive => return Poll::Ready(Some(Ok(this.keep_alive.bytes()))),
                Next::Resync => this.resync(),
                Next::Bye(bytes) => {
                    this.done = true;
                    return Poll::Ready(Some(Ok(bytes)));
                }
                Next::Pending => return Poll::Pending,
            }
        }
    }
}
