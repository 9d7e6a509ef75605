//! The service: one loop owns all state (queue, running scripts) and reacts to spool events,
//! run exits, progress, signals and timers. Each `select!` arm calls a named method; intake
//! lives in [`intake`] (what it admits: [`admission`]; what is busy: [`in_flight`]), the checks
//! before a run in [`preflight`], starting and following runs in [`start`], concluding them in
//! [`conclude`], and picking up an earlier process's runs in [`recover`].

mod admission;
mod commit;
mod conclude;
mod drop_box;
mod handoff;
mod in_flight;
mod intake;
mod preflight;
mod recover;
mod start;
mod waiting;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{info, warn};

use self::drop_box::{DropBox, prepare};
use self::in_flight::InFlight;
use crate::config::Config;
use crate::fairshare::Writer;
use crate::ratelimit::{self, RateLimiter};
use crate::record::RunStore;
use crate::request::{Request, RequestId};
use crate::schedule::{self, Rounds, Rules, Slot};
use crate::signature::Verifier;
use crate::spool::{self, SpoolEvent};
use crate::{systemd, trust};

/// A request file seen by a directory listing may still be being written in place (the client
/// does open/write/close). An unparsable file younger than this is looked at again later.
const SETTLE: Duration = Duration::from_secs(2);

/// Messages handled per loop turn before refusals are committed and the watchdog gets a look in.
const BATCH: usize = 256;

/// How often finished records and uncollected statuses are checked against the retention.
const RETENTION_SWEEP: Duration = Duration::from_secs(3600);

/// How often the locks of re-attached runs are checked (only while there are such runs).
const REATTACHED_CHECK: Duration = Duration::from_secs(5);

/// Queued statuses get their `queue_position` refreshed at most this often...
const POSITION_REFRESH: Duration = Duration::from_secs(1);
/// ...and only for the first this-many in line (a long backlog costs no rewrites).
const POSITIONS_SHOWN: usize = 16;

/// A request waiting for its window or `not_before` is looked at again at least this often,
/// so a wall-clock jump (a Pi without RTC syncing its time) delays it by no more than this.
const SCHEDULED_RECHECK: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another coordinator holds the state directory.
    #[error(transparent)]
    Instance(#[from] crate::instance::LockError),
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot watch {path} with inotify: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("cannot install the signal handlers: {0}")]
    Signals(#[source] io::Error),
    #[error(transparent)]
    SignatureKey(#[from] crate::signature::KeyError),
}

/// Which spool (an index into `Daemon::spools`; 0 is `[spool]`).
type SpoolIx = usize;

enum Msg {
    Spool(SpoolIx, SpoolEvent),
    /// Look at a file again once it had time to settle.
    Recheck(SpoolIx, String),
    /// A monitor reported a phase (only while we are the coordinator that started it).
    Phase {
        id: RequestId,
        phase: String,
    },
    /// A file appeared in `state/exits/`: that run's script has ended.
    Exited(String),
    /// A monitor we started has exited (its exit record, if any, tells the result).
    MonitorGone(RequestId),
    /// The self-update hand-off file was written (see [`handoff`]).
    Handoff(SpoolIx),
    /// Events of `state/exits/` were lost: look at every exit record.
    ExitsRescan,
    /// Only wakes the loop, whose turn ends with a commit and a scheduling pass (after a
    /// failed flush, or a monitor that could not start).
    Wake,
}

/// Where a file name came from; only a listing can catch a file half-written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Event,
    Listing,
}

struct Job {
    request: Request,
    /// The spool it was dropped into; its answer goes there.
    spool: SpoolIx,
    /// The request file's name in `requests/`; removed once the final status is durable.
    file_name: String,
    /// Who wrote the request; its status files are given to them.
    owner_uid: u32,
    /// What its queued status file says now, so it is only rewritten when that changes.
    shown: Shown,
    /// When it may start, if not now (its `not_before` or a window): set when it is accepted
    /// and at every scheduling pass. Such a request is `scheduled`, not queued.
    waits_until: Option<jiff::Timestamp>,
    /// Its turn among all writers' requests (see [`Rounds`]), given when it is due.
    round: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Shown {
    position: Option<usize>,
    /// Set while it waits for its window or `not_before` (phase `scheduled`).
    scheduled_for: Option<jiff::Timestamp>,
}

impl Job {
    fn new(spool: SpoolIx, request: Request, file_name: String, owner_uid: u32) -> Self {
        Self {
            spool,
            request,
            file_name,
            owner_uid,
            shown: Shown::default(),
            waits_until: None,
            round: None,
        }
    }

