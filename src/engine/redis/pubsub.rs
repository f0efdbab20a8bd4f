//! The node's one pub/sub connection to Redis.
//!
//! It subscribes to the channel of every user the hub holds streams of, and
//! of every topic those streams follow, and hands each message to the hub
//! as a typed live event, which the hub encodes once and queues for the
//! user's streams (or the topic's followers). Subscription changes are batched: a burst of new
//! streams (a reconnect storm) becomes a few `SUBSCRIBE` calls with many
//! channels, not one round trip each.
//!
//! The connection does not reconnect by itself. When it drops, this task
//! reconnects with backoff, subscribes every wanted channel again, and asks
//! the hub to resync every stream from its last delivered id: messages
//! published during the outage are gone from pub/sub, but not from history.
//! Meanwhile it keeps taking the hub's commands and folds them into the
//! wanted set, so an outage costs memory by the users with streams, not by
//! the stream attempts of every client that retries.

use std::{
    collections::HashSet,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::{Future, StreamExt};
use redis::{Client, Msg, RedisResult, aio::PubSubSink};
use tokio::sync::mpsc;

use super::keys::{channel_name, topic_of_channel, user_of_channel};
use crate::{
    clock::LastSeen,
    domain::{EntryId, InboxChange, LiveEvent},
    engine::EngineError,
    hub::{Channel, Hub, Subscribed, SubscriptionCommand},
};

/// Most channels per SUBSCRIBE / UNSUBSCRIBE call.
const BATCH: usize = 1000;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// `Wanted::waiting` is pruned once it holds this many, or twice as many as
/// after its last pruning.
const MIN_PRUNE: usize = 64;

/// Whether the pub/sub connection is proven alive, for `/readyz`: connected,
/// and its last PING answered within three ping intervals.
pub struct PubSubHealth {
    last_pong: LastSeen,
    connected: AtomicBool,
    ping_interval: Duration,
}

impl PubSubHealth {
    pub fn new(ping_interval: Duration) -> Self {
        Self { last_pong: LastSeen::new(), connected: AtomicBool::new(false), ping_interval }
    }

    fn mark_alive(&self) {
        self.last_pong.mark();
        self.connected.store(true, Ordering::Release);
    }

    pub fn check(&self) -> Result<(), EngineError> {
        if !self.connected.load(Ordering::Acquire) {
            return Err(EngineError::Unavailable("the pub/sub connection is down".into()));
        }
        let age = self.last_pong.age();
        if age > 3 * self.ping_interval {
            return Err(EngineError::Unavailable(format!(
                "the pub/sub connection has not answered a PING for {} ms",
                age.as_millis()
            )));
        }
        Ok(())
    }
}

/// Called after each reconnect, before streams resync (the engine reloads
/// its function library if Redis lost it, as a restart without persistence
/// does, or holds an older one).
pub type OnReconnect = Box<dyn Fn() -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

/// The pub/sub task, to be spawned on the runtime that should do its I/O
/// (see `app.rs`: the first HTTP worker's, so that a message reaches the
/// streams it wakes without crossing threads). It ends when the hub is gone.
pub fn task(
    client: Client,
    hub: Arc<Hub>,
    commands: mpsc::UnboundedReceiver<SubscriptionCommand>,
    health: Arc<PubSubHealth>,
    on_reconnect: OnReconnect,
) -> impl Future<Output = ()> + Send + 'static {
    let task =
        PubSubTask { client, hub, commands, health, on_reconnect, wanted: Wanted::default(), connected_before: false };
    task.run()
}

/// Channels this node wants, and `ready` senders waiting for a subscription.
#[derive(Default)]
struct Wanted {
    channels: HashSet<Channel>,
    /// Channels whose wanted state changed since the last subscription
    /// change was computed: the next change looks at these only, not at
    /// every channel (comparing the whole sets made each stream open cost
    /// O(streams), most of the node's CPU while thousands of streams opened).
    dirty: HashSet<Channel>,
    waiting: Vec<(Channel, Arc<Subscribed>)>,
    /// The length at which `waiting` is next pruned of flags no stream
    /// waits on any more (see [`Wanted::wait_for`]).
    prune_at: usize,
}

impl Wanted {
    /// Applies a command while connected: the next subscription change
    /// looks at its channel.
    fn apply(&mut self, command: SubscriptionCommand) {
        let channel = match command {
            SubscriptionCommand::Subscribe { channel, ready } => {
                self.channels.insert(channel.clone());
                self.wait_for(channel.clone(), ready);
                channel
            }
            SubscriptionCommand::Unsubscribe { channel } => {
                self.channels.remove(&channel);
                channel
            }
        };
        self.dirty.insert(channel);
    }

