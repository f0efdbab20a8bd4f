//! The run's accounting: which notifications each user's publishes were
//! acknowledged, which each stream received, and the latency of each receipt.
//!
//! Stream tasks and publish lanes write here under one std mutex. That is
//! cheap: a few thousand short, uncontended critical sections a second,
//! never held across an `.await`. Sequence numbers are per user and start at
//! 1, so "received" and "acked" are bitsets indexed by sequence number.

use std::collections::BTreeMap;

/// A growable bitset of sequence numbers.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    words: Vec<u64>,
}

impl SeqSet {
    /// Sets `seq`; returns false if it was set already.
    pub fn insert(&mut self, seq: u32) -> bool {
        let (word, bit) = (seq as usize / 64, 1u64 << (seq % 64));
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let fresh = self.words[word] & bit == 0;
        self.words[word] |= bit;
        fresh
    }

    pub fn contains(&self, seq: u32) -> bool {
        self.words.get(seq as usize / 64).is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }

    pub fn len(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// How many of `self` are not in `other`.
    pub fn count_missing_from(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.words.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }
}

/// One notification of this run as a stream received it. Times are
/// microseconds on the run's clock (`clock::now_us`).
#[derive(Debug, Clone, Copy)]
pub struct Receipt {
    pub user: u32,
    pub seq: u32,
    /// When the schedule wanted it sent.
    pub due_us: u64,
    /// When it was actually written to the server.
    pub sent_us: u64,
    pub received_us: u64,
}

/// Receipts in one second of the run (counted from the start of publishing).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Second {
    pub receipts: u64,
    /// Worst publish-to-receipt latency in that second.
    pub max_us: u32,
}

/// Most seconds the timeline keeps (later receipts are not bucketed).
const MAX_TIMELINE: usize = 3600;

/// The latency samples of a run.
#[derive(Debug, Default)]
pub struct Latencies {
    /// Receipt minus actual send, per first receipt.
    pub from_send: Vec<u32>,
    /// Receipt minus scheduled send: also counts time a publish waited in
    /// the tool because the server (or the tool) was behind, which
    /// `from_send` hides (coordinated omission).
    pub from_schedule: Vec<u32>,
    pub timeline: Vec<Second>,
}

fn micros(us: u64) -> u32 {
    us.min(u64::from(u32::MAX)) as u32
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamState {
    Connecting,
    Open,
    /// Never opened: a refused connection, an error status, a timeout.
    Failed,
    /// Opened, then ended before the run did (EOF, error, `bye`).
    Closed,
}

#[derive(Debug, Default)]
struct UserBook {
    /// Sequence numbers whose publish the server acknowledged.
    acked: SeqSet,
    /// Per sequence number: when it was due and when its last stream got it.
    arrivals: Vec<Arrival>,
}

/// One notification's spread over the streams that got it.
#[derive(Debug, Default, Clone, Copy)]
struct Arrival {
    due_us: u64,
    /// The latest first receipt on any stream; 0 while none got it.
    last_us: u64,
}

#[derive(Debug)]
struct StreamBook {
    user: u32,
    state: StreamState,
    /// Open when publishing started: only these streams are held to account.
    tracked: bool,
    received: SeqSet,
    max_seq: u32,
    /// Since when the stream is down and reconnecting (`--reconnect`).
    down_since_us: Option<u64>,
    /// Went down before any event id reached it, so it reconnected without
    /// `Last-Event-ID` (a browser's EventSource would too).
    cursorless: bool,
}

/// Reconnections (`--reconnect`): how long streams were down.
#[derive(Debug, Default, Clone)]
pub struct Outages {
    /// Streams that went down (each time counted).
    pub disconnects: u64,
    /// Streams that came back (each time counted).
    pub resumes: u64,
    /// Tracked streams still down at the end.
    pub still_down: u64,
    /// Disconnects of streams that had no event id yet (no cursor to send).
    pub without_cursor: u64,
    /// Notifications lost on those streams (part of the run's `lost`).
    pub lost_without_cursor: u64,
    /// Each resume's time down, µs.
    pub down_us: Vec<u64>,
    /// The first disconnect and the last resume, on the run's clock.
    pub first_down_us: Option<u64>,
    pub last_resume_us: Option<u64>,
}

/// Counts over the whole run, computed by [`Ledger::tally`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub streams_tracked: u64,
    pub streams_closed_early: u64,
    /// Acknowledged publishes times the tracked streams of their user.
    pub expected: u64,
    /// Distinct expected notifications received.
    pub delivered: u64,
    pub lost: u64,
    /// Lost on streams that the server ended early (they would resume).
    pub lost_on_closed_streams: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Received but never acknowledged (a publish that failed yet arrived).
    pub unexpected: u64,
    /// Notifications for another user than the stream's.
    pub misrouted: u64,
    /// Notifications that were not this run's (no or other load data).
    pub foreign: u64,
}

