//! What an operator relies on: `/readyz` tells the truth, `/metrics` counts.

use std::{process::Stdio, time::Duration};

use crate::helpers::{Engine, HeraldProcess, Node, RedisServer, TestApp, metric, notification, unique_user, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_redis_is_down_and_recovers() {
    let mut redis = RedisServer::start();
    let node = TestApp::spawn(&Engine::Redis(redis.url())).await;
    let http = reqwest::Client::new();
    assert_eq!(http.get(node.url("/readyz")).send().await.unwrap().status(), 200);

    redis.kill();
    wait_for("readyz to report the dead pub/sub connection", Duration::from_secs(10), async || {
        let r = http.get(node.url("/readyz")).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    assert_eq!(http.get(node.url("/healthz")).send().await.unwrap().status(), 200, "the process itself is up");

    redis.restart();
    node.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_streams_publishes_and_deliveries() {
    // A process of its own: the counters start at zero.
    let node = HeraldProcess::start(&Engine::Memory).await;
    let alice = unique_user("alice");
    let mut tab1 = node.stream(&alice, None).await;
    let mut tab2 = node.stream(&alice, None).await;
    for i in 0..3 {
        node.publish(&[&alice], notification(&format!("n{i}"))).await;
    }
    tab1.notifications(3, Duration::from_secs(5)).await;
    tab2.notifications(3, Duration::from_secs(5)).await;

    let text = reqwest::get(node.url("/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(metric(&text, "herald_streams_open"), 2.0);
    assert_eq!(metric(&text, "herald_publishes_total{outcome=\"stored\"}"), 3.0);
    assert_eq!(metric(&text, "herald_live_events_total"), 3.0, "encoded once per event");
    assert_eq!(metric(&text, "herald_deliveries_total"), 6.0, "one per tab");
    assert_eq!(metric(&text, "herald_publish_to_delivery_seconds_count"), 3.0);
}

/// A bad setting stops the real binary at start-up, naming the setting.
#[test]
fn a_bad_setting_stops_start_up_and_names_it() {
    let redis = |url| [("HERALD__ENGINE__KIND", "redis"), ("HERALD__ENGINE__REDIS_URL", url)];
    for (env, named) in [
        (&[("HERALD__HISTORY__MAX_LEN", "0")][..], "history.max_len"),
        (&[("HERALD__SERVER__LISTEN", "not-an-address")], "listen"),
        (&[("HERALD__ENGINE__KIND", "postgres")], "kind"),
        // No TLS in this build: refused before any connect, not at it.
        (&redis("rediss://127.0.0.1:6380"), "engine.redis_url"),
        (&redis("http://127.0.0.1:6379"), "engine.redis_url"),
    ] {
        for command in [&["serve"][..], &["check-config"][..]] {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
                .args(command)
                .envs(env.iter().copied())
                .env("HERALD__AUTH__SECRET", crate::helpers::SECRET)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(1), "{command:?} {env:?}: {stderr}");
            assert!(stderr.contains(named), "{command:?} {env:?}: `{stderr}` should name `{named}`");
        }
    }
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_herald")).arg("check-config").output().unwrap();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration is valid"));
}

/// HS256 needs a key as long as its hash (RFC 7518 §3.2): a shorter secret
/// stops the binary, naming `auth.secret`.
#[test]
fn an_hmac_secret_shorter_than_32_bytes_stops_start_up() {
    let check = |secret: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("check-config")
            .env("HERALD__AUTH__SECRET", secret)
            .output()
            .unwrap()
    };
    let short = check("s".repeat(31));
    let stderr = String::from_utf8_lossy(&short.stderr);
    assert_eq!(short.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("auth.secret"), "`{stderr}` should name `auth.secret`");
    let enough = check("s".repeat(32));
    assert!(enough.status.success(), "{}", String::from_utf8_lossy(&enough.stderr));
}

/// Runs `command` until it exits, at most 10 s (a node that is not refused
/// serves until stopped, and is killed then): its exit code and stderr.
async fn exit_of(command: &mut std::process::Command) -> (Option<i32>, String) {
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if tokio::time::Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    (status, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Demo mode hands a token for any user to anyone who asks: on an address
/// other than loopback it needs `demo.allow_public`, however it was asked
/// for (`demo.enabled` or `serve --demo`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_on_a_public_address_needs_allow_public() {
    type Env<'a> = &'a [(&'a str, &'a str)];
    let public = ("HERALD__SERVER__LISTEN", "0.0.0.0:0");
    let enabled = ("HERALD__DEMO__ENABLED", "true");
    let refused: [(&[&str], Env); 4] = [
        (&["serve"], &[enabled, public]),
        (&["check-config"], &[enabled, public]),
        // The flag is applied after loading: validated again then.
        (&["serve", "--demo"], &[public]),
        (&["serve", "--demo"], &[("HERALD__SERVER__LISTEN", "[::]:0")]),
    ];
    for (args, env) in refused {
        let (status, stderr) = exit_of(
            std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
                .args(args)
                .envs(env.iter().copied())
                .env("HERALD__AUTH__SECRET", crate::helpers::SECRET),
        )
        .await;
        assert_eq!(status, Some(1), "{args:?} {env:?}: {stderr}");
        for key in ["server.listen", "demo.allow_public"] {
            assert!(stderr.contains(key), "{args:?} {env:?}: `{stderr}` should name `{key}`");
        }
    }

    let allowed =
        HeraldProcess::start_with(&Engine::Memory, &["--demo"], &[public, ("HERALD__DEMO__ALLOW_PUBLIC", "true")])
            .await;
    assert_eq!(reqwest::get(allowed.url("/demo")).await.unwrap().status(), 200);
    let loopback = HeraldProcess::start_with(&Engine::Memory, &["--demo"], &[]).await;
    assert_eq!(reqwest::get(loopback.url("/demo")).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_over_its_rate_gets_429_and_nothing_is_stored() {
    let app = TestApp::spawn_with(&Engine::Memory, &[("limits.publish_per_second", "3")]).await;
    let (a, b, c) = (unique_user("a"), unique_user("b"), unique_user("c"));
    app.publish(&[&a, &b, &c], notification("within budget")).await;
    // Three more recipients need a whole second of refill, so a slow test
    // machine cannot earn them back before this request (one would take 333 ms).
    let late: Vec<String> = (0..3).map(|_| unique_user("late")).collect();
    let response = reqwest::Client::new()
        .post(app.url("/v1/publish"))
        .bearer_auth(crate::helpers::publisher_token())
        .json(&serde_json::json!({"to": {"users": late}, "notification": notification("over")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many");
    for user in &late {
        let (_, list) = crate::helpers::UserApi::new(&app, user).get("/v1/notifications").await;
        assert_eq!(list["items"], serde_json::json!([]), "a refused publish stores nothing");
    }
}