    /// Applies a command while disconnected. Nothing is marked dirty: the
    /// next connection subscribes every wanted channel anyway, and a long
    /// outage would otherwise remember every channel that was ever tried.
    fn fold(&mut self, command: SubscriptionCommand) {
        match command {
            SubscriptionCommand::Subscribe { channel, ready } => {
                self.channels.insert(channel.clone());
                self.wait_for(channel, ready);
            }
            SubscriptionCommand::Unsubscribe { channel } => {
                self.channels.remove(&channel);
            }
        }
    }

    /// Remembers a flag to confirm. While Redis is down nothing is
    /// confirmed, and every stream that gives up and retries adds a flag;
    /// those whose streams are all gone (only `waiting` holds them) are
    /// dropped once `waiting` has doubled since the last pruning, so the
    /// work stays O(1) per command and the memory bounded by the users
    /// that still have streams, not by attempts.
    fn wait_for(&mut self, channel: Channel, ready: Arc<Subscribed>) {
        self.waiting.push((channel, ready));
        if self.waiting.len() >= self.prune_at.max(MIN_PRUNE) {
            self.waiting.retain(|(_, ready)| Arc::strong_count(ready) > 1);
            self.prune_at = 2 * self.waiting.len();
            // A storm's room is given back once the waiters are gone.
            if self.waiting.capacity() > 2 * self.prune_at.max(MIN_PRUNE) {
                self.waiting.shrink_to(self.prune_at.max(MIN_PRUNE));
            }
        }
    }

    /// Tells every waiting stream whose channel is now subscribed.
    fn confirm(&mut self, subscribed: &HashSet<Channel>, hub: &Hub) {
        self.waiting.retain(|(channel, ready)| {
            if subscribed.contains(channel) {
                ready.confirm();
                hub.settle_subscription(channel);
                false
            } else {
                // Kept until confirmed, unless its streams are all gone.
                Arc::strong_count(ready) > 1
            }
        });
        // That was a pruning too.
        self.prune_at = 2 * self.waiting.len();
        // A reconnect storm leaves room for thousands of waiters behind;
        // idle, it would be memory every stream pays for.
        if self.waiting.is_empty() && self.waiting.capacity() > 64 {
            self.waiting = Vec::new();
        }
    }
}

/// The task's state across connections.
struct PubSubTask {
    client: Client,
    hub: Arc<Hub>,
    commands: mpsc::UnboundedReceiver<SubscriptionCommand>,
    health: Arc<PubSubHealth>,
    on_reconnect: OnReconnect,
    wanted: Wanted,
    /// After the first connection, every new one must resync the streams.
    connected_before: bool,
}

enum Served {
    /// The connection failed; `was_serving` if it had been up and subscribed.
    Lost {
        reason: String,
        was_serving: bool,
    },
    CommandsClosed,
}

fn lost(reason: String) -> Served {
    Served::Lost { reason, was_serving: false }
}

fn lost_while_serving(reason: String) -> Served {
    Served::Lost { reason, was_serving: true }
}

/// The next subscription change to make, as a future, if any: channels
/// wanted but not subscribed, and subscribed but no longer wanted, among the
/// channels that changed (at most [`BATCH`] of each; the rest wait their turn).
fn next_change(wanted: &mut Wanted, subscribed: &HashSet<Channel>, sink: &PubSubSink) -> Option<Inflight> {
    let (add, remove) = pending_change(wanted, subscribed)?;
    Some(Box::pin(change_subscriptions(sink.clone(), add, remove)))
}

/// Which channels to subscribe and unsubscribe next, or `None` if the
/// subscriptions match what is wanted.
fn pending_change(wanted: &mut Wanted, subscribed: &HashSet<Channel>) -> Option<(HashSet<Channel>, HashSet<Channel>)> {
    let mut add = HashSet::new();
    let mut remove = HashSet::new();
    let channels = &wanted.channels;
    // Classified channels leave `dirty`; once a batch is full the rest stay
    // for the next change.
    wanted.dirty.retain(|channel| {
        if add.len() == BATCH || remove.len() == BATCH {
            return true;
        }
        match (channels.contains(channel), subscribed.contains(channel)) {
            (true, false) => add.insert(channel.clone()),
            (false, true) => remove.insert(channel.clone()),
            _ => false,
        };
        false
    });
    if add.is_empty() && remove.is_empty() {
        return None;
    }
    Some((add, remove))
}

