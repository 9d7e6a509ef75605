//! The status's `code`: why a request failed, as a stable machine-readable word. Its own file
//! because every layer produces codes (request parsing, spool reads, signatures, trust, the
//! daemon's admission, script runs, cancels) and all of them must agree with
//! docs/protocol.md#codes and the `code` enum of docs/schema/status.schema.json, which
//! tests/schema.rs compares with [`Code::ALL`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a request failed. Serialized as its name in snake_case, which [`Code::as_str`] also
/// gives (the table in docs/protocol.md#codes says what each means to a client).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    // Refusals of the request document (`request::RequestError`).
    InvalidJson,
    InvalidRequest,
    MissingField,
    WrongType,
    InvalidRequestId,
    UnknownComponent,
    UnknownAction,
    InvalidVersion,
    UnexpectedVersion,
    InvalidNotBefore,
    InvalidBatch,
    // Refusals of the request file (`spool::ReadError`, the daemon's intake).
    Unreadable,
    NotARegularFile,
    TooLarge,
    WriterNotAllowed,
    InvalidFileName,
    // Refusals by signature (`signature::SignatureError`).
    Unsigned,
    BadSignature,
    StaleRequest,
    // Refusals by the daemon's admission and spool policy.
    QueueFull,
    RateLimited,
    NotAllowedHere,
    // Refusals when the request's turn comes (`trust::Untrusted`, the disk check).
    ScriptUntrusted,
    ScriptMissing,
    InsufficientDisk,
    /// With `[fleet]`: the fleet's rollout of this version halted (too many hosts failed it)
    /// or was aborted before this host's turn.
    RolloutHalted,
    // Failures of a run.
    ScriptNotExecutable,
    SpawnFailed,
    ScriptFailed,
    ScriptKilled,
    Timeout,
    Interrupted,
    // Health-gated updates (see `procedure::UpdateOutcome`).
    RolledBack,
    RollbackFailed,
    HealthCheckFailed,
    // Cancels: the cancelled request, and the answers to a cancel request.
    Cancelled,
    CancelFailed,
    AlreadyFinished,
    UnknownTarget,
    /// A code this version does not know, read from a status a newer version wrote: the
    /// protocol tells readers to treat it as a generic failure. Never written by this version.
    #[serde(untagged)]
    Unknown(String),
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Code {
    /// Every code this version writes (all but [`Code::Unknown`]).
    pub const ALL: [Code; 39] = [
        Code::InvalidJson,
        Code::InvalidRequest,
        Code::MissingField,
        Code::WrongType,
        Code::InvalidRequestId,
        Code::UnknownComponent,
        Code::UnknownAction,
        Code::InvalidVersion,
        Code::UnexpectedVersion,
        Code::InvalidNotBefore,
        Code::InvalidBatch,
        Code::Unreadable,
        Code::NotARegularFile,
        Code::TooLarge,
        Code::WriterNotAllowed,
        Code::InvalidFileName,
        Code::Unsigned,
        Code::BadSignature,
        Code::StaleRequest,
        Code::QueueFull,
        Code::RateLimited,
        Code::NotAllowedHere,
        Code::ScriptUntrusted,
        Code::ScriptMissing,
        Code::InsufficientDisk,
        Code::RolloutHalted,
        Code::ScriptNotExecutable,
        Code::SpawnFailed,
        Code::ScriptFailed,
        Code::ScriptKilled,
        Code::Timeout,
        Code::Interrupted,
        Code::RolledBack,
        Code::RollbackFailed,
        Code::HealthCheckFailed,
        Code::Cancelled,
        Code::CancelFailed,
        Code::AlreadyFinished,
        Code::UnknownTarget,
    ];

    /// The wire text, as the status file and the audit log carry it.
    pub fn as_str(&self) -> &str {
        match self {
            Code::InvalidJson => "invalid_json",
            Code::InvalidRequest => "invalid_request",
            Code::MissingField => "missing_field",
            Code::WrongType => "wrong_type",
            Code::InvalidRequestId => "invalid_request_id",
            Code::UnknownComponent => "unknown_component",
            Code::UnknownAction => "unknown_action",
            Code::InvalidVersion => "invalid_version",
            Code::UnexpectedVersion => "unexpected_version",
            Code::InvalidNotBefore => "invalid_not_before",
            Code::InvalidBatch => "invalid_batch",
            Code::Unreadable => "unreadable",
            Code::NotARegularFile => "not_a_regular_file",
            Code::TooLarge => "too_large",
            Code::WriterNotAllowed => "writer_not_allowed",
            Code::InvalidFileName => "invalid_file_name",
            Code::Unsigned => "unsigned",
            Code::BadSignature => "bad_signature",
            Code::StaleRequest => "stale_request",
            Code::QueueFull => "queue_full",
            Code::RateLimited => "rate_limited",
            Code::NotAllowedHere => "not_allowed_here",
            Code::ScriptUntrusted => "script_untrusted",
            Code::ScriptMissing => "script_missing",
            Code::InsufficientDisk => "insufficient_disk",
            Code::RolloutHalted => "rollout_halted",
            Code::ScriptNotExecutable => "script_not_executable",
            Code::SpawnFailed => "spawn_failed",
            Code::ScriptFailed => "script_failed",
            Code::ScriptKilled => "script_killed",
            Code::Timeout => "timeout",
            Code::Interrupted => "interrupted",
            Code::RolledBack => "rolled_back",
            Code::RollbackFailed => "rollback_failed",
            Code::HealthCheckFailed => "health_check_failed",
            Code::Cancelled => "cancelled",
            Code::CancelFailed => "cancel_failed",
            Code::AlreadyFinished => "already_finished",
            Code::UnknownTarget => "unknown_target",
            Code::Unknown(text) => text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_itself_and_unknown_ones_keep_their_text() {
        let mut seen = std::collections::BTreeSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str().to_owned()), "{code} twice");
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{code}\""));
            assert_eq!(serde_json::from_str::<Code>(&json).unwrap(), code);
        }
        let newer: Code = serde_json::from_str("\"made_up\"").unwrap();
        assert_eq!(newer, Code::Unknown("made_up".into()));
        assert_eq!(serde_json::to_string(&newer).unwrap(), "\"made_up\"");
    }
}
