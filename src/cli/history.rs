//! `update-coordinator history`: the audit log (`state/audit.jsonl`) as a table, newest last.

use std::process::ExitCode;

use crate::audit::{AuditLog, Event};

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only events of this component (a multi-component update counts for each of its own)
    #[arg(long, value_name = "NAME")]
    pub component: Option<String>,
    /// Only events of this request
    #[arg(long, value_name = "ID")]
    pub request: Option<String>,
    /// Only the last N matching events
    #[arg(short = 'n', long, default_value_t = 50, value_name = "N")]
    pub limit: usize,
    /// JSON lines, as stored
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: super::ConfigArg,
}

pub fn run(args: &HistoryArgs) -> ExitCode {
    super::with_config(&args.config, |config| {
        let log = AuditLog::new(&config.state_dir, config.audit_max_bytes);
        let (events, skipped) = log.read_all().map_err(|e| {
            format!(
                "cannot read the audit log in {}: {e} (it is root's: run as root)",
                config.state_dir.display()
            )
        })?;
        let matching: Vec<&Event> = events.iter().filter(|e| matches(e, args)).collect();
        let shown = &matching[matching.len().saturating_sub(args.limit)..];
        if args.json {
            for event in shown {
                println!(
                    "{}",
                    serde_json::to_string(event).map_err(|e| e.to_string())?
                );
            }
        } else {
            print!("{}", table(shown));
        }
        if skipped > 0 {
            eprintln!(
                "note: {skipped} unreadable line(s) skipped (e.g. cut short by a power loss)"
            );
        }
        Ok(())
    })
}

fn matches(event: &Event, args: &HistoryArgs) -> bool {
    let component_ok = args.component.as_deref().is_none_or(|wanted| {
        // A batch's events name `remote+scheduler`, or one member during its steps.
        event
            .component
            .as_deref()
            .is_some_and(|c| c.split('+').any(|part| part == wanted))
    });
    let request_ok = args
        .request
        .as_deref()
        .is_none_or(|wanted| event.request_id.as_deref() == Some(wanted));
    component_ok && request_ok
}

/// `TIME EVENT REQUEST COMPONENT ACTION VERSION RESULT`, the detail last (it may be long).
fn table(events: &[&Event]) -> String {
    let mut out = format!(
        "{:<24} {:<13} {:<36} {:<16} {:<8} {:<12} DETAIL\n",
        "TIME", "EVENT", "REQUEST", "COMPONENT", "ACTION", "VERSION"
    );
    for e in events {
        let result = match (&e.outcome, &e.code) {
            (Some(outcome), Some(code)) if outcome != code => format!("{outcome} ({code}) "),
            (Some(outcome), _) => format!("{outcome} "),
            (None, Some(code)) => format!("{code} "),
            (None, None) => String::new(),
        };
        let detail = e.detail.as_deref().unwrap_or("");
        out.push_str(&format!(
            "{:<24} {:<13} {:<36} {:<16} {:<8} {:<12} {result}{}\n",
            e.time,
            e.event,
            e.request_id.as_deref().unwrap_or("-"),
            e.component.as_deref().unwrap_or("-"),
            e.action.as_deref().unwrap_or("-"),
            e.version.as_deref().unwrap_or("-"),
            one_line(detail),
        ));
    }
    out
}

/// Details are single-line in the table; the JSON output keeps them whole.
fn one_line(text: &str) -> String {
    const MAX: usize = 160;
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, component: Option<&str>) -> Event {
        Event {
            time: "2026-11-27T10:00:00.000Z".into(),
            event: event.into(),
            request_id: Some("r1".into()),
            component: component.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn a_component_filter_also_finds_batches_containing_it() {
        let args = |component: &str| HistoryArgs {
            component: Some(component.into()),
            request: None,
            limit: 50,
            json: false,
            config: crate::cli::ConfigArg { config: None },
        };
        assert!(matches(
            &event("queued", Some("remote+scheduler")),
            &args("scheduler")
        ));
        assert!(matches(&event("queued", Some("remote")), &args("remote")));
        assert!(!matches(&event("queued", Some("remote")), &args("remo")));
        assert!(!matches(&event("rejected", None), &args("remote")));
    }

    #[test]
    fn the_table_keeps_one_line_per_event() {
        let mut e = event("finished", Some("remote"));
        e.outcome = Some("rolled_back".into());
        e.code = Some("rolled_back".into());
        e.detail = Some("line one\nline two".into());
        let text = table(&[&e]);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("rolled_back line one line two"), "{text}");
    }
}
