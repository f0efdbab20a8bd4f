//! Web Push values: the browser's subscription and the node's VAPID key.
//!
//! A browser that allows push hands its app a `PushSubscription`: the push
//! service's `endpoint` URL, a P-256 public key (`p256dh`) and a 16-byte
//! `auth` secret that the payload is encrypted to (RFC 8291). The
//! application server (Herald) signs every push request with its VAPID key
//! (RFC 8292), whose public half the browser was subscribed with.

use std::{fmt, sync::Arc};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;
use web_push_native::{
    jwt_simple::algorithms::{ECDSAP256PublicKeyLike as _, ES256KeyPair},
    p256,
};

/// Longest endpoint accepted. Push services' endpoints are a few hundred
/// bytes; the cap keeps a user's stored subscriptions small.
pub const MAX_ENDPOINT_LEN: usize = 2048;

/// A validated push subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSubscription {
    pub endpoint: String,
    /// The browser's P-256 public key, as the 65-byte uncompressed point in
    /// base64url (the form the browser gave, normalized to no padding).
    pub p256dh: String,
    /// The 16-byte auth secret, base64url without padding.
    pub auth: String,
    /// When the push service will drop the subscription (unix ms), if it said.
    pub expiration_time: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SubscriptionError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> SubscriptionError {
    SubscriptionError { field, message: message.into() }
}

/// `PushSubscription.toJSON()` as browsers send it. Fields a browser may add
/// later are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    endpoint: Option<String>,
    #[serde(default)]
    expiration_time: Option<f64>,
    keys: Option<RawKeys>,
}

#[derive(Deserialize)]
struct RawKeys {
    p256dh: Option<String>,
    auth: Option<String>,
}

/// Decodes base64url with or without padding (browsers leave it off; some
/// libraries add it).
fn base64url(raw: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(raw.trim_end_matches('=')).ok()
}

/// Where push endpoints may point. Herald POSTs to whatever endpoint a user
/// registers, so without a list a user could make every node send requests
/// to a host inside the network (an internal admin API, a metadata
/// service). Browsers' push services live on a few well-known hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRules {
    /// `push.endpoint_hosts`: host names, `*.suffix` for any host under
    /// `suffix`, or `*` for any host at all.
    pub hosts: Vec<String>,
    /// `push.allowed_insecure_hosts`: hosts that may be plain `http` (and
    /// are allowed whatever `hosts` says): a push service on loopback in
    /// tests.
    pub insecure_hosts: Vec<String>,
}

impl EndpointRules {
    fn host_allowed(&self, host: &str) -> bool {
        self.insecure_hosts.iter().any(|h| h == host)
            || self.hosts.iter().any(|rule| match rule.strip_prefix("*.") {
                _ if rule == "*" => true,
                Some(suffix) => {
                    host.len() > suffix.len() + 1
                        && host.ends_with(suffix)
                        && host[..host.len() - suffix.len()].ends_with('.')
                }
                None => rule.eq_ignore_ascii_case(host),
            })
    }
}

impl PushSubscription {
    /// Parses and validates a subscription document. The endpoint must be
    /// `https` on a host `rules` allow, or `http` on one of its insecure
    /// hosts.
    pub fn parse(json: &[u8], rules: &EndpointRules) -> Result<Self, SubscriptionError> {
        let subscription = Self::parse_with(json, |host| rules.insecure_hosts.iter().any(|h| h == host))?;
        let url = url::Url::parse(&subscription.endpoint).expect("checked by parse_with");
        let host = url.host_str().unwrap_or_default();
        if !rules.host_allowed(host) {
            return Err(bad(
                "endpoint",
                format!("host `{host}` is not a push service this server sends to (push.endpoint_hosts)"),
            ));
        }
        Ok(subscription)
    }

