//! One open stream's queue: the short bounded queue of encoded frames the
//! hub fills and the stream's body drains, and how the stream should end.
//!
//! The hub pushes (never waits); the response body pops. A push into a full
//! queue does not block or drop silently: it marks the stream a slow consumer,
//! which then ends with `bye` and resumes from history on reconnect. So one
//! slow client never delays another.

use std::{
    collections::VecDeque,
    sync::Mutex,
    task::{Context, Waker},
    time::Duration,
};

use bytes::Bytes;

use crate::{
    domain::{ByeReason, UserId},
    wire::{Frame, frame},
};

/// What the body should do next.
pub enum Next {
    Frame(Frame),
    /// The stream was quiet for a whole interval: send a keep-alive (see
    /// [`StreamQueue::keep_alive_if_quiet`]).
    KeepAlive,
    /// The node lost live traffic for a while (pub/sub reconnect): replay from
    /// the last delivered id before taking more live frames.
    Resync,
    /// Send these last bytes (`bye`) and end.
    Bye(Bytes),
    Pending,
}

pub struct StreamQueue {
    pub user: UserId,
    /// Token expiry (unix seconds): the stream is ended at this instant.
    pub expires_at: u64,
    /// A std mutex: held only to push or pop, never across an `.await`, and
    /// contended only by the hub's delivery and this stream's own poll.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Grows on demand: an idle stream holds no queue memory.
    frames: VecDeque<Frame>,
    /// Why and (milliseconds) the `retry:` to send with `bye`. Milliseconds
    /// in a u32, not a `Duration`: every idle stream holds one of these, and
    /// this keeps the whole `StreamQueue` in a 128-byte allocation.
    closing: Option<(ByeReason, Option<u32>)>,
    resync: bool,
    /// A keep-alive is owed. A flag, not a queued frame: an idle stream then
    /// never grows its queue (a first push allocates room for four frames,
    /// 256 bytes, which would be most of an idle stream's own memory).
    keep_alive_due: bool,
    warned_expiry: bool,
    waker: Option<Waker>,
    /// The hub tick of the last frame queued: keep-alives go only to streams
    /// that have been quiet for the whole interval.
    last_frame_tick: u64,
}

impl StreamQueue {
    pub fn new(user: UserId, expires_at: u64) -> Self {
        Self { user, expires_at, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every critical section is a push or pop), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame (at hub tick `tick`) if fewer than `capacity` wait.
    /// Returns false if the stream is closing or just became a slow consumer.
    pub fn push(&self, frame: Frame, tick: u64, capacity: usize) -> bool {
        let waker;
        {
            let mut s = self.lock();
            s.last_frame_tick = tick;
            if s.closing.is_some() {
                return false;
            }
            if s.frames.len() >= capacity {
                s.closing = Some((ByeReason::SlowConsumer, None));
                crate::metrics::get().bye(ByeReason::SlowConsumer).increment(1);
                waker = s.waker.take();
                drop(s);
                if let Some(w) = waker {
                    w.wake();
                }
                return false;
            }
            s.frames.push_back(frame);
            waker = s.waker.take();
        }
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Ends the stream with `bye` after the frames already queued.
    pub fn close(&self, reason: ByeReason, retry: Option<Duration>) {
        let waker = {
            let mut s = self.lock();
            if s.closing.is_none() {
                s.closing = Some((reason, retry.map(|r| r.as_millis().min(u32::MAX as u128) as u32)));
                crate::metrics::get().bye(reason).increment(1);
            }
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub fn request_resync(&self) {
        let waker = {
            let mut s = self.lock();
            s.resync = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Owes the stream a keep-alive if nothing was queued for `every` ticks
    /// up to `tick`. Returns whether it did.
    pub fn keep_alive_if_quiet(&self, tick: u64, every: u64) -> bool {
        let waker = {
            let mut s = self.lock();
            if tick.saturating_sub(s.last_frame_tick) < every || s.closing.is_some() {
                return false;
            }
            s.last_frame_tick = tick;
            s.keep_alive_due = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Starts the quiet clock at `tick` (the hub staggers new streams, so
    /// their keep-alives do not all fall on the same tick).
    pub fn set_last_frame_tick(&self, tick: u64) {
        self.lock().last_frame_tick = tick;
    }

    /// True the first time it is called: the stream should get `token_expiring`.
    pub fn take_expiry_warning(&self) -> bool {
        let mut s = self.lock();
        !std::mem::replace(&mut s.warned_expiry, true)
    }

    pub fn poll_next(&self, cx: &mut Context<'_>) -> Next {
        let mut s = self.lock();
        if s.resync {
            s.resync = false;
            return Next::Resync;
        }
        if let Some(frame) = s.frames.pop_front() {
            // Anything sent keeps the connection alive as well.
            s.keep_alive_due = false;
            return Next::Frame(frame);
        }
        if std::mem::take(&mut s.keep_alive_due) {
            return Next::KeepAlive;
        }
        if let Some((reason, retry_ms)) = s.closing {
            return Next::Bye(frame::bye(reason, retry_ms.map(|ms| Duration::from_millis(ms.into()))));
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Next::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EntryId;

    fn frame(n: u64) -> Frame {
        Frame::plain(Some(EntryId::new(n, 0)), Bytes::from_static(b"x"))
    }

    fn next(c: &StreamQueue) -> Next {
        c.poll_next(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_full_queue_makes_a_slow_consumer_that_drains_then_says_bye() {
        let c = StreamQueue::new(UserId::parse("u").unwrap(), u64::MAX);
        assert!(c.push(frame(1), 0, 2));
        assert!(c.push(frame(2), 0, 2));
        assert!(!c.push(frame(3), 0, 2), "third push must overflow");
        assert!(!c.push(frame(4), 0, 2), "closing stream takes nothing more");
        assert!(matches!(next(&c), Next::Frame(f) if f.id == Some(EntryId::new(1, 0))));
        assert!(matches!(next(&c), Next::Frame(f) if f.id == Some(EntryId::new(2, 0))));
        match next(&c) {
            Next::Bye(b) => assert!(std::str::from_utf8(&b).unwrap().contains("slow_consumer")),
            _ => panic!("expected bye"),
        }
    }

    #[test]
    fn a_keep_alive_is_owed_without_growing_the_queue() {
        let c = StreamQueue::new(UserId::parse("u").unwrap(), u64::MAX);
        assert!(!c.keep_alive_if_quiet(3, 4), "quiet for 3 ticks of 4");
        assert!(c.keep_alive_if_quiet(4, 4));
        assert_eq!(c.lock().frames.capacity(), 0, "a keep-alive takes no queue slot");
        assert!(matches!(next(&c), Next::KeepAlive));
        assert!(matches!(next(&c), Next::Pending), "owed once");
        assert!(!c.keep_alive_if_quiet(7, 4), "the clock restarted at tick 4");
        assert!(c.keep_alive_if_quiet(8, 4));
        c.push(frame(1), 8, 8);
        assert!(matches!(next(&c), Next::Frame(_)));
        assert!(matches!(next(&c), Next::Pending), "a frame sent stands in for the keep-alive");
    }

    #[test]
    fn resync_comes_before_queued_frames() {
        let c = StreamQueue::new(UserId::parse("u").unwrap(), u64::MAX);
        c.push(frame(1), 0, 8);
        c.request_resync();
        assert!(matches!(next(&c), Next::Resync));
        assert!(matches!(next(&c), Next::Frame(_)));
        assert!(matches!(next(&c), Next::Pending));
    }
}
