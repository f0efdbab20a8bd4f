//! RFC 8291 message encryption for Web Push (`aes128gcm`), from maintained
//! primitives: a fresh P-256 key pair and its ECDH agreement with the
//! browser's key from `ring` (assembly-optimized), the input keying
//! material by HKDF-SHA256 (`hkdf`), and the RFC 8188 record (its own
//! HKDF steps and AES-128-GCM) from `ece-native`, the crate
//! `web-push-native` encrypts with. No cipher, KDF or curve arithmetic is
//! written here: only the glue RFC 8291 §3.3–3.4 specifies between them.
//!
//! Why not `web_push_native::encrypt` as a whole: its two P-256 scalar
//! multiplications (pure-Rust `p256`) were three quarters of a push's CPU
//! time; `ring`'s cost about a fifth as much (docs/BENCHMARKS.md, "Web
//! Push"). The unit tests check this against RFC 8291's own example and
//! against `web_push_native::decrypt`.

use hkdf::Hkdf;
use ring::{
    agreement::{self, ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey},
    rand::{SecureRandom, SystemRandom},
};
use sha2::Sha256;

/// The browser's keys from its subscription.
pub struct DeviceKeys<'a> {
    /// `p256dh`: the 65-byte uncompressed point.
    pub public: &'a [u8],
    /// `auth`: the 16-byte secret.
    pub auth: &'a [u8; 16],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encrypt the push: {0}")]
pub struct EncryptError(&'static str);

/// RFC 8291 §3.3: the input keying material for the content encryption,
/// from the ECDH secret, bound to both public keys and the auth secret.
fn input_keying_material(ecdh_secret: &[u8], auth: &[u8; 16], ua_public: &[u8], as_public: &[u8]) -> [u8; 32] {
    // key_info = "WebPush: info" || 0x00 || ua_public || as_public
    let mut info = Vec::with_capacity(14 + ua_public.len() + as_public.len());
    info.extend_from_slice(b"WebPush: info\0");
    info.extend_from_slice(ua_public);
    info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth), ecdh_secret).expand(&info, &mut ikm).expect("32 bytes is a valid HKDF length");
    ikm
}

/// Encrypts `plaintext` for one device: the whole request body, one
/// `aes128gcm` record with the sender's public key as its key id. A new key
/// pair and salt every time (RFC 8291 §3.1, §4).
pub fn encrypt(plaintext: &[u8], device: &DeviceKeys<'_>) -> Result<Vec<u8>, EncryptError> {
    let rng = SystemRandom::new();
    let ephemeral = EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| EncryptError("no key pair"))?;
    let as_public = ephemeral.compute_public_key().map_err(|_| EncryptError("no public key"))?;
    let peer = UnparsedPublicKey::new(&ECDH_P256, device.public);
    let ikm = agreement::agree_ephemeral(ephemeral, &peer, |secret| {
        input_keying_material(secret, device.auth, device.public, as_public.as_ref())
    })
    .map_err(|_| EncryptError("the device's key is not a P-256 point"))?;
    let mut salt = [0u8; 16];
    rng.fill(&mut salt).map_err(|_| EncryptError("no random salt"))?;
    // One record holding all of it: the plaintext, the 1-byte padding
    // delimiter and the 16-byte tag.
    let record_size = u32::try_from(plaintext.len() + 17).map_err(|_| EncryptError("payload too long"))?;
    ece_native::encrypt(ikm, salt, as_public.as_ref(), std::iter::once(plaintext.to_vec()), record_size)
        .map_err(|_| EncryptError("the record could not be sealed"))
}

#[cfg(test)]
mod tests {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    use web_push_native::{Auth, p256};

    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    /// RFC 8291 Appendix A: the example's keys, salt and result.
    #[test]
    fn the_rfc_8291_example_encrypts_to_its_published_bytes() {
        let ua_public = b64("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4");
        let as_public = b64("BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8");
        let as_private = b64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw");
        let auth: [u8; 16] = b64("BTBZMqHH6r4Tts7J_aSIgg").try_into().unwrap();
        let salt: [u8; 16] = b64("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        // The example's ECDH secret, from its private key (ring's keys are
        // ephemeral and cannot be given, so the test computes this one step
        // with p256).
        let secret = p256::SecretKey::from_slice(&as_private).unwrap();
        let ua = p256::PublicKey::from_sec1_bytes(&ua_public).unwrap();
        let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), ua.as_affine());
        assert_eq!(&shared.raw_secret_bytes()[..], b64("kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs"));

        let ikm = input_keying_material(shared.raw_secret_bytes(), &auth, &ua_public, &as_public);
        assert_eq!(ikm.to_vec(), b64("S4lYMb_L0FxCeq0WhDx813KgSYqU26kOyzWUdsXYyrg"));
        let body = ece_native::encrypt(
            ikm,
            salt,
            &as_public,
            std::iter::once(b"When I grow up, I want to be a watermelon".to_vec()),
            4096,
        )
        .unwrap();
        let expected = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";
        assert_eq!(URL_SAFE_NO_PAD.encode(body), expected);
    }

    /// What this module encrypts, the browser side of `web-push-native`
    /// decrypts; and every message uses a new key and salt.
    #[test]
    fn a_browser_decrypts_it() {
        let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
        let auth = [9u8; 16];
        let device = DeviceKeys { public: point.as_bytes(), auth: &auth };
        let first = encrypt(b"{\"title\":\"hi\"}", &device).unwrap();
        let again = encrypt(b"{\"title\":\"hi\"}", &device).unwrap();
        assert_ne!(first[..86], again[..86], "a new salt and key pair per message");
        for body in [first, again] {
            assert_eq!(web_push_native::decrypt(body, &secret, &Auth::from(auth)).unwrap(), b"{\"title\":\"hi\"}");
        }
        let off_curve = [4u8; 65];
        assert!(encrypt(b"x", &DeviceKeys { public: &off_curve, auth: &auth }).is_err());
    }
}
