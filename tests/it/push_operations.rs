//! Operating Web Push: `herald vapid`, the start-up line, settings that
//! cannot work, dead letters (`herald push dead-letters`) and the metrics.

use std::{process::Command, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use herald::domain::VapidKey;
use serde_json::{Value, json};

use crate::{
    helpers::{Engine, HeraldProcess, Node, PushService, RedisServer, Reply, TestApp, UserApi, unique_user},
    push_subscriptions::push_on,
};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn herald_vapid_prints_a_key_pair_other_tools_and_the_config_take() {
    let output = Command::new(env!("CARGO_BIN_EXE_herald")).args(["vapid", "--json"]).output().unwrap();
    assert!(output.status.success());
    let pair: Value = serde_json::from_slice(&output.stdout).unwrap();
    let (public, private) = (pair["public_key"].as_str().unwrap(), pair["private_key"].as_str().unwrap());
    assert_eq!(URL_SAFE_NO_PAD.decode(private).unwrap().len(), 32, "the raw scalar");
    let point = URL_SAFE_NO_PAD.decode(public).unwrap();
    assert_eq!((point.len(), point[0]), (65, 4), "the uncompressed point");
    assert_eq!(VapidKey::from_base64url(private).unwrap().public_base64url(), public, "the halves belong together");
    // The plain form prints the same kind of pair, labelled.
    let plain = Command::new(env!("CARGO_BIN_EXE_herald")).arg("vapid").output().unwrap();
    let text = String::from_utf8(plain.stdout).unwrap();
    assert!(text.contains("Public Key:") && text.contains("Private Key:"), "{text}");
    // Two runs, two keys.
    let again = Command::new(env!("CARGO_BIN_EXE_herald")).args(["vapid", "--json"]).output().unwrap();
    assert_ne!(again.stdout, output.stdout);
}

#[test]
fn push_settings_that_cannot_work_stop_start_up_naming_the_key() {
    let key = VapidKey::generate().private_base64url();
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("HERALD__PUSH__VAPID_PRIVATE_KEY", "AAAA")], "push.vapid_private_key"),
        (&[("HERALD__PUSH__VAPID_PRIVATE_KEY", &key)], "push.subject"),
        (&[("HERALD__PUSH__VAPID_PRIVATE_KEY", &key), ("HERALD__PUSH__SUBJECT", "ops@example.com")], "push.subject"),
        (
            &[("HERALD__PUSH__VISIBILITY_TIMEOUT", "5s"), ("HERALD__PUSH__SEND_TIMEOUT", "10s")],
            "push.visibility_timeout",
        ),
    ];
    for (env, named) in cases {
        let output =
            Command::new(env!("CARGO_BIN_EXE_herald")).arg("check-config").envs(env.iter().copied()).output().unwrap();
        assert!(!output.status.success(), "{env:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&format!("`{named}`")), "{env:?}: the error names `{named}`: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_log_says_once_whether_push_is_on() {
    let off = HeraldProcess::start(&Engine::Memory).await;
    let (settings, key) = push_on(&[]);
    let on = HeraldProcess::start_with_settings(&Engine::Memory, &settings).await;
    let said = |node: &HeraldProcess, what: &str| {
        node.logs.lock().unwrap().iter().filter(|line| line.contains(what)).cloned().collect::<Vec<_>>()
    };
    assert_eq!(said(&off, "Web Push is off").len(), 1);
    assert!(said(&off, "Web Push is on").is_empty());
    let on_lines = said(&on, "Web Push is on");
    assert_eq!(on_lines.len(), 1);
    assert!(on_lines[0].contains(&key.public_base64url()), "names the public key: {}", on_lines[0]);
    assert!(
        on.logs.lock().unwrap().iter().all(|line| !line.contains(&key.private_base64url())),
        "the private key never reaches the logs"
    );
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

/// A refusal that retrying cannot fix becomes a dead letter at once; one
/// that keeps failing, after `push.max_attempts`. `herald push
/// dead-letters` lists both, and the metrics count every outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_given_up_on_are_dead_letters_listed_by_the_cli() {
    let redis = RedisServer::start();
    let engine = Engine::Redis(redis.url());
    let extra = [("push.max_attempts", "2"), ("push.retry_backoff", "50ms"), ("push.retry_max_backoff", "100ms")];
    let (settings, key) = push_on(&extra);
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let service = PushService::start(&key.public_base64url()).await;
    let node = TestApp::spawn_with(&engine, &pairs).await;
    let alice = unique_user("alice");
    let api = UserApi::new(&node, &alice);
    for device in ["refusing", "failing", "fine"] {
        api.post("/v1/push/subscriptions", service.device(device)).await;
    }
    service.script("refusing", vec![Reply::Status(400)]);
    service.script("failing", vec![Reply::Status(500), Reply::Status(502)]);
    let r = node.publish(&[&alice], json!({"type": "a.b", "title": "t"})).await;
    let id = r[0]["id"].as_str().unwrap().to_owned();

    crate::helpers::wait_for("the pushes to settle", WAIT, async || {
        let body: Value = reqwest::get(node.url("/readyz")).await.ok()?.json().await.ok()?;
        let settled = body["push_queue"].as_u64()? == 0 && service.received().len() == 4;
        settled.then_some(())
    })
    .await;
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["push", "dead-letters", "--limit", "10"])
        .env("HERALD__ENGINE__KIND", "redis")
        .env("HERALD__ENGINE__REDIS_URL", redis.url())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut letters: Vec<Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    letters.sort_by_key(|l| l["endpoint"].as_str().unwrap().to_owned());
    assert_eq!(letters.len(), 2, "{letters:?}");
    let (failing, refusing) = (&letters[0], &letters[1]);
    assert!(failing["endpoint"].as_str().unwrap().ends_with("/push/failing"));
    assert_eq!((failing["attempts"].as_u64(), failing["reason"].as_str()), (Some(2), Some("HTTP 502")));
    assert!(refusing["endpoint"].as_str().unwrap().ends_with("/push/refusing"));
    assert_eq!((refusing["attempts"].as_u64(), refusing["reason"].as_str()), (Some(1), Some("HTTP 400")));
    assert!(letters.iter().all(|l| l["user"] == alice.as_str() && l["id"] == id.as_str() && l["at"].is_string()));

    let text = reqwest::get(node.url("/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(metric(&text, "herald_push_total{outcome=\"sent\"}"), 1.0, "{text}");
    assert_eq!(metric(&text, "herald_push_total{outcome=\"retried\"}"), 1.0);
    assert_eq!(metric(&text, "herald_push_total{outcome=\"dead\"}"), 2.0);
    assert_eq!(metric(&text, "herald_push_send_seconds_count"), 4.0);

    // The memory engine keeps its dead letters in the node: the command says so.
    let output = Command::new(env!("CARGO_BIN_EXE_herald")).args(["push", "dead-letters"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("memory engine"));
}