    fn parse_with(json: &[u8], insecure_ok: impl Fn(&str) -> bool) -> Result<Self, SubscriptionError> {
        let raw: Raw = serde_json::from_slice(json).map_err(|e| bad("subscription", e.to_string()))?;
        let endpoint = raw.endpoint.ok_or_else(|| bad("endpoint", "is required"))?;
        if endpoint.len() > MAX_ENDPOINT_LEN {
            return Err(bad("endpoint", format!("must be at most {MAX_ENDPOINT_LEN} bytes")));
        }
        // URL parsers drop tabs and line breaks silently; the stored endpoint
        // must be the one the push service gave, byte for byte.
        if endpoint.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad("endpoint", "must not contain spaces or control characters"));
        }
        let url = url::Url::parse(&endpoint).map_err(|e| bad("endpoint", format!("is not a URL: {e}")))?;
        let host = url.host_str().unwrap_or_default();
        if host.is_empty() {
            return Err(bad("endpoint", "must name a host"));
        }
        match url.scheme() {
            "https" => {}
            "http" if insecure_ok(host) => {}
            "http" => {
                return Err(bad(
                    "endpoint",
                    format!("must be an https URL (host `{host}` is not in push.allowed_insecure_hosts)"),
                ));
            }
            other => return Err(bad("endpoint", format!("must be an https URL, not {other}:"))),
        }
        if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
            return Err(bad("endpoint", "must not carry credentials or a fragment"));
        }
        let keys = raw.keys.ok_or_else(|| bad("keys", "is required (keys.p256dh and keys.auth)"))?;
        let p256dh = keys.p256dh.ok_or_else(|| bad("keys.p256dh", "is required"))?;
        let point = base64url(&p256dh).ok_or_else(|| bad("keys.p256dh", "is not base64url"))?;
        if point.len() != 65 || point[0] != 4 || p256::PublicKey::from_sec1_bytes(&point).is_err() {
            return Err(bad("keys.p256dh", "must be a 65-byte uncompressed P-256 point"));
        }
        let auth = keys.auth.ok_or_else(|| bad("keys.auth", "is required"))?;
        let secret = base64url(&auth).ok_or_else(|| bad("keys.auth", "is not base64url"))?;
        if secret.len() != 16 {
            return Err(bad("keys.auth", format!("must be 16 bytes, not {}", secret.len())));
        }
        let expiration_time = match raw.expiration_time {
            None => None,
            Some(ms) if ms.is_finite() && ms >= 0.0 => Some(ms as u64),
            Some(_) => return Err(bad("expirationTime", "must be null or a time in milliseconds")),
        };
        Ok(Self {
            endpoint,
            p256dh: URL_SAFE_NO_PAD.encode(point),
            auth: URL_SAFE_NO_PAD.encode(secret),
            expiration_time,
        })
    }

    /// The stored form, which [`PushSubscription::from_stored`] reads back:
    /// the browser's own JSON shape.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "endpoint": self.endpoint,
            "expirationTime": self.expiration_time,
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        })
        .to_string()
    }

    /// Reads a stored subscription. It was validated when stored, under the
    /// `push.allowed_insecure_hosts` of then, so the scheme is not judged
    /// again.
    pub fn from_stored(json: &str) -> Option<Self> {
        Self::parse_with(json.as_bytes(), |_| true).ok()
    }

    /// The push service's origin, `scheme://host[:port]`: what VAPID
    /// signatures and HTTP connections are kept per.
    pub fn origin(&self) -> String {
        match url::Url::parse(&self.endpoint) {
            Ok(url) => url.origin().ascii_serialization(),
            Err(_) => String::new(),
        }
    }
}

/// The node's VAPID key pair (P-256). Never prints its private half.
#[derive(Clone)]
pub struct VapidKey {
    pair: Arc<ES256KeyPair>,
}

impl VapidKey {
    /// A new random key pair (`herald vapid`, and `serve --demo` when none
    /// is configured).
    pub fn generate() -> Self {
        Self { pair: Arc::new(ES256KeyPair::generate()) }
    }

    /// From the raw 32-byte private scalar in base64url, the form
    /// `herald vapid` and other Web Push tools print.
    pub fn from_base64url(raw: &str) -> Result<Self, String> {
        let bytes = base64url(raw.trim()).ok_or("is not base64url")?;
        if bytes.len() != 32 {
            return Err(format!("must be a 32-byte P-256 private key, not {} bytes", bytes.len()));
        }
        ES256KeyPair::from_bytes(&bytes)
            .map(|pair| Self { pair: Arc::new(pair) })
            .map_err(|e| format!("is not a P-256 key: {e}"))
    }

    /// From a PEM file's text (PKCS#8 or SEC1 `EC PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        ES256KeyPair::from_pem(pem)
            .map(|pair| Self { pair: Arc::new(pair) })
            .map_err(|e| format!("is not a P-256 private key: {e}"))
    }

    /// The private scalar in base64url.
    pub fn private_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.to_bytes())
    }

    /// The public key as the 65-byte uncompressed point in base64url: what
    /// `PushManager.subscribe({applicationServerKey})` takes.
    pub fn public_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.public_key().public_key().to_bytes_uncompressed())
    }

    pub fn pair(&self) -> &ES256KeyPair {
        &self.pair
    }
}

