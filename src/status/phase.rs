//! The status's `phase`: where a request is. Its own file because the coordinator sets some
//! phases itself and takes others as text from the scripts it runs, and both must read the
//! same on the wire (docs/protocol.md#lifecycle-and-phases).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a request is, as its status's `phase` says.
///
/// The phases the coordinator sets itself are variants. Between `running` and the end, the
/// phase is whatever the script last announced on a `PHASE:<name>` line, or what the monitor
/// calls a step of a health-gated or multi-component update (`health_check 1/3`,
/// `rolling_back`, `updating remote`): free text, kept as [`Phase::Named`]. A script that
/// announces one of the coordinator's own names (`PHASE:running`) gets that variant, so the
/// text on the wire and every comparison stay what they were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// In progress: accepted, waiting for its turn.
    Queued,
    /// In progress: waiting for its maintenance window or its `not_before`.
    Scheduled,
    /// In progress: an update or rollback waiting for a slot of its fleet group's semaphore
    /// in etcd (`fleet_slot` says why).
    WaitingForSlot,
    /// In progress: the script started and has not announced a phase yet.
    Running,
    /// Final: the script (or the whole procedure) succeeded.
    Done,
    /// Final: the script failed, timed out, was killed or interrupted, or could not start.
    Failed,
    /// Final: the request was refused; nothing ran.
    Rejected,
    /// In progress: a phase the script announced, or a step of a procedure the monitor runs.
    #[serde(untagged)]
    Named(String),
}

impl Phase {
    /// The wire text.
    pub fn as_str(&self) -> &str {
        match self {
            Phase::Queued => "queued",
            Phase::Scheduled => "scheduled",
            Phase::WaitingForSlot => "waiting_for_slot",
            Phase::Running => "running",
            Phase::Done => "done",
            Phase::Failed => "failed",
            Phase::Rejected => "rejected",
            Phase::Named(name) => name,
        }
    }

    /// `done` for a success, `failed` otherwise.
    pub fn ended(success: bool) -> Phase {
        if success { Phase::Done } else { Phase::Failed }
    }
}

impl From<String> for Phase {
    /// The coordinator's own phase of that name, else the text as a named phase.
    fn from(text: String) -> Phase {
        let own = [
            Phase::Queued,
            Phase::Scheduled,
            Phase::WaitingForSlot,
            Phase::Running,
            Phase::Done,
            Phase::Failed,
            Phase::Rejected,
        ];
        own.into_iter()
            .find(|phase| phase.as_str() == text)
            .unwrap_or(Phase::Named(text))
    }
}

impl From<&str> for Phase {
    fn from(text: &str) -> Phase {
        Phase::from(text.to_owned())
    }
}

/// An unset phase is the empty text, as a status's default always had.
impl Default for Phase {
    fn default() -> Phase {
        Phase::Named(String::new())
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coordinators_phases_and_script_names_read_back_as_the_same_text() {
        for text in [
            "queued",
            "scheduled",
            "waiting_for_slot",
            "running",
            "done",
            "failed",
            "rejected",
            "downloading",
        ] {
            let phase = Phase::from(text.to_owned());
            assert_eq!(phase.as_str(), text);
            let json = serde_json::to_string(&phase).unwrap();
            assert_eq!(serde_json::from_str::<Phase>(&json).unwrap(), phase);
        }
        assert_eq!(Phase::from("running"), Phase::Running);
        assert_eq!(Phase::from("waiting_for_slot"), Phase::WaitingForSlot);
        assert_eq!(
            Phase::from("downloading"),
            Phase::Named("downloading".into())
        );
    }
}
