//! Request files: bytes → a checked [`Request`]. Pure, no I/O, so it can be fuzzed.
//!
//! The wire format is the one the existing DuneBugger container client writes:
//! `{"component", "action", "version"?, "request_id", "timestamp"}`. Unknown extra fields are
//! tolerated (newer clients may send more); known fields with the wrong type are rejected.
//! After [`Request::parse`] nothing downstream re-checks: a [`RequestId`] that exists is safe as
//! a file name, a [`Version`] is safe as one argv element.
//!
//! Here: the [`Action`], the [`Request`] and its parser. Beside it, one file each: request ids
//! (`id.rs`), versions (`version.rs`), refusals (`error.rs`) and cancel requests (`cancel.rs`).

use std::fmt;

use serde_json::{Map, Value};

mod cancel;
mod error;
mod id;
mod version;

pub(crate) use cancel::Cancel;
use error::reject;
pub use error::{InvalidRequest, RequestError};
pub use id::{MAX_ID_LEN, RequestId};
pub use version::{MAX_VERSION_LEN, Version};

/// What a request asks for. Each action maps to one script in the component's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `update.sh VERSION`
    Update,
    /// `rollback.sh`
    Rollback,
    /// `health-check.sh`
    Health,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Update, Action::Rollback, Action::Health];

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "update" => Some(Self::Update),
            "rollback" => Some(Self::Rollback),
            "health" => Some(Self::Health),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Update => "update",
            Self::Rollback => "rollback",
            Self::Health => "health",
        }
    }

    /// The script this action runs, relative to the component's directory.
    pub(crate) fn script_name(self) -> &'static str {
        match self {
            Self::Update => "update.sh",
            Self::Rollback => "rollback.sh",
            Self::Health => "health-check.sh",
        }
    }

    /// Update and rollback change what runs on the host; they are serialized (see `daemon`).
    pub(crate) fn is_exclusive(self) -> bool {
        matches!(self, Self::Update | Self::Rollback)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: RequestId,
    /// The component (for a batch: the first one; see [`Request::batch`]).
    pub component: String,
    pub action: Action,
    /// Present exactly when `action` is [`Action::Update`].
    pub version: Option<Version>,
    /// `"dry_run": true`: check everything, run nothing, answer with what would run.
    pub dry_run: bool,
    /// `"not_before"`: the request waits until then (phase `scheduled`).
    pub not_before: Option<jiff::Timestamp>,
    /// A multi-component update (`"components": {"remote": "1.4.2", ...}`), in the given
    /// order, the first one also in `component`/`version`. Empty for a single component.
    pub batch: Vec<Member>,
}

/// One component of a multi-component update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub component: String,
    pub version: Version,
}

impl Request {
    pub(crate) fn version_text(&self) -> Option<String> {
        self.version.as_ref().map(|v| v.as_str().to_owned())
    }

    pub(crate) fn is_batch(&self) -> bool {
        !self.batch.is_empty()
    }

    /// The components this request changes or checks, in order.
    pub(crate) fn components(&self) -> Vec<&str> {
        if self.is_batch() {
            self.batch.iter().map(|m| m.component.as_str()).collect()
        } else {
            vec![self.component.as_str()]
        }
    }

    /// What statuses and logs name: `remote` or, for a batch, `remote+scheduler`.
    pub(crate) fn component_label(&self) -> String {
        self.components().join("+")
    }
}

