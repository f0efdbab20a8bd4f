//! Sends one push to one device (RFC 8030): the payload encrypted to the
//! device's keys (RFC 8291, `aes128gcm`), signed for the push service with
//! the node's VAPID key (RFC 8292), over one pooled HTTP client.
//!
//! The cryptography is maintained crates' (`encryption.rs`: ring's ECDH,
//! hkdf, ece-native's AES-128-GCM record; `jwt-simple`'s ES256); none is
//! written here. A VAPID
//! token is signed once per push-service origin and reused until it nears
//! its expiry: a signature costs more than the rest of a request's headers.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use web_push_native::jwt_simple::{algorithms::ECDSAP256KeyPairLike as _, claims::Claims};

use super::{
    encryption::{DeviceKeys, encrypt},
    payload::PushMessage,
};
use crate::domain::{PushSubscription, VapidKey};

/// How long a VAPID token is valid (RFC 8292 §2: at most 24 hours).
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// A cached token is replaced once less than this is left of it, so none
/// expires in flight or on a clock a little ahead of ours.
const TOKEN_RENEW_BEFORE: Duration = Duration::from_secs(3600);

/// What became of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// `201` (any `2xx`): the push service took it.
    Sent,
    /// `404` / `410`: the subscription is gone; forget the device.
    Gone,
    /// `413`: the service would not take the payload.
    TooLarge,
    /// `429`, `5xx`, a timeout or a broken connection: try again, after
    /// `after` if the service said (`Retry-After`).
    Retry { after: Option<Duration>, reason: String },
    /// Any other answer (`400`, `401`, `403`…): trying again would fail
    /// the same way.
    Failed { reason: String },
}

pub struct Sender {
    /// One client for every push service: it pools connections per origin
    /// and speaks HTTP/2 where the service offers it (ALPN).
    http: reqwest::Client,
    key: VapidKey,
    /// `push.subject`: the JWT's `sub`.
    subject: String,
    /// `k=` of the `Authorization` header: the public key, base64url.
    public_key: String,
    /// Push-service origin → (`Authorization` value, when to sign anew).
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl Sender {
    pub fn new(key: VapidKey, subject: String, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(90))
            // Push services answer, they do not redirect; following one
            // would let a listed host send the node elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let public_key = key.public_base64url();
        Ok(Self { http, key, subject, public_key, tokens: Mutex::new(HashMap::new()) })
    }

    /// The `Authorization` header for a push service's origin: `vapid
    /// t=<ES256 JWT>, k=<public key>`, the JWT's `aud` being the origin
    /// (scheme, host and any port: RFC 8292 §2's "origin of the push
    /// resource").
    fn authorization(&self, origin: &str) -> Result<String, String> {
        let now = Instant::now();
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((header, renew_at)) = tokens.get(origin)
            && now < *renew_at
        {
            return Ok(header.clone());
        }
        let claims = Claims::create(TOKEN_LIFETIME.into()).with_audience(origin).with_subject(&self.subject);
        let token = self.key.pair().sign(claims).map_err(|e| format!("cannot sign a VAPID token: {e}"))?;
        let header = format!("vapid t={token}, k={}", self.public_key);
        tokens.insert(origin.to_owned(), (header.clone(), now + TOKEN_LIFETIME - TOKEN_RENEW_BEFORE));
        Ok(header)
    }

    /// Encrypts `message` for `device` and sends it.
    pub async fn send(&self, device: &PushSubscription, message: &PushMessage) -> SendOutcome {
        let request = match self.request(device, message) {
            Ok(request) => request,
            Err(reason) => return SendOutcome::Failed { reason },
        };
        match self.http.execute(request).await {
            Ok(response) => outcome(response.status().as_u16(), response.headers()),
            Err(e) if e.is_timeout() => SendOutcome::Retry { after: None, reason: "timeout".into() },
            Err(e) => SendOutcome::Retry { after: None, reason: format!("request failed: {e}") },
        }
    }

    fn request(&self, device: &PushSubscription, message: &PushMessage) -> Result<reqwest::Request, String> {
        let bad = |what: &str| format!("stored subscription has a bad {what}");
        let url: reqwest::Url = device.endpoint.parse().map_err(|_| bad("endpoint"))?;
        let public = base64url(&device.p256dh).ok_or_else(|| bad("p256dh"))?;
        let auth: [u8; 16] = base64url(&device.auth).and_then(|s| s.try_into().ok()).ok_or_else(|| bad("auth"))?;
        let body =
            encrypt(&message.plaintext, &DeviceKeys { public: &public, auth: &auth }).map_err(|e| e.to_string())?;
        let mut request = reqwest::Request::new(reqwest::Method::POST, url);
        let headers = request.headers_mut();
        let authorization = self.authorization(&device.origin())?;
        headers.insert("authorization", authorization.parse().map_err(|_| "bad VAPID header".to_owned())?);
        headers.insert("ttl", message.ttl_seconds.into());
        headers.insert("content-encoding", http::HeaderValue::from_static("aes128gcm"));
        headers.insert("content-type", http::HeaderValue::from_static("application/octet-stream"));
        headers.insert("urgency", http::HeaderValue::from_static(message.urgency));
        headers.insert("topic", message.topic.parse().map_err(|_| "bad Topic header".to_owned())?);
        *request.body_mut() = Some(body.into());
        Ok(request)
    }
}

fn base64url(raw: &str) -> Option<Vec<u8>> {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.decode(raw).ok()
}

/// A push service's answer as an outcome (RFC 8030 §5, §8.4).
fn outcome(status: u16, headers: &http::HeaderMap) -> SendOutcome {
    match status {
        200..=299 => SendOutcome::Sent,
        404 | 410 => SendOutcome::Gone,
        413 => SendOutcome::TooLarge,
        429 | 500..=599 => SendOutcome::Retry { after: retry_after(headers), reason: format!("HTTP {status}") },
        _ => SendOutcome::Failed { reason: format!("HTTP {status}") },
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let raw = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(seconds) = raw.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_outcomes() {
        let none = http::HeaderMap::new();
        assert_eq!(outcome(201, &none), SendOutcome::Sent);
        assert_eq!(outcome(410, &none), SendOutcome::Gone);
        assert_eq!(outcome(404, &none), SendOutcome::Gone);
        assert_eq!(outcome(413, &none), SendOutcome::TooLarge);
        assert!(matches!(outcome(503, &none), SendOutcome::Retry { after: None, .. }));
        assert!(matches!(outcome(403, &none), SendOutcome::Failed { .. }));
        let mut later = http::HeaderMap::new();
        later.insert("retry-after", "7".parse().unwrap());
        assert!(
            matches!(outcome(429, &later), SendOutcome::Retry { after: Some(d), .. } if d == Duration::from_secs(7))
        );
        let mut dated = http::HeaderMap::new();
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
        dated.insert("retry-after", soon.parse().unwrap());
        let SendOutcome::Retry { after: Some(d), .. } = outcome(503, &dated) else { panic!("no retry") };
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
    }

    #[test]
    fn a_token_is_signed_once_per_origin_and_reused() {
        let sender =
            Sender::new(VapidKey::generate(), "mailto:ops@example.com".into(), Duration::from_secs(5)).unwrap();
        let a = sender.authorization("https://fcm.googleapis.com").unwrap();
        assert_eq!(sender.authorization("https://fcm.googleapis.com").unwrap(), a);
        assert_ne!(sender.authorization("https://updates.push.services.mozilla.com").unwrap(), a);
        assert!(a.starts_with("vapid t=") && a.ends_with(&format!(", k={}", sender.public_key)), "{a}");
    }
}
