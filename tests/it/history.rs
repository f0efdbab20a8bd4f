//! History's edges at the engine interface, on both engines: a cursor
//! ahead of history, mark-all-read's watermark, the bounded unread scan,
//! and users who never come back.

use std::time::Duration;

use herald::{
    domain::{EntryId, IdempotencyKey, Preferences, UserId},
    engine::{AnyEngine, Engine, LIST_SCAN, ListQuery, PublishOutcome, ReadTarget, Reset},
};

use crate::{
    conformance::{Backend, backend, stored, user},
    helpers::{self, Node, TestApp, unique_user, wait_explained},
};

crate::on_both_engines!(
    a_cursor_ahead_of_history_resets_and_goes_on_from_the_newest_id,
    a_stream_resuming_ahead_of_history_gets_reset_then_live_entries,
    mark_all_read_moves_a_watermark_and_counts_stay_exact,
    listing_unread_examines_a_bounded_number_of_entries,
    nothing_of_a_user_who_never_comes_back_is_kept,
);

async fn a_cursor_ahead_of_history_resets_and_goes_on_from_the_newest_id(engine: helpers::Engine) {
    let b = backend(&engine, &[]).await;
    let alice = user("alice");
    b.publish(&alice, "a").await;
    let newest = b.publish(&alice, "b").await;
    let caught_up = b.engine.read_after(&alice, newest, 10).await.unwrap();
    assert!(caught_up.reset.is_none() && caught_up.entries.is_empty(), "a caught-up cursor is not ahead");

    // A restore from an older snapshot, a lagging replica, a clock step.
    let ahead = EntryId::new(newest.ms + 60_000, 0);
    let page = b.engine.read_after(&alice, ahead, 10).await.unwrap();
    assert_eq!(page.reset, Some(Reset::CursorAhead { newest }));
    assert!(page.entries.is_empty());
    assert_eq!(page.unread, 2);

    // Deleting the newest entry does not make a cursor at it ahead: the
    // inbox gave that id.
    b.engine.delete(&alice, newest).await.unwrap();
    assert!(b.engine.read_after(&alice, newest, 10).await.unwrap().reset.is_none());

    // An inbox that is gone (evicted, expired, never made).
    let nobody = user("nobody");
    let gone = b.engine.read_after(&nobody, EntryId::new(5, 0), 10).await.unwrap();
    assert_eq!(gone.reset, Some(Reset::CursorAhead { newest: EntryId::ZERO }));
    assert!(b.engine.read_after(&nobody, EntryId::ZERO, 10).await.unwrap().reset.is_none());
}

