//! Public-key tokens (RS256, ES256, EdDSA) from `auth.public_key_file`, the
//! HS/RS confusion attack, and `iss` / `aud` checks. Keys: tests/fixtures/keys.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::helpers::{Engine, TestApp, unique_user};

fn key_path(name: &str) -> String {
    format!("{}/tests/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(key_path(name)).unwrap()
}

fn claims(sub: &str, extra: Value) -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut c = json!({"sub": sub, "exp": now + 3600});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    c
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).unwrap()
}

async fn status(app: &TestApp, token: &str) -> u16 {
    reqwest::Client::new().get(app.url("/v1/events")).bearer_auth(token).send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_key_algorithms_verify_and_refuse_what_they_should() {
    let alice = unique_user("alice");
    for (alg, name, private) in [
        (Algorithm::RS256, "RS256", EncodingKey::from_rsa_pem(&pem("rs256.key.pem")).unwrap()),
        (Algorithm::ES256, "ES256", EncodingKey::from_ec_pem(&pem("es256.key.pem")).unwrap()),
        (Algorithm::EdDSA, "EdDSA", EncodingKey::from_ed_pem(&pem("eddsa.key.pem")).unwrap()),
    ] {
        let public = key_path(&format!("{}.pub.pem", name.to_lowercase()));
        // HS256 is allowed too, with a secret: the key family must follow the
        // header's algorithm, never the other way round.
        let app = TestApp::spawn_with(
            &Engine::Memory,
            &[("auth.algorithms", &format!("HS256,{name}")), ("auth.public_key_file", &public)],
        )
        .await;
        assert_eq!(status(&app, &sign(alg, &private, &claims(&alice, json!({})))).await, 200, "{name}");

        // The classic confusion: an HS256 token whose "secret" is the public key.
        let confused = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&pem(&format!("{}.pub.pem", name.to_lowercase()))),
            &claims(&alice, json!({})),
        );
        assert_eq!(status(&app, &confused).await, 401, "{name}: HS256 signed with the public key");

        let expired = sign(alg, &private, &json!({"sub": alice, "exp": 1_000_000}));
        assert_eq!(status(&app, &expired).await, 401, "{name}: expired");
    }

    // A token signed by another key of the right algorithm.
    let app = TestApp::spawn_with(
        &Engine::Memory,
        &[("auth.algorithms", "HS256,ES256"), ("auth.public_key_file", &key_path("es256.pub.pem"))],
    )
    .await;
    let other = EncodingKey::from_ec_pem(&pem("other-es256.key.pem")).unwrap();
    assert_eq!(status(&app, &sign(Algorithm::ES256, &other, &claims(&alice, json!({})))).await, 401);
    // And an algorithm not in auth.algorithms, even with a valid key.
    let rs = EncodingKey::from_rsa_pem(&pem("rs256.key.pem")).unwrap();
    assert_eq!(status(&app, &sign(Algorithm::RS256, &rs, &claims(&alice, json!({})))).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = TestApp::spawn_with(
        &Engine::Memory,
        &[("auth.issuer", "https://auth.example.com"), ("auth.audience", "herald")],
    )
    .await;
    let key = EncodingKey::from_secret(crate::helpers::SECRET.as_bytes());
    let alice = unique_user("alice");
    let good = claims(&alice, json!({"iss": "https://auth.example.com", "aud": "herald"}));
    assert_eq!(status(&app, &sign(Algorithm::HS256, &key, &good)).await, 200);
    for bad in [
        json!({"aud": "herald"}),
        json!({"iss": "https://evil.example.com", "aud": "herald"}),
        json!({"iss": "https://auth.example.com", "aud": "someone-else"}),
    ] {
        assert_eq!(status(&app, &sign(Algorithm::HS256, &key, &claims(&alice, bad.clone()))).await, 401, "{bad}");
    }
}

/// RFC 7519 §4.1.3: `aud` is one string or an array of them. Unset,
/// `auth.audience` checks nothing; set, it must be one of the token's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_may_be_a_string_or_an_array() {
    let key = EncodingKey::from_secret(crate::helpers::SECRET.as_bytes());
    let alice = unique_user("alice");
    let token = |aud: Value| sign(Algorithm::HS256, &key, &claims(&alice, json!({ "aud": aud })));

    let unchecked = TestApp::spawn(&Engine::Memory).await;
    assert_eq!(status(&unchecked, &token(json!(["herald", "api"]))).await, 200, "array, audience unset");
    assert_eq!(status(&unchecked, &token(json!("herald"))).await, 200, "string, audience unset");

    let checked = TestApp::spawn_with(&Engine::Memory, &[("auth.audience", "herald")]).await;
    assert_eq!(status(&checked, &token(json!(["api", "herald"]))).await, 200, "array naming the audience");
    assert_eq!(status(&checked, &token(json!("herald"))).await, 200, "string naming the audience");
    for bad in [json!(["api", "billing"]), json!([]), json!("api")] {
        assert_eq!(status(&checked, &token(bad.clone())).await, 401, "{bad}");
    }
}