impl fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VapidKey(public {})", self.public_base64url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn browser_keys() -> (String, String) {
        let secret = p256::SecretKey::random(&mut web_push_native::p256::elliptic_curve::rand_core::OsRng);
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
        (URL_SAFE_NO_PAD.encode(point.as_bytes()), URL_SAFE_NO_PAD.encode([7u8; 16]))
    }

    fn doc(endpoint: &str, p256dh: &str, auth: &str) -> String {
        serde_json::json!({"endpoint": endpoint, "expirationTime": null, "keys": {"p256dh": p256dh, "auth": auth}})
            .to_string()
    }

    #[test]
    fn a_browser_subscription_parses_and_round_trips() {
        let (p256dh, auth) = browser_keys();
        let json = doc("https://fcm.googleapis.com/fcm/send/abc", &p256dh, &auth);
        let sub = PushSubscription::parse(json.as_bytes(), &rules(&[])).unwrap();
        assert_eq!(sub.p256dh, p256dh);
        assert_eq!(sub.origin(), "https://fcm.googleapis.com");
        assert_eq!(PushSubscription::from_stored(&sub.to_json()), Some(sub));
        // Padding is accepted and normalized away.
        let padded = doc("https://push.example/x", &p256dh, &format!("{auth}=="));
        assert_eq!(PushSubscription::parse(padded.as_bytes(), &rules(&[])).unwrap().auth, auth);
    }

    #[test]
    fn each_bad_part_is_named() {
        let (p256dh, auth) = browser_keys();
        let field =
            |json: String, hosts: &[&str]| PushSubscription::parse(json.as_bytes(), &rules(hosts)).unwrap_err().field;
        assert_eq!(field(doc("http://push.example/x", &p256dh, &auth), &[]), "endpoint");
        assert_eq!(field(doc("ftp://push.example/x", &p256dh, &auth), &[]), "endpoint");
        assert_eq!(field(doc("not a url", &p256dh, &auth), &[]), "endpoint");
        assert_eq!(field(doc("https://push.example/x", &auth, &auth), &[]), "keys.p256dh");
        assert_eq!(field(doc("https://push.example/x", "!!", &auth), &[]), "keys.p256dh");
        // 65 bytes starting with 4 but not on the curve.
        let off_curve = URL_SAFE_NO_PAD.encode([4u8; 65]);
        assert_eq!(field(doc("https://push.example/x", &off_curve, &auth), &[]), "keys.p256dh");
        assert_eq!(field(doc("https://push.example/x", &p256dh, &p256dh), &[]), "keys.auth");
        assert_eq!(field(r#"{"keys": {}}"#.into(), &[]), "endpoint");
        assert_eq!(field(r#"{"endpoint": "https://a.example/"}"#.into(), &[]), "keys");
        assert_eq!(field("[]".into(), &[]), "subscription");
        // An insecure host is allowed only when listed.
        let local = doc("http://127.0.0.1:9/push/1", &p256dh, &auth);
        assert!(PushSubscription::parse(local.as_bytes(), &rules(&["127.0.0.1"])).is_ok());
    }

    fn rules(insecure: &[&str]) -> EndpointRules {
        EndpointRules {
            hosts: vec!["fcm.googleapis.com".into(), "*.push.apple.com".into(), "push.example".into()],
            insecure_hosts: insecure.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn only_push_services_on_the_list_are_sent_to() {
        let (p256dh, auth) = browser_keys();
        let host_ok = |endpoint: &str, hosts: &[&str]| {
            let rules = EndpointRules { hosts: hosts.iter().map(|h| h.to_string()).collect(), insecure_hosts: vec![] };
            PushSubscription::parse(doc(endpoint, &p256dh, &auth).as_bytes(), &rules).is_ok()
        };
        let list = ["fcm.googleapis.com", "*.push.apple.com"];
        assert!(host_ok("https://fcm.googleapis.com/fcm/send/x", &list));
        assert!(host_ok("https://web.push.apple.com/x", &list));
        assert!(!host_ok("https://push.apple.com/x", &list), "*.suffix is for hosts under it");
        assert!(!host_ok("https://evilpush.apple.com.attacker.example/x", &list));
        assert!(!host_ok("https://fakepush.apple.com.example/x", &list));
        assert!(!host_ok("https://169.254.169.254/latest", &list));
        assert!(!host_ok("https://admin.internal/x", &list));
        assert!(host_ok("https://admin.internal/x", &["*"]));
    }

    #[test]
    fn a_vapid_key_round_trips_through_its_printed_form() {
        let key = VapidKey::generate();
        let again = VapidKey::from_base64url(&key.private_base64url()).unwrap();
        assert_eq!(again.public_base64url(), key.public_base64url());
        assert_eq!(URL_SAFE_NO_PAD.decode(key.public_base64url()).unwrap().len(), 65);
        let pem = key.pair().to_pem().unwrap();
        assert_eq!(VapidKey::from_pem(&pem).unwrap().public_base64url(), key.public_base64url());
        assert!(VapidKey::from_base64url("AAAA").is_err());
        assert!(!format!("{key:?}").contains(&key.private_base64url()));
    }
}