/// Over HTTP: the stream says `reset` (`cursor_ahead`) and then carries
/// every new entry, instead of dropping all of them as already sent.
async fn a_stream_resuming_ahead_of_history_gets_reset_then_live_entries(engine: helpers::Engine) {
    let app = TestApp::spawn(&engine).await;
    let alice = unique_user("alice");
    let first =
        app.publish(&[alice.as_str()], helpers::notification("old")).await[0]["id"].as_str().unwrap().to_owned();
    let first: EntryId = first.parse().unwrap();
    let ahead = EntryId::new(first.ms + 3_600_000, 0).to_string();
    let mut stream = app.stream(&alice, Some(&ahead)).await;
    let reset = stream.next_of("reset", Duration::from_secs(5)).await;
    assert_eq!(reset.json()["reason"], "cursor_ahead");
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for title in ["new 1", "new 2"] {
            ids.push(
                app.publish(&[alice.as_str()], helpers::notification(title)).await[0]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        ids
    };
    let live = stream.notifications(2, Duration::from_secs(5)).await;
    assert_eq!(live.iter().map(|e| e.id.clone().unwrap()).collect::<Vec<_>>(), ids);
}

/// Every item of the user, newest first, with its read flag.
async fn read_flags(b: &Backend, user: &UserId) -> Vec<(EntryId, bool)> {
    let page = b.engine.list(user, ListQuery { before: None, limit: 100, unread_only: false }).await.unwrap();
    page.items.iter().map(|e| (e.id, e.read)).collect()
}

async fn unread(b: &Backend, user: &UserId) -> u64 {
    b.engine.stream_start(user).await.unwrap().unread
}

async fn mark_all_read_moves_a_watermark_and_counts_stay_exact(engine: helpers::Engine) {
    // max_len 6 is exact (no slack below 100): the 7th publish cuts one.
    let b = backend(&engine, &[("history.max_len", "6")]).await;
    let alice = user("alice");
    let mut old = Vec::new();
    for i in 0..4 {
        old.push(b.publish(&alice, &format!("old {i}")).await);
    }
    b.engine.mark_read(&alice, &ReadTarget::Ids(vec![old[2]])).await.unwrap();
    b.engine.mark_clicked(&alice, old[1]).await.unwrap();
    assert_eq!(b.engine.mark_read(&alice, &ReadTarget::All).await.unwrap(), 0);
    if let helpers::Engine::Redis(url) = &engine {
        // Proportional to nothing stored: the watermark moved, the read set
        // went (it held two ids, not every entry).
        let mut conn = ::redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let read: i64 =
            ::redis::cmd("EXISTS").arg(format!("herald:{{u:{alice}}}:read")).query_async(&mut conn).await.unwrap();
        assert_eq!(read, 0);
    }
    let new = [b.publish(&alice, "new 0").await, b.publish(&alice, "new 1").await];
    assert_eq!(unread(&b, &alice).await, 2);
    let flags = read_flags(&b, &alice).await;
    assert!(flags.iter().all(|(id, read)| *read != new.contains(id)), "{flags:?}");

    // Marking an entry under the watermark again changes nothing.
    assert_eq!(b.engine.mark_read(&alice, &ReadTarget::Ids(vec![old[0], new[0]])).await.unwrap(), 1);
    assert_eq!(b.engine.mark_clicked(&alice, old[3]).await.unwrap(), 1);
    // Deleting one under the watermark leaves the count alone.
    assert_eq!(b.engine.delete(&alice, old[3]).await.unwrap(), 1);
    // Trims cut entries under the watermark: 5 kept, then 7 (one cut).
    b.publish(&alice, "new 2").await;
    b.publish(&alice, "new 3").await;
    let flags = read_flags(&b, &alice).await;
    assert_eq!(flags.len(), 6, "{flags:?}");
    let unread_items = flags.iter().filter(|(_, read)| !read).count() as u64;
    assert_eq!(unread(&b, &alice).await, unread_items, "{flags:?}");
    assert_eq!(unread_items, 3);
    // Cut everything under the watermark, and the one read above it: all
    // six kept are unread.
    for i in 0..4 {
        b.publish(&alice, &format!("newer {i}")).await;
    }
    let flags = read_flags(&b, &alice).await;
    let unread_items = flags.iter().filter(|(_, read)| !read).count() as u64;
    assert_eq!((unread(&b, &alice).await, unread_items), (6, 6), "{flags:?}");
    assert_eq!(b.engine.mark_read(&alice, &ReadTarget::All).await.unwrap(), 0);
    assert!(read_flags(&b, &alice).await.iter().all(|(_, read)| *read));
}

async fn listing_unread_examines_a_bounded_number_of_entries(engine: helpers::Engine) {
    let b = backend(&engine, &[("history.max_len", "2000")]).await;
    let alice = user("alice");
    let total = LIST_SCAN + 100;
    let mut ids = Vec::new();
    for i in 0..total {
        ids.push(b.publish(&alice, &format!("n{i}")).await);
    }
    // All read one by one but the oldest.
    b.engine.mark_read(&alice, &ReadTarget::Ids(ids[1..].to_vec())).await.unwrap();
    let unread_page = |before| ListQuery { before, limit: 10, unread_only: true };
    let first = b.engine.list(&alice, unread_page(None)).await.unwrap();
    assert!(first.items.is_empty());
    assert_eq!(first.next, Some(ids[total - LIST_SCAN]), "the scan stops after LIST_SCAN entries and says where");
    let second = b.engine.list(&alice, unread_page(first.next)).await.unwrap();
    assert_eq!(second.items.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[0]]);
    assert_eq!(second.next, None);

    // Once every unread entry is passed, the scan ends: nothing unread, no scan.
    b.engine.mark_read(&alice, &ReadTarget::Ids(vec![ids[0]])).await.unwrap();
    let none = b.engine.list(&alice, unread_page(None)).await.unwrap();
    assert!(none.items.is_empty() && none.next.is_none());
}

