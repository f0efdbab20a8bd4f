//! The engine conformance suite: the same checks against `memory` and
//! `redis`, at the engine's own interface, so the two cannot drift.

use std::{future::poll_fn, sync::Arc, task::Poll, time::Duration};

use herald::{
    clock::now_unix_ms,
    domain::{EntryId, IdempotencyKey, NewNotification, NotificationLimits, UserId},
    engine::{AnyEngine, Engine, ReadTarget, Reset},
    hub::{Hub, Next, Registration, StreamQueue},
    node::Node,
    wire::Frame,
};

use crate::helpers::{self, wait_for};

pub(crate) struct Backend {
    pub(crate) engine: AnyEngine,
    pub(crate) hub: Arc<Hub>,
}

/// A node as the server builds it (its tasks spawned on this runtime), with
/// room for the tests' streams and queues long enough for their bursts.
pub(crate) async fn backend(engine: &helpers::Engine, extra: &[(&str, &str)]) -> Backend {
    let mut overrides =
        vec![("server.max_streams", "100"), ("stream.max_per_user", "10"), ("stream.queue_capacity", "64")];
    overrides.extend_from_slice(extra);
    let settings = helpers::settings(engine, &overrides);
    let mut node = Node::build(&settings).await.expect("the node starts");
    node.spawn_tasks();
    Backend { engine: node.engine, hub: node.hub }
}

pub(crate) fn user(name: &str) -> UserId {
    UserId::parse(&helpers::unique_user(name)).unwrap()
}

pub(crate) fn stored(title: &str) -> herald::domain::StoredNotification {
    let n: NewNotification = serde_json::from_value(helpers::notification(title)).unwrap();
    n.validate(&NotificationLimits { max_payload_bytes: 8192, max_title_chars: 200, max_body_chars: 2000 }).unwrap()
}

impl Backend {
    pub(crate) async fn publish(&self, user: &UserId, title: &str) -> EntryId {
        self.engine.publish(user, &stored(title), None).await.unwrap().stored().unwrap().id
    }

    /// A registered stream whose subscription is confirmed.
    pub(crate) async fn listen(&self, user: &UserId) -> Registration {
        let queue = Arc::new(StreamQueue::new(user.clone(), u64::MAX));
        let (registration, ready) = self.hub.register(queue).unwrap();
        tokio::time::timeout(Duration::from_secs(5), ready.wait()).await.unwrap();
        registration
    }
}

/// The next frame queued for the stream, skipping keep-alives (the node's
/// tick owes one to a quiet stream); `None` at a resync, a `bye` or the
/// timeout.
pub(crate) async fn next_frame(registration: &Registration, timeout: Duration) -> Option<Frame> {
    let queue = registration.queue().clone();
    let next = poll_fn(move |cx| {
        loop {
            return match queue.poll_next(cx) {
                Next::Frame(frame) => Poll::Ready(Some(frame)),
                Next::KeepAlive => continue,
                Next::Pending => Poll::Pending,
                _ => Poll::Ready(None),
            };
        }
    });
    tokio::time::timeout(timeout, next).await.ok().flatten()
}

crate::on_both_engines!(
    publishes_in_order_and_reads_back_after_a_cursor,
    reads_history_in_pages,
    stream_start_reports_the_newest_id_and_unread_count,
    idempotency_key_stores_once_and_returns_the_first_result,
    trimming_by_count_keeps_the_newest_and_resets_old_cursors,
    a_full_inbox_is_trimmed_in_batches_and_counts_stay_exact,
    more_entries_than_a_batch_expire_at_once,
    trimming_by_age_drops_old_entries,
    every_entry_ages_out_in_turn_and_unread_counts_only_what_is_kept,
    expired_entries_go_even_without_new_publishes,
    live_entries_reach_every_stream_of_the_user_only,
);

