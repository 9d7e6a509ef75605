//! The health-gated update: after `update.sh` succeeds, `health-check.sh` must pass (with
//! retries and an interval); if it never does, or if `update.sh` fails, `rollback.sh` runs and
//! the health check runs again. The run's monitor carries the whole procedure out ([`run`]),
//! so it survives coordinator restarts like a single script. This module holds the
//! procedure's description, as the run record keeps it, and what its steps mean for the answer
//! ([`outcome`], [`batch_outcome`]), which is pure.

mod run;

pub use run::Reports;
pub(crate) use run::{gate, run_batch};

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runner::{Exit, Invocation, Outcome};

/// What to do after `update.sh`, recorded in the run record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Procedure {
    pub health: Invocation,
    pub rollback: Invocation,
    /// Health check attempts after an update (and after a rollback).
    pub health_retries: u32,
    pub health_interval: Duration,
}

/// How a health-gated update ended. `success` is true only for `Updated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateOutcome {
    /// `update.sh` succeeded and the health check passed.
    Updated,
    /// The update failed (or never became healthy); `rollback.sh` restored a healthy state.
    RolledBack,
    /// The rollback failed too, or the component is not healthy after it: needs a human.
    RollbackFailed,
    /// The update failed and no rollback was attempted (stopped, or auto_rollback = false).
    Failed,
}

impl UpdateOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Updated => "updated",
            Self::RolledBack => "rolled_back",
            Self::RollbackFailed => "rollback_failed",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for UpdateOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One component of a multi-component update, as the run record keeps it: its update and,
/// unless it has no health gate (auto_rollback = false), its health check and rollback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentUpdate {
    pub component: String,
    pub version: String,
    pub update: Invocation,
    pub procedure: Option<Procedure>,
}

/// How one component of a multi-component update ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberOutcome {
    pub component: String,
    pub version: String,
    pub outcome: MemberResult,
}

/// How one component of a multi-component update ended: as a single update does, or not at
/// all. On the wire the outcome's own name, or `not_started`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberResult {
    /// An earlier component failed first (or the run was stopped before this one).
    NotStarted,
    /// Its update ran (and its health gate, if it has one).
    #[serde(untagged)]
    Ended(UpdateOutcome),
}

impl MemberResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "not_started",
            Self::Ended(outcome) => outcome.as_str(),
        }
    }
}

/// One script run within the procedure, as the status reports it.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// `update`, `health` or `rollback`.
    pub step: String,
    /// In a multi-component update: the component this step ran for.
    pub component: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    pub duration_ms: u64,
    /// The last lines of its stdout and stderr.
    pub output_tail: String,
    pub error_tail: String,
}

/// Bytes of each stream a step keeps (the update's full tails are in `output`/`error`).
const STEP_TAIL: usize = 2048;

impl Step {
    pub fn of(step: &str, result: &std::io::Result<Outcome>) -> Self {
        let tail = |text: &str| {
            let start = text.len().saturating_sub(STEP_TAIL);
            let start = (start..=text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len());
            text[start..].to_owned()
        };
        match result {
            Ok(o) => Step {
                step: step.to_owned(),
                component: None,
                exit_code: match o.exit {
                    Exit::Code(c) => Some(c),
                    Exit::Signal(_) => None,
                },
                signal: match o.exit {
                    Exit::Signal(s) => Some(s),
                    Exit::Code(_) => None,
                },
                timed_out: o.stopped == Some(crate::runner::Stopped::TimedOut),
                duration_ms: o.duration.as_millis() as u64,
                output_tail: tail(&o.stdout.text),
                error_tail: tail(&o.stderr.text),
            },
            Err(e) => Step {
                step: step.to_owned(),
                error_tail: format!("cannot start: {e}"),
                ..Default::default()
            },
        }
    }

    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }
}

