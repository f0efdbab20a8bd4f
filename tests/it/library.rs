//! One function library, many nodes: a node never replaces a newer library
//! with its own, replaces an older one (at start, and when `/readyz` finds
//! one loaded behind its back), and `/readyz` fails, naming both versions,
//! while the loaded library is not the one the node needs.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::helpers::{Engine, Node, RedisServer, TestApp, notification, settings, unique_user, wait_for};

const WAIT: Duration = Duration::from_secs(10);

/// The library a node with these settings loads, and its version.
fn ours(engine: &Engine, extra: &[(&str, &str)]) -> (String, String) {
    herald::engine::redis::library_source(&settings(engine, extra))
}

/// The revision a version string starts with (`r<n>:`); 0 without one, as
/// libraries loaded before revisions existed.
fn revision_of(version: &str) -> u32 {
    version.strip_prefix('r').and_then(|rest| rest.split_once(':')).and_then(|(n, _)| n.parse().ok()).unwrap_or(0)
}

/// `version` without its revision prefix: what a pre-revision node loaded.
fn unprefixed(version: &str) -> &str {
    match version.strip_prefix('r').and_then(|rest| rest.split_once(':')) {
        Some((n, rest)) if n.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => version,
    }
}

/// `source` (of `version`) relabelled as `other`: the same functions under
/// another version, as a newer or older node would load.
fn relabelled(source: &str, version: &str, other: &str) -> String {
    let line = format!("local VERSION = '{version}'");
    assert!(source.contains(&line), "the library sets VERSION on one line");
    source.replace(&line, &format!("local VERSION = '{other}'"))
}

async fn connect(redis: &RedisServer) -> MultiplexedConnection {
    redis.client().get_multiplexed_async_connection().await.unwrap()
}

/// Loads `source` as another node would, over whatever is loaded.
async fn load(redis: &RedisServer, source: &str) {
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(source)
        .query_async(&mut connect(redis).await)
        .await
        .unwrap();
}

async fn loaded_version(redis: &RedisServer) -> String {
    redis::cmd("FCALL_RO").arg("herald_version").arg(0).query_async(&mut connect(redis).await).await.unwrap()
}

async fn readyz(node: &TestApp) -> (u16, String) {
    let response = node.http.get(node.url("/readyz")).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Ids and last commands of the clients in pub/sub mode (a node's pub/sub
/// connection is one once it has subscribed a channel).
async fn pubsub_clients(conn: &mut MultiplexedConnection) -> Vec<(String, String)> {
    let list: String = redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub").query_async(conn).await.unwrap();
    let field = |line: &str, name: &str| {
        line.split(' ').find_map(|f| f.strip_prefix(name).and_then(|f| f.strip_prefix('='))).unwrap_or("").to_owned()
    };
    list.lines().map(|line| (field(line, "id"), field(line, "cmd"))).collect()
}

/// Kills every pub/sub connection and waits until a new one has pinged: the
/// pub/sub task starts pinging only after its reconnect hook (which reloads
/// the library when it should) has returned, so the hook has then run.
async fn force_pubsub_reconnect(redis: &RedisServer) {
    let mut conn = connect(redis).await;
    let before: Vec<String> = pubsub_clients(&mut conn).await.into_iter().map(|(id, _)| id).collect();
    assert!(!before.is_empty(), "a node's pub/sub connection subscribes once a stream is open");
    let _: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut conn).await.unwrap();
    wait_for("a new pub/sub connection to ping", WAIT, async || {
        pubsub_clients(&mut conn)
            .await
            .into_iter()
            .any(|(id, cmd)| !before.contains(&id) && cmd == "ping")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_never_replaces_a_newer_library_and_is_not_ready() {
    let redis = RedisServer::start();
    let engine = Engine::Redis(redis.url());
    let (source, version) = ours(&engine, &[]);
    let newer = format!("r{}:{}", revision_of(&version) + 1, unprefixed(&version));
    load(&redis, &relabelled(&source, &version, &newer)).await;

    let node = TestApp::start_with(&engine, &[]).await;

    assert_eq!(loaded_version(&redis).await, newer, "start replaced a newer library");
    let (status, body) = readyz(&node).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&newer) && body.contains(&version), "the message names both versions: {body}");

    // Its calls run on the newer library (same functions); a stream open
    // puts its pub/sub connection in pub/sub mode for the kill below.
    let alice = unique_user("alice");
    let _stream = node.stream(&alice, None).await;
    node.publish(&[&alice], notification("on the newer library")).await;
    force_pubsub_reconnect(&redis).await;
    node.publish(&[&alice], notification("after the reconnect")).await;

    assert_eq!(loaded_version(&redis).await, newer, "a reconnect or a call replaced a newer library");
    assert_eq!(readyz(&node).await.0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_replaces_an_older_library_at_start_and_when_readyz_finds_one() {
    let redis = RedisServer::start();
    let engine = Engine::Redis(redis.url());
    let (source, version) = ours(&engine, &[]);
    // What a node from before revisions loaded: no `r<n>:`.
    load(&redis, &relabelled(&source, &version, unprefixed(&version))).await;

    let node = TestApp::spawn(&engine).await;
    assert_eq!(loaded_version(&redis).await, version, "start keeps an older library");

    // An older node loads its library behind this one's back (it checked
    // before this node loaded, say): the next /readyz loads ours again.
    load(&redis, &relabelled(&source, &version, &format!("r0:{}", unprefixed(&version)))).await;
    wait_for("readyz to load this node's library again", WAIT, async || {
        (readyz(&node).await.0 == 200 && loaded_version(&redis).await == version).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_node_started_loads_its_settings_and_the_other_is_not_ready() {
    let redis = RedisServer::start();
    let engine = Engine::Redis(redis.url());
    let first = TestApp::spawn_with(&engine, &[("history.max_len", "100")]).await;
    let second = TestApp::spawn_with(&engine, &[("history.max_len", "200")]).await;
    let (_, second_version) = ours(&engine, &[("history.max_len", "200")]);

    assert_eq!(loaded_version(&redis).await, second_version, "the node started last wins");
    let (status, body) = readyz(&first).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("history.max_len"), "the message names the setting that differs: {body}");
    assert_eq!(readyz(&second).await.0, 200);

    // Only the first node holds a stream, so only its pub/sub connection is
    // killed; reconnecting must not take the library back.
    let alice = unique_user("alice");
    let _stream = first.stream(&alice, None).await;
    force_pubsub_reconnect(&redis).await;

    assert_eq!(loaded_version(&redis).await, second_version, "a reconnect took the library back");
    assert_eq!(readyz(&first).await.0, 503);
    assert_eq!(readyz(&second).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_library_is_loaded_again_by_the_next_call() {
    let redis = RedisServer::start();
    let engine = Engine::Redis(redis.url());
    let node = TestApp::spawn(&engine).await;
    let _: String = redis::cmd("FUNCTION").arg("FLUSH").query_async(&mut connect(&redis).await).await.unwrap();

    let alice = unique_user("alice");
    let results = node.publish(&[&alice], notification("after a flush")).await;

    assert!(results[0]["id"].is_string(), "{results:?}");
    assert_eq!(loaded_version(&redis).await, ours(&engine, &[]).1);
}
