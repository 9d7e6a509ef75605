//! The exit record (`exits/<id>.json`): how a script ended, written by its monitor, turned
//! back into the runner's result by whichever coordinator concludes the run.

use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runner::{Captured, Exit, Outcome, Stopped};

/// How the script ended, written by the monitor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Stopped on request (the monitor got SIGTERM).
    pub stopped: bool,
    /// The script could not be started at all.
    pub spawn_error: Option<String>,
    pub spawn_error_kind: Option<String>,
    pub duration_ms: u64,
    pub last_phase: crate::status::Phase,
    pub stdout: String,
    pub stdout_truncated: bool,
    pub stderr: String,
    pub stderr_truncated: bool,
    /// What the run used, and the limits that applied.
    #[serde(default)]
    pub usage: Option<crate::limits::Usage>,
    /// A health-gated update: every script run, and how it ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<crate::procedure::Step>,
    #[serde(default)]
    pub outcome: Option<crate::procedure::UpdateOutcome>,
    #[serde(default)]
    pub outcome_message: Option<String>,
    /// A multi-component update: each component's outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<crate::procedure::MemberOutcome>,
    #[serde(default)]
    pub limits: Option<crate::limits::Applied>,
}

impl ExitRecord {
    pub fn from_result(result: &io::Result<Outcome>, last_phase: &crate::status::Phase) -> Self {
        let mut record = ExitRecord {
            exit_code: None,
            signal: None,
            timed_out: false,
            stopped: false,
            spawn_error: None,
            spawn_error_kind: None,
            duration_ms: 0,
            last_phase: last_phase.clone(),
            stdout: String::new(),
            stdout_truncated: false,
            stderr: String::new(),
            stderr_truncated: false,
            usage: None,
            limits: None,
            steps: Vec::new(),
            outcome: None,
            outcome_message: None,
            members: Vec::new(),
        };
        match result {
            Err(e) => {
                record.spawn_error = Some(e.to_string());
                record.spawn_error_kind = Some(format!("{:?}", e.kind()));
            }
            Ok(o) => {
                match o.exit {
                    Exit::Code(c) => record.exit_code = Some(c),
                    Exit::Signal(s) => record.signal = Some(s),
                }
                record.timed_out = o.stopped == Some(Stopped::TimedOut);
                record.stopped = o.stopped == Some(Stopped::Shutdown);
                record.duration_ms = o.duration.as_millis() as u64;
                record.stdout = o.stdout.text.clone();
                record.stdout_truncated = o.stdout.truncated;
                record.stderr = o.stderr.text.clone();
                record.stderr_truncated = o.stderr.truncated;
            }
        }
        record
    }

    /// Back to the runner's result type, for [`crate::report::finished`].
    pub fn to_result(&self) -> io::Result<Outcome> {
        if let Some(message) = &self.spawn_error {
            let kind = match self.spawn_error_kind.as_deref() {
                Some("NotFound") => io::ErrorKind::NotFound,
                Some("PermissionDenied") => io::ErrorKind::PermissionDenied,
                _ => io::ErrorKind::Other,
            };
            return Err(io::Error::new(kind, message.clone()));
        }
        let exit = match (self.exit_code, self.signal) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            (None, None) => Exit::Code(-1),
        };
        let stopped = if self.timed_out {
            Some(Stopped::TimedOut)
        } else if self.stopped {
            Some(Stopped::Shutdown)
        } else {
            None
        };
        let captured = |text: &str, truncated| Captured {
            text: text.to_owned(),
            truncated,
            total_bytes: text.len() as u64,
        };
        Ok(Outcome {
            exit,
            stopped,
            duration: Duration::from_millis(self.duration_ms),
            stdout: captured(&self.stdout, self.stdout_truncated),
            stderr: captured(&self.stderr, self.stderr_truncated),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_record_round_trips_to_the_runner_result() {
        let outcome = Outcome {
            exit: Exit::Signal(9),
            stopped: Some(Stopped::TimedOut),
            duration: Duration::from_millis(1500),
            stdout: Captured {
                text: "out".into(),
                truncated: true,
                total_bytes: 99,
            },
            stderr: Captured::default(),
        };
        let record =
            ExitRecord::from_result(&Ok(outcome), &crate::status::Phase::from("downloading"));
        let back = record.to_result().unwrap();
        assert_eq!(
            (back.exit, back.stopped, back.duration),
            (
                Exit::Signal(9),
                Some(Stopped::TimedOut),
                Duration::from_millis(1500)
            )
        );
        assert!(back.stdout.truncated);
        let missing = ExitRecord::from_result(
            &Err(io::ErrorKind::NotFound.into()),
            &crate::status::Phase::Running,
        );
        assert_eq!(
            missing.to_result().unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
