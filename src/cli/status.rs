//! `update-coordinator status [ID]`: recent and running requests from the run records, or one
//! request in detail. Reads the state directory (root only, like the service).

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::record::{RunRecord, RunState, RunStore};
use crate::request::RequestId;
use crate::status::{Code, Phase, Status, StatusDir, rfc3339};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Show this request in detail
    pub id: Option<String>,
    /// How many of the most recent requests to list
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: super::ConfigArg,
}

/// Where a request stands, in the operator's words (the STATE column, `state` in --json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl RowState {
    fn as_str(self) -> &'static str {
        match self {
            RowState::Queued => "queued",
            RowState::Running => "running",
            RowState::Succeeded => "succeeded",
            RowState::Failed => "failed",
        }
    }

    /// Not answered yet: the current status file (progress) is worth showing.
    fn in_progress(self) -> bool {
        matches!(self, RowState::Queued | RowState::Running)
    }
}

impl std::fmt::Display for RowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One request as the operator sees it.
#[derive(Debug, Serialize)]
pub struct Row {
    pub request_id: String,
    pub component: String,
    pub action: String,
    pub version: Option<String>,
    pub state: RowState,
    pub phase: Option<Phase>,
    pub progress: Option<u8>,
    pub code: Option<Code>,
    pub message: Option<String>,
    pub accepted_at: String,
    pub started_at: Option<String>,
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

pub fn run(args: &StatusArgs) -> ExitCode {
    super::exit_with(show(args))
}

fn show(args: &StatusArgs) -> Result<ExitCode, String> {
    let (config, _) = args.config.load().map_err(|e| e.to_string())?;
    let state = &config.state_dir;
    let store = match RunStore::open_existing(state) {
        Ok(store) => store,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "no run records at {} (nothing was ever accepted, or state.dir points elsewhere)",
                state.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(format!(
                "cannot read {}: permission denied; run as root (sudo)",
                state.display()
            ));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", state.display())),
    };
    let (records, _) = store
        .read()
        .map_err(|e| format!("cannot read {}: {e}", state.display()))?;
    let status_dir = StatusDir::open(&config.status_dir(), config.progress_in_status).ok();
    let current = |id: &str| -> Option<Status> {
        let id = RequestId::parse(id).ok()?;
        status_dir.as_ref()?.read_latest(&id).ok()?
    };

    if let Some(wanted) = &args.id {
        let Some(record) = records
            .into_iter()
            .find(|r| &r.accepted.request_id == wanted)
        else {
            return Err(format!(
                "no record of request {wanted} (finished requests are kept for {} days)",
                config.retention.as_secs() / 86400
            ));
        };
        let mut row = row(&record, current(wanted));
        let detail = detail_status(&record, &row);
        row.status = detail;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&row).map_err(|e| e.to_string())?
            );
        } else {
            print_detail(&row);
        }
        return Ok(ExitCode::SUCCESS);
    }

    let mut rows: Vec<Row> = records
        .iter()
        .rev()
        .take(args.limit)
        .map(|r| row(r, current(&r.accepted.request_id)))
        .collect();
    rows.reverse();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?
        );
    } else if rows.is_empty() {
        println!(
            "no requests recorded in the last {} days",
            config.retention.as_secs() / 86400
        );
    } else {
        print_table(&rows);
    }
    Ok(ExitCode::SUCCESS)
}

/// The status shown in detail: the final one from the record, else the current file.
fn detail_status(record: &RunRecord, row: &Row) -> Option<Status> {
    match &record.state {
        RunState::Finished(status) => Some((**status).clone()),
        _ => row.status.clone(),
    }
}

fn row(record: &RunRecord, current: Option<Status>) -> Row {
    let a = &record.accepted;
    let accepted = UNIX_EPOCH + Duration::from_nanos(a.accepted_at_ns.min(u64::MAX as u128) as u64);
    let (state, status) = match &record.state {
        RunState::Queued => (RowState::Queued, current),
        RunState::Started(_) => (RowState::Running, current),
        RunState::Finished(s) if s.success == Some(true) => {
            (RowState::Succeeded, Some((**s).clone()))
        }
        RunState::Finished(s) => (RowState::Failed, Some((**s).clone())),
    };
    let started_at = match &record.state {
        RunState::Started(spec) => Some(rfc3339(spec.started_at)),
        _ => status.as_ref().and_then(|s| s.started_at.clone()),
    };
    Row {
        request_id: a.request_id.clone(),
        component: a.component.clone(),
        action: a.action.clone(),
        version: a.version.clone(),
        state,
        phase: status.as_ref().map(|s| s.phase.clone()),
        progress: status.as_ref().and_then(|s| s.progress),
        code: status.as_ref().and_then(|s| s.code.clone()),
        message: status
            .as_ref()
            .filter(|s| s.is_final())
            .map(|s| s.message.clone()),
        accepted_at: rfc3339(accepted),
        started_at,
        // The whole request (a health-gated update's checks and rollback too), not only the
        // first script's `duration_ms`.
        duration_ms: status
            .as_ref()
            .and_then(|s| super::summary::total_ms(s).or(s.duration_ms)),
        status: if state.in_progress() { status } else { None },
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<36}  {:<10} {:<8} {:<14} {:<10} {:<18} {:>9}  ACCEPTED",
        "REQUEST", "COMPONENT", "ACTION", "VERSION", "STATE", "PHASE/CODE", "DURATION"
    );
    for r in rows {
        let detail = match r.state {
            RowState::Failed => r.code.as_ref().map(Code::to_string).unwrap_or_default(),
            _ => r.phase.as_ref().map(Phase::to_string).unwrap_or_default(),
        };
        let duration = r
            .duration_ms
            .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
            .unwrap_or_default();
        println!(
            "{:<36}  {:<10} {:<8} {:<14} {:<10} {:<18} {:>9}  {}",
            r.request_id,
            r.component,
            r.action,
            r.version.as_deref().unwrap_or("-"),
            r.state,
            detail,
            duration,
            r.accepted_at
        );
    }
}

fn print_detail(r: &Row) {
    println!("request:    {}", r.request_id);
    println!("component:  {}", r.component);
    println!(
        "action:     {}{}",
        r.action,
        r.version
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default()
    );
    println!("state:      {}", r.state);
    println!("accepted:   {}", r.accepted_at);
    if let Some(started) = &r.started_at {
        println!("started:    {started}");
    }
    let Some(s) = &r.status else { return };
    if s.is_final() {
        // The answer, each script run with its time, and the total (as `submit --wait`).
        print!("answer:     {}", super::summary::summarize(s));
    } else {
        println!(
            "phase:      {}{}",
            s.phase,
            s.progress.map(|p| format!(" ({p}%)")).unwrap_or_default()
        );
    }
    for (label, text, truncated) in [(
        "output",
        s.log_tail.as_deref().unwrap_or(&s.output),
        s.output_truncated,
    )] {
        if text.is_empty() {
            continue;
        }
        let lines: Vec<&str> = text.lines().collect();
        let shown = &lines[lines.len().saturating_sub(20)..];
        let cut = if truncated || shown.len() < lines.len() {
            " (last lines)"
        } else {
            ""
        };
        println!("{label}{cut}:");
        for line in shown {
            println!("  | {line}");
        }
    }
}
