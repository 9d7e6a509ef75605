//! Turns what happened to a request into the [`Status`] the client reads. Pure: no I/O.

use std::io;
use std::time::{Duration, SystemTime};

use crate::request::{Action, InvalidRequest, Request, RequestId};
use crate::runner::{Exit, Outcome, Stopped};
use crate::status::{Code, IN_PROGRESS, Phase, Status, now_rfc3339, rfc3339};

fn base(request: &Request) -> Status {
    Status {
        request_id: request.id.to_string(),
        component: Some(request.component_label()),
        action: Some(request.action.to_string()),
        version: request.version.as_ref().map(|v| v.as_str().to_owned()),
        timestamp: now_rfc3339(),
        ..Default::default()
    }
}

/// An in-progress status: `success: null`, `message: "in_progress"`.
pub fn in_progress(request: &Request, phase: Phase, started_at: Option<SystemTime>) -> Status {
    Status {
        success: None,
        message: IN_PROGRESS.into(),
        phase,
        started_at: started_at.map(rfc3339),
        ..base(request)
    }
}

/// Why a request is answered without running anything: a stable code, a human message, and
/// whatever could be read of the request to address the answer.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub id: Option<RequestId>,
    pub component: Option<String>,
    pub action: Option<String>,
    pub code: Code,
    pub message: String,
}

impl Refusal {
    pub fn of_request(request: &Request, code: Code, message: String) -> Self {
        Self {
            id: Some(request.id.clone()),
            component: Some(request.component_label()),
            action: Some(request.action.to_string()),
            code,
            message,
        }
    }
}

impl From<&InvalidRequest> for Refusal {
    fn from(rejection: &InvalidRequest) -> Self {
        Self {
            id: rejection.id.clone(),
            component: rejection.component.clone(),
            action: rejection.action.clone(),
            code: rejection.error.code(),
            message: format!("invalid request: {}", rejection.error),
        }
    }
}

/// The final status of a request that was refused before anything ran.
pub fn refused(id: &RequestId, refusal: &Refusal) -> Status {
    Status {
        request_id: id.to_string(),
        component: refusal.component.clone(),
        action: refusal.action.clone(),
        success: Some(false),
        message: refusal.message.clone(),
        code: Some(refusal.code.clone()),
        phase: Phase::Rejected,
        timestamp: now_rfc3339(),
        ..Default::default()
    }
}

/// The final status of a run whose monitor vanished (reboot, kill): nothing is known of how the
/// script ended, and it is not run again.
pub(crate) fn interrupted(request: &Request, started_at: SystemTime, message: String) -> Status {
    Status {
        success: Some(false),
        message,
        code: Some(Code::Interrupted),
        phase: Phase::Failed,
        started_at: Some(rfc3339(started_at)),
        ..base(request)
    }
}

/// The final status of a request cancelled before it ran.
pub fn cancelled(request: &Request, message: String) -> Status {
    Status {
        success: Some(false),
        message,
        code: Some(Code::Cancelled),
        phase: Phase::Failed,
        ..base(request)
    }
}

/// The answer to a cancel request itself.
pub fn cancel_answer(id: &RequestId, code: Option<Code>, message: String) -> Status {
    Status {
        request_id: id.to_string(),
        action: Some("cancel".into()),
        success: Some(code.is_none()),
        message,
        phase: if code.is_none() {
            Phase::Done
        } else {
            Phase::Rejected
        },
        code,
        timestamp: now_rfc3339(),
        ..Default::default()
    }
}

/// Details the final message mentions besides the outcome itself.
#[derive(Debug)]
pub struct RunContext<'a> {
    pub script: &'a str,
    pub started_at: SystemTime,
    pub last_phase: &'a Phase,
    pub timeout: Duration,
    pub kill_grace: Duration,
}