async fn publishes_in_order_and_reads_back_after_a_cursor(engine: helpers::Engine) {
    let b = backend(&engine, &[]).await;
    let alice = user("alice");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(b.publish(&alice, &format!("n{i}")).await);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids must increase: {ids:?}");

    let all = b.engine.read_after(&alice, EntryId::ZERO, 100).await.unwrap();
    assert!(all.reset.is_none());
    assert_eq!(all.entries.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(all.entries[0].body, stored("n0").json);
    assert!(all.entries.iter().all(|e| !e.read && !e.clicked));

    let after = b.engine.read_after(&alice, ids[1], 100).await.unwrap();
    assert_eq!(after.entries.iter().map(|e| e.id).collect::<Vec<_>>(), ids[2..]);
    let none = b.engine.read_after(&user("nobody"), EntryId::ZERO, 100).await.unwrap();
    assert!(none.entries.is_empty() && none.reset.is_none());
}

async fn reads_history_in_pages(engine: helpers::Engine) {
    let b = backend(&engine, &[]).await;
    let alice = user("alice");
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(b.publish(&alice, &format!("n{i}")).await);
    }
    let mut cursor = EntryId::ZERO;
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    // Bounded: an engine that ignored the cursor would page forever.
    for _ in 0..10 {
        let page = b.engine.read_after(&alice, cursor, 3).await.unwrap();
        let Some(last) = page.entries.last() else {
            break;
        };
        cursor = last.id;
        sizes.push(page.entries.len());
        seen.extend(page.entries.iter().map(|e| e.id));
    }
    assert_eq!(sizes, [3, 3, 1], "full pages of 3, then the rest");
    assert_eq!(seen, ids);
}

async fn stream_start_reports_the_newest_id_and_unread_count(engine: helpers::Engine) {
    let b = backend(&engine, &[]).await;
    let alice = user("alice");
    let empty = b.engine.stream_start(&alice).await.unwrap();
    assert_eq!((empty.last_id, empty.unread), (EntryId::ZERO, 0));
    b.publish(&alice, "a").await;
    let last = b.publish(&alice, "b").await;
    let start = b.engine.stream_start(&alice).await.unwrap();
    assert_eq!((start.last_id, start.unread), (last, 2));
}

async fn idempotency_key_stores_once_and_returns_the_first_result(engine: helpers::Engine) {
    let b = backend(&engine, &[]).await;
    let alice = user("alice");
    let key = IdempotencyKey::parse("order-991-shipped").unwrap();
    let first = b.engine.publish(&alice, &stored("shipped"), Some(&key)).await.unwrap().stored().unwrap();
    let again = b.engine.publish(&alice, &stored("shipped"), Some(&key)).await.unwrap().stored().unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.id, first.id);
    assert_eq!(b.engine.read_after(&alice, EntryId::ZERO, 100).await.unwrap().entries.len(), 1);
    // The key is per user: another user's publish with it is new.
    let bob = user("bob");
    assert!(!b.engine.publish(&bob, &stored("shipped"), Some(&key)).await.unwrap().stored().unwrap().duplicate);
}

async fn trimming_by_count_keeps_the_newest_and_resets_old_cursors(engine: helpers::Engine) {
    let b = backend(&engine, &[("history.max_len", "3")]).await;
    let alice = user("alice");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(b.publish(&alice, &format!("n{i}")).await);
    }
    let from_start = b.engine.read_after(&alice, EntryId::ZERO, 100).await.unwrap();
    assert!(from_start.reset == Some(Reset::HistoryTrimmed), "a cursor before trimmed entries must reset");
    assert_eq!(from_start.entries.iter().map(|e| e.id).collect::<Vec<_>>(), ids[2..]);
    let from_kept = b.engine.read_after(&alice, ids[2], 100).await.unwrap();
    assert!(from_kept.reset.is_none(), "a cursor at a kept entry resumes normally");
    assert_eq!(from_kept.entries.iter().map(|e| e.id).collect::<Vec<_>>(), ids[3..]);
    let start = b.engine.stream_start(&alice).await.unwrap();
    assert_eq!((start.last_id, start.unread), (ids[4], 3));
}

