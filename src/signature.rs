//! Optional signed requests: `signature` = hex HMAC-SHA256, keyed with a shared secret, over
//! the request's canonical JSON (the object without `signature`, keys sorted at every level,
//! no whitespace, UTF-8 unescaped: Python's `json.dumps(obj, sort_keys=True,
//! separators=(",", ":"), ensure_ascii=False)`). A request whose `timestamp` (RFC 3339 with
//! its offset honoured; naive ISO-8601 is taken as UTC) is further than `max_age` from now is
//! stale. Verifying is pure: the caller passes the clock. [`read_key`] is the one place the
//! key file is read and its length checked (`run`, `check` and `submit` use it).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::status::Code;

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
    pub fn code(&self) -> Code {
        match self {
            Self::Unsigned => Code::Unsigned,
            Self::BadSignature => Code::BadSignature,
            Self::Stale(..) => Code::StaleRequest,
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
        let at = parse_timestamp(timestamp).ok_or_else(stale)?;
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

/// A signed request's `timestamp`: RFC 3339 with any offset (`Z`, `+05:00`, `-03:30`, with or
/// without fractional seconds), or naive ISO-8601, which is read as UTC (docs/protocol.md,
/// "Signed requests"). A date alone is not a timestamp.
pub(crate) fn parse_timestamp(text: &str) -> Option<SystemTime> {
    if !matches!(text.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let at = crate::window::parse_instant(text, &jiff::tz::TimeZone::UTC)?;
    SystemTime::try_from(at).ok()
}

/// Keys shorter than this are refused: an HMAC key that can be guessed protects nothing.
pub(crate) const MIN_KEY_BYTES: usize = 16;

/// How to make a key; every key error says it.
const MAKE_A_KEY: &str = "create one with `head -c 32 /dev/urandom | base64 > FILE` \
    (docs/security.md, \"Key distribution\")";

#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error(
        "cannot read the signature key {path} (signature.key_file): {source}; {}",
        MAKE_A_KEY
    )]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the signature key {path} (signature.key_file) holds {len} byte(s) without its trailing \
         newline, fewer than the {} required; {}",
        MIN_KEY_BYTES,
        MAKE_A_KEY
    )]
    TooShort { path: PathBuf, len: usize },
}

/// Reads the shared key: the file's bytes, one trailing newline dropped, at least
/// [`MIN_KEY_BYTES`] of them (a file holding only a newline is an empty key).
pub(crate) fn read_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    let mut key = std::fs::read(path).map_err(|source| KeyError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    if key.last() == Some(&b'\n') {
        key.pop();
    }
    if key.len() < MIN_KEY_BYTES {
        return Err(KeyError::TooShort {
            path: path.to_owned(),
            len: key.len(),
        });
    }
    Ok(key)
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
            Code::StaleRequest
        );
        let mut undated = request();
        undated.as_object_mut().unwrap().remove("timestamp");
        assert_eq!(
            v.verify(&signed(undated), now()).unwrap_err().code(),
            Code::StaleRequest
        );
    }

    #[test]
    fn timestamps_honour_their_offset_and_naive_ones_are_utc() {
        let at = |text: &str| parse_timestamp(text).unwrap_or_else(|| panic!("{text}"));
        let utc = humantime::parse_rfc3339("2026-02-14T00:51:03Z").unwrap();
        let utc_frac = humantime::parse_rfc3339("2026-02-14T00:51:03.123Z").unwrap();
        for text in [
            "2026-02-14T00:51:03",
            "2026-02-14 00:51:03",
            "2026-02-14T00:51:03Z",
            "2026-02-14T00:51:03z",
            "2026-02-14T00:51:03+00:00",
            "2026-02-14T05:51:03+05:00",
            "2026-02-13T21:21:03-03:30",
        ] {
            assert_eq!(at(text), utc, "{text}");
        }
        for text in [
            "2026-02-14T00:51:03.123",
            "2026-02-14T00:51:03.123Z",
            "2026-02-14T00:51:03.123+00:00",
            // A regression: the offset after fractional seconds was once ignored (read as UTC).
            "2026-02-14T05:51:03.123+05:00",
            "2026-02-13T21:21:03.123-03:30",
        ] {
            assert_eq!(at(text), utc_frac, "{text}");
        }
        assert_eq!(
            at("2026-02-14T00:51:03.123456"),
            utc + Duration::from_micros(123_456)
        );
        for bad in [
            "",
            "yesterday",
            "2026-02-14",
            "2026-02-14T25:00:00Z",
            "1771030263",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_offset_after_fractional_seconds_is_fresh_not_five_hours_off() {
        let mut req = request();
        req["timestamp"] = "2026-02-14T05:51:03.123+05:00".into();
        assert_eq!(verifier().verify(&signed(req.clone()), now()), Ok(()));
        // The same wall-clock reading in UTC is five hours off: stale.
        req["timestamp"] = "2026-02-14T05:51:03.123Z".into();
        assert_eq!(
            verifier().verify(&signed(req), now()).unwrap_err().code(),
            Code::StaleRequest
        );
    }

    #[test]
    fn empty_and_short_keys_are_refused_with_how_to_make_one() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("key");
        for short in [&b""[..], b"\n", b"fifteen bytes..", b"fifteen bytes..\n"] {
            std::fs::write(&key, short).unwrap();
            let err = read_key(&key).unwrap_err();
            assert!(matches!(err, KeyError::TooShort { .. }), "{short:?}");
            assert!(
                err.to_string().contains("head -c 32 /dev/urandom | base64"),
                "{err}"
            );
        }
        std::fs::write(&key, "sixteen bytes...\n").unwrap();
        assert_eq!(read_key(&key).unwrap(), b"sixteen bytes...");
        // Only one newline is dropped: the rest is key.
        std::fs::write(&key, "sixteen bytes..\n\n").unwrap();
        assert_eq!(read_key(&key).unwrap(), b"sixteen bytes..\n");
        let missing = read_key(&tmp.path().join("none")).unwrap_err();
        assert!(matches!(missing, KeyError::Unreadable { .. }), "{missing}");
    }
}
