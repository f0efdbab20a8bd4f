//! The fake push service refuses what a real one refuses: the Web Push
//! tests can only be trusted if a wrong signature, key, audience or body
//! would fail them.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::Value;
use web_push_native::{
    Auth, WebPushBuilder,
    jwt_simple::{
        algorithms::{ECDSAP256KeyPairLike as _, ECDSAP256PublicKeyLike as _, ES256KeyPair},
        claims::Claims,
    },
    p256,
};

use crate::helpers::{PushService, Reply};

/// A push as an application server builds one, with the claims given.
fn request(device: &Value, key: &ES256KeyPair, aud: &str, hours: u64, body: &[u8]) -> reqwest::Request {
    let endpoint = device["endpoint"].as_str().unwrap();
    let point = URL_SAFE_NO_PAD.decode(device["keys"]["p256dh"].as_str().unwrap()).unwrap();
    let auth: [u8; 16] = URL_SAFE_NO_PAD.decode(device["keys"]["auth"].as_str().unwrap()).unwrap().try_into().unwrap();
    let built = WebPushBuilder::new(
        endpoint.parse().unwrap(),
        p256::PublicKey::from_sec1_bytes(&point).unwrap(),
        Auth::from(auth),
    )
    .with_valid_duration(Duration::from_secs(60))
    .build(body.to_vec())
    .unwrap();
    let mut request = reqwest::Request::try_from(built).unwrap();
    let claims = Claims::create(Duration::from_secs(hours * 3600).into())
        .with_audience(aud)
        .with_subject("mailto:t@example.com");
    let token = key.sign(claims).unwrap();
    let k = URL_SAFE_NO_PAD.encode(key.public_key().public_key().to_bytes_uncompressed());
    request.headers_mut().insert("authorization", format!("vapid t={token}, k={k}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_push_service_checks_like_a_real_one() {
    let key = ES256KeyPair::generate();
    let public = URL_SAFE_NO_PAD.encode(key.public_key().public_key().to_bytes_uncompressed());
    let service = PushService::start(&public).await;
    let device = service.device("d");
    let endpoint = device["endpoint"].as_str().unwrap().to_owned();
    let origin = endpoint.trim_end_matches("/push/d").to_owned();
    let http = reqwest::Client::new();
    let send = async |request: reqwest::Request| http.execute(request).await.unwrap().status().as_u16();

    // A good one: taken, and its payload decrypted.
    assert_eq!(send(request(&device, &key, &origin, 12, br#"{"title":"hi"}"#)).await, 201);
    assert_eq!(service.delivered("d")[0].payload.as_ref().unwrap()["title"], "hi");

    // Signed by another key (and naming it): refused.
    assert_eq!(send(request(&device, &ES256KeyPair::generate(), &origin, 12, b"{}")).await, 403);
    // The right k, but a token another key signed.
    let mut forged = request(&device, &ES256KeyPair::generate(), &origin, 12, b"{}");
    let header = forged.headers()["authorization"].to_str().unwrap().to_owned();
    let forged_header = format!("{}, k={public}", header.split(", k=").next().unwrap());
    forged.headers_mut().insert("authorization", forged_header.parse().unwrap());
    assert_eq!(send(forged).await, 403);
    // Another audience (the port left out, as some libraries do), or a
    // token valid for more than 24 hours.
    let portless = origin.rsplit_once(':').unwrap().0.to_owned();
    assert_eq!(send(request(&device, &key, &portless, 12, b"{}")).await, 403);
    assert_eq!(send(request(&device, &key, &origin, 25, b"{}")).await, 403);
    // No TTL; a body over 4096 bytes; an unknown device.
    let mut no_ttl = request(&device, &key, &origin, 12, b"{}");
    no_ttl.headers_mut().remove("ttl");
    assert_eq!(send(no_ttl).await, 400);
    let big = format!(r#"{{"x":"{}"}}"#, "y".repeat(4100));
    assert_eq!(send(request(&device, &key, &origin, 12, big.as_bytes())).await, 413);
    let mut stranger = request(&device, &key, &origin, 12, b"{}");
    *stranger.url_mut() = format!("{origin}/push/nobody").parse().unwrap();
    assert_eq!(send(stranger).await, 404);
    assert_eq!(service.delivered("d").len(), 1, "only the good one was taken");

    // Scripted answers, in order, then 201; Retry-After as scripted.
    service.script("d", vec![Reply::Status(503), Reply::RetryAfter { status: 429, seconds: 7 }]);
    assert_eq!(send(request(&device, &key, &origin, 12, b"{}")).await, 503);
    let response = http.execute(request(&device, &key, &origin, 12, b"{}")).await.unwrap();
    assert_eq!((response.status().as_u16(), response.headers()["retry-after"].to_str().unwrap()), (429, "7"));
    assert_eq!(send(request(&device, &key, &origin, 12, b"{}")).await, 201);
}
