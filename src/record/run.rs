//! What the records say about a request and its run: [`Accepted`] (`request.json`: the
//! request as it was taken) and [`RunSpec`] (`run.json`: what its monitor runs, and until when).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::request::{Action, Request, RequestId, Version};
use crate::runner::Invocation;

/// The accepted request, as the record keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accepted {
    pub request_id: String,
    pub component: String,
    pub action: String,
    pub version: Option<String>,
    /// The spool it was dropped into (`[spools.NAME]`); empty for the main `[spool]`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub spool: String,
    /// Name of the request file in `requests/` (removed once answered).
    pub file_name: String,
    pub owner_uid: u32,
    /// Nanoseconds since the epoch; orders the queue after a restart.
    pub accepted_at_ns: u128,
    /// The request's `not_before` (RFC 3339), if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// A multi-component update: `[component, version]` in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<(String, String)>,
}

impl Accepted {
    pub fn new(request: &Request, spool: &str, file_name: &str, owner_uid: u32) -> Self {
        Self {
            // The main spool is recorded as "" (records written before there were others).
            spool: if spool == crate::config::MAIN_SPOOL {
                String::new()
            } else {
                spool.to_owned()
            },
            request_id: request.id.to_string(),
            component: request.component.clone(),
            action: request.action.to_string(),
            version: request.version.as_ref().map(|v| v.as_str().to_owned()),
            file_name: file_name.to_owned(),
            owner_uid,
            accepted_at_ns: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
            not_before: request.not_before.map(|t| t.to_string()),
            batch: request
                .batch
                .iter()
                .map(|m| (m.component.clone(), m.version.as_str().to_owned()))
                .collect(),
        }
    }

    /// The request again, re-checked (a record is our own file, but a checked type is cheap).
    pub fn request(&self) -> Option<Request> {
        Some(Request {
            id: RequestId::parse(&self.request_id).ok()?,
            component: self.component.clone(),
            action: Action::parse(&self.action)?,
            version: match &self.version {
                Some(v) => Some(Version::parse(v).ok()?),
                None => None,
            },
            dry_run: false, // dry runs are answered at once, never recorded
            not_before: match &self.not_before {
                Some(t) => Some(t.parse().ok()?),
                None => None,
            },
            batch: self
                .batch
                .iter()
                .map(|(component, version)| {
                    Some(crate::request::Member {
                        component: component.clone(),
                        version: Version::parse(version).ok()?,
                    })
                })
                .collect::<Option<_>>()?,
        })
    }
}

/// What a monitor runs, written before it starts. The deadline is on the monotonic clock,
/// which all processes share until the next boot, so a timeout survives coordinator restarts
/// and is immune to wall-clock jumps (a Pi without RTC jumps when NTP syncs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub invocation: Invocation,
    pub boot_id: String,
    pub deadline_monotonic_ns: u128,
    pub started_at: SystemTime,
    /// Where the monitor writes in-progress statuses, and for whom.
    pub status_dir: std::path::PathBuf,
    /// `[spool] progress_in_status`: progress goes into the status file itself.
    #[serde(default)]
    pub progress_in_status: bool,
    pub owner_uid: u32,
    pub accepted: Accepted,
    /// The limits configured for the script.
    #[serde(default)]
    pub limits: crate::limits::Limits,
    /// What the coordinator could enforce, and how (the monitor runs inside that scope).
    #[serde(default)]
    pub applied: Option<crate::limits::Applied>,
    /// For a health-gated update: the health check and rollback that follow `update.sh`.
    #[serde(default)]
    pub procedure: Option<crate::procedure::Procedure>,
    /// A multi-component update: every component's update, in order (`invocation` is the
    /// first one's, for messages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<crate::procedure::ComponentUpdate>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accepted_batch_with_not_before_survives_its_record() {
        let request = Request::parse(
            br#"{"action":"update","components":{"remote":"1.0","core":"2.0"},"request_id":"b","not_before":"2026-11-28T02:00:00Z"}"#,
            ["remote", "core"],
        )
        .unwrap();
        let accepted = Accepted::new(&request, "main", "b.json", 1000);
        let again: Accepted =
            serde_json::from_slice(&serde_json::to_vec(&accepted).unwrap()).unwrap();
        assert_eq!(again.request().unwrap(), request);
    }
}