/// The outcome and a sentence for the final status, from the steps that ran.
pub fn outcome(steps: &[Step], version: &str) -> (UpdateOutcome, String) {
    let update_ok = steps.first().is_some_and(Step::succeeded);
    let healths_after_update = steps
        .iter()
        .skip(1)
        .take_while(|s| s.step == "health")
        .count();
    let healthy_after_update = steps
        .iter()
        .skip(1)
        .take_while(|s| s.step == "health")
        .any(Step::succeeded);
    let rollback = steps.iter().position(|s| s.step == "rollback");
    let after_rollback = |i: usize| {
        steps[i + 1..]
            .iter()
            .any(|s| s.step == "health" && s.succeeded())
    };
    match (update_ok, healthy_after_update, rollback) {
        (true, true, _) => (
            UpdateOutcome::Updated,
            if healths_after_update > 1 {
                format!(
                    "Updated to {version}; the health check passed on attempt {healths_after_update}"
                )
            } else {
                format!("Updated to {version}; the health check passed")
            },
        ),
        (_, _, None) => (
            UpdateOutcome::Failed,
            if update_ok {
                format!(
                    "Updated to {version}, but the health check never passed ({healths_after_update} attempts) and no rollback was attempted"
                )
            } else {
                format!("The update to {version} failed and no rollback was attempted")
            },
        ),
        (_, _, Some(i)) => {
            let why = if update_ok {
                format!(
                    "the health check failed {healths_after_update} time(s) after the update to {version}"
                )
            } else {
                format!("update.sh failed for {version}")
            };
            if !steps[i].succeeded() {
                (
                    UpdateOutcome::RollbackFailed,
                    format!("{why}; the rollback FAILED too: the component needs attention"),
                )
            } else if after_rollback(i) {
                (
                    UpdateOutcome::RolledBack,
                    format!("{why}; rolled back, and the health check passes again"),
                )
            } else {
                (
                    UpdateOutcome::RollbackFailed,
                    format!(
                        "{why}; rolled back, but the health check still fails: the component needs attention"
                    ),
                )
            }
        }
    }
}

