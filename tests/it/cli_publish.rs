//! `herald publish`: an operator's publish through the Redis engine, with no
//! HTTP, checked and delivered exactly as `POST /v1/publish` is.

use std::{process::Command, time::Duration};

use crate::helpers::{Engine, HeraldProcess, Node, RedisServer, SECRET, UserApi, unique_user};

fn herald_publish(redis_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("publish")
        .args(args)
        .env("HERALD__ENGINE__KIND", "redis")
        .env("HERALD__ENGINE__REDIS_URL", redis_url)
        .env("HERALD__AUTH__SECRET", SECRET)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_publish_reaches_a_stream_and_refuses_what_the_api_refuses() {
    let redis = RedisServer::start();
    let node = HeraldProcess::start(&Engine::Redis(redis.url())).await;
    let alice = unique_user("alice");
    let mut stream = node.stream(&alice, None).await;

    let output =
        herald_publish(&redis.url(), &["--user", &alice, "--type", "ops.notice", "--title", "Maintenance at 22:00"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let id = answer["results"][0]["id"].as_str().unwrap_or_else(|| panic!("{answer}")).to_owned();
    assert_eq!(answer["results"][0]["online"], true, "{answer}");
    let event = stream.next_of("notification", Duration::from_secs(5)).await;
    assert_eq!(event.id.as_deref(), Some(id.as_str()));
    assert_eq!(event.json()["title"], "Maintenance at 22:00");

    // A topic, from its own history.
    let output = herald_publish(&redis.url(), &["--topic", "announcements", "--title", "v2 is out"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["topic"], "announcements", "{answer}");
    let page: serde_json::Value = reqwest::Client::new()
        .get(node.url("/v1/topics/announcements/notifications"))
        .bearer_auth(crate::topics::token_with_topics(&alice, &["announcements"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["id"], answer["id"], "{page}");
    assert_eq!(page["items"][0]["title"], "v2 is out", "{page}");

    // What the API refuses, the command refuses, naming the field; nothing
    // is stored.
    let output = herald_publish(&redis.url(), &["--user", &alice, "--type", "Not A Type", "--title", "x"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("notification.type"), "{stderr}");
    let output = herald_publish(&redis.url(), &["--user", &alice, "--title", "x", "--data", "{not json"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--data is not JSON"));
    assert_eq!(UserApi::new(&node, &alice).list_all("", 10).await.len(), 1);

    // The memory engine lives in one node: the command says so.
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["publish", "--user", &alice, "--title", "x"])
        .env("HERALD__ENGINE__KIND", "memory")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("publish to it over HTTP"));
}
