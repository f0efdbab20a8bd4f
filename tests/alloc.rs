//! Allocations on the delivery hot path, counted (not timed).
//!
//! A live event is encoded once per node, then queued for every local tab of
//! its user. The frame's allocation is per event; queueing it for a tab must
//! allocate nothing (a refcount on shared bytes, a slot in a queue that has
//! already grown). This binary has its own counting global allocator.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Waker},
    time::Duration,
};

use herald::{
    domain::{EntryId, LiveEvent, UserId},
    hub::{Hub, HubCapacity, Next, Registration, StreamQueue},
};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
/// Bytes allocated and not yet freed.
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counters are process-wide: tests here take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const STORED: &[u8] =
    br#"{"type":"comment.mention","title":"Mina mentioned you","priority":"normal","data":{"doc":42}}"#;

/// Allocations per event when one user has `tabs` streams on the node.
fn allocations_per_event(tabs: usize) -> f64 {
    let hub = Arc::new(Hub::new(
        HubCapacity { max_streams: 1000, max_per_user: 1000, queue_capacity: 64 },
        Duration::from_secs(15),
        None,
    ));
    let user = UserId::parse("alice").unwrap();
    let streams: Vec<Registration> =
        (0..tabs).map(|_| hub.register(Arc::new(StreamQueue::new(user.clone(), u64::MAX))).unwrap().0).collect();
    let drain = || {
        for s in &streams {
            while let Next::Frame(f) = s.queue().poll_next(&mut Context::from_waker(Waker::noop())) {
                drop(f);
            }
        }
    };
    let mut seq = 0;
    let mut deliver = |n: usize| {
        for _ in 0..n {
            seq += 1;
            let id = EntryId::new(1_732_460_000_000, seq);
            hub.deliver("alice", LiveEvent::Notification { id, stored: STORED, unread: 3 });
            drain();
        }
    };
    deliver(50); // warm-up: queues grow, metrics register
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    const EVENTS: usize = 1000;
    deliver(EVENTS);
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / EVENTS as f64
}

#[test]
fn queueing_an_event_for_more_tabs_allocates_nothing_more() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let one = allocations_per_event(1);
    let many = allocations_per_event(100);
    println!("allocations per event: {one} with 1 tab, {many} with 100 tabs");
    // Two per event: the frame's buffer and the shared header its first
    // clone creates. The metrics histogram allocates a bucket block now and
    // then, hence the small tolerance.
    assert!(one <= 2.1, "encoding one event should take about 2 allocations, took {one}");
    assert!((many - one).abs() < 0.05, "each extra tab must cost no allocation: {one} vs {many}");
}

/// Herald's own state for an idle stream (issue #4's P1 allows 1 KiB on top
/// of actix's per-connection floor): its queue, its place in the hub, the
/// user's entry and subscription flag, and the response body (boxed, as
/// actix boxes it). Counted in heap bytes, so it is exact, not timed.
#[test]
fn an_idle_stream_costs_herald_under_a_kibibyte() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    use herald::{
        engine::{StreamStart, memory::MemoryEngine},
        sse::{Opening, SseBody},
        wire::KeepAlive,
    };
    const STREAMS: usize = 2000;
    let hub = Arc::new(Hub::new(
        HubCapacity { max_streams: 10_000, max_per_user: 4, queue_capacity: 256 },
        Duration::from_secs(15),
        None,
    ));
    let retention = herald::engine::Retention { max_len: 1000, max_age_ms: 86_400_000, idempotency_window_ms: 1000 };
    let engine = herald::engine::AnyEngine::Memory(MemoryEngine::new(
        hub.clone(),
        retention,
        retention,
        herald::engine::PushPolicy::Off,
    ));
    // Warm up the hub's shards and the metrics before counting.
    let warm: Vec<_> = (0..64)
        .map(|i| hub.register(Arc::new(StreamQueue::new(UserId::parse(&format!("w{i}")).unwrap(), u64::MAX))).unwrap())
        .collect();
    let users: Vec<UserId> = (0..STREAMS).map(|i| UserId::parse(&format!("load-{i}")).unwrap()).collect();

    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let opening = || Opening {
        topics: None,
        cursor: None,
        start: StreamStart { last_id: EntryId::ZERO, unread: 0 },
        retry: Duration::from_secs(2),
        keep_alive: KeepAlive::Comment,
        page_size: 200,
    };
    let bodies: Vec<Box<SseBody>> = users
        .iter()
        .map(|user| {
            let (registration, _) = hub.register(Arc::new(StreamQueue::new(user.clone(), u64::MAX))).unwrap();
            Box::new(SseBody::new(registration, engine.clone(), opening()))
        })
        .collect();
    let per_stream = (LIVE_BYTES.load(Ordering::Relaxed) - before) as f64 / STREAMS as f64;
    println!("herald's own heap per idle stream: {per_stream:.0} bytes (user ids included)");
    assert!(per_stream < 1024.0, "{per_stream:.0} bytes per idle stream");
    drop((bodies, warm));
}
