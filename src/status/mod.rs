//! Status files: the [`Status`] type *is* the file format. Its states are typed ([`Phase`],
//! [`Code`], each in its own file); [`dir`] reads and writes them in `status/`, through
//! [`atomic`] writes.
//!
//! `status/<request_id>.json` is written once, with the final answer: clients written to seed
//! 001's protocol take the first status they can parse as the answer. Progress (queued, queue
//! position, scheduled, phases, percent) goes beside it, to `status/<request_id>.progress.json`,
//! where only clients that know about it look; it is removed when the answer is written. With
//! `[spool] progress_in_status` the progress record is `status/<request_id>.json` itself
//! (`message == "in_progress"`, `success: null`), for deployments whose clients all keep
//! polling past such records.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

mod atomic;
mod code;
mod dir;
mod phase;

pub(crate) use atomic::{Durability, remove_temp_files, write_atomic};
pub use code::Code;
pub(crate) use dir::{Progress, StatusDir};
pub use phase::Phase;

/// The `message` of every non-final status.
pub const IN_PROGRESS: &str = "in_progress";

/// One status file. Optional fields are omitted when unset, so old clients see the fields they
/// know (`success`, `message`, `output`, `error`, `phase`) and new ones see more; the first
/// version's `component`, `action` and `success` are always there, `null` when unset.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub request_id: String,
    #[serialize_always]
    pub component: Option<String>,
    #[serialize_always]
    pub action: Option<String>,
    pub version: Option<String>,
    /// `null` while in progress; `true`/`false` when final.
    #[serialize_always]
    pub success: Option<bool>,
    /// `"in_progress"` while running; a human sentence when final.
    pub message: String,
    /// Stable machine code of a failure (`invalid_json`, `timeout`, `script_failed`, ...).
    pub code: Option<Code>,
    /// `queued`, `running`, the script's own `PHASE:` names, then `done` or `failed`.
    pub phase: Phase,
    /// Tail of the script's stdout.
    pub output: String,
    /// Tail of the script's stderr.
    pub error: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub output_truncated: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub error_truncated: bool,
    pub exit_code: Option<i32>,
    /// Signal number that ended the script, when it did not exit by itself.
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub timed_out: bool,
    pub duration_ms: Option<u64>,
    /// The kernel's OOM killer killed a process of the run (its memory limit was reached).
    #[serde(default, skip_serializing_if = "is_false")]
    pub oom_killed: bool,
    /// Peak memory of the run, in bytes (see `limits.mechanism` for how it was measured).
    pub memory_peak_bytes: Option<u64>,
    /// CPU time (user + system) of the run, in milliseconds.
    pub cpu_time_ms: Option<u64>,
    /// The request was a dry run: nothing ran; `message` says what would have.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
    /// A health-gated update: `updated`, `rolled_back`, `rollback_failed` or `failed`.
    pub outcome: Option<crate::procedure::UpdateOutcome>,
    /// A health-gated update: each script run (update, health checks, rollback) and its result.
    pub steps: Option<Vec<crate::procedure::Step>>,
    /// The resource limits that applied, by which mechanism, and those not enforced.
    pub limits: Option<crate::limits::Applied>,
    pub started_at: Option<String>,
    /// In progress: percent done, from the script's `PROGRESS:<n>` lines.
    pub progress: Option<u8>,
    /// In progress: the last lines of output (stdout and stderr, as they came).
    pub log_tail: Option<String>,
    /// In progress: when this status was last rewritten (a heartbeat while output flows).
    pub updated_at: Option<String>,
    /// Queued: how many requests are ahead of this one, plus one (1 = next). Refreshed at
    /// most once a second, for the first few in line only; further back it may be stale (too
    /// high, never too low).
    pub queue_position: Option<usize>,
    /// Phase `scheduled`: when the request will start (RFC 3339, UTC): its `not_before`, or
    /// the next opening of its component's maintenance window.
    pub scheduled_for: Option<String>,
    /// Phase `scheduled` for a fleet rollout's wave: the rollout and this host's wave.
    pub rollout_id: Option<String>,
    pub rollout_wave: Option<usize>,
    /// Phase `waiting_for_slot`: the fleet group, its slots and holders, and why it waits.
    pub fleet_slot: Option<FleetSlot>,
    /// A multi-component update: each component's version and outcome, in order.
    pub components: Option<Vec<crate::procedure::MemberOutcome>>,
    /// RFC 3339, UTC, when this status was written.
    pub timestamp: String,
}

/// What an update waiting for a fleet slot shows (phase `waiting_for_slot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetSlot {
    pub group: String,
    /// Hosts of the group holding a slot now (0 while etcd cannot be reached).
    pub holders: usize,
    pub total_slots: u64,
    /// Why it waits, in a sentence.
    pub reason: String,
}

fn is_false(b: &bool) -> bool {
    !b
}

impl Status {
    /// Final: the answer (`success` set, `message` a sentence), not a progress record.
    pub fn is_final(&self) -> bool {
        self.message != IN_PROGRESS
    }
}

/// RFC 3339 with zone (UTC), millisecond precision.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_in_progress_status_has_null_success_and_is_not_final() {
        let s = Status {
            request_id: "a".into(),
            message: IN_PROGRESS.into(),
            phase: Phase::Queued,
            ..Default::default()
        };
        assert!(!s.is_final());
        let json: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(json["success"], serde_json::Value::Null);
        assert_eq!(json["phase"], "queued");
        // Fields the existing client reads are always present.
        for key in [
            "success",
            "message",
            "output",
            "error",
            "phase",
            "timestamp",
        ] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
    }

    #[test]
    fn an_unset_optional_field_is_left_out_but_the_first_versions_are_null() {
        let json = serde_json::to_string(&Status::default()).unwrap();
        assert_eq!(
            json,
            r#"{"request_id":"","component":null,"action":null,"success":null,"message":"","phase":"","output":"","error":"","timestamp":""}"#
        );
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Status::default());
    }
}