/// The final status of a script run (or of a failure to start it).
pub fn finished(request: &Request, ctx: &RunContext, result: &io::Result<Outcome>) -> Status {
    let mut status = Status {
        started_at: Some(rfc3339(ctx.started_at)),
        ..base(request)
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            let (code, hint) = match e.kind() {
                io::ErrorKind::NotFound => (Code::ScriptMissing, "install the component's scripts"),
                io::ErrorKind::PermissionDenied => {
                    (Code::ScriptNotExecutable, "chmod 755 the script")
                }
                _ => (Code::SpawnFailed, "see the coordinator's log"),
            };
            status.success = Some(false);
            status.code = Some(code);
            status.phase = Phase::Failed;
            status.message = format!("cannot start {}: {e}; {hint}", ctx.script);
            return status;
        }
    };
    status.output = outcome.stdout.text.clone();
    status.output_truncated = outcome.stdout.truncated;
    status.error = outcome.stderr.text.clone();
    status.error_truncated = outcome.stderr.truncated;
    status.duration_ms = Some(outcome.duration.as_millis() as u64);
    match outcome.exit {
        Exit::Code(c) => status.exit_code = Some(c),
        Exit::Signal(s) => status.signal = Some(s),
    }
    status.timed_out = outcome.stopped == Some(Stopped::TimedOut);
    let during = if *ctx.last_phase == Phase::Running {
        String::new()
    } else {
        format!(" (last phase: {})", ctx.last_phase)
    };

    let (code, message) = match (outcome.stopped, outcome.exit) {
        (None, Exit::Code(0)) => (None, success_message(request.action)),
        (None, Exit::Code(c)) => (
            Some(Code::ScriptFailed),
            format!("{} exited with code {c}{during}", ctx.script),
        ),
        (None, Exit::Signal(s)) => (
            Some(Code::ScriptKilled),
            format!("{} was killed by signal {s}{during}", ctx.script),
        ),
        (Some(Stopped::TimedOut), _) => (
            Some(Code::Timeout),
            format!(
                "{} did not finish within {} s and was stopped (SIGTERM to its process group, SIGKILL after {} s){during}",
                ctx.script,
                secs(ctx.timeout),
                secs(ctx.kill_grace)
            ),
        ),
        (Some(Stopped::Shutdown), _) => (
            Some(Code::Interrupted),
            format!(
                "{} was stopped before it finished (its monitor was told to stop){during}; submit the request again to retry",
                ctx.script
            ),
        ),
    };
    status.success = Some(code.is_none());
    status.phase = Phase::ended(code.is_none());
    status.code = code;
    status.message = message;
    status
}

/// Adds what the run used and the limits that applied; an OOM kill is named in the message.
pub(crate) fn add_usage(
    status: &mut Status,
    usage: Option<&crate::limits::Usage>,
    limits: Option<&crate::limits::Applied>,
) {
    if let Some(usage) = usage {
        status.memory_peak_bytes = usage.memory_peak_bytes;
        status.cpu_time_ms = usage.cpu_time_ms;
        status.oom_killed = usage.oom_killed;
    }
    status.limits = limits.cloned();
    if status.oom_killed && status.success != Some(true) {
        let max = limits
            .and_then(|l| l.enforced.memory_max)
            .map(|b| format!(" (memory_max {} MiB)", b / (1024 * 1024)))
            .unwrap_or_default();
        status.message = format!(
            "{}; the kernel's OOM killer stopped the run at its memory limit{max}",
            status.message
        );
    }
}

/// A health-gated update: the outcome decides success (only `updated` is a success).
pub fn add_procedure(
    status: &mut Status,
    outcome: Option<crate::procedure::UpdateOutcome>,
    message: Option<&str>,
    steps: &[crate::procedure::Step],
) {
    use crate::procedure::UpdateOutcome;
    let Some(outcome) = outcome else { return };
    status.outcome = Some(outcome);
    status.steps = Some(steps.to_vec());
    if let Some(message) = message {
        status.message = message.to_owned();
    }
    let updated = outcome == UpdateOutcome::Updated;
    status.success = Some(updated);
    status.phase = Phase::ended(updated);
    status.code = match outcome {
        UpdateOutcome::Updated => None,
        UpdateOutcome::RolledBack => Some(Code::RolledBack),
        UpdateOutcome::RollbackFailed => Some(Code::RollbackFailed),
        // Keep the update's own code (script_failed, timeout, ...).
        UpdateOutcome::Failed => status.code.take().or(Some(Code::HealthCheckFailed)),
    };
}