    fn writer(&self) -> Writer {
        Writer {
            spool: self.spool,
            uid: self.owner_uid,
        }
    }
}

struct Running {
    job: Job,
    phase: crate::status::Phase,
    started_at: SystemTime,
    /// Started by an earlier coordinator process: its monitor is not our child, so its
    /// death without an exit record is only noticed by polling its lock.
    reattached: bool,
}

struct Daemon {
    config: Arc<Config>,
    /// Every spool; requests, jobs and files name theirs by index.
    spools: Vec<DropBox>,
    store: RunStore,
    /// The binary to start monitors from (resolved once: a self-update replaces the file).
    exe: PathBuf,
    /// What this host can enforce (cgroup controllers, systemd scopes); detected at start.
    host: crate::limits::Host,
    /// Our systemd unit, if we run in one: monitors tag their journal lines with it.
    unit: Option<String>,
    /// Uids whose scripts may run (see [`trust`]).
    script_owners: Vec<u32>,
    verifier: Option<Verifier>,
    rate: RateLimiter<ratelimit::Key>,
    /// Round-robin between writers: the round of the latest start.
    rounds: Rounds,
    queue: VecDeque<Job>,
    running: HashMap<RequestId, Running>,
    /// Files and ids of queued and running requests, and files left to settle.
    in_flight: InFlight,
    /// Answered request files (refusals, dry runs, cancels) whose answer is written but not
    /// yet durable; removed together after one filesystem sync (a flood of junk costs one sync
    /// per batch, not per file).
    answered_files: Vec<(SpoolIx, String)>,
    /// What waits for the journal's next flush (see [`commit`]).
    after_flush: Vec<commit::AfterFlush>,
    /// When the queued statuses waiting in `after_flush` must be flushed and shown at the
    /// latest (when nothing else needs a flush sooner).
    commit_due: Option<tokio::time::Instant>,
    /// When the answers shown lately are flushed to the disk (see [`Daemon::flush_views`]).
    views_flush_due: Option<tokio::time::Instant>,
    tx: mpsc::UnboundedSender<Msg>,
    last_status_line: String,
    /// Versions and last results per component (see [`crate::inventory`]).
    inventory: crate::inventory::Inventory,
    /// The audit log (`state/audit.jsonl`).
    audit: crate::audit::AuditLog,
    /// Local time for maintenance windows (the host's zone, read at start).
    zone: jiff::tz::TimeZone,
    /// When queued statuses' positions are next refreshed (set when the queue moved).
    positions_due: Option<tokio::time::Instant>,
    /// When the next scheduled (deferred) request may start.
    scheduled_wake: Option<tokio::time::Instant>,
}

/// SIGTERM or SIGINT, as a future for [`serve`]: the handlers are installed now, so a signal
/// that comes while the service starts up is not lost (nor kills it half-way).
pub fn stop_signals() -> Result<impl Future<Output = ()>, ServeError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
    })
}

