//! The per-run monitor (`update-coordinator __monitor`), as container runtimes have one
//! (conmon, containerd-shim): a small process that owns one script run, so the run does not
//! depend on the coordinator staying alive.
//!
//! The coordinator writes the run's record (`run.json`), locks the run's lock file and starts
//! the monitor with that file as its stdin: the monitor holds the lock for exactly as long as
//! it lives, which is how a restarted coordinator tells a live run from a dead one (no pid
//! reuse race). The monitor runs the script with its deadline (on the monotonic clock, so the
//! timeout survives coordinator restarts), writes in-progress statuses on `PHASE:` lines,
//! reports phases on stdout to the coordinator that started it (while it listens), and at the
//! end writes the exit record durably. The coordinator, current or restarted, turns that into
//! the final status.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info};

use crate::record::{ExitRecord, RunStore, monotonic_now_ns};
use crate::report::{self, PHASE_RUNNING};
use crate::request::RequestId;
use crate::runner;
use crate::status::{Durability, StatusDir};

/// Runs one script for the run `id` in `state_dir`; returns when its exit record is durable.
pub fn main(state_dir: &Path, id: &str) -> ExitCode {
    let Ok(id) = RequestId::parse(id) else {
        error!(id, "monitor: not a request id");
        return ExitCode::FAILURE;
    };
    let store = match RunStore::open(state_dir) {
        Ok(store) => store,
        Err(e) => {
            error!(error = %e, dir = %state_dir.display(), "monitor: cannot open the state directory");
            return ExitCode::FAILURE;
        }
    };
    let spec_path = store.run_path(&id).join("run.json");
    let spec: crate::record::RunSpec = match std::fs::read(&spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            error!(error = %e, path = %spec_path.display(), "monitor: cannot read the run record");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "monitor: cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = store.mark_launched(&id) {
        // Without the marker a restarted coordinator would start the run again: do not run.
        error!(request_id = %id, error = %e, "monitor: cannot record the launch; not running the script");
        return ExitCode::FAILURE;
    }
    let record = runtime.block_on(supervise(&spec, &id));
    if let Err(e) = store.write_exit(&id, &record) {
        error!(request_id = %id, error = %e, "monitor: cannot write the exit record; the run will be reported interrupted");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn supervise(spec: &crate::record::RunSpec, id: &RequestId) -> ExitRecord {
    let request = spec.accepted.request();
    let mut invocation = spec.invocation.clone();
    let remaining = spec
        .deadline_monotonic_ns
        .saturating_sub(monotonic_now_ns());
    invocation.timeout =
        Duration::from_nanos(remaining.min(u64::MAX as u128) as u64).max(Duration::from_millis(1));

    let last_phase = Arc::new(Mutex::new(PHASE_RUNNING.to_owned()));
    let status_dir = StatusDir::open(&spec.status_dir).ok();
    let phase_sink = Arc::clone(&last_phase);
    let owner = spec.owner_uid;
    let started_at = spec.started_at;
    let component = spec.accepted.component.clone();
    let action = spec.accepted.action.clone();
    let phase_id = id.clone();
    let on_phase = move |phase: String| {
        info!(request_id = %phase_id, component = %component, action = %action, phase = %phase, "phase");
        if let (Some(dir), Some(request)) = (&status_dir, &request) {
            let status = report::in_progress(request, &phase, Some(started_at));
            let _ = dir.write(&phase_id, &status, Durability::BestEffort, Some(owner));
        }
        // The coordinator that started us listens on our stdout; after its restart nobody
        // does, and a failed write is fine.
        let _ = writeln!(std::io::stdout(), "PHASE {phase}");
        let _ = std::io::stdout().flush();
        *phase_sink.lock().unwrap_or_else(|e| e.into_inner()) = phase;
    };

    // SIGTERM to the monitor stops the script (SIGTERM, grace, SIGKILL to its group).
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Ok(mut sigterm) = signal(SignalKind::terminate()) {
        tokio::spawn(async move {
            sigterm.recv().await;
            let _ = stop_tx.send(true);
        });
    }
    let result = runner::run(invocation, on_phase, stop_rx).await;
    let phase = last_phase.lock().unwrap_or_else(|e| e.into_inner()).clone();
    ExitRecord::from_result(&result, &phase)
}