/// A multi-component update's outcome and sentence, from its components' outcomes.
/// `failure` is the failing component's own sentence (from [`outcome`]), if one failed.
pub fn batch_outcome(members: &[MemberOutcome], failure: Option<&str>) -> (UpdateOutcome, String) {
    let list = |outcome: MemberResult| {
        members
            .iter()
            .filter(|m| m.outcome == outcome)
            .map(|m| format!("{} {}", m.component, m.version))
            .collect::<Vec<_>>()
    };
    let (updated, rolled_back, rollback_failed, not_started) = (
        list(MemberResult::Ended(UpdateOutcome::Updated)),
        list(MemberResult::Ended(UpdateOutcome::RolledBack)),
        list(MemberResult::Ended(UpdateOutcome::RollbackFailed)),
        list(MemberResult::NotStarted),
    );
    if updated.len() == members.len() {
        return (
            UpdateOutcome::Updated,
            format!("Updated {}; every health check passed", updated.join(", ")),
        );
    }
    let mut parts = vec![failure.unwrap_or("the update failed").to_owned()];
    if !rolled_back.is_empty() {
        parts.push(format!(
            "rolled back (healthy again): {}",
            rolled_back.join(", ")
        ));
    }
    if !rollback_failed.is_empty() {
        parts.push(format!(
            "rollback FAILED (needs attention): {}",
            rollback_failed.join(", ")
        ));
    }
    if !updated.is_empty() {
        parts.push(format!(
            "left updated (no rollback configured): {}",
            updated.join(", ")
        ));
    }
    if !not_started.is_empty() {
        parts.push(format!("not started: {}", not_started.join(", ")));
    }
    let outcome = if !rollback_failed.is_empty() {
        UpdateOutcome::RollbackFailed
    } else if updated.is_empty()
        && members
            .iter()
            .any(|m| m.outcome == MemberResult::Ended(UpdateOutcome::RolledBack))
    {
        UpdateOutcome::RolledBack
    } else {
        UpdateOutcome::Failed
    };
    (outcome, parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(component: &str, outcome: MemberResult) -> MemberOutcome {
        MemberOutcome {
            component: component.into(),
            version: "1.0".into(),
            outcome,
        }
    }

    #[test]
    fn a_members_result_is_its_outcome_or_not_started_on_the_wire() {
        for (result, text) in [
            (MemberResult::Ended(UpdateOutcome::Updated), "updated"),
            (
                MemberResult::Ended(UpdateOutcome::RolledBack),
                "rolled_back",
            ),
            (
                MemberResult::Ended(UpdateOutcome::RollbackFailed),
                "rollback_failed",
            ),
            (MemberResult::Ended(UpdateOutcome::Failed), "failed"),
            (MemberResult::NotStarted, "not_started"),
        ] {
            assert_eq!(result.as_str(), text);
            let json = serde_json::to_string(&result).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<MemberResult>(&json).unwrap(), result);
        }
    }

    #[test]
    fn a_batch_succeeds_only_when_every_component_was_updated() {
        let (o, m) = batch_outcome(
            &[
                member("remote", MemberResult::Ended(UpdateOutcome::Updated)),
                member("core", MemberResult::Ended(UpdateOutcome::Updated)),
            ],
            None,
        );
        assert_eq!(o, UpdateOutcome::Updated);
        assert_eq!(m, "Updated remote 1.0, core 1.0; every health check passed");
        let (o, m) = batch_outcome(
            &[
                member("remote", MemberResult::Ended(UpdateOutcome::RolledBack)),
                member("core", MemberResult::Ended(UpdateOutcome::RolledBack)),
                member("scheduler", MemberResult::NotStarted),
            ],
            Some("core: the health check failed"),
        );
        assert_eq!(o, UpdateOutcome::RolledBack);
        assert_eq!(
            m,
            "core: the health check failed; rolled back (healthy again): remote 1.0, core 1.0; not started: scheduler 1.0"
        );
        let (o, _) = batch_outcome(
            &[
                member("remote", MemberResult::Ended(UpdateOutcome::RollbackFailed)),
                member("core", MemberResult::Ended(UpdateOutcome::RolledBack)),
            ],
            None,
        );
        assert_eq!(o, UpdateOutcome::RollbackFailed);
        let (o, m) = batch_outcome(
            &[
                member("remote", MemberResult::Ended(UpdateOutcome::Updated)),
                member("core", MemberResult::Ended(UpdateOutcome::Failed)),
            ],
            None,
        );
        assert_eq!(o, UpdateOutcome::Failed);
        assert!(
            m.contains("left updated (no rollback configured): remote 1.0"),
            "{m}"
        );
    }

    fn step(name: &str, code: i32) -> Step {
        Step {
            step: name.into(),
            exit_code: Some(code),
            ..Default::default()
        }
    }

    #[test]
    fn outcomes_follow_the_steps() {
        let (o, m) = outcome(&[step("update", 0), step("health", 0)], "1.4.2");
        assert_eq!(
            (o, m.as_str()),
            (
                UpdateOutcome::Updated,
                "Updated to 1.4.2; the health check passed"
            )
        );
        let (o, m) = outcome(
            &[
                step("update", 0),
                step("health", 1),
                step("health", 1),
                step("health", 0),
            ],
            "1.4.2",
        );
        assert_eq!(o, UpdateOutcome::Updated);
        assert!(m.contains("attempt 3"), "{m}");
        let (o, _) = outcome(
            &[
                step("update", 0),
                step("health", 1),
                step("rollback", 0),
                step("health", 0),
            ],
            "1.4.2",
        );
        assert_eq!(o, UpdateOutcome::RolledBack);
        let (o, m) = outcome(
            &[step("update", 3), step("rollback", 0), step("health", 0)],
            "1.4.2",
        );
        assert_eq!(o, UpdateOutcome::RolledBack);
        assert!(m.starts_with("update.sh failed for 1.4.2"), "{m}");
        let (o, _) = outcome(&[step("update", 3), step("rollback", 1)], "1.4.2");
        assert_eq!(o, UpdateOutcome::RollbackFailed);
        let (o, _) = outcome(
            &[
                step("update", 0),
                step("health", 1),
                step("rollback", 0),
                step("health", 1),
            ],
            "1.4.2",
        );
        assert_eq!(o, UpdateOutcome::RollbackFailed);
        let (o, _) = outcome(&[step("update", 3)], "1.4.2");
        assert_eq!(o, UpdateOutcome::Failed);
    }
}