/// With `max_len` 200 the slack is 2: the inbox may hold 202 entries, and
/// the publish that would make it 203 cuts it back to the newest 200. The
/// unread count stays exact through the cut, which removes read entries too.
async fn a_full_inbox_is_trimmed_in_batches_and_counts_stay_exact(engine: helpers::Engine) {
    let b = backend(&engine, &[("history.max_len", "200")]).await;
    let alice = user("alice");
    let mut ids = Vec::new();
    for i in 0..202 {
        ids.push(b.publish(&alice, &format!("n{i}")).await);
    }
    // Two of the three entries the cut will remove are read.
    b.engine.mark_read(&alice, &ReadTarget::Ids(vec![ids[0], ids[2], ids[150]])).await.unwrap();
    let held = b.engine.read_after(&alice, EntryId::ZERO, 1000).await.unwrap();
    assert!(held.reset.is_none(), "nothing is trimmed within the slack");
    assert_eq!(held.entries.len(), 202);
    assert_eq!(b.engine.stream_start(&alice).await.unwrap().unread, 199, "a read path trims by the same rule");

    ids.push(b.publish(&alice, "n202").await);
    let kept = b.engine.read_after(&alice, EntryId::ZERO, 1000).await.unwrap();
    assert!(kept.reset == Some(Reset::HistoryTrimmed), "a cursor before the cut resets");
    assert_eq!(kept.entries.iter().map(|e| e.id).collect::<Vec<_>>(), ids[3..]);
    assert!(
        b.engine.read_after(&alice, ids[2], 1000).await.unwrap().reset.is_none(),
        "the newest entry cut is the watermark"
    );
    // 200 kept, of which one (ids[150]) is read.
    assert_eq!(b.engine.stream_start(&alice).await.unwrap().unread, 199);
    let query = herald::engine::ListQuery { before: None, limit: 1000, unread_only: true };
    assert_eq!(b.engine.list(&alice, query).await.unwrap().items.len(), 199);
}

/// A full inbox may hold max_len + 1 % (1,005 here, past the 1,000 ids one
/// range read returns): when all of them expire, one read must remove
/// every one, not a batch.
async fn more_entries_than_a_batch_expire_at_once(engine: helpers::Engine) {
    const MAX_AGE_MS: u64 = 3000;
    let b = backend(&engine, &[("history.max_age", "3s")]).await;
    let alice = user("alice");
    let first = b.publish(&alice, "n0").await;
    let mut last = first;
    for i in 1..1005 {
        last = b.publish(&alice, &format!("n{i}")).await;
    }
    b.engine.mark_read(&alice, &ReadTarget::Ids(vec![last])).await.unwrap();
    // Past the age and its slack (1 %) by the clock that stamps ids.
    wait_for("every entry to be past its age", Duration::from_secs(10), async || {
        (now_unix_ms() > last.ms + MAX_AGE_MS + MAX_AGE_MS / 100 + 10).then_some(())
    })
    .await;
    assert_eq!(b.engine.stream_start(&alice).await.unwrap().unread, 0);
    let page = b.engine.read_after(&alice, first, 2000).await.unwrap();
    assert!(page.entries.is_empty(), "{} expired entries left", page.entries.len());
    // Trimmed (and so `history_trimmed`), or, one age slack later, the
    // user's keys expired whole (and so the cursor is ahead of an inbox
    // that is gone): either way the client is told to refetch.
    assert!(page.reset.is_some(), "a cursor at an expired entry must reset: {page:?}");
}

async fn trimming_by_age_drops_old_entries(engine: helpers::Engine) {
    let b = backend(&engine, &[("history.max_age", "1s")]).await;
    let alice = user("alice");
    let old = b.publish(&alice, "old").await;
    // Each publish trims; keep publishing until the old entry has aged out.
    let newest = wait_for("the old entry to age out", Duration::from_secs(5), async || {
        let id = b.publish(&alice, "new").await;
        let page = b.engine.read_after(&alice, EntryId::ZERO, 100).await.unwrap();
        (!page.entries.iter().any(|e| e.id == old)).then_some(id)
    })
    .await;
    // stream_start trims by age too; read_after does not, so reading after
    // it sees exactly what it counted.
    let start = b.engine.stream_start(&alice).await.unwrap();
    let page = b.engine.read_after(&alice, EntryId::ZERO, 100).await.unwrap();
    assert!(page.reset == Some(Reset::HistoryTrimmed));
    assert_eq!(page.entries.last().map(|e| e.id), Some(newest));
    assert_eq!(start.unread, page.entries.len() as u64);
}