type Inflight = Pin<Box<dyn Future<Output = (RedisResult<()>, HashSet<Channel>, HashSet<Channel>)> + Send>>;

impl PubSubTask {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            match self.connect_and_serve().await {
                Served::CommandsClosed => return,
                Served::Lost { reason, was_serving } => {
                    self.health.connected.store(false, Ordering::Release);
                    // A connection that worked starts a new outage: retry
                    // quickly. Failing to connect at all backs off further.
                    if was_serving {
                        backoff = MIN_BACKOFF;
                    }
                    tracing::warn!(%reason, retry_in_ms = backoff.as_millis() as u64, "pub/sub connection lost; reconnecting");
                }
            }
            // No subscription is dirty while disconnected: the next
            // connection subscribes every wanted channel.
            self.wanted.dirty = HashSet::new();
            let jitter = Duration::from_millis(rand::random::<u64>() % 100);
            if !self.back_off(backoff + jitter).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Waits `delay` before the next connection attempt, folding the hub's
    /// commands into `wanted` meanwhile: left in the channel, every stream
    /// attempt of a long outage (a subscribe and an unsubscribe each) would
    /// pile up there. Returns false if the hub is gone.
    async fn back_off(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                command = self.commands.recv() => {
                    let Some(command) = command else { return false };
                    self.wanted.fold(command);
                    while let Ok(command) = self.commands.try_recv() {
                        self.wanted.fold(command);
                    }
                },
            }
        }
    }

    async fn connect_and_serve(&mut self) -> Served {
        let Self { client, hub, commands, health, on_reconnect, wanted, connected_before } = self;
        // Commands are folded while connecting too: an unreachable host may
        // take a while to refuse.
        // A peer that accepts and never answers (a black hole, a frozen
        // Redis) must not hold the task: connecting and resubscribing get
        // the same budget as a ping. Past it the attempt counts as failed.
        let budget = health.ping_interval * 3;
        let connect = tokio::time::timeout(budget, client.get_async_pubsub());
        tokio::pin!(connect);
        let connected = loop {
            tokio::select! {
                connected = &mut connect => match connected {
                    Ok(connected) => break connected,
                    Err(_) => return lost(format!("connect: no answer in {} ms", budget.as_millis())),
                },
                command = commands.recv() => match command {
                    Some(command) => wanted.fold(command),
                    None => return Served::CommandsClosed,
                },
            }
        };
        let (mut sink, mut messages) = match connected {
            Ok(pubsub) => pubsub.split(),
            Err(e) => return lost(format!("connect: {e}")),
        };
        // Whatever arrived while disconnected is applied before resubscribing.
        while let Ok(command) = commands.try_recv() {
            wanted.apply(command);
        }
        let mut subscribed: HashSet<Channel> = HashSet::new();
        // Every wanted channel is subscribed below: nothing is left to change.
        wanted.dirty.clear();
        let all: Vec<Channel> = wanted.channels.iter().cloned().collect();
        for chunk in all.chunks(BATCH) {
            match tokio::time::timeout(budget, sink.subscribe(chunk.iter().map(channel_name).collect::<Vec<_>>())).await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return lost(format!("resubscribe: {e}")),
                Err(_) => return lost(format!("resubscribe: no answer in {} ms", budget.as_millis())),
            }
            subscribed.extend(chunk.iter().cloned());
        }
        health.mark_alive();
        wanted.confirm(&subscribed, hub);
        if std::mem::replace(connected_before, true) {
            tracing::info!(channels = subscribed.len(), "pub/sub reconnected; resyncing streams from history");
            crate::metrics::get().pubsub_reconnects.increment(1);
            on_reconnect().await;
            hub.resync_all();
        }

        let mut ping = tokio::time::interval(health.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending_pong: Option<Pin<Box<dyn Future<Output = RedisResult<redis::Value>> + Send>>> = None;
        // One subscription change in flight at a time keeps them in order, while
        // messages keep flowing to the hub.
        let mut inflight: Option<Inflight> = None;
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => deliver(hub, &message),
                    None => return lost_while_serving("stream closed".into()),
                },
                command = commands.recv(), if inflight.is_none() => {
                    let Some(command) = command else { return Served::CommandsClosed };
                    wanted.apply(command);
                    while let Ok(command) = commands.try_recv() {
                        wanted.apply(command);
                    }
                    inflight = next_change(wanted, &subscribed, &sink);
                    if inflight.is_none() {
                        wanted.confirm(&subscribed, hub);
                    }
                },
                done = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                    let (result, added, removed) = done;
                    if let Err(e) = result {
                        return lost_while_serving(format!("subscribe: {e}"));
                    }
                    subscribed.extend(added);
                    subscribed.retain(|c| !removed.contains(c));
                    wanted.confirm(&subscribed, hub);
                    // More may have changed meanwhile, or exceeded one batch.
                    inflight = next_change(wanted, &subscribed, &sink);
                },
                _ = ping.tick(), if pending_pong.is_none() => {
                    let mut sink = sink.clone();
                    let timeout = health.ping_interval * 3;
                    pending_pong = Some(Box::pin(async move {
                        match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                            Ok(result) => result,
                            Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "PING timed out"))),
                        }
                    }));
                },
                pong = async { pending_pong.as_mut().expect("guarded").await }, if pending_pong.is_some() => {
                    pending_pong = None;
                    match pong {
                        Ok(_) => health.mark_alive(),
                        Err(e) => return lost_while_serving(format!("ping: {e}")),
                    }
                },
            }
        }
    }
}

