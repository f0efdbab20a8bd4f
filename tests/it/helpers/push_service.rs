//! A fake push service (RFC 8030) for the Web Push tests: a real HTTP
//! server on loopback that checks each request as strictly as a browser
//! vendor's push service does, and decrypts each payload with the device's
//! own keys, as the browser would.
//!
//! Checked on every request: `POST /push/<device>` of a device made here;
//! `TTL` an integer; `Content-Encoding: aes128gcm`; `Urgency` and `Topic`
//! well formed when present; `Authorization: vapid t=<JWT>, k=<key>` with
//! `k` the VAPID key the service was started with and the JWT an ES256
//! token signed by it, `aud` this service's origin (port included), `exp`
//! in the future and at most 24 h ahead, `sub` a `mailto:` or `https:` URI;
//! a body of at most 4096 bytes that decrypts. A request that fails a check
//! is answered 400 / 401 / 403 / 413 and recorded with the reason, so a
//! test can assert that nothing was refused.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use web_push_native::{
    Auth,
    jwt_simple::{
        algorithms::{ECDSAP256PublicKeyLike as _, ES256PublicKey},
        claims::NoCustomClaims,
        common::VerificationOptions,
    },
    p256::{self, elliptic_curve::sec1::ToEncodedPoint as _},
};

/// What a push service takes at most (RFC 8291 §4).
const MAX_BODY: usize = 4096;

/// A scripted answer, used once by the next request that passes every check.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    RetryAfter {
        status: u16,
        seconds: u64,
    },
    /// Records the request, then answers 201 only after this long: a
    /// request in flight, for a test to kill its sender meanwhile.
    Hold(Duration),
}

/// One request as the service saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub device: String,
    /// The answer; 0 while a held request has not been answered (or never
    /// was: its sender went away).
    pub status: u16,
    pub ttl: Option<u64>,
    pub urgency: Option<String>,
    pub topic: Option<String>,
    /// The decrypted payload, as JSON.
    pub payload: Option<Value>,
    /// Why it was refused, if it was.
    pub refused: Option<String>,
    pub at: Instant,
    pub body_len: usize,
}

struct Device {
    secret: p256::SecretKey,
    auth: [u8; 16],
    script: VecDeque<Reply>,
}

struct State {
    vapid_key: String,
    vapid: ES256PublicKey,
    origin: String,
    devices: Mutex<HashMap<String, Device>>,
    received: Mutex<Vec<Received>>,
}

pub struct PushService {
    state: Arc<State>,
    server: actix_web::dev::ServerHandle,
}

impl PushService {
    /// Starts on a free loopback port; checks VAPID against
    /// `vapid_public_key` (base64url, the 65-byte point).
    pub async fn start(vapid_public_key: &str) -> Self {
        let point = URL_SAFE_NO_PAD.decode(vapid_public_key).expect("a base64url VAPID key");
        let vapid = ES256PublicKey::from_bytes(&point).expect("a P-256 public key");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State {
            vapid_key: vapid_public_key.to_owned(),
            vapid,
            origin,
            devices: Mutex::new(HashMap::new()),
            received: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::from(shared.clone()))
                .app_data(web::PayloadConfig::new(1 << 20))
                .route("/push/{device}", web::post().to(push))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { state, server: handle }
    }

    /// A new device, as a browser makes one: its own P-256 key pair and
    /// auth secret. Returns its `PushSubscription` JSON.
    pub fn device(&self, name: &str) -> Value {
        let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let auth: [u8; 16] = rand::random();
        let point = secret.public_key().to_encoded_point(false);
        let subscription = json!({
            "endpoint": format!("{}/push/{name}", self.state.origin),
            "expirationTime": null,
            "keys": {"p256dh": URL_SAFE_NO_PAD.encode(point.as_bytes()), "auth": URL_SAFE_NO_PAD.encode(auth)},
        });
        let device = Device { secret, auth, script: VecDeque::new() };
        self.state.devices.lock().unwrap().insert(name.to_owned(), device);
        subscription
    }

    /// The next answers for a device, in order; then 201.
    pub fn script(&self, name: &str, replies: Vec<Reply>) {
        let mut devices = self.state.devices.lock().unwrap();
        devices.get_mut(name).expect("a device made by device()").script.extend(replies);
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Requests to one device that were answered 201.
    pub fn delivered(&self, name: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.device == name && r.status == 201).collect()
    }