/// The age trim keeps up as time passes, not just once: the Redis engine
/// skips the check until the oldest entry it last saw may be past the age
/// and its slack, so a check that ran too rarely (or remembered the wrong
/// entry) would leave expired entries behind. Each publish must keep every
/// entry younger than the age and none older than the age plus the slack
/// (which of those in between are kept, the rule leaves to when the check
/// ran). Some entries are read, so the unread count each publish streams
/// must leave the removed ones out. The last publish comes after a pause
/// longer than both, so every earlier entry expires at once and one publish
/// must remove them all.
async fn every_entry_ages_out_in_turn_and_unread_counts_only_what_is_kept(engine: helpers::Engine) {
    const MAX_AGE_MS: u64 = 1000;
    const SLACK_MS: u64 = MAX_AGE_MS / 100;
    let b = backend(&engine, &[("history.max_age", "1s")]).await;
    let alice = user("alice");
    let tab = b.listen(&alice).await;
    let (mut published, mut read) = (Vec::new(), Vec::new());
    // 25 publishes 100 ms apart: each entry ages out while more arrive.
    let mut kept = Vec::new();
    for round in 0..26 {
        let id = b.publish(&alice, &format!("n{round}")).await;
        let frame = loop {
            let frame = next_frame(&tab, Duration::from_secs(5)).await.expect("the publish's live frame");
            if frame.id == Some(id) {
                break frame;
            }
        };
        published.push(id);
        // Entries age by the clock that stamped the newest id.
        kept = b.engine.read_after(&alice, EntryId::ZERO, 100).await.unwrap().entries.iter().map(|e| e.id).collect();
        assert!(published.ends_with(&kept), "round {round}: the newest entries are kept, in order: {kept:?}");
        let must_keep = published.iter().filter(|e| e.ms >= id.ms - MAX_AGE_MS).count();
        let may_keep = published.iter().filter(|e| e.ms + MAX_AGE_MS + SLACK_MS >= id.ms).count();
        assert!((must_keep..=may_keep).contains(&kept.len()), "round {round}: kept {} of {published:?}", kept.len());
        let unread = kept.iter().filter(|e| !read.contains(*e)).count();
        let text = std::str::from_utf8(&frame.bytes).unwrap();
        assert!(text.contains(&format!("event: unread\ndata: {{\"count\":{unread}}}")), "round {round}: {text}");
        if round % 3 == 0 {
            b.engine.mark_read(&alice, &ReadTarget::Ids(vec![id])).await.unwrap();
            read.push(id);
        }
        let pause = if round == 24 { MAX_AGE_MS + 100 } else { 100 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    assert!(published[0].ms + 2 * MAX_AGE_MS <= published[24].ms, "the run spans two ages");
    assert_eq!(kept, [published[25]], "after the pause, the last publish kept only itself");
}

async fn expired_entries_go_even_without_new_publishes(engine: helpers::Engine) {
    let b = backend(&engine, &[("history.max_age", "1s")]).await;
    let alice = user("alice");
    b.publish(&alice, "one").await;
    let last = b.publish(&alice, "two").await;
    assert_eq!(b.engine.stream_start(&alice).await.unwrap().unread, 2);
    // No publish from here on: reading alone must expire them.
    wait_for("the entries to expire", Duration::from_secs(5), async || {
        let start = b.engine.stream_start(&alice).await.unwrap();
        (start.unread == 0).then_some(())
    })
    .await;
    let query = herald::engine::ListQuery { before: None, limit: 10, unread_only: false };
    let page = b.engine.list(&alice, query).await.unwrap();
    assert!(page.items.is_empty() && page.unread == 0);
    assert_eq!(b.engine.stream_start(&alice).await.unwrap().last_id, last, "ids keep growing after expiry");
    assert!(b.engine.read_after(&alice, EntryId::ZERO, 10).await.unwrap().reset == Some(Reset::HistoryTrimmed));
}

async fn live_entries_reach_every_stream_of_the_user_only(engine: helpers::Engine) {
    let b = backend(&engine, &[]).await;
    let (alice, bob) = (user("alice"), user("bob"));
    let tab1 = b.listen(&alice).await;
    let tab2 = b.listen(&alice).await;
    let bobs = b.listen(&bob).await;

    let published = b.engine.publish(&alice, &stored("hello"), None).await.unwrap().stored().unwrap();
    assert!(published.online);
    for tab in [&tab1, &tab2] {
        let frame = next_frame(tab, Duration::from_secs(5)).await.expect("a live frame");
        assert_eq!(frame.id, Some(published.id));
        let text = std::str::from_utf8(&frame.bytes).unwrap();
        assert!(text.contains("\"title\":\"hello\""), "{text}");
        assert!(text.contains("event: unread\ndata: {\"count\":1}"), "{text}");
    }
    assert!(next_frame(&bobs, Duration::from_millis(300)).await.is_none(), "bob must get nothing");

    drop((tab1, tab2));
    let offline = b.engine.publish(&alice, &stored("later"), None).await.unwrap().stored().unwrap();
    // Redis counts subscribers; the unsubscribe is asynchronous.
    if offline.online {
        wait_for("alice to be offline", Duration::from_secs(5), async || {
            let p = b.engine.publish(&alice, &stored("later"), None).await.unwrap().stored().unwrap();
            (!p.online).then_some(())
        })
        .await;
    }
}

/// The `FCALL` path validates like the HTTP path and stores nothing bad.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcall_validates_and_stores_nothing_invalid() {
    let server = helpers::RedisServer::start();
    let engine = helpers::Engine::Redis(server.url());
    let b = backend(&engine, &[("limits.max_payload_bytes", "512")]).await;
    let alice = user("alice");
    let mut conn = server.client().get_multiplexed_async_connection().await.unwrap();
    let keys_before: u64 = ::redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();

    let refused = [
        ("not json".to_owned(), "HERALD_INVALID"),
        ("[1,2]".to_owned(), "HERALD_INVALID"),
        (r#"{"type":"a","title":"t","titel":"x"}"#.to_owned(), "unknown field"),
        (r#"{"type":"Bad","title":"t"}"#.to_owned(), "notification.type"),
        (r#"{"type":".a","title":"t"}"#.to_owned(), "notification.type"),
        (r#"{"type":"a.","title":"t"}"#.to_owned(), "notification.type"),
        (r#"{"type":"a..b","title":"t"}"#.to_owned(), "notification.type"),
        (r#"{"type":"a b","title":"t"}"#.to_owned(), "notification.type"),
        (r#"{"type":"","title":"t"}"#.to_owned(), "notification.type"),
        (r#"{"type":"a","title":""}"#.to_owned(), "notification.title"),
        (r#"{"type":"a","title":"t","priority":"urgent"}"#.to_owned(), "notification.priority"),
        (r#"{"type":"a","title":"t","body":5}"#.to_owned(), "notification.body"),
        (r#"{"type":"a","title":"t","url":5}"#.to_owned(), "notification.url"),
        (r#"{"type":"a","title":"t","url":null,"icon":{}}"#.to_owned(), "notification.icon"),
        (format!(r#"{{"type":"a","title":"t","body":"{}"}}"#, "x".repeat(600)), "HERALD_TOO_LARGE"),
    ];
    // Twice: the function remembers well-formed types, and must not
    // remember a refusal as one.
    for (bad, expect) in refused.iter().chain(&refused) {
        let err = helpers::fcall_publish(&mut conn, alice.as_str(), bad).await.unwrap_err();
        assert!(err.to_string().contains(expect), "{bad}: {err}");
    }
    // Keys that are not one user's base name are refused, whatever the JSON.
    let good = r#"{"type":"a","title":"t"}"#;
    for bad_key in ["herald:{u:}", "herald:{u:a b}", "herald:{u:a{b}", "herald:{u:a}x", "herald:{x:a}", "other"] {
        let err = helpers::fcall_publish_to_key(&mut conn, bad_key, good).await.unwrap_err();
        assert!(err.to_string().contains("key must be"), "{bad_key}: {err}");
    }
    assert!(b.engine.read_after(&alice, EntryId::ZERO, 10).await.unwrap().entries.is_empty());
    let keys_after: u64 = ::redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(keys_after, keys_before, "a refused publish writes no key at all");

    // A good one, pretty-printed across lines, is stored on one line.
    let pretty = "{\n  \"type\": \"order.shipped_2-x\",\n  \"title\": \"Shipped\"\n}";
    let id = helpers::fcall_publish(&mut conn, alice.as_str(), pretty).await.unwrap().expect("stored");
    let page = b.engine.read_after(&alice, EntryId::ZERO, 10).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].id.to_string(), id);
    assert!(!page.entries[0].body.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&page.entries[0].body).unwrap();
    assert_eq!((v["type"].as_str(), v["priority"].as_str()), (Some("order.shipped_2-x"), Some("normal")));

    // Past the bound of the function's cache of known types (1,024), new
    // types are still checked: good ones stored, bad ones refused.
    let bob = user("bob");
    for i in 0..1100 {
        let ok = format!(r#"{{"type":"kind.k{i}","title":"t"}}"#);
        let stored = helpers::fcall_publish(&mut conn, bob.as_str(), &ok).await.unwrap();
        assert!(stored.is_some(), "{ok}");
    }
    for bad in [r#"{"type":"kind.K","title":"t"}"#, r#"{"type":"kind.","title":"t"}"#] {
        let err = helpers::fcall_publish(&mut conn, bob.as_str(), bad).await.unwrap_err();
        assert!(err.to_string().contains("notification.type"), "{bad}: {err}");
    }
}