async fn change_subscriptions(
    mut sink: PubSubSink,
    subscribe: HashSet<Channel>,
    unsubscribe: HashSet<Channel>,
) -> (RedisResult<()>, HashSet<Channel>, HashSet<Channel>) {
    let result = async {
        if !unsubscribe.is_empty() {
            sink.unsubscribe(unsubscribe.iter().map(channel_name).collect::<Vec<_>>()).await?;
        }
        if !subscribe.is_empty() {
            sink.subscribe(subscribe.iter().map(channel_name).collect::<Vec<_>>()).await?;
        }
        Ok(())
    }
    .await;
    (result, subscribe, unsubscribe)
}

/// A message is `<kind> <id or -> <unread> <json>` (see `functions.lua`):
/// `n` a notification, `r` read, `d` deleted. A topic's channel carries
/// notifications only, with no unread count (`n <id> 0 <json>`).
fn deliver(hub: &Hub, message: &Msg) {
    let channel = message.get_channel_name();
    let payload = message.get_payload_bytes();
    let delivered = if let Some(user) = user_of_channel(channel) {
        parse_live(payload).map(|event| hub.deliver(user, event))
    } else if let Some(topic) = topic_of_channel(channel) {
        match parse_live(payload) {
            Some(LiveEvent::Notification { id, stored, .. }) => Some(hub.deliver_topic(topic, id, stored)),
            _ => None,
        }
    } else {
        return;
    };
    if delivered.is_none() {
        tracing::warn!(channel, "ignored a malformed pub/sub message");
    }
}

fn parse_live(payload: &[u8]) -> Option<LiveEvent<'_>> {
    let mut parts = payload.splitn(4, |b| *b == b' ');
    let kind = parts.next()?;
    let id = parts.next()?;
    let unread = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let json = parts.next()?;
    match kind {
        b"n" => Some(LiveEvent::Notification { id: parse_id(id)?, unread, stored: json }),
        b"r" => Some(LiveEvent::Change { change: InboxChange::Read, unread, payload: json }),
        b"d" => Some(LiveEvent::Change { change: InboxChange::Deleted, unread, payload: json }),
        _ => None,
    }
}

