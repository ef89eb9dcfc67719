//! Request signing between wangban and its parties, both ways: wangban signs what it sends a
//! party, and a party signs the callbacks it sends wangban, with the secret the two share.
//!
//! ```text
//! X-Wangban-Key-Id:    <key id>            which secret (rotation: several may be valid)
//! X-Wangban-Timestamp: <unix seconds>      refused when further than the tolerance from now
//! X-Wangban-Nonce:     <random, ≤ 64 chars> refused when seen before (replay)
//! X-Wangban-Signature: hex(HMAC-SHA256(secret, "<timestamp>\n<nonce>\n<body>"))
//! ```
//!
//! The body is signed byte for byte as sent; nothing is re-serialised before checking.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const KEY_ID: &str = "x-wangban-key-id";
pub const TIMESTAMP: &str = "x-wangban-timestamp";
pub const NONCE: &str = "x-wangban-nonce";
pub const SIGNATURE: &str = "x-wangban-signature";

/// The signature headers of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub key_id: String,
    pub timestamp: i64,
    pub nonce: String,
    pub signature: String,
}

impl Signed {
    /// Signs `body` now with a fresh nonce.
    pub fn new(key_id: &str, secret: &[u8], body: &[u8]) -> Signed {
        Signed::at(
            key_id,
            secret,
            body,
            unix_now(),
            &uuid::Uuid::new_v4().simple().to_string(),
        )
    }

    /// Signs `body` as of `timestamp` with `nonce`.
    pub fn at(key_id: &str, secret: &[u8], body: &[u8], timestamp: i64, nonce: &str) -> Signed {
        Signed {
            key_id: key_id.to_owned(),
            timestamp,
            nonce: nonce.to_owned(),
            signature: hex::encode(mac(secret, timestamp, nonce, body).finalize().into_bytes()),
        }
    }

    /// The headers, as (name, value) pairs.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (KEY_ID, self.key_id.clone()),
            (TIMESTAMP, self.timestamp.to_string()),
            (NONCE, self.nonce.clone()),
            (SIGNATURE, self.signature.clone()),
        ]
    }
}

/// Why a signed request is refused; the texts are safe to return to the caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing or malformed header {0}")]
    Missing(&'static str),
    #[error("unknown key id")]
    UnknownKey,
    #[error("timestamp is {0} s away from now (more than the tolerance)")]
    Stale(i64),
    #[error("signature does not match the body")]
    Mismatch,
}

/// Checks a request's signature: `header` reads a header by (lower-case) name, `secret_of` finds
/// the secret of a key id. The caller checks the nonce against replay afterwards.
pub fn verify<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    secret_of: impl Fn(&str) -> Option<&'a [u8]>,
    body: &[u8],
    now: i64,
    tolerance_s: i64,
) -> Result<Signed, SignatureError> {
    let key_id = header(KEY_ID).ok_or(SignatureError::Missing(KEY_ID))?;
    let timestamp: i64 = header(TIMESTAMP)
        .and_then(|t| t.trim().parse().ok())
        .ok_or(SignatureError::Missing(TIMESTAMP))?;
    let nonce = header(NONCE)
        .filter(|n| !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(SignatureError::Missing(NONCE))?;
    let signature = header(SIGNATURE)
        .and_then(|s| hex::decode(s.trim()).ok())
        .ok_or(SignatureError::Missing(SIGNATURE))?;
    let secret = secret_of(key_id).ok_or(SignatureError::UnknownKey)?;
    // Checked: a timestamp near i64::MIN or MAX must be stale, not overflow into "fresh".
    match now.checked_sub(timestamp) {
        Some(age) if age.checked_abs().is_some_and(|a| a <= tolerance_s) => {}
        age => return Err(SignatureError::Stale(age.unwrap_or(i64::MIN))),
    }
    // constant-time comparison
    mac(secret, timestamp, nonce, body)
        .verify_slice(&signature)
        .map_err(|_| SignatureError::Mismatch)?;
    Ok(Signed {
        key_id: key_id.to_owned(),
        timestamp,
        nonce: nonce.to_owned(),
        signature: hex::encode(signature),
    })
}

fn mac(secret: &[u8], timestamp: i64, nonce: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    m.update(timestamp.to_string().as_bytes());
    m.update(b"\n");
    m.update(nonce.as_bytes());
    m.update(b"\n");
    m.update(body);
    m
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn check(s: &Signed, body: &[u8], now: i64) -> Result<Signed, SignatureError> {
        let headers: HashMap<&str, String> = s.headers().into_iter().collect();
        verify(
            |k| headers.get(k).map(String::as_str),
            |id| (id == "k1").then_some(b"shared-secret".as_slice()),
            body,
            now,
            300,
        )
    }

    #[test]
    fn a_signed_body_verifies_and_any_change_is_refused() {
        let body = br#"{"payment_id":"P1","amount_cny":120}"#;
        let s = Signed::at("k1", b"shared-secret", body, 1_000_000, "n1");
        assert_eq!(check(&s, body, 1_000_010).map(|v| v.nonce), Ok("n1".into()));
        let tampered = br#"{"payment_id":"P1","amount_cny":121}"#;
        assert_eq!(
            check(&s, tampered, 1_000_010),
            Err(SignatureError::Mismatch)
        );
        let other_key = Signed::at("k1", b"another-secret", body, 1_000_000, "n1");
        assert_eq!(
            check(&other_key, body, 1_000_010),
            Err(SignatureError::Mismatch)
        );
        let renamed = Signed {
            nonce: "n2".into(),
            ..s.clone()
        };
        assert_eq!(
            check(&renamed, body, 1_000_010),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stale_unknown_and_missing_are_named() {
        let body = b"{}";
        let s = Signed::at("k1", b"shared-secret", body, 1_000_000, "n1");
        assert_eq!(check(&s, body, 1_000_301), Err(SignatureError::Stale(301)));
        assert_eq!(check(&s, body, 999_600), Err(SignatureError::Stale(-400)));
        // Timestamps at the ends of the range are stale, never an overflow that looks fresh.
        for timestamp in [
            i64::MIN,
            1_000_000 + i64::MIN,
            1_000_000 - i64::MAX,
            i64::MAX,
        ] {
            let odd = Signed {
                timestamp,
                ..s.clone()
            };
            assert!(
                matches!(check(&odd, body, 1_000_000), Err(SignatureError::Stale(_))),
                "{timestamp}"
            );
        }
        let unknown = Signed {
            key_id: "k9".into(),
            ..s.clone()
        };
        assert_eq!(
            check(&unknown, body, 1_000_000),
            Err(SignatureError::UnknownKey)
        );
        let no_sig = Signed {
            signature: "zz".into(),
            ..s
        };
        assert_eq!(
            check(&no_sig, body, 1_000_000),
            Err(SignatureError::Missing(SIGNATURE))
        );
    }
}