    /// Waits until `done` holds over everything received; returns it.
    pub async fn wait_until(&self, what: &str, timeout: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        super::wait_explained(timeout, async || {
            let received = self.received();
            if done(&received) { Ok(received) } else { Err(format!("{what}; received so far: {received:#?}")) }
        })
        .await
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        let stop = self.server.stop(false);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(stop);
        }
    }
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The checks a push service makes before it takes a push: `Err` is the
/// status and the reason.
fn check(state: &State, req: &HttpRequest, body: &[u8]) -> Result<(), (u16, String)> {
    let refuse = |status: u16, why: &str| Err((status, why.to_owned()));
    if header(req, "ttl").and_then(|t| t.parse::<u64>().ok()).is_none() {
        return refuse(400, "TTL missing or not an integer");
    }
    if header(req, "content-encoding") != Some("aes128gcm") {
        return refuse(400, "Content-Encoding is not aes128gcm");
    }
    if let Some(urgency) = header(req, "urgency")
        && !["very-low", "low", "normal", "high"].contains(&urgency)
    {
        return refuse(400, "bad Urgency");
    }
    if let Some(topic) = header(req, "topic")
        && (topic.len() > 32 || !topic.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return refuse(400, "bad Topic");
    }
    // RFC 8292 §3: `vapid t=<JWT>, k=<key>`.
    let Some(authorization) = header(req, "authorization").and_then(|a| a.strip_prefix("vapid ")) else {
        return refuse(401, "no vapid Authorization");
    };
    let mut token = None;
    let mut key = None;
    for part in authorization.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => token = Some(value),
            Some(("k", value)) => key = Some(value),
            _ => return refuse(401, "malformed vapid Authorization"),
        }
    }
    let (Some(token), Some(key)) = (token, key) else { return refuse(401, "vapid Authorization needs t and k") };
    if key != state.vapid_key {
        return refuse(403, "k is not the key this subscription was made with");
    }
    let options = VerificationOptions {
        allowed_audiences: Some(HashSet::from([state.origin.clone()])),
        time_tolerance: Some(web_push_native::jwt_simple::prelude::Duration::from_secs(0)),
        ..Default::default()
    };
    let claims = match state.vapid.verify_token::<NoCustomClaims>(token, Some(options)) {
        Ok(claims) => claims,
        Err(e) => return refuse(403, &format!("the VAPID token does not verify: {e}")),
    };
    let now = web_push_native::jwt_simple::prelude::Clock::now_since_epoch();
    match claims.expires_at {
        Some(exp) if exp > now && exp.as_secs() <= now.as_secs() + 24 * 3600 => {}
        _ => return refuse(403, "exp must be in the future and at most 24 h ahead"),
    }
    match claims.subject.as_deref() {
        Some(sub) if sub.starts_with("mailto:") || sub.starts_with("https:") => {}
        _ => return refuse(403, "sub must be a mailto: or https: URI"),
    }
    if body.len() > MAX_BODY {
        return refuse(413, "body over 4096 bytes");
    }
    Ok(())
}

async fn push(req: HttpRequest, device: web::Path<String>, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let name = device.into_inner();
    let mut received = Received {
        device: name.clone(),
        status: 201,
        ttl: header(&req, "ttl").and_then(|t| t.parse().ok()),
        urgency: header(&req, "urgency").map(str::to_owned),
        topic: header(&req, "topic").map(str::to_owned),
        payload: None,
        refused: None,
        at: Instant::now(),
        body_len: body.len(),
    };
    let reply = {
        let mut devices = state.devices.lock().unwrap();
        let outcome = match devices.get_mut(&name) {
            None => Err((404, "no such subscription".to_owned())),
            Some(device) => check(&state, &req, &body).and_then(|()| {
                let auth = Auth::from(device.auth);
                let plain = web_push_native::decrypt(body.to_vec(), &device.secret, &auth)
                    .map_err(|e| (400, format!("the payload does not decrypt: {e}")))?;
                received.payload =
                    Some(serde_json::from_slice(&plain).map_err(|e| (400, format!("the payload is not JSON: {e}")))?);
                Ok(device.script.pop_front())
            }),
        };
        match outcome {
            Ok(reply) => reply,
            Err((status, why)) => {
                received.status = status;
                received.refused = Some(why.clone());
                state.received.lock().unwrap().push(received);
                return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).body(why);
            }
        }
    };
    let (status, retry_after, hold) = match reply {
        None => (201, None, None),
        Some(Reply::Status(status)) => (status, None, None),
        Some(Reply::RetryAfter { status, seconds }) => (status, Some(seconds), None),
        Some(Reply::Hold(time)) => (201, None, Some(time)),
    };
    // A held request is recorded at once with status 0 (not answered yet),
    // and gets its status when the answer goes out; a sender that hangs up
    // meanwhile (or dies) leaves it at 0.
    received.status = if hold.is_some() { 0 } else { status };
    let index = {
        let mut all = state.received.lock().unwrap();
        all.push(received);
        all.len() - 1
    };
    if let Some(time) = hold {
        tokio::time::sleep(time).await;
        state.received.lock().unwrap()[index].status = status;
    }
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if let Some(seconds) = retry_after {
        response.insert_header(("Retry-After", seconds.to_string()));
    }
    response.finish()
}