impl Request {
    /// Parses and validates a request file's content. `components` lists the allow-listed
    /// component names; the component is only ever looked up there, never used to build a path.
    pub fn parse<'a>(
        bytes: &[u8],
        components: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<Request, Box<InvalidRequest>> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| reject(None, None, None, RequestError::InvalidJson(e.to_string())))?;
        let Value::Object(fields) = value else {
            return Err(reject(None, None, None, RequestError::NotAnObject));
        };

        let id = match string_field(&fields, "request_id") {
            Ok(Some(raw)) => RequestId::parse(raw).map_err(|e| reject(None, None, None, e))?,
            Ok(None) => {
                return Err(reject(
                    None,
                    None,
                    None,
                    RequestError::MissingField("request_id"),
                ));
            }
            Err(e) => return Err(reject(None, None, None, e)),
        };
        let known = |e: RequestError| reject(Some(id.clone()), None, None, e);

        let batch = match fields.get("components") {
            None | Some(Value::Null) => None,
            Some(Value::Object(members)) => Some(members),
            Some(_) => {
                return Err(known(RequestError::WrongType {
                    field: "components",
                    expected: "an object of component names to versions",
                }));
            }
        };
        let component = match (string_field(&fields, "component").map_err(known)?, batch) {
            (Some(component), None) => component,
            (None, Some(members)) => match members.keys().next() {
                Some(first) => first.as_str(),
                None => {
                    return Err(known(RequestError::InvalidBatch(
                        "`components` is empty; name at least one component and its version".into(),
                    )));
                }
            },
            (Some(_), Some(_)) => {
                return Err(known(RequestError::InvalidBatch(
                    "give either `component` (one) or `components` (several), not both".into(),
                )));
            }
            (None, None) => return Err(known(RequestError::MissingField("component"))),
        };
        let component_text = Some(printable(component));
        let action_raw = string_field(&fields, "action")
            .map_err(|e| reject(Some(id.clone()), component_text.clone(), None, e))?
            .ok_or(RequestError::MissingField("action"))
            .map_err(|e| reject(Some(id.clone()), component_text.clone(), None, e))?;
        let in_context = |e: RequestError| {
            reject(
                Some(id.clone()),
                component_text.clone(),
                Some(printable(action_raw)),
                e,
            )
        };

        if !components
            .clone()
            .into_iter()
            .any(|known| known == component)
        {
            let list: Vec<&str> = components.into_iter().collect();
            return Err(in_context(RequestError::UnknownComponent(
                printable(component),
                list.join(", "),
            )));
        }
        let action = Action::parse(action_raw)
            .ok_or_else(|| in_context(RequestError::UnknownAction(printable(action_raw))))?;

        let mut members = Vec::new();
        if let Some(batch) = batch {
            if action != Action::Update || fields.get("version").is_some_and(|v| !v.is_null()) {
                return Err(in_context(RequestError::InvalidBatch(
                    "`components` is for action update, with each version in it (no `version`)"
                        .into(),
                )));
            }
            let known_names: Vec<&str> = components.clone().into_iter().collect();
            for (name, version) in batch {
                if !known_names.contains(&name.as_str()) {
                    return Err(in_context(RequestError::UnknownComponent(
                        printable(name),
                        known_names.join(", "),
                    )));
                }
                let Value::String(version) = version else {
                    return Err(in_context(RequestError::WrongType {
                        field: "components",
                        expected: "an object of component names to version strings",
                    }));
                };
                members.push(Member {
                    component: name.clone(),
                    version: Version::parse(version).map_err(in_context)?,
                });
            }
        }
        // The client sends `"version": null` or omits it for rollback/health; both mean "none".
        let version = match (
            string_field(&fields, "version").map_err(in_context)?,
            members.first(),
        ) {
            (_, Some(first)) => Some(first.version.clone()),
            // The first clients put `version` into every request: an empty one where no version
            // is used means none. An update still needs a real one (refused below as invalid_version).
            (Some(""), None) if action != Action::Update => None,
            (Some(raw), None) => Some(Version::parse(raw).map_err(in_context)?),
            (None, None) => None,
        };
        // One member is a plain update.
        if members.len() == 1 {
            members.clear();
        }
        match (action, &version) {
            (Action::Update, None) => {
                return Err(in_context(RequestError::MissingField("version")));
            }
            (Action::Rollback | Action::Health, Some(_)) => {
                return Err(in_context(RequestError::UnexpectedVersion(action)));
            }
            _ => {}
        }
        // `timestamp` is informational (naive ISO-8601 from the client); only its type is checked.
        string_field(&fields, "timestamp").map_err(in_context)?;
        let dry_run = match fields.get("dry_run") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(in_context(RequestError::WrongType {
                    field: "dry_run",
                    expected: "true or false",
                }));
            }
        };

        let not_before = match string_field(&fields, "not_before").map_err(in_context)? {
            Some(raw) => Some(
                crate::window::parse_instant(raw, &jiff::tz::TimeZone::system())
                    .ok_or_else(|| in_context(RequestError::InvalidNotBefore(printable(raw))))?,
            ),
            None => None,
        };

        Ok(Request {
            id,
            component: component.to_owned(),
            action,
            version,
            dry_run,
            not_before,
            batch: members,
        })
    }
}

