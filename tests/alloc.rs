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
    domain::{EntryId, UserId},
    hub::{Hub, HubLimits, Registration},
    stream::{Connection, Next, frame},
};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const STORED: &[u8] =
    br#"{"type":"comment.mention","title":"Mina mentioned you","priority":"normal","data":{"doc":42}}"#;

/// Allocations per event when one user has `tabs` streams on the node.
fn allocations_per_event(tabs: usize) -> f64 {
    let hub = Arc::new(Hub::new(HubLimits { max_streams: 1000, max_per_user: 1000 }, Duration::from_secs(15), None));
    let user = UserId::parse("alice").unwrap();
    let streams: Vec<Registration> =
        (0..tabs).map(|_| hub.register(Arc::new(Connection::new(user.clone(), u64::MAX, 64))).unwrap().0).collect();
    let drain = || {
        for s in &streams {
            while let Next::Frame(f) = s.connection().poll_next(&mut Context::from_waker(Waker::noop())) {
                drop(f);
            }
        }
    };
    let mut seq = 0;
    let mut deliver = |n: usize| {
        for _ in 0..n {
            seq += 1;
            hub.deliver("alice", || frame::live_notification(EntryId::new(1_732_460_000_000, seq), STORED, 3));
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
    let one = allocations_per_event(1);
    let many = allocations_per_event(100);
    println!("allocations per event: {one} with 1 tab, {many} with 100 tabs");
    // Two per event: the frame's buffer and the shared header its first
    // clone creates. The metrics histogram allocates a bucket block now and
    // then, hence the small tolerance.
    assert!(one <= 2.1, "encoding one event should take about 2 allocations, took {one}");
    assert!((many - one).abs() < 0.05, "each extra tab must cost no allocation: {one} vs {many}");
}