fn success_message(action: Action) -> String {
    match action {
        Action::Update => "Update completed successfully",
        Action::Rollback => "Rollback completed successfully",
        Action::Health => "Health check passed",
    }
    .into()
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

/// A request waiting for its turn, with its place in line (1 = next).
pub fn queued(request: &Request, position: usize) -> Status {
    Status {
        queue_position: Some(position),
        ..in_progress(request, Phase::Queued, None)
    }
}

/// A queued request's status once the line moved: its new place, and when it was refreshed.
pub fn moved_in_line(request: &Request, position: usize) -> Status {
    Status {
        updated_at: Some(now_rfc3339()),
        ..queued(request, position)
    }
}

/// A request waiting for its maintenance window or `not_before` until `start` (phase
/// `scheduled`); with no `start`, it is due and back to `queued` (its place comes later).
pub fn waiting(request: &Request, start: Option<jiff::Timestamp>) -> Status {
    let phase = if start.is_some() {
        Phase::Scheduled
    } else {
        Phase::Queued
    };
    Status {
        scheduled_for: start.map(|t| t.to_string()),
        ..in_progress(request, phase, None)
    }
}

/// A queued update or rollback waiting for a fleet slot (`wait`: why, once the fleet agent
/// has said; until then it waits for that first answer).
pub fn waiting_for_slot(
    request: &Request,
    group: &str,
    wait: Option<&crate::fleet::SlotWait>,
) -> Status {
    let fleet_slot = crate::status::FleetSlot {
        group: group.to_owned(),
        holders: wait.map_or(0, |w| w.holders),
        total_slots: wait.map_or(0, |w| w.total_slots),
        reason: match wait {
            Some(w) => w.describe(group),
            None => "asking etcd for a fleet slot".into(),
        },
    };
    waiting_in_slot_line(request, fleet_slot)
}

/// A queued request's `waiting_for_slot` status for a fleet slot wait already described.
pub fn waiting_in_slot_line(request: &Request, fleet_slot: crate::status::FleetSlot) -> Status {
    Status {
        fleet_slot: Some(fleet_slot),
        ..in_progress(request, Phase::WaitingForSlot, None)
    }
}

/// A queued update waiting for its host's wave of a fleet rollout (`opens_at`: unix seconds;
/// `None` while the rollout is paused).
pub fn waiting_for_wave(
    request: &Request,
    rollout_id: &str,
    wave: usize,
    opens_at: Option<i64>,
) -> Status {
    Status {
        rollout_id: Some(rollout_id.to_owned()),
        rollout_wave: Some(wave),
        scheduled_for: opens_at
            .and_then(|t| jiff::Timestamp::from_second(t).ok())
            .map(|t| t.to_string()),
        ..in_progress(request, Phase::Scheduled, None)
    }
}

/// A running script's progress as its monitor shows it: its phase, its percentage if it gave
/// one, and the last lines of its output.
pub fn running<'a>(
    request: &Request,
    phase: &Phase,
    started_at: SystemTime,
    progress: Option<u8>,
    tail: impl Iterator<Item = &'a String>,
) -> Status {
    Status {
        progress,
        log_tail: Some(tail.map(|l| format!("{l}\n")).collect()),
        updated_at: Some(now_rfc3339()),
        ..in_progress(request, phase.clone(), Some(started_at))
    }
}

/// The answer to a dry run that a real request would get refused.
pub fn dry_run_refused(id: &RequestId, refusal: &Refusal) -> Status {
    let refusal = Refusal {
        message: format!("dry run: a real request would fail: {}", refusal.message),
        ..refusal.clone()
    };
    Status {
        dry_run: true,
        ..refused(id, &refusal)
    }
}

/// The answer to a dry run that would run: `plan` ("run `...` in ...") says what it would do;
/// `limits`, what would be enforced.
pub fn dry_run(request: &Request, plan: &str, limits: Option<crate::limits::Applied>) -> Status {
    Status {
        success: Some(true),
        phase: Phase::Done,
        message: format!("dry run: would {plan}. Nothing was run."),
        limits,
        dry_run: true,
        ..base(request)
    }
}