fn parse_id(id: &[u8]) -> Option<EntryId> {
    std::str::from_utf8(id).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::UserId,
        hub::{HubCapacity, StreamQueue},
    };

    /// A client for a port nobody listens on (bound, then freed).
    fn dead_client() -> Client {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Client::open(format!("redis://127.0.0.1:{port}")).unwrap()
    }

    fn conn(user: &str) -> Arc<StreamQueue> {
        Arc::new(StreamQueue::new(UserId::parse(user).unwrap(), u64::MAX))
    }

    /// Paused time: each backoff ends only once the task is idle, so every
    /// command queued before it has been taken by then (no timing involved).
    #[tokio::test(start_paused = true)]
    async fn an_outage_folds_commands_and_keeps_waiters_bounded() {
        const LIVE: usize = 100;
        const ATTEMPTS: usize = 1000;
        let (tx, commands) = mpsc::unbounded_channel();
        let limits = HubCapacity { max_streams: 10_000, max_per_user: 4, queue_capacity: 8 };
        let hub = Arc::new(Hub::new(limits, Duration::from_secs(15), Some(tx)));
        let mut task = PubSubTask {
            client: dead_client(),
            hub: hub.clone(),
            commands,
            health: Arc::new(PubSubHealth::new(Duration::from_secs(1))),
            on_reconnect: Box::new(|| Box::pin(async {})),
            wanted: Wanted::default(),
            connected_before: true,
        };
        // Streams that keep waiting through the outage.
        let live: Vec<_> = (0..LIVE).map(|i| hub.register(conn(&format!("live{i}"))).unwrap()).collect();
        let bound = 2 * LIVE.max(MIN_PRUNE);
        for round in 0..10 {
            // Clients that give up waiting and retry: every attempt queues a
            // subscribe and an unsubscribe.
            for i in 0..ATTEMPTS {
                drop(hub.register(conn(&format!("retry{}", i % 500))).unwrap());
            }
            assert!(task.back_off(MAX_BACKOFF).await, "the hub is still there");
            let wanted = &task.wanted;
            assert!(task.commands.is_empty(), "round {round}: {} commands left queued", task.commands.len());
            assert_eq!(wanted.channels.len(), LIVE, "round {round}: only live users are wanted");
            assert!(wanted.dirty.is_empty(), "round {round}: {} dirty; a reconnect subscribes all", wanted.dirty.len());
            assert!(wanted.waiting.len() <= bound, "round {round}: {} waiting", wanted.waiting.len());
            assert!(wanted.waiting.capacity() <= 2 * bound, "round {round}: room for {}", wanted.waiting.capacity());
        }
        let waited: HashSet<&Channel> = task.wanted.waiting.iter().map(|(channel, _)| channel).collect();
        let still: Vec<Channel> = live.iter().map(|(r, _)| Channel::User(r.queue().user.clone())).collect();
        let still: HashSet<&Channel> = still.iter().collect();
        // (Flags of gone streams may be left until the next pruning.)
        assert!(still.is_subset(&waited), "every stream still waiting is still waited for");
    }

    fn user(name: &str) -> Channel {
        Channel::User(UserId::parse(name).unwrap())
    }

    fn subscribe(wanted: &mut Wanted, name: &str) {
        wanted.apply(SubscriptionCommand::Subscribe { channel: user(name), ready: Arc::new(Subscribed::default()) });
    }

    #[test]
    fn a_change_looks_only_at_channels_that_changed() {
        let mut wanted = Wanted::default();
        let subscribed: HashSet<Channel> = (0..3).map(|i| user(&format!("old{i}"))).collect();
        wanted.channels = subscribed.clone();
        subscribe(&mut wanted, "new");
        wanted.apply(SubscriptionCommand::Unsubscribe { channel: user("old0") });
        let (add, remove) = pending_change(&mut wanted, &subscribed).expect("a change");
        assert_eq!(add, HashSet::from([user("new")]));
        assert_eq!(remove, HashSet::from([user("old0")]));
        assert!(pending_change(&mut wanted, &subscribed).is_none(), "each change is taken once");

        // Leaving and coming back before the change is made changes nothing.
        wanted.apply(SubscriptionCommand::Unsubscribe { channel: user("old1") });
        subscribe(&mut wanted, "old1");
        assert!(pending_change(&mut wanted, &subscribed).is_none());
    }

    #[test]
    fn a_burst_is_changed_in_batches_until_none_is_left() {
        let mut wanted = Wanted::default();
        for i in 0..BATCH + 5 {
            subscribe(&mut wanted, &format!("u{i}"));
        }
        let mut subscribed = HashSet::new();
        let (first, _) = pending_change(&mut wanted, &subscribed).unwrap();
        assert_eq!(first.len(), BATCH);
        subscribed.extend(first);
        let (rest, _) = pending_change(&mut wanted, &subscribed).unwrap();
        assert_eq!(rest.len(), 5);
        subscribed.extend(rest);
        assert_eq!(subscribed, wanted.channels);
        assert!(pending_change(&mut wanted, &subscribed).is_none());
    }

    #[test]
    fn parses_live_messages() {
        assert_eq!(
            parse_live(br#"n 5-1 3 {"type":"a b"}"#),
            Some(LiveEvent::Notification { id: EntryId::new(5, 1), unread: 3, stored: br#"{"type":"a b"}"# })
        );
        assert_eq!(
            parse_live(br#"r - 0 {"all":true}"#),
            Some(LiveEvent::Change { change: InboxChange::Read, unread: 0, payload: br#"{"all":true}"# })
        );
        assert!(parse_live(b"x 5-1 3 {}").is_none());
        assert!(parse_live(b"n bad 3 {}").is_none());
    }
}
