//! The state one open stream shares with the hub: a short bounded queue of
//! encoded frames, and how the stream should end.
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

use super::{Frame, frame};
use crate::domain::UserId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByeReason {
    TokenExpired = 0,
    Shutdown = 1,
    SlowConsumer = 2,
    Replaced = 3,
}

impl ByeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ByeReason::TokenExpired => "token_expired",
            ByeReason::Shutdown => "shutdown",
            ByeReason::SlowConsumer => "slow_consumer",
            ByeReason::Replaced => "replaced",
        }
    }
}

/// What the body should do next.
pub enum Next {
    Frame(Frame),
    /// The node lost live traffic for a while (pub/sub reconnect): replay from
    /// the last delivered id before taking more live frames.
    Resync,
    /// Send these last bytes (`bye`) and end.
    Bye(Bytes),
    Pending,
}

pub struct Connection {
    pub user: UserId,
    /// Token expiry (unix seconds): the stream is ended at this instant.
    pub expires_at: u64,
    capacity: usize,
    /// A std mutex: held only to push or pop, never across an `.await`, and
    /// contended only by the hub's delivery and this stream's own poll.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Grows on demand: an idle stream holds no queue memory.
    frames: VecDeque<Frame>,
    closing: Option<(ByeReason, Option<Duration>)>,
    resync: bool,
    warned_expiry: bool,
    waker: Option<Waker>,
    /// The hub tick of the last frame queued: keep-alives go only to streams
    /// that have been quiet for the whole interval.
    last_frame_tick: u64,
}

impl Connection {
    pub fn new(user: UserId, expires_at: u64, capacity: usize) -> Self {
        Self { user, expires_at, capacity, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every critical section is a push or pop), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame (at hub tick `tick`). Returns false if the stream is
    /// closing or just became a slow consumer.
    pub fn push(&self, frame: Frame, tick: u64) -> bool {
        let waker;
        {
            let mut s = self.lock();
            s.last_frame_tick = tick;
            if s.closing.is_some() {
                return false;
            }
            if s.frames.len() >= self.capacity {
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
                s.closing = Some((reason, retry));
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

    /// Ticks since the last frame.
    pub fn quiet_for(&self, tick: u64) -> u64 {
        tick.saturating_sub(self.lock().last_frame_tick)
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
            return Next::Frame(frame);
        }
        if let Some((reason, retry)) = s.closing {
            return Next::Bye(frame::bye(reason, retry));
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
        Frame { id: Some(EntryId::new(n, 0)), bytes: Bytes::from_static(b"x") }
    }

    fn next(c: &Connection) -> Next {
        c.poll_next(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_full_queue_makes_a_slow_consumer_that_drains_then_says_bye() {
        let c = Connection::new(UserId::parse("u").unwrap(), u64::MAX, 2);
        assert!(c.push(frame(1), 0));
        assert!(c.push(frame(2), 0));
        assert!(!c.push(frame(3), 0), "third push must overflow");
        assert!(!c.push(frame(4), 0), "closing stream takes nothing more");
        assert!(matches!(next(&c), Next::Frame(f) if f.id == Some(EntryId::new(1, 0))));
        assert!(matches!(next(&c), Next::Frame(f) if f.id == Some(EntryId::new(2, 0))));
        match next(&c) {
            Next::Bye(b) => assert!(std::str::from_utf8(&b).unwrap().contains("slow_consumer")),
            _ => panic!("expected bye"),
        }
    }

    #[test]
    fn resync_comes_before_queued_frames() {
        let c = Connection::new(UserId::parse("u").unwrap(), u64::MAX, 8);
        c.push(frame(1), 0);
        c.request_resync();
        assert!(matches!(next(&c), Next::Resync));
        assert!(matches!(next(&c), Next::Frame(_)));
        assert!(matches!(next(&c), Next::Pending));
    }
}