/// Every key of `user` in Redis (KEYS is fine on a test server).
async fn keys_of(conn: &mut ::redis::aio::MultiplexedConnection, user: &UserId) -> Vec<String> {
    ::redis::cmd("KEYS").arg(format!("herald:{{u:{user}}}*")).query_async(conn).await.unwrap()
}

async fn nothing_of_a_user_who_never_comes_back_is_kept(engine: helpers::Engine) {
    // max_age 1s: every key of a user expires 1.02 s after their last activity.
    let b = backend(&engine, &[("history.max_age", "1s"), ("history.max_len", "2")]).await;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    // Three publishes to an inbox of two: one is trimmed (a watermark).
    let ids = [b.publish(&alice, "a").await, b.publish(&alice, "b").await, b.publish(&alice, "c").await];
    let key = IdempotencyKey::parse("k-1").unwrap();
    let keyed = b.engine.publish(&alice, &stored("keyed"), Some(&key)).await.unwrap().stored().unwrap().id;
    b.engine.mark_read(&alice, &ReadTarget::Ids(vec![ids[2]])).await.unwrap();
    b.engine.mark_clicked(&alice, keyed).await.unwrap();
    // Bob has preferences only: his one publish is dropped by them.
    let prefs = Preferences::parse(br#"{"categories":{"test":{"in_app":false}}}"#).unwrap();
    b.engine.set_preferences(&bob, &prefs).await.unwrap();
    assert_eq!(b.engine.publish(&bob, &stored("dropped"), None).await.unwrap(), PublishOutcome::Dropped);

    let mut conn = match &engine {
        helpers::Engine::Redis(url) => {
            let mut conn =
                ::redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
            // Every key alice and bob have expires, within the expiry.
            let mut keys = keys_of(&mut conn, &alice).await;
            assert_eq!(keys.len(), 6, "inbox, read, clicked, trimmed, in_app, idem: {keys:?}");
            keys.extend(keys_of(&mut conn, &bob).await);
            assert_eq!(keys.len(), 8, "bob's prefs and in_app: {keys:?}");
            for key in &keys {
                let ttl: i64 = ::redis::cmd("PTTL").arg(key).query_async(&mut conn).await.unwrap();
                assert!((1..=1020).contains(&ttl), "{key}: PTTL {ttl}");
            }
            Some(conn)
        }
        helpers::Engine::Memory => None,
    };

    // Carol stays active (a stream opened now and then): her state stays.
    b.publish(&carol, "kept").await;
    wait_explained(Duration::from_secs(10), async || {
        b.engine.stream_start(&carol).await.unwrap();
        let left = match (&b.engine, conn.as_mut()) {
            (AnyEngine::Redis(_), Some(conn)) => {
                let mut left = keys_of(conn, &alice).await;
                left.extend(keys_of(conn, &bob).await);
                left.len()
            }
            (AnyEngine::Memory(m), _) => m.users_held() - 1,
            _ => unreachable!(),
        };
        if left == 0 { Ok(()) } else { Err(format!("for alice's and bob's state to expire: {left} left")) }
    })
    .await;
    if let (AnyEngine::Redis(_), Some(conn)) = (&b.engine, conn.as_mut()) {
        assert!(!keys_of(conn, &carol).await.is_empty(), "an active user's state is kept");
    } else if let AnyEngine::Memory(m) = &b.engine {
        assert_eq!(m.users_held(), 1, "an active user's state is kept");
    }
    // A user who comes back starts afresh, after every id they were given.
    let again = b.publish(&alice, "again").await;
    assert!(again > ids[2]);
    assert_eq!(unread(&b, &alice).await, 1);
}
