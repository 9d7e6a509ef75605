//! Cancel requests: a request file that stops another request instead of running a script.
//! Parsed before [`super::Request::parse`]; its own type, since it names no component.

use serde_json::Value;

use super::{InvalidRequest, RequestError, RequestId, reject, string_field};

/// `{"action": "cancel", "target": "<request_id>", "request_id": "<own id>"}`: stop a
/// queued or running request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancel {
    pub id: RequestId,
    pub target: RequestId,
}

impl Cancel {
    /// `None` when the bytes are not a cancel request at all (then
    /// [`Request::parse`](super::Request::parse) applies).
    pub fn parse(bytes: &[u8]) -> Option<Result<Cancel, Box<InvalidRequest>>> {
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(bytes) else {
            return None;
        };
        if fields.get("action").and_then(Value::as_str) != Some("cancel") {
            return None;
        }
        let action = Some("cancel".to_string());
        let id = match string_field(&fields, "request_id") {
            Ok(Some(raw)) => match RequestId::parse(raw) {
                Ok(id) => id,
                Err(e) => return Some(Err(reject(None, None, action, e))),
            },
            Ok(None) => {
                return Some(Err(reject(
                    None,
                    None,
                    action,
                    RequestError::MissingField("request_id"),
                )));
            }
            Err(e) => return Some(Err(reject(None, None, action, e))),
        };
        let in_context = |e| {
            Some(Err(reject(
                Some(id.clone()),
                None,
                Some("cancel".into()),
                e,
            )))
        };
        let target = match string_field(&fields, "target") {
            Ok(Some(raw)) => match RequestId::parse(raw) {
                Ok(target) => target,
                Err(e) => return in_context(e),
            },
            Ok(None) => return in_context(RequestError::MissingField("target")),
            Err(e) => return in_context(e),
        };
        Some(Ok(Cancel { id, target }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Code;

    #[test]
    fn cancel_requests_name_their_target() {
        let c = Cancel::parse(br#"{"action":"cancel","target":"t-1","request_id":"c-1"}"#)
            .unwrap()
            .unwrap();
        assert_eq!((c.id.as_str(), c.target.as_str()), ("c-1", "t-1"));
        assert!(
            Cancel::parse(br#"{"action":"health","component":"core","request_id":"a"}"#).is_none()
        );
        let missing = Cancel::parse(br#"{"action":"cancel","request_id":"c-1"}"#)
            .unwrap()
            .unwrap_err();
        assert_eq!(
            (missing.error.code(), missing.id.unwrap().as_str()),
            (Code::MissingField, "c-1")
        );
        let bad = Cancel::parse(br#"{"action":"cancel","target":"../x","request_id":"c-1"}"#)
            .unwrap()
            .unwrap_err();
        assert_eq!(bad.error.code(), Code::InvalidRequestId);
    }
}