/// `Ok(None)` when the field is absent or null; an error when it has another type.
pub(super) fn string_field<'a>(
    fields: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, RequestError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(RequestError::WrongType {
            field: name,
            expected: "a string",
        }),
    }
}

/// Untrusted text bound for logs and status messages: control characters escaped, length capped.
pub fn printable(raw: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = raw.chars().take(MAX).flat_map(char::escape_debug).collect();
    if raw.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Code;

    const COMPONENTS: [&str; 3] = ["core", "scheduler", "remote"];

    fn parse(json: &str) -> Result<Request, Box<InvalidRequest>> {
        Request::parse(json.as_bytes(), COMPONENTS)
    }

    fn code(json: &str) -> Code {
        parse(json).unwrap_err().error.code()
    }

    #[test]
    fn accepts_the_existing_clients_pretty_printed_update() {
        let json = r#"{
    "component": "remote",
    "action": "update",
    "version": "1.0.0-beta.8",
    "request_id": "0b6f1c2e-6a57-4d8e-9a53-2f0c8d7e9b11",
    "timestamp": "2026-02-14T00:51:03.123456"
}"#;
        let request = parse(json).unwrap();
        assert_eq!(request.id.as_str(), "0b6f1c2e-6a57-4d8e-9a53-2f0c8d7e9b11");
        assert_eq!(request.component, "remote");
        assert_eq!(request.action, Action::Update);
        assert_eq!(request.version.unwrap().as_str(), "1.0.0-beta.8");
    }

    #[test]
    fn health_and_rollback_need_no_version_and_null_means_absent() {
        let r = parse(r#"{"component":"core","action":"health","request_id":"a1"}"#).unwrap();
        assert_eq!((r.action, r.version), (Action::Health, None));
        let r =
            parse(r#"{"component":"core","action":"rollback","version":null,"request_id":"a2"}"#)
                .unwrap();
        assert_eq!(r.action, Action::Rollback);
    }

    #[test]
    fn an_empty_version_is_ignored_where_no_version_is_used_and_refused_on_update() {
        // The first clients put `version` into every request.
        for action in ["health", "rollback"] {
            let json = format!(
                r#"{{"component":"core","action":"{action}","version":"","request_id":"e1"}}"#
            );
            assert_eq!(parse(&json).unwrap().version, None, "{action}");
        }
        let cancel = br#"{"action":"cancel","target":"t-1","version":"","request_id":"c-1"}"#;
        assert!(Cancel::parse(cancel).unwrap().is_ok());
        assert_eq!(
            code(r#"{"component":"core","action":"update","version":"","request_id":"e2"}"#),
            Code::InvalidVersion
        );
        // A real version where none is used is still a mistake worth saying.
        assert_eq!(
            code(r#"{"component":"core","action":"health","version":"1.2","request_id":"e3"}"#),
            Code::UnexpectedVersion
        );
    }

    #[test]
    fn dry_run_is_a_boolean() {
        let r = parse(r#"{"component":"core","action":"health","request_id":"a","dry_run":true}"#)
            .unwrap();
        assert!(r.dry_run);
        assert!(
            !parse(r#"{"component":"core","action":"health","request_id":"a"}"#)
                .unwrap()
                .dry_run
        );
        assert_eq!(
            code(r#"{"component":"core","action":"health","request_id":"a","dry_run":"yes"}"#),
            Code::WrongType
        );
    }

    #[test]
    fn a_multi_component_update_keeps_the_given_order() {
        let r = parse(
            r#"{"action":"update","components":{"scheduler":"2.0.1","core":"1.4.2"},"request_id":"b"}"#,
        )
        .unwrap();
        let members: Vec<(&str, &str)> = r
            .batch
            .iter()
            .map(|m| (m.component.as_str(), m.version.as_str()))
            .collect();
        assert_eq!(members, [("scheduler", "2.0.1"), ("core", "1.4.2")]);
        assert_eq!(
            (r.component.as_str(), r.version_text().unwrap().as_str()),
            ("scheduler", "2.0.1")
        );
        assert_eq!(r.component_label(), "scheduler+core");
        // One member is a plain update.
        let one =
            parse(r#"{"action":"update","components":{"core":"1.0"},"request_id":"c"}"#).unwrap();
        assert!(!one.is_batch() && one.component == "core");
    }

    #[test]
    fn broken_multi_component_updates_are_refused_with_a_reason() {
        for (json, expected) in [
            (
                r#"{"action":"update","components":{},"request_id":"b"}"#,
                Code::InvalidBatch,
            ),
            (
                r#"{"action":"health","components":{"core":"1.0","remote":"2"},"request_id":"b"}"#,
                Code::InvalidBatch,
            ),
            (
                r#"{"action":"update","component":"core","components":{"core":"1.0"},"request_id":"b"}"#,
                Code::InvalidBatch,
            ),
            (
                r#"{"action":"update","components":{"core":"1.0","remote":"2"},"version":"1","request_id":"b"}"#,
                Code::InvalidBatch,
            ),
            (
                r#"{"action":"update","components":{"core":"1.0","nas":"2"},"request_id":"b"}"#,
                Code::UnknownComponent,
            ),
            (
                r#"{"action":"update","components":{"core":"1.0","remote":"--x"},"request_id":"b"}"#,
                Code::InvalidVersion,
            ),
            (
                r#"{"action":"update","components":{"core":"1.0","remote":2},"request_id":"b"}"#,
                Code::WrongType,
            ),
            (
                r#"{"action":"update","components":["core"],"request_id":"b"}"#,
                Code::WrongType,
            ),
        ] {
            assert_eq!(code(json), expected, "{json}");
        }
    }

    #[test]
    fn not_before_is_an_rfc3339_time() {
        let r = parse(
            r#"{"component":"core","action":"health","request_id":"a","not_before":"2026-11-28T02:00:00+01:00"}"#,
        )
        .unwrap();
        assert_eq!(r.not_before.unwrap().to_string(), "2026-11-28T01:00:00Z");
        assert_eq!(
            code(r#"{"component":"core","action":"health","request_id":"a","not_before":"soon"}"#),
            Code::InvalidNotBefore
        );
        assert_eq!(
            code(r#"{"component":"core","action":"health","request_id":"a","not_before":5}"#),
            Code::WrongType
        );
    }

    #[test]
    fn unknown_extra_fields_are_tolerated() {
        let r = parse(
            r#"{"component":"core","action":"health","request_id":"a","dry_run":true,"x":{}}"#,
        );
        assert!(r.is_ok());
    }

    #[test]
    fn refusals_carry_stable_codes() {
        assert_eq!(code("{not json"), Code::InvalidJson);
        assert_eq!(code("[1,2]"), Code::InvalidRequest);
        assert_eq!(
            code(r#"{"component":"core","action":"health"}"#),
            Code::MissingField
        );
        assert_eq!(
            code(r#"{"component":"core","action":"health","request_id":7}"#),
            Code::WrongType
        );
        assert_eq!(
            code(r#"{"component":"nas","action":"health","request_id":"a"}"#),
            Code::UnknownComponent
        );
        assert_eq!(
            code(r#"{"component":"core","action":"reboot","request_id":"a"}"#),
            Code::UnknownAction
        );
        assert_eq!(
            code(r#"{"component":"core","action":"update","request_id":"a"}"#),
            Code::MissingField
        );
        assert_eq!(
            code(r#"{"component":"core","action":"update","version":"--help","request_id":"a"}"#),
            Code::InvalidVersion
        );
        assert_eq!(
            code(r#"{"component":"core","action":"health","version":"1.0","request_id":"a"}"#),
            Code::UnexpectedVersion
        );
        assert_eq!(
            code(r#"{"component":"core","action":"health","request_id":"a","timestamp":5}"#),
            Code::WrongType
        );
    }

    #[test]
    fn a_refusal_keeps_the_id_and_context_it_could_read() {
        let r = parse(r#"{"component":"core","action":"reboot","request_id":"abc"}"#).unwrap_err();
        assert_eq!(r.id.unwrap().as_str(), "abc");
        assert_eq!(r.component.as_deref(), Some("core"));
        assert_eq!(r.action.as_deref(), Some("reboot"));
    }

    #[test]
    fn printable_escapes_control_characters_and_caps_length() {
        assert_eq!(printable("a\nb\u{1b}"), "a\\nb\\u{1b}");
        assert_eq!(printable(&"x".repeat(100)).chars().count(), 81);
    }
}