#[derive(Debug, Default)]
pub struct Ledger {
    users: Vec<UserBook>,
    streams: Vec<StreamBook>,
    latencies: Latencies,
    /// When publishing started, on the run's clock.
    tracking_start_us: u64,
    duplicated: u64,
    out_of_order: u64,
    misrouted: u64,
    foreign: u64,
    opened: u64,
    failed: u64,
    /// Why streams failed or closed, and why publishes failed: reason → count.
    pub stream_failures: BTreeMap<String, u64>,
    pub stream_closes: BTreeMap<String, u64>,
    pub publish_failures: BTreeMap<String, u64>,
    pub acked: u64,
    pub publish_failed: u64,
    pub outages: Outages,
}

impl Ledger {
    /// `stream_users[i]` is the user index of stream `i`.
    pub fn new(users: usize, stream_users: impl IntoIterator<Item = u32>) -> Self {
        Self {
            users: (0..users).map(|_| UserBook::default()).collect(),
            streams: stream_users
                .into_iter()
                .map(|user| StreamBook {
                    user,
                    state: StreamState::Connecting,
                    tracked: false,
                    received: SeqSet::default(),
                    max_seq: 0,
                    down_since_us: None,
                    cursorless: false,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// The stream's response head arrived: a first open, or a resume.
    pub fn opened(&mut self, stream: usize, now_us: u64) {
        let book = &mut self.streams[stream];
        if book.state == StreamState::Connecting {
            book.state = StreamState::Open;
            self.opened += 1;
        }
        if let Some(since) = book.down_since_us.take() {
            let o = &mut self.outages;
            o.resumes += 1;
            o.down_us.push(now_us.saturating_sub(since));
            o.last_resume_us = Some(o.last_resume_us.unwrap_or(0).max(now_us));
        }
    }

    /// Whether the stream opened once and has not been closed for good.
    pub fn is_open(&self, stream: usize) -> bool {
        self.streams[stream].state == StreamState::Open
    }

    /// An open stream ended and will reconnect (`--reconnect`); attempts
    /// that fail while it is down do not restart the clock.
    pub fn disconnected(&mut self, stream: usize, now_us: u64, reason: String, has_cursor: bool) {
        let book = &mut self.streams[stream];
        if book.state != StreamState::Open || book.down_since_us.is_some() {
            return;
        }
        book.down_since_us = Some(now_us);
        book.cursorless |= !has_cursor;
        let o = &mut self.outages;
        o.disconnects += 1;
        o.without_cursor += u64::from(!has_cursor);
        o.first_down_us = Some(o.first_down_us.map_or(now_us, |f| f.min(now_us)));
        *self.stream_closes.entry(format!("reconnecting after: {reason}")).or_default() += 1;
    }

    /// Reconnection figures, with the tracked streams still down now.
    pub fn outages(&self) -> Outages {
        let mut o = self.outages.clone();
        o.still_down = self.streams.iter().filter(|s| s.tracked && s.down_since_us.is_some()).count() as u64;
        o.lost_without_cursor = self
            .streams
            .iter()
            .filter(|s| s.tracked && s.cursorless)
            .map(|s| self.users[s.user as usize].acked.count_missing_from(&s.received))
            .sum();
        o
    }

    pub fn failed(&mut self, stream: usize, reason: String) {
        let book = &mut self.streams[stream];
        if book.state == StreamState::Connecting {
            book.state = StreamState::Failed;
            self.failed += 1;
            *self.stream_failures.entry(reason).or_default() += 1;
        }
    }

    pub fn closed(&mut self, stream: usize, reason: String) {
        let book = &mut self.streams[stream];
        if book.state == StreamState::Open {
            book.state = StreamState::Closed;
            *self.stream_closes.entry(reason).or_default() += 1;
        }
    }

    /// A stream task ended: a failure if it never opened, else a close.
    pub fn ended(&mut self, stream: usize, reason: String) {
        match self.streams[stream].state {
            StreamState::Connecting => self.failed(stream, reason),
            StreamState::Open => self.closed(stream, reason),
            StreamState::Failed | StreamState::Closed => {}
        }
    }

    /// (opened, failed, still connecting)
    pub fn open_counts(&self) -> (u64, u64, u64) {
        let total = self.streams.len() as u64;
        (self.opened, self.failed, total - self.opened - self.failed)
    }

    /// Publishing starts (at `now_us`): every open stream is held to account
    /// from here on; streams still connecting are given up on.
    pub fn start_tracking(&mut self, now_us: u64) {
        self.tracking_start_us = now_us;
        let mut late = 0;
        for book in &mut self.streams {
            match book.state {
                StreamState::Open => book.tracked = true,
                StreamState::Connecting => {
                    book.state = StreamState::Failed;
                    late += 1;
                }
                _ => {}
            }
        }
        if late > 0 {
            self.failed += late;
            *self.stream_failures.entry("not open in time".into()).or_default() += late;
        }
    }

    pub fn acked(&mut self, user: u32, seq: u32) {
        self.users[user as usize].acked.insert(seq);
        self.acked += 1;
    }

    pub fn publish_failed(&mut self, reason: String) {
        self.publish_failed += 1;
        *self.publish_failures.entry(reason).or_default() += 1;
    }

    pub fn foreign(&mut self) {
        self.foreign += 1;
    }

    /// A notification of this run arrived on `stream`.
    pub fn received(&mut self, stream: usize, r: Receipt) {
        let book = &mut self.streams[stream];
        if !book.tracked {
            return;
        }
        if r.user != book.user {
            self.misrouted += 1;
            return;
        }
        if !book.received.insert(r.seq) {
            self.duplicated += 1;
            return;
        }
        if r.seq < book.max_seq {
            self.out_of_order += 1;
        } else {
            book.max_seq = r.seq;
        }
        let arrivals = &mut self.users[book.user as usize].arrivals;
        if arrivals.len() <= r.seq as usize {
            arrivals.resize(r.seq as usize + 1, Arrival::default());
        }
        let arrival = &mut arrivals[r.seq as usize];
        arrival.due_us = r.due_us;
        arrival.last_us = arrival.last_us.max(r.received_us);
        let latency = micros(r.received_us.saturating_sub(r.sent_us));
        let l = &mut self.latencies;
        l.from_send.push(latency);
        l.from_schedule.push(micros(r.received_us.saturating_sub(r.due_us)));
        let second = (r.received_us.saturating_sub(self.tracking_start_us) / 1_000_000) as usize;
        if second < MAX_TIMELINE {
            if second >= l.timeline.len() {
                l.timeline.resize(second + 1, Second::default());
            }
            let bucket = &mut l.timeline[second];
            bucket.receipts += 1;
            bucket.max_us = bucket.max_us.max(latency);
        }
    }

    /// Deliveries still missing on streams that are open: what the grace
    /// period waits for.
    pub fn outstanding(&self) -> u64 {
        self.streams
            .iter()
            .filter(|s| s.tracked && s.state == StreamState::Open)
            .map(|s| self.users[s.user as usize].acked.count_missing_from(&s.received))
            .sum()
    }

    pub fn tally(&self) -> Tally {
        let mut t = Tally {
            duplicated: self.duplicated,
            out_of_order: self.out_of_order,
            misrouted: self.misrouted,
            foreign: self.foreign,
            ..Tally::default()
        };
        for s in self.streams.iter().filter(|s| s.tracked) {
            let acked = &self.users[s.user as usize].acked;
            let lost = acked.count_missing_from(&s.received);
            t.streams_tracked += 1;
            t.expected += acked.len();
            t.lost += lost;
            t.unexpected += s.received.count_missing_from(acked);
            if s.state == StreamState::Closed {
                t.streams_closed_early += 1;
                t.lost_on_closed_streams += lost;
            }
        }
        t.delivered = t.expected - t.lost;
        t
    }

    /// Per acknowledged notification that reached any stream: from its
    /// scheduled send until the last stream of its user got it (in a
    /// broadcast, the time to the last follower). From the schedule, so a
    /// publish that waited behind a slow one counts its wait. Loss is
    /// counted apart, in the tally.
    pub fn to_last_stream(&self) -> Vec<u32> {
        let mut spreads = Vec::new();
        for user in &self.users {
            for (seq, arrival) in user.arrivals.iter().enumerate() {
                if arrival.last_us > 0 && user.acked.contains(seq as u32) {
                    spreads.push(micros(arrival.last_us.saturating_sub(arrival.due_us)));
                }
            }
        }
        spreads
    }

    pub fn take_latencies(&mut self) -> Latencies {
        std::mem::take(&mut self.latencies)
    }
}

/// Percentiles of a latency sample, in microseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: u32,
    pub p90: u32,
    pub p99: u32,
    pub p999: u32,
    pub max: u32,
    pub mean: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of an exact sample (every receipt is kept:
    /// 4 bytes each, so even a million receipts cost 4 MB).
    pub fn of(mut sample: Vec<u32>) -> Self {
        if sample.is_empty() {
            return Self::default();
        }
        sample.sort_unstable();
        let rank = |q: f64| {
            let i = ((q * sample.len() as f64).ceil() as usize).clamp(1, sample.len());
            sample[i - 1]
        };
        Self {
            count: sample.len(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            p999: rank(0.999),
            max: *sample.last().expect("not empty"),
            mean: sample.iter().map(|v| f64::from(*v)).sum::<f64>() / sample.len() as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two users; user 0 has streams 0 and 1, user 1 has stream 2.
    fn ledger() -> Ledger {
        let mut l = Ledger::new(2, [0, 0, 1]);
        (0..3).for_each(|s| l.opened(s, 0));
        l.start_tracking(0);
        l
    }

    /// Due at 1 s, sent 10 µs late, received `latency_us` after sending.
    fn receipt(user: u32, seq: u32, latency_us: u64) -> Receipt {
        Receipt { user, seq, due_us: 1_000_000, sent_us: 1_000_010, received_us: 1_000_010 + latency_us }
    }

    #[test]
    fn every_acked_publish_is_expected_on_every_stream_of_its_user() {
        let mut l = ledger();
        l.acked(0, 1);
        l.acked(0, 2);
        l.acked(1, 1);
        l.received(0, receipt(0, 1, 100));
        l.received(0, receipt(0, 2, 100));
        l.received(1, receipt(0, 2, 100));
        assert_eq!(l.outstanding(), 2, "stream 1 misses seq 1, stream 2 seq 1");
        l.received(2, receipt(1, 1, 100));
        let t = l.tally();
        assert_eq!((t.expected, t.delivered, t.lost), (5, 4, 1));
        assert_eq!(t.out_of_order, 0);
    }

    #[test]
    fn duplicates_reorders_and_misroutes_are_counted() {
        let mut l = ledger();
        for seq in 1..=3 {
            l.acked(1, seq);
        }
        l.received(2, receipt(1, 2, 10));
        l.received(2, receipt(1, 1, 10));
        l.received(2, receipt(1, 1, 10));
        l.received(2, receipt(1, 3, 10));
        l.received(2, receipt(0, 9, 10));
        let t = l.tally();
        assert_eq!((t.delivered, t.lost, t.duplicated, t.out_of_order, t.misrouted), (3, 0, 1, 1, 1));
        let latencies = l.take_latencies();
        assert_eq!(latencies.from_send, [10, 10, 10]);
        assert_eq!(latencies.from_schedule, [20, 20, 20]);
        assert_eq!(latencies.timeline, [Second::default(), Second { receipts: 3, max_us: 10 }]);
    }

    #[test]
    fn a_receipt_before_its_ack_still_counts() {
        let mut l = ledger();
        l.received(2, receipt(1, 1, 10));
        assert_eq!(l.tally().unexpected, 1);
        l.acked(1, 1);
        let t = l.tally();
        assert_eq!((t.delivered, t.lost, t.unexpected), (1, 0, 0));
    }

    #[test]
    fn losses_on_streams_the_server_ended_are_told_apart() {
        let mut l = ledger();
        l.closed(2, "bye slow_consumer".into());
        l.acked(1, 1);
        assert_eq!(l.outstanding(), 0, "a closed stream is not waited for");
        let t = l.tally();
        assert_eq!((t.lost, t.lost_on_closed_streams, t.streams_closed_early), (1, 1, 1));
    }

    #[test]
    fn the_time_to_the_last_stream_is_per_notification() {
        let mut l = ledger();
        l.acked(0, 1);
        l.acked(0, 2);
        l.received(0, receipt(0, 1, 100));
        l.received(1, receipt(0, 1, 700));
        l.received(1, receipt(0, 1, 900)); // a duplicate does not move it
        l.received(0, receipt(0, 2, 50));
        l.received(2, receipt(1, 1, 5)); // received, never acked: left out
        let mut spreads = l.to_last_stream();
        spreads.sort_unstable();
        assert_eq!(spreads, [60, 710], "from the due time, 10 µs before the send");
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let p = Percentiles::of((1..=1000).collect());
        assert_eq!((p.p50, p.p90, p.p99, p.p999, p.max), (500, 900, 990, 999, 1000));
        assert_eq!(Percentiles::of(vec![]).count, 0);
    }
}
