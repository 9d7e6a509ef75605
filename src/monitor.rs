//! The per-run monitor (`update-coordinator __monitor`), as container runtimes have one
//! (conmon, containerd-shim): a small process that owns one script run, so the run does not
//! depend on the coordinator staying alive.
//!
//! The coordinator records the run in its journal, flushes it, leaves the run's spec in
//! `runs/<id>/run.json`, locks the run's lock file and starts
//! the monitor with that file as its stdin: the monitor holds the lock for exactly as long as
//! it lives, which is how a restarted coordinator tells a live run from a dead one (no pid
//! reuse race). The monitor runs the script with its deadline (on the monotonic clock, so the
//! timeout survives coordinator restarts), writes in-progress statuses on `PHASE:` lines,
//! reports phases on stdout to the coordinator that started it (while it listens), and at the
//! end writes the exit record (`exits/<id>.json`, not flushed). The coordinator, current or
//! restarted, copies it into its journal, flushes that (one flush for every run that ended in
//! the same loop turn), and only then turns it into the final status.

use std::io::Write;

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::procedure::{self, Reports};
use crate::record::{ExitRecord, RunFiles, monotonic_now_ns};
use crate::report;
use crate::request::RequestId;
use crate::status::{Durability, Phase, Progress, StatusDir};
use crate::{limits, runner};

