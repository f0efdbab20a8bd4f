//! The node's subscriptions across a Redis outage: streams that keep
//! waiting are confirmed once Redis is back, and the attempts that gave up
//! meanwhile leave nothing behind.

use std::{collections::HashSet, future::poll_fn, sync::Arc, task::Poll, time::Duration};

use herald::{
    engine::Engine as _,
    hub::{Next, StreamQueue},
};

use crate::{
    conformance::{backend, next_frame, user},
    helpers::{Engine, RedisServer, wait_for},
};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_wait_through_an_outage_are_confirmed_and_gone_ones_forgotten() {
    // Arrange: a node with one subscribed user, then Redis goes away.
    let mut redis = RedisServer::start();
    let b = backend(&Engine::Redis(redis.url()), &[]).await;
    let steady = user("steady");
    let _steady_tab = b.listen(&steady).await;
    redis.kill();

    // Act: streams that keep waiting, and thousands of attempts that give
    // up (each queues a subscribe and an unsubscribe), then Redis returns.
    let waiting_users: Vec<_> = (0..5).map(|i| user(&format!("waiting{i}"))).collect();
    let waiting: Vec<_> = waiting_users
        .iter()
        .map(|u| b.hub.register(Arc::new(StreamQueue::new(u.clone(), u64::MAX))).unwrap())
        .collect();
    let gone: Vec<_> = (0..200).map(|i| user(&format!("gone{i}"))).collect();
    for attempt in 0..3000 {
        let queue = Arc::new(StreamQueue::new(gone[attempt % gone.len()].clone(), u64::MAX));
        drop(b.hub.register(queue).unwrap());
        if attempt % 500 == 0 {
            tokio::task::yield_now().await; // let the pub/sub task run meanwhile
        }
    }
    assert!(waiting.iter().all(|(_, ready)| !ready.is_confirmed()), "nothing is confirmed while Redis is down");
    redis.restart();

    // Assert: every waiting stream is confirmed, only wanted channels are
    // subscribed, and live entries reach the streams that waited.
    for (_, ready) in &waiting {
        tokio::time::timeout(WAIT, ready.wait()).await.expect("confirmed once Redis is back");
    }
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let wanted: HashSet<String> = waiting_users.iter().chain([&steady]).map(herald::engine::redis::user_base).collect();
    let channels: HashSet<String> =
        redis::cmd("PUBSUB").arg("CHANNELS").arg("herald:{u:*").query_async(&mut conn).await.unwrap();
    assert_eq!(channels, wanted, "the gone attempts left no subscription");
    let (registration, _) = &waiting[0];
    let id = wait_for("publishing to work again", WAIT, async || {
        let stored = crate::conformance::stored("after the outage");
        b.engine.publish(&waiting_users[0], &stored, None).await.ok()?.stored().map(|s| s.id)
    })
    .await;
    // After the reconnect every stream is asked to resync from history
    // first (the body would replay); the live frame is queued behind it.
    let queue = registration.queue().clone();
    let first = poll_fn(|cx| match queue.poll_next(cx) {
        Next::Pending => Poll::Pending,
        next => Poll::Ready(next),
    });
    assert!(matches!(tokio::time::timeout(WAIT, first).await.unwrap(), Next::Resync));
    let frame = next_frame(registration, WAIT).await.expect("a live frame");
    assert_eq!(frame.id, Some(id));
}
