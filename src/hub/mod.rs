//! This node's registry: which users have open streams here, which topics
//! those streams follow, and their queues.
//!
//! The hub tells the engine what to subscribe to (a user's channel on their
//! first stream here, a topic's on its first follower here; unsubscribe
//! after the last), and the engine hands it typed live events to fan out,
//! which it encodes once (in `wire`) for all of the user's streams, or all
//! of the topic's followers, here. It never waits on a client: delivery is a
//! `try`-style push into each stream's bounded queue ([`queue`]). Its
//! node-wide tick ([`ticker`]) ends expired streams and owes quiet ones a
//! keep-alive.
//!
//! The map is sharded so that delivery for one user and registration of
//! another rarely contend. Locks are std mutexes held for map operations
//! only, never across an `.await`.

use std::{
    collections::HashMap,
    hash::BuildHasher,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, mpsc};

pub use self::{
    queue::{Next, StreamQueue},
    ticker::ticker,
};
use crate::{
    clock::LastSeen,
    config::Settings,
    domain::{ByeReason, EntryId, LiveEvent, TopicName, UserId},
    wire::frame,
};

mod queue;
mod ticker;

/// A long-running task of the node (the Redis engine's pub/sub task, the
/// hub's tick, the memory engine's pruning): whoever starts the node spawns
/// it on the runtime its I/O should run on.
pub type NodeTask = futures_util::future::BoxFuture<'static, ()>;

const SHARDS: usize = 16;

/// What a pub/sub channel carries: one user's events, or one topic's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    User(UserId),
    Topic(TopicName),
}

/// What the hub asks of the engine's pub/sub connection. Sent in the order
/// the registry changed (under the shard lock), so a quick leave-and-return
/// can never end unsubscribed.
#[derive(Debug)]
pub enum SubscriptionCommand {
    /// Subscribe to the channel; set `ready` once Redis confirmed it.
    Subscribe {
        channel: Channel,
        ready: Arc<Subscribed>,
    },
    Unsubscribe {
        channel: Channel,
    },
}

/// How many streams the hub holds, and how much each may have waiting.
#[derive(Debug, Clone, Copy)]
pub struct HubCapacity {
    pub max_streams: usize,
    pub max_per_user: usize,
    /// Frames a stream may have waiting before it is a slow consumer.
    pub queue_capacity: usize,
}

impl HubCapacity {
    /// `server.max_streams`, `stream.max_per_user`, `stream.queue_capacity`.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            max_streams: settings.server.max_streams,
            max_per_user: settings.stream.max_per_user,
            queue_capacity: settings.stream.queue_capacity,
        }
    }
}

/// The node-wide tick: token expiry, `token_expiring`, keep-alives. Short,
/// so keep-alives spread over many ticks instead of one burst.
pub const TICK: Duration = Duration::from_millis(250);

/// How late the tick may be before the node calls itself unhealthy: forty
/// ticks. A busy node is late by milliseconds; this late, the tick's task
/// has died or the worker thread that runs it is stuck (see
/// [`Hub::since_last_tick`]).
pub const TICK_STALLED: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("this node holds its maximum number of streams")]
    NodeFull,
    #[error("this user has too many open streams on this node")]
    UserFull,
    #[error("this node is shutting down")]
    ShuttingDown,
}

/// Becomes confirmed once Redis acknowledged the subscription to a user's
/// channel. One per user on the node, so it is kept small (an atomic and a
/// `Notify`, not a watch channel).
#[derive(Debug, Default)]
pub struct Subscribed {
    confirmed: AtomicBool,
    notify: Notify,
}

impl Subscribed {
    fn already() -> Self {
        Self { confirmed: AtomicBool::new(true), notify: Notify::new() }
    }

    pub fn confirm(&self) {
        self.confirmed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Acquire)
    }

    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a confirm in between is not missed.
            notified.as_mut().enable();
            if self.is_confirmed() {
                return;
            }
            notified.await;
        }
    }
}

struct UserSlot {
    /// Most users have one stream on a node: it is kept inline, without a
    /// heap allocation of its own.
    streams: smallvec::SmallVec<[Arc<StreamQueue>; 1]>,
    /// Becomes true once the user's channel subscription is confirmed. Every
    /// stream waits for it before replaying, or an entry published between
    /// replay and subscription would be lost.
    subscribed: Arc<Subscribed>,
}

