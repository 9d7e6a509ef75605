//! The short human answer for a final status, shared by `submit --wait`, `follow` and
//! `status ID`: the outcome and message first, then each script run with its exit and time,
//! then the total. The full record is what `--json` prints.

use std::fmt::Write;

use crate::procedure::UpdateOutcome;
use crate::status::{Code, Status};

/// Lines of stderr shown for a failure (the full tail is in `--json`).
const ERROR_LINES: usize = 10;

/// The answer in a few lines (each ends with a newline).
pub fn summarize(status: &Status) -> String {
    let mut out = String::new();
    let what = [
        status.action.as_deref(),
        status.component.as_deref(),
        status.version.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    let verdict = match (status.success, status.dry_run) {
        (Some(true), true) => "dry run ok".to_owned(),
        (Some(true), false) => "succeeded".to_owned(),
        _ => {
            let why = status
                .outcome
                .map(UpdateOutcome::as_str)
                .into_iter()
                .chain(status.code.as_ref().map(Code::as_str))
                .fold(Vec::<&str>::new(), |mut seen, s| {
                    if !seen.contains(&s) {
                        seen.push(s);
                    }
                    seen
                });
            if why.is_empty() {
                "FAILED".to_owned()
            } else {
                format!("FAILED ({})", why.join(", "))
            }
        }
    };
    let _ = writeln!(out, "{what}: {verdict}: {}", status.message);
    for line in step_lines(status) {
        let _ = writeln!(out, "  {line}");
    }
    if status.success != Some(true) && !status.error.trim().is_empty() {
        let lines: Vec<&str> = status.error.lines().collect();
        let shown = &lines[lines.len().saturating_sub(ERROR_LINES)..];
        let _ = writeln!(
            out,
            "  stderr{}:",
            if shown.len() < lines.len() || status.error_truncated {
                " (last lines; --json has more)"
            } else {
                ""
            }
        );
        for line in shown {
            let _ = writeln!(out, "  | {line}");
        }
    }
    if let Some(total) = total_ms(status) {
        let _ = writeln!(out, "  total {}", secs(total));
    }
    out
}

/// One line per script run: the procedure's steps when there are any, else the one script.
fn step_lines(status: &Status) -> Vec<String> {
    let ended = |exit: Option<i32>, signal: Option<i32>, timed_out: bool| match (exit, signal) {
        _ if timed_out => "timed out".to_owned(),
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        (None, None) => "did not run".to_owned(),
    };
    match status.steps.as_deref() {
        Some(steps) if !steps.is_empty() => steps
            .iter()
            .map(|step| {
                let name = match &step.component {
                    Some(component) => format!("{} {component}", step.step),
                    None => step.step.clone(),
                };
                format!(
                    "{name:<20} {:<10} {:>8}",
                    ended(step.exit_code, step.signal, step.timed_out),
                    secs(step.duration_ms)
                )
            })
            .collect(),
        _ => match status.duration_ms {
            Some(ms) => vec![format!(
                "{:<20} {:<10} {:>8}",
                status.action.as_deref().unwrap_or("script"),
                ended(status.exit_code, status.signal, status.timed_out),
                secs(ms)
            )],
            None => Vec::new(),
        },
    }
}

/// From the start of the first script to the answer (`duration_ms` is `update.sh` alone).
pub(super) fn total_ms(status: &Status) -> Option<u64> {
    let started: jiff::Timestamp = status.started_at.as_deref()?.parse().ok()?;
    let answered: jiff::Timestamp = status.timestamp.parse().ok()?;
    let ms = answered.duration_since(started).as_millis();
    (ms >= 0).then_some(ms as u64)
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procedure::Step;

    fn step(name: &str, exit_code: i32, duration_ms: u64) -> Step {
        Step {
            step: name.into(),
            exit_code: Some(exit_code),
            duration_ms,
            ..Default::default()
        }
    }

    #[test]
    fn a_health_gated_update_shows_every_step_and_the_whole_time() {
        let status = Status {
            action: Some("update".into()),
            component: Some("remote".into()),
            version: Some("1.4.2".into()),
            success: Some(false),
            message: "update of remote to 1.4.2 rolled back: the health check failed 3 times"
                .into(),
            code: Some(Code::RolledBack),
            outcome: Some(UpdateOutcome::RolledBack),
            error: "unhealthy\n".into(),
            duration_ms: Some(1000),
            steps: Some(vec![
                step("update", 0, 1000),
                step("health", 1, 200),
                step("rollback", 0, 500),
                step("health", 0, 100),
            ]),
            started_at: Some("2026-02-14T00:51:00.000Z".into()),
            timestamp: "2026-02-14T00:51:11.400Z".into(),
            ..Default::default()
        };
        let text = summarize(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "update remote 1.4.2: FAILED (rolled_back): update of remote to 1.4.2 rolled back: the health check failed 3 times"
        );
        assert_eq!(lines.len(), 1 + 4 + 2 + 1, "{text}");
        assert!(
            lines[1].starts_with("  update")
                && lines[1].contains("exit 0")
                && lines[1].ends_with("1.0 s")
        );
        assert!(lines[3].starts_with("  rollback"), "{text}");
        assert_eq!(lines[6], "  | unhealthy");
        assert_eq!(lines[7], "  total 11.4 s");
    }

    #[test]
    fn a_plain_success_is_one_line_a_step_and_the_total() {
        let status = Status {
            action: Some("health".into()),
            component: Some("core".into()),
            success: Some(true),
            message: "Health check passed".into(),
            exit_code: Some(0),
            duration_ms: Some(40),
            started_at: Some("2026-02-14T00:51:00.000Z".into()),
            timestamp: "2026-02-14T00:51:00.050Z".into(),
            ..Default::default()
        };
        assert_eq!(
            summarize(&status),
            "health core: succeeded: Health check passed\n  health               exit 0        0.0 s\n  total 0.1 s\n"
        );
    }

    #[test]
    fn a_refusal_has_no_steps() {
        let status = Status {
            action: Some("update".into()),
            component: Some("nas".into()),
            success: Some(false),
            message: "invalid request: unknown component \"nas\"".into(),
            code: Some(Code::UnknownComponent),
            timestamp: "2026-02-14T00:51:00.050Z".into(),
            ..Default::default()
        };
        assert_eq!(
            summarize(&status),
            "update nas: FAILED (unknown_component): invalid request: unknown component \"nas\"\n"
        );
    }
}