/// The final status of a run from its monitor's exit record. `cancelled_by`: the cancel
/// request that stopped it (only when the script was indeed stopped).
pub fn from_exit(
    request: &Request,
    ctx: &RunContext,
    record: &crate::record::ExitRecord,
    cancelled_by: Option<&RequestId>,
) -> Status {
    let mut status = finished(request, ctx, &record.to_result());
    add_usage(&mut status, record.usage.as_ref(), record.limits.as_ref());
    add_procedure(
        &mut status,
        record.outcome,
        record.outcome_message.as_deref(),
        &record.steps,
    );
    if !record.members.is_empty() {
        status.components = Some(record.members.clone());
    }
    // Last: a cancelled run is `cancelled`, whatever else its steps say.
    if let Some(by) = cancelled_by {
        status.code = Some(Code::Cancelled);
        status.success = Some(false);
        status.phase = Phase::Failed;
        status.message = format!(
            "cancelled by request {by}: {} was stopped (SIGTERM to its process group)",
            request.action.script_name()
        );
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::Captured;

    fn request() -> Request {
        Request::parse(
            br#"{"component":"remote","action":"update","version":"1.2.3","request_id":"r1"}"#,
            ["remote"],
        )
        .unwrap()
    }

    fn ctx(last_phase: &Phase) -> RunContext<'_> {
        RunContext {
            script: "update.sh",
            started_at: SystemTime::now(),
            last_phase,
            timeout: Duration::from_secs(600),
            kill_grace: Duration::from_millis(1500),
        }
    }

    fn outcome(exit: Exit, stopped: Option<Stopped>) -> io::Result<Outcome> {
        Ok(Outcome {
            exit,
            stopped,
            duration: Duration::from_millis(1234),
            stdout: Captured {
                text: "out".into(),
                truncated: true,
                total_bytes: 9,
            },
            stderr: Captured::default(),
        })
    }

    /// [`finished`] for [`request`]'s run of `update.sh` whose last phase was `last_phase`.
    fn finished_in(last_phase: Phase, result: io::Result<Outcome>) -> Status {
        finished(&request(), &ctx(&last_phase), &result)
    }

    #[test]
    fn success_is_final_with_output_and_accounting() {
        let s = finished_in(Phase::Running, outcome(Exit::Code(0), None));
        assert_eq!(s.success, Some(true));
        assert!(s.is_final());
        assert_eq!(
            (s.exit_code, s.duration_ms, s.code),
            (Some(0), Some(1234), None)
        );
        assert_eq!((s.output.as_str(), s.output_truncated), ("out", true));
        assert_eq!(s.version.as_deref(), Some("1.2.3"));
        assert_eq!(s.phase, Phase::Done);
    }

    #[test]
    fn failure_names_the_exit_code_and_last_phase() {
        let s = finished_in(Phase::from("downloading"), outcome(Exit::Code(3), None));
        assert_eq!((s.success, s.code), (Some(false), Some(Code::ScriptFailed)));
        assert_eq!(
            s.message,
            "update.sh exited with code 3 (last phase: downloading)"
        );
    }

    #[test]
    fn a_timeout_says_so_and_how_it_was_stopped() {
        let s = finished_in(
            Phase::Running,
            outcome(Exit::Signal(9), Some(Stopped::TimedOut)),
        );
        assert_eq!(
            (s.code, s.timed_out, s.signal),
            (Some(Code::Timeout), true, Some(9))
        );
        assert!(
            s.message.contains("within 600 s") && s.message.contains("after 1.5 s"),
            "{}",
            s.message
        );
    }

    #[test]
    fn shutdown_is_interrupted_and_a_missing_script_is_named() {
        let s = finished_in(
            Phase::Running,
            outcome(Exit::Signal(15), Some(Stopped::Shutdown)),
        );
        assert_eq!(s.code, Some(Code::Interrupted));
        let s = finished_in(
            Phase::Running,
            Err(io::Error::from(io::ErrorKind::NotFound)),
        );
        assert_eq!(
            (s.success, s.code),
            (Some(false), Some(Code::ScriptMissing))
        );
    }

    #[test]
    fn in_progress_has_null_success() {
        let s = in_progress(&request(), Phase::Queued, None);
        assert_eq!(
            (s.success, s.message.as_str(), s.phase),
            (None, IN_PROGRESS, Phase::Queued)
        );
    }
}