/// Runs the service until `shutdown` completes (see [`stop_signals`]). Stopping never stops
/// running scripts: their monitors carry on and the next start re-attaches to them.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    // Before anything touches the spool or the records: one coordinator per state directory.
    let _instance = crate::instance::acquire(&config.state_dir)?;
    let spools = config
        .spools
        .iter()
        .map(|spool| {
            DropBox::open(
                spool,
                config.progress_in_status,
                config.spool_group.as_deref(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let store = RunStore::open(&config.state_dir).map_err(prepare(&config.state_dir))?;
    let verifier = match &config.signature {
        Some(sig) => Some(Verifier::new(
            crate::signature::read_key(&sig.key_file)?,
            sig.max_age,
        )),
        None => None,
    };
    let exe = std::env::current_exe().map_err(|e| ServeError::Prepare {
        path: PathBuf::from("/proc/self/exe"),
        source: e,
    })?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watches = Vec::new();
    for (ix, spool) in config.spools.iter().enumerate() {
        let watch_tx = tx.clone();
        let requests_dir = spool.requests_dir();
        watches.push(
            spool::watch(&requests_dir, move |event| {
                let _ = watch_tx.send(Msg::Spool(ix, event));
            })
            .map_err(|source| ServeError::Watch {
                path: requests_dir.clone(),
                source,
            })?,
        );
        // Only where progress shares the status file does the hand-off need watching.
        if config.progress_in_status {
            let handoff_tx = tx.clone();
            watches.push(
                spool::watch_name(&spool.root, handoff::HANDOFF_FILE, move || {
                    let _ = handoff_tx.send(Msg::Handoff(ix));
                })
                .map_err(|source| ServeError::Watch {
                    path: spool.root.clone(),
                    source,
                })?,
            );
        }
    }
    let exit_tx = tx.clone();
    let exits_dir = store.exits_path();
    let exit_watch = spool::watch(&exits_dir, move |event| {
        let _ = exit_tx.send(match event {
            SpoolEvent::Ready(name) => Msg::Exited(name),
            SpoolEvent::Rescan(_) => Msg::ExitsRescan,
            // Only exit records are written there.
            SpoolEvent::Created(_) | SpoolEvent::Junk(_) => Msg::ExitsRescan,
        });
    })
    .map_err(|source| ServeError::Watch {
        path: exits_dir.clone(),
        source,
    })?;

    let mut watchdog = systemd::watchdog_interval().map(timer);
    let mut retention = timer(RETENTION_SWEEP);
    let mut reattached = timer(REATTACHED_CHECK);

    let (config_state_dir, config_audit_max_bytes) =
        (config.state_dir.clone(), config.audit_max_bytes);
    let mut daemon = Daemon {
        script_owners: trust::trusted_owners(&config.script_owners),
        host: crate::limits::Host::detect(),
        unit: crate::logging::own_unit(),
        config: Arc::new(config),
        spools,
        store,
        exe,
        verifier,
        rate: RateLimiter::new(Duration::from_secs(3600)),
        rounds: Rounds::default(),
        queue: VecDeque::new(),
        running: HashMap::new(),
        in_flight: InFlight::default(),
        answered_files: Vec::new(),
        after_flush: Vec::new(),
        commit_due: None,
        views_flush_due: None,
        tx: tx.clone(),
        last_status_line: String::new(),
        inventory: Default::default(),
        audit: crate::audit::AuditLog::new(&config_state_dir, config_audit_max_bytes),
        zone: jiff::tz::TimeZone::system(),
        positions_due: None,
        scheduled_wake: None,
    };
    daemon.load_inventory();
    // Watches are armed before the records and the directory are read, so nothing that
    // happens in between is missed.
    daemon.recover();
    // Answers and starts recovery decided are shown once what they rest on is durable.
    daemon.commit_now();
    // Which recovered requests wait for their time: those take no queue capacity.
    daemon.due_jobs();
    for ix in 0..daemon.spools.len() {
        // A hand-off written while we were stopped.
        daemon.handoff(ix);
        let _ = tx.send(Msg::Spool(ix, SpoolEvent::Rescan("start-up".into())));
    }
    info!(
        spool = %daemon.config.spool_root.display(),
        spools = daemon.spools.len(),
        state = %daemon.config.state_dir.display(),
        signed_requests = daemon.verifier.is_some(),
        components = %daemon.config.component_names().collect::<Vec<_>>().join(", "),
        "update coordinator ready"
    );
    systemd::ready("idle");

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            Some(msg) = rx.recv() => {
                daemon.handle(msg);
                // Take what else is already waiting, so a burst is handled in batches.
                for _ in 1..BATCH {
                    let Ok(msg) = rx.try_recv() else { break };
                    daemon.handle(msg);
                }
            }
            _ = &mut shutdown => break,
            _ = tick(&mut watchdog) => systemd::watchdog(),
            _ = retention.tick() => daemon.expire(),
            _ = reattached.tick(), if daemon.running.values().any(|r| r.reattached) => daemon.check_reattached(),
            _ = sleep_until(daemon.positions_due) => daemon.publish_positions(),
            // Only wakes the loop: `schedule` below starts what is due.
            _ = sleep_until(daemon.scheduled_wake) => daemon.scheduled_wake = None,
            // Only wakes the loop: `commit` below flushes for the queued statuses waiting.
            _ = sleep_until(daemon.commit_due) => {}
            _ = sleep_until(daemon.views_flush_due) => daemon.flush_views(),
        }
        daemon.commit_answered();
        daemon.schedule();
        daemon.commit();
        daemon.publish_status_line();
    }
    drop(watches);
    drop(exit_watch);
    daemon.commit_answered();
    daemon.commit_now();
    let running = daemon.running.len();
    info!(
        running,
        queued = daemon.queue.len(),
        "stopping; running scripts carry on and are re-attached at the next start"
    );
    systemd::stopping(&format!("stopping; {running} script(s) keep running"));
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A periodic timer that, after a stall (a slow start-up, a long loop turn), fires once and
/// then keeps its period, instead of firing every missed tick at once (tokio's default): a
/// burst of watchdog pings says nothing more than one, and a burst of sweeps is wasted work.
fn timer(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl Daemon {
    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Spool(ix, SpoolEvent::Ready(name)) => self.take(ix, &name, Seen::Event),
            Msg::Spool(ix, SpoolEvent::Created(name)) => {
                if !spool::may_be_in_progress(&self.spools[ix].requests, &name) {
                    self.take(ix, &name, Seen::Event);
                }
            }
            Msg::Spool(ix, SpoolEvent::Rescan(reason)) => {
                self.rescan(ix, &reason);
                self.collect_exits();
            }
            Msg::Spool(ix, SpoolEvent::Junk(name)) => self.remove_junk(ix, &name),
            Msg::Recheck(ix, name) => {
                self.in_flight.settled(ix, &name);
                self.take(ix, &name, Seen::Listing);
            }
            Msg::ExitsRescan => self.collect_exits(),
            Msg::Phase { id, phase } => self.progress(&id, phase),
            Msg::Exited(name) => self.exited(&name),
            Msg::MonitorGone(id) => self.monitor_gone(&id),
            Msg::Handoff(ix) => self.handoff(ix),
            Msg::Wake => {}
        }
    }

    fn schedule(&mut self) {
        fn slot(job: &Job) -> Slot<'_> {
            Slot {
                component: job.request.component.as_str(),
                action: job.request.action,
                all_components: job.request.is_batch(),
                writer: job.writer(),
            }
        }
        if self.queue.is_empty() {
            return;
        }
        let queued_before = self.queue.len();
        let rules = Rules {
            serialize_updates: self.config.serialize_updates,
            max_concurrent: self.config.max_concurrent,
            max_running_per_writer: self.config.max_running_per_writer,
        };
        // Requests waiting for their window or `not_before` take no part: they hold nobody up.
        // The others are considered round-robin between writers.
        let due = self.due_jobs();
        let due = self.fair_order(due);
        let start: Vec<usize> = schedule::startable(
            self.running.values().map(|r| slot(&r.job)),
            due.iter().map(|&i| slot(&self.queue[i])),
            rules,
            self.config.components.len(),
        )
        .into_iter()
        .map(|k| due[k])
        .collect();
        // Remove from the back so earlier indices stay valid; start in the order chosen.
        let mut by_index = start.clone();
        by_index.sort_unstable_by(|a, b| b.cmp(a));
        let mut taken: HashMap<usize, Job> = by_index
            .into_iter()
            .filter_map(|i| Some((i, self.queue.remove(i)?)))
            .collect();
        if !taken.is_empty() {
            self.positions_moved();
        }
        for job in start.iter().filter_map(|i| taken.remove(i)) {
            if let Some(round) = job.round {
                self.rounds.started(round);
            }
            self.start(job);
        }
        // A job refused at its turn (untrusted script) frees its slot at once: look again.
        if self.running.len() < self.config.max_concurrent
            && !self.queue.is_empty()
            && self.queue.len() != queued_before
        {
            self.schedule();
        }
    }

    /// A queued or running job.
    fn job(&self, id: &RequestId) -> Option<&Job> {
        self.queue
            .iter()
            .find(|job| &job.request.id == id)
            .or_else(|| self.running.get(id).map(|r| &r.job))
    }

    /// The index of the spool a record names; an unknown name (a spool removed from the
    /// config since) falls back to the main spool.
    fn spool_ix(&self, name: &str) -> SpoolIx {
        let ix = self.spools.iter().position(|s| s.config.name == name);
        if ix.is_none() && !name.is_empty() {
            warn!(
                spool = name,
                "a record names a spool that is no longer configured; using the main spool"
            );
        }
        ix.unwrap_or(0)
    }

    fn status_line(&self) -> String {
        let mut parts: Vec<String> = self
            .running
            .values()
            .map(|r| {
                let req = &r.job.request;
                let version = req
                    .version
                    .as_ref()
                    .map(|v| format!(" {}", v.as_str()))
                    .unwrap_or_default();
                format!(
                    "running {}/{}{} (phase: {})",
                    req.component, req.action, version, r.phase
                )
            })
            .collect();
        parts.sort();
        if !self.queue.is_empty() {
            parts.push(format!("{} queued", self.queue.len()));
        }
        if parts.is_empty() {
            "idle".into()
        } else {
            parts.join("; ")
        }
    }

    fn publish_status_line(&mut self) {
        let line = self.status_line();
        if line != self.last_status_line {
            systemd::status(&line);
            self.last_status_line = line;
        }
    }
}