/// The followers of one topic on this node.
struct TopicSlot {
    /// Each follower's queue, and the topic's place in that stream's list
    /// (its frames' [`Frame::part`](crate::wire::Frame::part)).
    followers: Vec<(Arc<StreamQueue>, u8)>,
    subscribed: Arc<Subscribed>,
}

pub struct Hub {
    shards: Box<[Mutex<HashMap<UserId, UserSlot>>]>,
    topics: Box<[Mutex<HashMap<TopicName, TopicSlot>>]>,
    hasher: std::collections::hash_map::RandomState,
    /// `None` for engines that deliver every event to the hub anyway (memory).
    subscriptions: Option<mpsc::UnboundedSender<SubscriptionCommand>>,
    capacity: HubCapacity,
    streams: AtomicUsize,
    /// Woken when the last stream leaves (see [`Hub::all_streams_ended`]).
    emptied: Notify,
    shutting_down: AtomicBool,
    /// Ticks so far (see [`TICK`]); frames record it, keep-alives read it.
    ticks: AtomicU64,
    /// When the hub last ticked (see [`Hub::since_last_tick`]).
    last_tick: LastSeen,
    keep_alive_ticks: u64,
    /// The one confirmed flag every user's slot points to once its channel is
    /// subscribed: a user's own flag is needed only while streams wait for it
    /// (see [`Hub::settle_subscription`]).
    confirmed: Arc<Subscribed>,
}

