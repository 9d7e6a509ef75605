//! Optional signed requests: `signature` = hex HMAC-SHA256, keyed with a shared secret, over
//! the request's canonical JSON (the object without `signature`, keys sorted at every level,
//! no whitespace, UTF-8 unescaped: Python's `json.dumps(obj, sort_keys=True,
//! separators=(",", ":"), ensure_ascii=False)`). A request whose `timestamp` (naive ISO-8601 is
//! taken as UTC) is further than `max_age` from now is stale. Pure: the caller passes the clock.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "the request is not signed, and this coordinator requires signed requests (field `signature`)"
    )]
    Unsigned,
    #[error(
        "the request's signature does not match its content; sign the canonical JSON with the shared key"
    )]
    BadSignature,
    #[error(
        "the request's timestamp {0:?} is missing, unreadable or too far from the coordinator's clock ({1} s allowed)"
    )]
    Stale(String, u64),
}

impl SignatureError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad_signature",
            Self::Stale(..) => "stale_request",
        }
    }
}

#[derive(Clone)]
pub struct Verifier {
    key: Vec<u8>,
    max_age: Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(key: Vec<u8>, max_age: Duration) -> Self {
        Self { key, max_age }
    }

    /// Checks a request file's bytes (already known to be a JSON object).
    pub fn verify(&self, bytes: &[u8], now: SystemTime) -> Result<(), SignatureError> {
        let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(bytes) else {
            return Err(SignatureError::Unsigned);
        };
        let Some(Value::String(signature)) = fields.remove("signature") else {
            return Err(SignatureError::Unsigned);
        };
        let expected = hex::decode(signature.trim()).map_err(|_| SignatureError::BadSignature)?;
        let mut mac = self.mac();
        mac.update(canonical_json(&Value::Object(fields.clone())).as_bytes());
        // verify_slice compares in constant time.
        mac.verify_slice(&expected)
            .map_err(|_| SignatureError::BadSignature)?;

        let timestamp = fields
            .get("timestamp")
            .and_then(Value::as_str)
            .unwrap_or("");
        let stale =
            || SignatureError::Stale(crate::request::printable(timestamp), self.max_age.as_secs());
        let at = humantime::parse_rfc3339_weak(timestamp).map_err(|_| stale())?;
        let skew = now.duration_since(at).unwrap_or_else(|e| e.duration());
        if skew > self.max_age {
            return Err(stale());
        }
        Ok(())
    }

    /// The signature a client would attach (used by `submit` and tests).
    pub fn sign(&self, request: &Value) -> String {
        let mut mac = self.mac();
        mac.update(canonical_json(request).as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }
}

/// Compact JSON with object keys sorted at every level, whatever map type serde_json uses.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for key in keys {
                    out.insert(key.clone(), sorted(&map[key]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> Verifier {
        Verifier::new(b"shared secret".to_vec(), Duration::from_secs(300))
    }

    fn now() -> SystemTime {
        humantime::parse_rfc3339("2026-02-14T00:52:00Z").unwrap()
    }

    fn signed(mut request: Value) -> Vec<u8> {
        let signature = verifier().sign(&request);
        request["signature"] = signature.into();
        serde_json::to_vec_pretty(&request).unwrap()
    }

    fn request() -> Value {
        serde_json::json!({
            "component": "remote", "action": "update", "version": "1.0.0-beta.8",
            "request_id": "0b6f1c2e-6a57-4d8e-9a53-2f0c8d7e9b11",
            "timestamp": "2026-02-14T00:51:03.123456"
        })
    }

    #[test]
    fn a_correctly_signed_fresh_request_passes_whatever_its_layout() {
        assert_eq!(verifier().verify(&signed(request()), now()), Ok(()));
    }

    #[test]
    fn canonical_json_matches_pythons_sorted_compact_dump() {
        // json.dumps({"b": 1, "a": {"d": [1, "é"], "c": None}}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        let v = serde_json::json!({"b": 1, "a": {"d": [1, "é"], "c": null}});
        assert_eq!(canonical_json(&v), r#"{"a":{"c":null,"d":[1,"é"]},"b":1}"#);
    }

    #[test]
    fn unsigned_tampered_wrong_key_and_stale_requests_are_refused() {
        let v = verifier();
        let plain = serde_json::to_vec(&request()).unwrap();
        assert_eq!(v.verify(&plain, now()), Err(SignatureError::Unsigned));

        let mut tampered: Value = serde_json::from_slice(&signed(request())).unwrap();
        tampered["version"] = "6.6.6".into();
        assert_eq!(
            v.verify(&serde_json::to_vec(&tampered).unwrap(), now()),
            Err(SignatureError::BadSignature)
        );

        let other = Verifier::new(b"another key".to_vec(), Duration::from_secs(300));
        assert_eq!(
            other.verify(&signed(request()), now()),
            Err(SignatureError::BadSignature)
        );

        let later = now() + Duration::from_secs(3600);
        assert_eq!(
            v.verify(&signed(request()), later).unwrap_err().code(),
            "stale_request"
        );
        let mut undated = request();
        undated.as_object_mut().unwrap().remove("timestamp");
        assert_eq!(
            v.verify(&signed(undated), now()).unwrap_err().code(),
            "stale_request"
        );
    }
}