/// Runs one script for the run `id` in `state_dir`; returns once its exit record is written
/// (the coordinator makes it durable, in the journal, before it answers).
pub fn main(state_dir: &Path, id: &str) -> ExitCode {
    let Ok(id) = RequestId::parse(id) else {
        error!(id, "monitor: not a request id");
        return ExitCode::FAILURE;
    };
    // Only the run's own files: the journal is the coordinator's alone.
    let files = match RunFiles::open(state_dir) {
        Ok(files) => files,
        Err(e) => {
            error!(error = %e, dir = %state_dir.display(), "monitor: cannot open the state directory");
            return ExitCode::FAILURE;
        }
    };
    let Some(spec) = files.spec(&id) else {
        let path = files.run_path(&id).join("run.json");
        error!(path = %path.display(), "monitor: cannot read the run's spec");
        return ExitCode::FAILURE;
    };
    let Some(runtime) = crate::cli::runtime("monitor: ") else {
        return ExitCode::FAILURE;
    };
    if let Err(e) = files.mark_launched(&id) {
        // Without the marker a restarted coordinator would start the run again: do not run.
        error!(request_id = %id, component = %spec.accepted.component, action = %spec.accepted.action, error = %e, "monitor: cannot record the launch; not running the script");
        return ExitCode::FAILURE;
    }
    let record = runtime.block_on(supervise(&spec, &id, state_dir, &files.run_path(&id)));
    if let Err(e) = files.write_exit(&id, &record) {
        error!(request_id = %id, component = %spec.accepted.component, action = %spec.accepted.action, error = %e, "monitor: cannot write the exit record; the run will be reported interrupted");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Lines of output an in-progress status carries (`log_tail`).
const LOG_TAIL_LINES: usize = 20;
/// Output lines forwarded to the journal per run; the rest is only in the status's tail.
const MAX_JOURNAL_LINES: usize = 10_000;
/// In-progress statuses are rewritten for new output at most this often.
const STATUS_REFRESH: Duration = Duration::from_secs(1);

/// What the monitor reports while the script runs: phases and progress to the status file
/// (and to the coordinator on stdout), output lines to the journal and the status's log tail.
struct Reporter {
    id: RequestId,
    request: Option<crate::request::Request>,
    status_dir: Option<StatusDir>,
    owner: u32,
    started_at: std::time::SystemTime,
    live: Mutex<Live>,
    audit: crate::audit::AuditLog,
}

struct Live {
    /// The progress record is still there to be updated.
    shown: bool,
    phase: Phase,
    progress: Option<u8>,
    tail: std::collections::VecDeque<String>,
    journal_lines: usize,
    last_write: std::time::Instant,
}

impl Reporter {
    /// Rewrites the in-progress status (best effort: the final one is what counts).
    fn write(&self, live: &mut Live) {
        let (Some(dir), Some(request)) = (&self.status_dir, &self.request) else {
            return;
        };
        if !live.shown {
            return;
        }
        let status = report::running(
            request,
            &live.phase,
            self.started_at,
            live.progress,
            live.tail.iter(),
        );
        // Never creates the record: one the client deleted, or the coordinator withdrew for
        // a self-update hand-off, stays gone (and then there is no point in writing more).
        let written = dir.progress(
            &self.id,
            &status,
            Durability::BestEffort,
            Some(self.owner),
            Progress::Update,
        );
        if let Ok(false) = written {
            live.shown = false;
        }
        live.last_write = std::time::Instant::now();
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fields(&self) -> (&str, &str) {
        match &self.request {
            Some(r) => (r.component.as_str(), r.action.as_str()),
            None => ("", ""),
        }
    }
}

impl Reports for Reporter {
    /// Best effort: the log is for people.
    fn audit(&self, event: &str, detail: &str, component: &str) {
        let Some(request) = &self.request else { return };
        let mut event = crate::audit::Event::of(event, request).detail(detail);
        if !component.is_empty() {
            event.component = Some(component.to_owned());
        }
        if let Err(e) = self.audit.append(&event) {
            warn!(request_id = %self.id, error = %e, "cannot append to the audit log");
        }
    }
}

impl runner::RunEvents for Reporter {
    fn phase(&self, name: String) {
        let (component, action) = self.fields();
        info!(request_id = %self.id, component, action, phase = %name, "phase: {name}");
        // The coordinator that started us listens on our stdout; after its restart nobody
        // does, and a failed write is fine.
        let _ = writeln!(std::io::stdout(), "PHASE {name}");
        let _ = std::io::stdout().flush();
        self.audit("phase", &name, "");
        let mut live = self.live();
        live.phase = Phase::from(name);
        self.write(&mut live);
    }

    fn progress(&self, percent: u8) {
        let mut live = self.live();
        live.progress = Some(percent);
        self.write(&mut live);
    }

    fn line(&self, stream: runner::Stream, line: &str) {
        let (component, action) = self.fields();
        let mut live = self.live();
        if live.journal_lines < MAX_JOURNAL_LINES {
            let phase = live.phase.as_str();
            match stream {
                runner::Stream::Stdout => {
                    info!(request_id = %self.id, component, action, phase, stream = "stdout", "{line}")
                }
                runner::Stream::Stderr => {
                    warn!(request_id = %self.id, component, action, phase, stream = "stderr", "{line}")
                }
            }
        } else if live.journal_lines == MAX_JOURNAL_LINES {
            warn!(request_id = %self.id, component, action, "more output than {MAX_JOURNAL_LINES} lines: the rest is not forwarded to the journal (the status keeps the tail)");
        }
        live.journal_lines += 1;
        if live.tail.len() == LOG_TAIL_LINES {
            live.tail.pop_front();
        }
        live.tail.push_back(line.to_owned());
        if live.last_write.elapsed() >= STATUS_REFRESH {
            self.write(&mut live);
        }
    }
}

async fn supervise(
    spec: &crate::record::RunSpec,
    id: &RequestId,
    state_dir: &Path,
    run_dir: &Path,
) -> ExitRecord {
    let mut invocation = spec.invocation.clone();
    let remaining = spec
        .deadline_monotonic_ns
        .saturating_sub(monotonic_now_ns());
    invocation.timeout =
        Duration::from_nanos(remaining.min(u64::MAX as u128) as u64).max(Duration::from_millis(1));

    // The coordinator started us inside the run's scope (when the host has them): the
    // limits hold for us and the script together, and our own cgroup is the run's.
    let applied = spec.applied.clone().unwrap_or_default();
    for note in &applied.not_enforced {
        warn!(request_id = %id, component = %spec.accepted.component, action = %spec.accepted.action, "{note}");
    }
    let cgroup = (applied.mechanism == crate::limits::Mechanism::SystemdScope)
        .then(own_cgroup)
        .flatten();
    // Orphans of the script (daemons that `setsid` away) come back to us, to be swept.
    runner::become_subreaper();

    let reporter = Arc::new(Reporter {
        id: id.clone(),
        request: spec.accepted.request(),
        status_dir: StatusDir::open(&spec.status_dir, spec.progress_in_status).ok(),
        owner: spec.owner_uid,
        started_at: spec.started_at,
        live: Mutex::new(Live {
            shown: true,
            phase: Phase::Running,
            progress: None,
            tail: Default::default(),
            journal_lines: 0,
            last_write: std::time::Instant::now(),
        }),
        audit: crate::audit::AuditLog::new(state_dir, u64::MAX),
    });

    // SIGTERM to the monitor stops the script (SIGTERM, grace, SIGKILL to its group). A
    // cancel that came before we could be signalled left a stop marker instead: the handler
    // is in place before our pid is published, and the marker is read after, so a cancel is
    // never lost whichever comes first (the coordinator writes the marker, then reads the pid).
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Ok(mut sigterm) = signal(SignalKind::terminate()) {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            sigterm.recv().await;
            let _ = stop_tx.send(true);
        });
    }
    // Where a cancel request finds us.
    let _ = std::fs::write(run_dir.join("monitor.pid"), std::process::id().to_string());
    if run_dir.join(crate::record::STOP_MARKER).exists() {
        let _ = stop_tx.send(true);
    }
    let mut batch = None;
    let (result, mut steps) = if spec.batch.is_empty() {
        let result = runner::run(invocation, Arc::clone(&reporter) as _, stop_rx.clone()).await;
        let steps = match &spec.procedure {
            Some(gated) => procedure::gate(gated, &result, &reporter, &stop_rx, "").await,
            None => Vec::new(),
        };
        (result, steps)
    } else {
        let run = procedure::run_batch(&spec.batch, &reporter, &stop_rx).await;
        batch = Some((run.members, run.failure));
        (run.result, run.steps)
    };
    let swept = runner::kill_orphans();
    if swept > 0 {
        warn!(request_id = %id, component = %spec.accepted.component, action = %spec.accepted.action, processes = swept, "killed processes the script left running outside its process group");
    }
    // Read while we are still in the scope, so it cannot have been collected yet.
    let usage = usage(cgroup.as_deref().and_then(limits::read_cgroup_usage));
    let phase = reporter.live().phase.clone();
    let mut record = ExitRecord::from_result(&result, &phase);
    record.usage = Some(usage);
    record.limits = Some(applied);
    let concluded = match &batch {
        Some((members, failure)) => Some(procedure::batch_outcome(members, failure.as_deref())),
        None if !steps.is_empty() => {
            let version = spec.accepted.version.clone().unwrap_or_default();
            Some(procedure::outcome(&steps, &version))
        }
        None => None,
    };
    if let Some((outcome, message)) = concluded {
        let (component, action) = (&spec.accepted.component, &spec.accepted.action);
        info!(request_id = %id, component = %component, action = %action, outcome = outcome.as_str(), "{message}");
        record.outcome = Some(outcome);
        record.outcome_message = Some(message);
        record.steps = std::mem::take(&mut steps);
    }
    if let Some((members, _)) = batch {
        record.members = members;
    }
    record
}

/// This process's cgroup v2 directory (`/proc/self/cgroup`: `0::/path`).
fn own_cgroup() -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')))
}

/// The run's usage: the cgroup's when there was one, completed with this process's children's
/// rusage (the script and every descendant it waited for).
fn usage(cgroup: Option<limits::Usage>) -> limits::Usage {
    let rusage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).ok();
    let rusage_cpu = rusage.map(|r| {
        let t =
            |tv: nix::sys::time::TimeVal| tv.tv_sec() as u64 * 1000 + tv.tv_usec() as u64 / 1000;
        t(r.user_time()) + t(r.system_time())
    });
    match cgroup {
        Some(mut usage) => {
            usage.cpu_time_ms = usage.cpu_time_ms.max(rusage_cpu);
            usage
        }
        None => limits::Usage {
            // ru_maxrss is in KiB on Linux: the largest single process, not the whole tree.
            memory_peak_bytes: rusage.map(|r| r.max_rss().max(0) as u64 * 1024),
            cpu_time_ms: rusage_cpu,
            oom_killed: false,
            source: "rusage".into(),
        },
    }
}