impl Hub {
    /// `keep_alive` is the interval after which a quiet stream is owed one.
    pub fn new(
        capacity: HubCapacity,
        keep_alive: Duration,
        subscriptions: Option<mpsc::UnboundedSender<SubscriptionCommand>>,
    ) -> Self {
        let keep_alive_ticks = (keep_alive.as_millis() / TICK.as_millis()).max(1) as u64;
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            topics: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            subscriptions,
            capacity,
            streams: AtomicUsize::new(0),
            emptied: Notify::new(),
            shutting_down: Default::default(),
            // Starts one interval in, so a new stream's random phase can
            // reach back a whole interval from the very first tick.
            ticks: AtomicU64::new(keep_alive_ticks),
            last_tick: LastSeen::new(),
            keep_alive_ticks,
            confirmed: Arc::new(Subscribed::already()),
        }
    }

    fn shard(&self, user: &str) -> std::sync::MutexGuard<'_, HashMap<UserId, UserSlot>> {
        let i = (self.hasher.hash_one(user) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn topic_shard(&self, topic: &str) -> std::sync::MutexGuard<'_, HashMap<TopicName, TopicSlot>> {
        let i = (self.hasher.hash_one(topic) as usize) % SHARDS;
        self.topics[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new channel's flag: one to wait on if an engine subscribes, else
    /// the shared confirmed one.
    fn subscribe(&self, channel: Channel) -> Arc<Subscribed> {
        match &self.subscriptions {
            Some(commands) => {
                let ready = Arc::new(Subscribed::default());
                let _ = commands.send(SubscriptionCommand::Subscribe { channel, ready: ready.clone() });
                ready
            }
            None => self.confirmed.clone(),
        }
    }

    /// Adds a stream. The registration removes it again when dropped; the
    /// stream must wait for `Subscribed` before it reads history.
    pub fn register(
        self: &Arc<Self>,
        queue: Arc<StreamQueue>,
    ) -> Result<(Registration, Arc<Subscribed>), RegisterError> {
        let subscribed = self.insert(&queue)?;
        Ok((Registration { hub: self.clone(), queue }, subscribed))
    }

    fn insert(&self, conn: &Arc<StreamQueue>) -> Result<Arc<Subscribed>, RegisterError> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(RegisterError::ShuttingDown);
        }
        // A random phase: streams opened together get their keep-alives on
        // different ticks.
        let phase = rand::random::<u64>() % self.keep_alive_ticks;
        conn.set_last_frame_tick(self.ticks.load(Ordering::Relaxed).saturating_sub(phase));
        let mut shard = self.shard(conn.user.as_str());
        if let Some(slot) = shard.get_mut(conn.user.as_str()) {
            if slot.streams.len() >= self.capacity.max_per_user {
                return Err(RegisterError::UserFull);
            }
            self.reserve()?;
            slot.streams.push(conn.clone());
            return Ok(slot.subscribed.clone());
        }
        self.reserve()?;
        let subscribed = self.subscribe(Channel::User(conn.user.clone()));
        shard.insert(
            conn.user.clone(),
            UserSlot { streams: smallvec::smallvec![conn.clone()], subscribed: subscribed.clone() },
        );
        Ok(subscribed)
    }

    fn reserve(&self) -> Result<(), RegisterError> {
        let before = self.streams.fetch_add(1, Ordering::AcqRel);
        if before >= self.capacity.max_streams {
            self.streams.fetch_sub(1, Ordering::AcqRel);
            return Err(RegisterError::NodeFull);
        }
        let metrics = crate::metrics::get();
        metrics.streams_open.increment(1.0);
        metrics.streams_opened.increment(1);
        Ok(())
    }

    /// Adds a registered stream as a follower of each of `topics` (its
    /// parts 1, 2, ... in that order). The stream must wait for every flag
    /// returned before it reads the topics' history. Dropping the returned
    /// [`Following`] removes it again.
    pub fn follow(
        self: &Arc<Self>,
        queue: &Arc<StreamQueue>,
        topics: &[TopicName],
    ) -> (Following, Vec<Arc<Subscribed>>) {
        let mut flags = Vec::with_capacity(topics.len());
        for (i, topic) in topics.iter().enumerate() {
            let part = u8::try_from(i + 1).expect("a stream follows at most 64 topics");
            let mut shard = self.topic_shard(topic.as_str());
            let slot = shard.entry(topic.clone()).or_insert_with(|| TopicSlot {
                followers: Vec::new(),
                subscribed: self.subscribe(Channel::Topic(topic.clone())),
            });
            slot.followers.push((queue.clone(), part));
            flags.push(slot.subscribed.clone());
        }
        (Following { hub: self.clone(), queue: queue.clone(), topics: topics.into() }, flags)
    }

    fn unfollow(&self, queue: &Arc<StreamQueue>, topics: &[TopicName]) {
        for topic in topics {
            let mut shard = self.topic_shard(topic.as_str());
            let Some(slot) = shard.get_mut(topic.as_str()) else { continue };
            slot.followers.retain(|(q, _)| !Arc::ptr_eq(q, queue));
            if slot.followers.is_empty() {
                shard.remove(topic.as_str());
                if let Some(commands) = &self.subscriptions {
                    let _ = commands.send(SubscriptionCommand::Unsubscribe { channel: Channel::Topic(topic.clone()) });
                }
            } else if slot.followers.capacity() > 4 * slot.followers.len() {
                // A crowd that left gives its room back.
                slot.followers.shrink_to(2 * slot.followers.len());
            }
        }
    }

    /// Once a channel's own flag is confirmed, points its slot at the shared
    /// one, so the flag is freed when the streams that waited on it let go:
    /// an idle stream then carries no subscription state of its own.
    pub fn settle_subscription(&self, channel: &Channel) {
        match channel {
            Channel::User(user) => {
                let mut shard = self.shard(user.as_str());
                if let Some(slot) = shard.get_mut(user.as_str())
                    && slot.subscribed.is_confirmed()
                {
                    slot.subscribed = self.confirmed.clone();
                }
            }
            Channel::Topic(topic) => {
                let mut shard = self.topic_shard(topic.as_str());
                if let Some(slot) = shard.get_mut(topic.as_str())
                    && slot.subscribed.is_confirmed()
                {
                    slot.subscribed = self.confirmed.clone();
                }
            }
        }
    }

    /// Removes a stream; the user's entry (and subscription) goes with the last.
    fn unregister(&self, conn: &Arc<StreamQueue>) {
        let mut shard = self.shard(conn.user.as_str());
        let Some(slot) = shard.get_mut(conn.user.as_str()) else {
            return;
        };
        let Some(pos) = slot.streams.iter().position(|c| Arc::ptr_eq(c, conn)) else {
            return;
        };
        slot.streams.swap_remove(pos);
        if self.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.emptied.notify_waiters();
        }
        crate::metrics::get().streams_open.decrement(1.0);
        if slot.streams.is_empty() {
            shard.remove(conn.user.as_str());
            if let Some(commands) = &self.subscriptions {
                let _ = commands.send(SubscriptionCommand::Unsubscribe { channel: Channel::User(conn.user.clone()) });
            }
        }
    }

    /// Fans a live event out to every local stream of `user`. The event is
    /// encoded only if the user has a stream here, and once for all of
    /// them. Returns how many streams took it.
    pub fn deliver(&self, user: &str, event: LiveEvent<'_>) -> usize {
        let shard = self.shard(user);
        let Some(slot) = shard.get(user) else {
            return 0;
        };
        let frame = frame::live(&event);
        let metrics = crate::metrics::get();
        metrics.live_events.increment(1);
        if let Some(id) = frame.id {
            metrics.observe_delivery_latency(id);
        }
        let tick = self.ticks.load(Ordering::Relaxed);
        let queued = slot.streams.iter().filter(|c| c.push(frame.clone(), tick, self.capacity.queue_capacity)).count();
        metrics.deliveries.increment(queued as u64);
        queued
    }

    /// Fans a topic's new notification out to every local follower: encoded
    /// once, if anyone here follows the topic, and the same bytes queued for
    /// all of them. A full queue ends its stream as a slow consumer; the
    /// other followers do not wait for it. Returns how many streams took it.
    pub fn deliver_topic(&self, topic: &str, id: EntryId, stored: &[u8]) -> usize {
        let shard = self.topic_shard(topic);
        let Some(slot) = shard.get(topic) else {
            return 0;
        };
        let frame = frame::topic_notification(id, stored);
        let metrics = crate::metrics::get();
        metrics.live_events.increment(1);
        metrics.observe_delivery_latency(id);
        let tick = self.ticks.load(Ordering::Relaxed);
        let queued = slot
            .followers
            .iter()
            .filter(|(q, part)| {
                let mut frame = frame.clone();
                frame.part = *part;
                q.push(frame, tick, self.capacity.queue_capacity)
            })
            .count();
        metrics.deliveries.increment(queued as u64);
        queued
    }

    /// How many streams on this node follow `topic`.
    pub fn followers(&self, topic: &str) -> usize {
        self.topic_shard(topic).get(topic).map_or(0, |slot| slot.followers.len())
    }

    pub fn is_online(&self, user: &str) -> bool {
        self.shard(user).contains_key(user)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    pub fn stream_count(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }

    /// Waits until no stream is left on this node (after [`Hub::close_all`],
    /// each ends once its client has read its `bye` or gone away).
    pub async fn all_streams_ended(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            // Registered before the check, so a last stream leaving in
            // between is not missed.
            emptied.as_mut().enable();
            if self.stream_count() == 0 {
                return;
            }
            emptied.await;
        }
    }

    fn for_each(&self, mut f: impl FnMut(&Arc<StreamQueue>)) {
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.values().flat_map(|slot| slot.streams.iter()).for_each(&mut f);
        }
    }

    /// Every local stream replays from its last delivered id: live traffic
    /// may have been lost while the pub/sub connection was down.
    pub fn resync_all(&self) {
        self.for_each(|c| c.request_resync());
    }

    /// Ends every stream with `bye`; `retry` gives each its reconnect delay
    /// (jittered on shutdown so clients do not all return at once).
    pub fn close_all(&self, reason: ByeReason, mut retry: impl FnMut() -> Option<Duration>) {
        if reason == ByeReason::Shutdown {
            self.shutting_down.store(true, Ordering::Relaxed);
        }
        self.for_each(|c| c.close(reason, retry()));
    }

    /// One node-wide tick (one timer for all streams, not one per stream):
    /// token expiry and the `token_expiring` warning, and keep-alives for the
    /// streams that have been quiet for a whole interval. With a random
    /// phase per stream, a tick touches about 1/`every_ticks` of them, so
    /// 10,000 streams never get their keep-alives written in one burst.
    pub fn tick(&self, now_unix: u64, warn_before: Duration) {
        let tick = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        self.last_tick.mark();
        self.for_each(|c| {
            if now_unix >= c.expires_at {
                c.close(ByeReason::TokenExpired, None);
                return;
            }
            if now_unix + warn_before.as_secs() >= c.expires_at && c.take_expiry_warning() {
                c.push(frame::token_expiring(c.expires_at), tick, self.capacity.queue_capacity);
            }
            c.keep_alive_if_quiet(tick, self.keep_alive_ticks);
        });
    }

    /// Starts the stall watch of [`Hub::since_last_tick`] now: the tick's
    /// task is about to start, and the time the node took to get here
    /// (connecting to Redis, say) is not the tick being late.
    pub fn watch_ticks_from_now(&self) {
        self.last_tick.mark();
    }

    /// How long ago the hub last ticked (before its first tick: since it
    /// was made, or the watch started). The tick alone ends streams whose
    /// token expired and sends keep-alives, and it runs on the first HTTP
    /// worker's thread: past [`TICK_STALLED`], `/healthz` fails so that the
    /// node is replaced.
    pub fn since_last_tick(&self) -> Duration {
        self.last_tick.age()
    }
}

/// A stream's place in the hub, held by its response body: dropping it (the
/// client went away, or the stream ended) removes the stream.
pub struct Registration {
    hub: Arc<Hub>,
    queue: Arc<StreamQueue>,
}

impl Registration {
    pub fn queue(&self) -> &Arc<StreamQueue> {
        &self.queue
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(&self.queue);
    }
}

/// A stream's place among its topics' followers (see [`Hub::follow`]):
/// dropping it removes the stream from each.
pub struct Following {
    hub: Arc<Hub>,
    queue: Arc<StreamQueue>,
    topics: Box<[TopicName]>,
}

impl Following {
    /// The followed topics, in the stream's order (part 1 first).
    pub fn topics(&self) -> &[TopicName] {
        &self.topics
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.hub.unfollow(&self.queue, &self.topics);
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Waker};

    use super::*;
    use crate::{domain::EntryId, wire::Frame};

    fn hub(commands: Option<mpsc::UnboundedSender<SubscriptionCommand>>) -> Arc<Hub> {
        Arc::new(Hub::new(
            HubCapacity { max_streams: 3, max_per_user: 2, queue_capacity: 8 },
            Duration::from_secs(1),
            commands,
        ))
    }

    fn conn(user: &str) -> Arc<StreamQueue> {
        Arc::new(StreamQueue::new(UserId::parse(user).unwrap(), u64::MAX))
    }

    #[test]
    fn since_last_tick_counts_from_the_last_tick() {
        let hub = hub(None);
        std::thread::sleep(Duration::from_millis(200));
        let before = hub.since_last_tick();
        assert!(before >= Duration::from_millis(200), "before the first tick it counts from the start: {before:?}");
        hub.tick(0, Duration::ZERO);
        let after = hub.since_last_tick();
        assert!(after < Duration::from_millis(100), "a tick resets it: {after:?}");

        std::thread::sleep(Duration::from_millis(200));
        hub.watch_ticks_from_now();
        let watched = hub.since_last_tick();
        assert!(watched < Duration::from_millis(100), "so does starting the watch: {watched:?}");
    }

    #[test]
    fn subscribes_on_first_stream_and_unsubscribes_after_last() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hub = hub(Some(tx));
        let (a1, _) = hub.register(conn("a")).unwrap();
        let (a2, _) = hub.register(conn("a")).unwrap();
        assert!(matches!(rx.try_recv(), Ok(SubscriptionCommand::Subscribe { .. })));
        assert!(rx.try_recv().is_err(), "second stream must not subscribe again");
        drop(a1);
        assert!(rx.try_recv().is_err());
        drop(a2);
        assert!(matches!(rx.try_recv(), Ok(SubscriptionCommand::Unsubscribe { .. })));
        assert!(!hub.is_online("a"), "the user's entry must go with its last stream");
        assert_eq!(hub.stream_count(), 0);
    }

    fn topic(name: &str) -> TopicName {
        TopicName::parse(name).unwrap()
    }

    #[test]
    fn a_topic_is_subscribed_while_anyone_here_follows_it() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hub = hub(Some(tx));
        let (a, b) = (conn("a"), conn("b"));
        let (_ra, _) = hub.register(a.clone()).unwrap();
        let (_rb, _) = hub.register(b.clone()).unwrap();
        while rx.try_recv().is_ok() {}
        let (fa, flags) = hub.follow(&a, &[topic("news"), topic("team:1")]);
        assert_eq!(flags.len(), 2);
        let (fb, _) = hub.follow(&b, &[topic("news")]);
        let subscribed: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert!(
            matches!(&subscribed[..], [
                SubscriptionCommand::Subscribe { channel: Channel::Topic(n), .. },
                SubscriptionCommand::Subscribe { channel: Channel::Topic(t), .. },
            ] if n.as_str() == "news" && t.as_str() == "team:1"),
            "one subscription per topic, not per follower: {subscribed:?}"
        );
        assert_eq!(hub.followers("news"), 2);
        drop(fa);
        assert!(
            matches!(rx.try_recv(), Ok(SubscriptionCommand::Unsubscribe { channel: Channel::Topic(t) }) if t.as_str() == "team:1")
        );
        assert!(rx.try_recv().is_err(), "news still has a follower");
        drop(fb);
        assert!(matches!(rx.try_recv(), Ok(SubscriptionCommand::Unsubscribe { channel: Channel::Topic(_) })));
        assert_eq!(hub.followers("news"), 0);
    }

    #[test]
    fn a_topic_event_is_encoded_once_and_tagged_per_follower() {
        let hub = hub(None);
        let (a, b) = (conn("a"), conn("b"));
        let (ra, _) = hub.register(a.clone()).unwrap();
        let (rb, _) = hub.register(b.clone()).unwrap();
        let _fa = hub.follow(&a, &[topic("x"), topic("news")]);
        let _fb = hub.follow(&b, &[topic("news")]);
        assert_eq!(hub.deliver_topic("news", EntryId::new(5, 0), br#"{"topic":"news","type":"a","title":"t"}"#), 2);
        let (fa, fb) = (take(&ra).unwrap(), take(&rb).unwrap());
        assert_eq!(fa.bytes.as_ptr(), fb.bytes.as_ptr(), "one encoding for every follower");
        assert_eq!((fa.part, fb.part), (2, 1), "each stream's own place of the topic");
        assert_eq!(hub.deliver_topic("nobody-follows", EntryId::new(6, 0), b"{}"), 0);
    }

    #[test]
    fn enforces_node_and_user_limits() {
        let hub = hub(None);
        let _a1 = hub.register(conn("a")).unwrap();
        let _a2 = hub.register(conn("a")).unwrap();
        assert_eq!(hub.register(conn("a")).err(), Some(RegisterError::UserFull));
        let _b = hub.register(conn("b")).unwrap();
        assert_eq!(hub.register(conn("c")).err(), Some(RegisterError::NodeFull));
        assert_eq!(hub.stream_count(), 3);
    }

    #[test]
    fn keep_alives_are_spread_over_the_interval_and_skip_busy_streams() {
        // keep_alive 1 s = 4 ticks of 250 ms.
        let hub = Arc::new(Hub::new(
            HubCapacity { max_streams: 1000, max_per_user: 1, queue_capacity: 8 },
            Duration::from_secs(1),
            None,
        ));
        let streams: Vec<_> = (0..400).map(|i| hub.register(conn(&format!("u{i}"))).unwrap().0).collect();
        let mut per_tick = Vec::new();
        let queued = |r: &Registration| {
            let mut n = 0;
            while let Next::Frame(_) | Next::KeepAlive = r.queue().poll_next(&mut Context::from_waker(Waker::noop())) {
                n += 1;
            }
            n
        };
        for _ in 0..4 {
            hub.tick(0, Duration::ZERO);
            per_tick.push(streams.iter().map(queued).sum::<usize>());
        }
        assert_eq!(per_tick.iter().sum::<usize>(), 400, "each stream gets one keep-alive per interval");
        assert!(per_tick.iter().all(|&n| n < 200), "no burst to all streams at once: {per_tick:?}");

        // A stream that just got a frame is not quiet: no keep-alive.
        hub.deliver("u0", event(1));
        queued(&streams[0]);
        for _ in 0..3 {
            hub.tick(0, Duration::ZERO);
            assert_eq!(queued(&streams[0]), 0);
        }
    }

    fn event(seq: u64) -> LiveEvent<'static> {
        LiveEvent::Notification { id: EntryId::new(1, seq), stored: br#"{"type":"a","title":"t"}"#, unread: 1 }
    }

    fn take(r: &Registration) -> Option<Frame> {
        match r.queue().poll_next(&mut Context::from_waker(Waker::noop())) {
            Next::Frame(f) => Some(f),
            _ => None,
        }
    }

    #[test]
    fn delivers_one_encoding_to_every_stream_of_the_user_only() {
        let hub = hub(None);
        let streams: Vec<_> = ["a", "a", "b"].map(|u| hub.register(conn(u)).unwrap().0).into();
        assert_eq!(hub.deliver("a", event(1)), 2);
        let (a1, a2) = (take(&streams[0]).unwrap(), take(&streams[1]).unwrap());
        assert_eq!(a1.bytes.as_ptr(), a2.bytes.as_ptr(), "both tabs share one encoding");
        assert!(take(&streams[2]).is_none(), "another user's stream gets nothing");
        assert_eq!(hub.deliver("nobody", event(2)), 0);
    }

    #[tokio::test]
    async fn all_streams_ended_wakes_when_the_last_stream_leaves() {
        let hub = hub(None);
        let (a, b) = (hub.register(conn("a")).unwrap().0, hub.register(conn("b")).unwrap().0);
        let waiter = tokio::spawn({
            let hub = hub.clone();
            async move { hub.all_streams_ended().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one stream is still open");
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken by the last stream").unwrap();
        tokio::time::timeout(Duration::from_secs(1), hub.all_streams_ended()).await.expect("already empty");
    }
}
