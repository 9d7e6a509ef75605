//! The service: one loop owns all state (queue, running scripts) and reacts to spool events,
//! script progress, script completion, signals and the watchdog timer. Each `select!` arm
//! calls a named method.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::{Component, Config};
use crate::dir::Dir;
use crate::ratelimit::RateLimiter;
use crate::report::{self, PHASE_QUEUED, PHASE_RUNNING, Refusal, RunContext};
use crate::request::{Request, RequestError, RequestId, printable};
use crate::runner::{self, Invocation, Outcome};
use crate::schedule::{self, Rules, Slot};
use crate::signature::Verifier;
use crate::spool::{self, SpoolEvent};
use crate::status::{Durability, Status, StatusDir};
use crate::{systemd, trust};

/// A request file seen by the start-up scan may still be being written in place (the client
/// does open/write/close). An unparsable file younger than this is looked at again later.
const SETTLE: Duration = Duration::from_secs(2);

/// Messages handled per loop turn before refusals are committed and the watchdog gets a look in.
const BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot prepare the spool directory {path}: {source}")]
    Spool {
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
    #[error("cannot read the signature key {path} (signature.key_file): {source}")]
    SignatureKey {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

enum Msg {
    Spool(SpoolEvent),
    /// Look at a file again once it had time to settle.
    Recheck(String),
    Phase {
        id: RequestId,
        phase: String,
    },
    Finished {
        id: RequestId,
        result: io::Result<Outcome>,
    },
}

/// Where a file name came from; only a listing can catch a file half-written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Event,
    Listing,
}

struct Job {
    request: Request,
    /// The request file's name in `requests/`; removed once the final status is durable.
    file_name: String,
    /// Who wrote the request; its status files are given to them.
    owner_uid: u32,
}

struct Running {
    job: Job,
    phase: String,
    started_at: SystemTime,
}

struct Daemon {
    config: Arc<Config>,
    requests: Dir,
    status: StatusDir,
    /// Uids whose scripts may run (see [`trust`]).
    script_owners: Vec<u32>,
    verifier: Option<Verifier>,
    rate: RateLimiter,
    /// Refused request files whose answer is written but not yet durable; removed together
    /// after one filesystem sync (a flood of junk costs one sync per batch, not per file).
    refused_files: Vec<String>,
    queue: VecDeque<Job>,
    running: HashMap<RequestId, Running>,
    /// File names of queued and running requests, so repeated events for them are ignored.
    in_flight: HashSet<String>,
    /// Ids of queued and running requests: a second request with one of them is a duplicate.
    in_flight_ids: HashSet<RequestId>,
    /// File names waiting for a [`Msg::Recheck`].
    settling: HashSet<String>,
    tx: mpsc::UnboundedSender<Msg>,
    /// Turned to `true` to terminate running scripts (shutdown grace expired).
    stop: watch::Sender<bool>,
    last_status_line: String,
}

/// Runs the service until SIGTERM/SIGINT, then drains (see [`Daemon::shut_down`]).
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let requests_dir = config.requests_dir();
    let status_dir = config.status_dir();
    for dir in [&requests_dir, &status_dir] {
        std::fs::create_dir_all(dir).map_err(|source| ServeError::Spool {
            path: dir.clone(),
            source,
        })?;
    }
    let spool_error = |path: &PathBuf| {
        let path = path.clone();
        move |source| ServeError::Spool { path, source }
    };
    let requests = Dir::open(&requests_dir).map_err(spool_error(&requests_dir))?;
    let status = StatusDir::open(&status_dir).map_err(spool_error(&status_dir))?;
    if let Some(group) = &config.spool_group {
        for deviation in spool::permission_deviations(&requests_dir, &status_dir, group) {
            warn!(
                "spool permissions: {deviation}; run `update-coordinator check` (install.sh sets them)"
            );
        }
    }
    let verifier = match &config.signature {
        Some(sig) => {
            let key = std::fs::read(&sig.key_file).map_err(|source| ServeError::SignatureKey {
                path: sig.key_file.clone(),
                source,
            })?;
            let key = key.strip_suffix(b"\n").unwrap_or(&key).to_vec();
            Some(Verifier::new(key, sig.max_age))
        }
        None => None,
    };
    match status.remove_stale_temp_files() {
        Ok(0) => {}
        Ok(n) => info!(count = n, "removed temp files left by an earlier crash"),
        Err(e) => warn!(error = %e, "cannot clean up temp files in the status directory"),
    }

    let (tx, mut rx) = mpsc::unbounded_channel();
    let watch_tx = tx.clone();
    let watcher = spool::watch(&requests_dir, move |event| {
        let _ = watch_tx.send(Msg::Spool(event));
    })
    .map_err(|source| ServeError::Watch {
        path: requests_dir.clone(),
        source,
    })?;
    // The watch is armed before the listing, so nothing written in between is missed.
    let _ = tx.send(Msg::Spool(SpoolEvent::Rescan("start-up".into())));

    let mut sigterm = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let mut watchdog = systemd::watchdog_interval().map(tokio::time::interval);

    let (stop, _) = watch::channel(false);
    let mut daemon = Daemon {
        script_owners: trust::trusted_owners(&config.script_owners),
        config: Arc::new(config),
        requests,
        status,
        verifier,
        rate: RateLimiter::new(Duration::from_secs(3600)),
        refused_files: Vec::new(),
        queue: VecDeque::new(),
        running: HashMap::new(),
        in_flight: HashSet::new(),
        in_flight_ids: HashSet::new(),
        settling: HashSet::new(),
        tx,
        stop,
        last_status_line: String::new(),
    };
    info!(
        spool = %requests_dir.display(),
        signed_requests = daemon.verifier.is_some(),
        components = %daemon.config.component_names().collect::<Vec<_>>().join(", "),
        "update coordinator ready"
    );
    systemd::ready("idle");

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
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = tick(&mut watchdog) => systemd::watchdog(),
        }
        daemon.commit_refusals();
        daemon.schedule();
        daemon.publish_status_line();
    }
    drop(watcher); // stop intake
    daemon.shut_down(&mut rx, &mut sigterm, &mut watchdog).await;
    Ok(())
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
            Msg::Spool(SpoolEvent::Ready(name)) => self.take(&name, Seen::Event),
            Msg::Spool(SpoolEvent::Created(name)) => {
                if !spool::may_be_in_progress(&self.requests, &name) {
                    self.take(&name, Seen::Event);
                }
            }
            Msg::Spool(SpoolEvent::Rescan(reason)) => self.rescan(&reason),
            Msg::Spool(SpoolEvent::Junk(name)) => self.remove_junk(&name),
            Msg::Recheck(name) => {
                self.settling.remove(&name);
                self.take(&name, Seen::Listing);
            }
            Msg::Phase { id, phase } => self.progress(&id, phase),
            Msg::Finished { id, result } => self.finish(&id, result),
        }
    }

    fn rescan(&mut self, reason: &str) {
        let listing = match spool::scan(&self.requests) {
            Ok(listing) => listing,
            Err(e) => {
                let dir = self.requests.path().display();
                return error!(error = %e, %dir, "cannot list the request directory");
            }
        };
        info!(
            reason,
            files = listing.requests.len(),
            "scanning the request directory"
        );
        for junk in listing.junk {
            self.remove_junk(&junk);
        }
        for name in listing.requests {
            self.take(&name, Seen::Listing);
        }
    }

    fn remove_junk(&self, name: &std::ffi::OsStr) {
        let file = printable(&name.to_string_lossy());
        warn!(%file, "removing a request file whose name is not UTF-8");
        if let Err(e) = spool::remove_junk(&self.requests, name) {
            error!(error = %e, %file, "cannot remove it");
        }
    }

    /// Reads, checks and queues (or answers) one request file.
    fn take(&mut self, name: &str, seen: Seen) {
        if self.in_flight.contains(name) || self.settling.contains(name) {
            return;
        }
        let config = Arc::clone(&self.config);
        let file = match spool::read_request(
            &self.requests,
            name,
            config.max_request_bytes,
            &config.writers,
        ) {
            Ok(file) => file,
            Err(spool::ReadError::Gone) => return,
            Err(e) => {
                let refusal = Refusal {
                    id: RequestId::from_file_name(name),
                    component: None,
                    action: None,
                    code: e.code(),
                    message: format!("invalid request file: {e}"),
                };
                return self.refuse(name, &refusal, None);
            }
        };
        let owner = Some(file.owner_uid);
        let request = match Request::parse(&file.bytes, config.component_names()) {
            Ok(request) => request,
            Err(rejection) => {
                let young = file.modified.elapsed().map_or(true, |age| age < SETTLE);
                if seen == Seen::Listing
                    && young
                    && matches!(rejection.error, RequestError::InvalidJson(_))
                {
                    // Possibly still being written in place; its close will send an event.
                    return self.settle(name);
                }
                return self.refuse(name, &Refusal::from(&*rejection), owner);
            }
        };
        if RequestId::from_file_name(name).is_none() {
            let message = format!(
                "the request file name {:?} is not allowed: name it <request_id>.json with 1-128 characters from A-Z a-z 0-9 . _ -",
                printable(name)
            );
            return self.refuse(
                name,
                &Refusal::of_request(&request, "invalid_file_name", message),
                owner,
            );
        }
        if let Some(verifier) = &self.verifier
            && let Err(e) = verifier.verify(&file.bytes, SystemTime::now())
        {
            return self.refuse(
                name,
                &Refusal::of_request(&request, e.code(), e.to_string()),
                owner,
            );
        }
        self.accept(name, request, file.owner_uid);
    }

    fn settle(&mut self, name: &str) {
        self.settling.insert(name.to_owned());
        let tx = self.tx.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(SETTLE).await;
            let _ = tx.send(Msg::Recheck(name));
        });
    }

    /// Queued, running, or already answered: such an id is never run again.
    fn is_known(&self, id: &RequestId) -> bool {
        self.in_flight_ids.contains(id) || self.status.has_final(id)
    }

    fn accept(&mut self, name: &str, request: Request, owner_uid: u32) {
        if self.is_known(&request.id) {
            warn!(request_id = %request.id, file = name, "duplicate request id: already queued, running or answered; ignoring this copy");
            return self.remove_request_file(name, false);
        }
        if self.queue.len() >= self.config.max_queued {
            let message = format!(
                "{} requests are already waiting (spool.max_queued); try again later",
                self.queue.len()
            );
            return self.refuse(
                name,
                &Refusal::of_request(&request, "queue_full", message),
                Some(owner_uid),
            );
        }
        let component = &self.config.components[&request.component];
        let limit = component.max_updates_per_hour;
        if request.action.is_exclusive()
            && let Err(wait) = self
                .rate
                .try_acquire(&request.component, limit, Instant::now())
        {
            let message = format!(
                "{} already had {limit} update/rollback requests in the last hour (components.{}.max_updates_per_hour); try again in {} s",
                request.component,
                request.component,
                wait.as_secs() + 1
            );
            return self.refuse(
                name,
                &Refusal::of_request(&request, "rate_limited", message),
                Some(owner_uid),
            );
        }
        let queued = report::in_progress(&request, PHASE_QUEUED, None);
        self.write_status(
            &request.id,
            &queued,
            Durability::BestEffort,
            Some(owner_uid),
        );
        info!(
            request_id = %request.id,
            component = %request.component,
            action = %request.action,
            version = request.version.as_ref().map(|v| v.as_str()),
            "request accepted"
        );
        self.in_flight.insert(name.to_owned());
        self.in_flight_ids.insert(request.id.clone());
        self.queue.push_back(Job {
            request,
            file_name: name.to_owned(),
            owner_uid,
        });
    }

    /// Answers a refused request (unless its id is unusable, or already answered or in flight:
    /// never overwrite another request's answer). The file is removed once the answer is
    /// durable, in [`Daemon::commit_refusals`].
    fn refuse(&mut self, name: &str, refusal: &Refusal, owner: Option<u32>) {
        let id = refusal
            .id
            .clone()
            .or_else(|| RequestId::from_file_name(name));
        warn!(
            request_id = id.as_ref().map(RequestId::as_str),
            file = %printable(name),
            component = refusal.component.as_deref(),
            action = refusal.action.as_deref(),
            code = refusal.code,
            "request refused: {}", refusal.message
        );
        match id {
            Some(id) if !self.is_known(&id) => {
                if self.write_status(
                    &id,
                    &report::refused(&id, refusal),
                    Durability::BestEffort,
                    owner,
                ) {
                    self.refused_files.push(name.to_owned());
                } // else keep the file: without an answer it must not disappear
            }
            _ => self.remove_request_file(name, false),
        }
    }

    /// Makes this batch's refusals durable with one filesystem sync, then removes their files.
    fn commit_refusals(&mut self) {
        if self.refused_files.is_empty() {
            return;
        }
        let names = std::mem::take(&mut self.refused_files);
        if let Err(e) = self.status.sync_filesystem() {
            // The files stay; the next scan finds them answered and removes them.
            return error!(error = %e, "cannot sync the status directory; refused requests stay for now");
        }
        for name in &names {
            self.remove_request_file(name, false);
        }
        if let Err(e) = self.requests.sync() {
            error!(error = %e, "cannot sync the request directory");
        }
    }

    fn schedule(&mut self) {
        fn slot(job: &Job) -> Slot<'_> {
            Slot {
                component: job.request.component.as_str(),
                action: job.request.action,
            }
        }
        if self.queue.is_empty() {
            return;
        }
        let rules = Rules {
            serialize_updates: self.config.serialize_updates,
            max_concurrent: self.config.max_concurrent,
        };
        let start = schedule::startable(
            self.running.values().map(|r| slot(&r.job)),
            self.queue.iter().map(slot),
            rules,
            self.config.components.len(),
        );
        // Remove from the back so earlier indices stay valid; start in arrival order.
        let mut jobs: Vec<Job> = start
            .iter()
            .rev()
            .filter_map(|&i| self.queue.remove(i))
            .collect();
        jobs.reverse();
        for job in jobs {
            self.start(job);
        }
    }

    fn start(&mut self, job: Job) {
        let request = &job.request;
        let component: &Component = &self.config.components[&request.component];
        let script = component.script(request.action);
        let program = match trust::check_script(&component.dir, &script, &self.script_owners) {
            Ok(program) => program,
            Err(untrusted) => {
                let message = format!(
                    "refusing to run {}: {untrusted}",
                    request.action.script_name()
                );
                error!(request_id = %request.id, component = %request.component, action = %request.action, code = untrusted.code(), "{message}");
                let refusal = Refusal::of_request(request, untrusted.code(), message);
                let status = report::refused(&request.id, &refusal);
                return self.conclude(&job, &status);
            }
        };
        let invocation = invocation(&self.config, component, request, program);
        let started_at = SystemTime::now();
        info!(
            request_id = %request.id,
            component = %request.component,
            action = %request.action,
            script = %invocation.program.display(),
            "running script"
        );
        let running = report::in_progress(request, PHASE_RUNNING, Some(started_at));
        self.write_status(
            &request.id,
            &running,
            Durability::BestEffort,
            Some(job.owner_uid),
        );

        let id = request.id.clone();
        let tx = self.tx.clone();
        let phase_tx = self.tx.clone();
        let phase_id = id.clone();
        let on_phase = move |phase| {
            let _ = phase_tx.send(Msg::Phase {
                id: phase_id.clone(),
                phase,
            });
        };
        let stop = self.stop.subscribe();
        tokio::spawn(async move {
            let result = runner::run(invocation, on_phase, stop).await;
            let _ = tx.send(Msg::Finished { id, result });
        });
        self.running.insert(
            request.id.clone(),
            Running {
                job,
                phase: PHASE_RUNNING.into(),
                started_at,
            },
        );
    }

    fn progress(&mut self, id: &RequestId, phase: String) {
        let Some(running) = self.running.get_mut(id) else {
            return;
        };
        let request = &running.job.request;
        info!(
            request_id = %id,
            component = %request.component,
            action = %request.action,
            phase = %phase,
            "phase"
        );
        let status = report::in_progress(request, &phase, Some(running.started_at));
        let owner = Some(running.job.owner_uid);
        running.phase = phase;
        self.write_status(id, &status, Durability::BestEffort, owner);
    }

    fn finish(&mut self, id: &RequestId, result: io::Result<Outcome>) {
        let Some(running) = self.running.remove(id) else {
            return;
        };
        let request = &running.job.request;
        let component = &self.config.components[&request.component];
        let ctx = RunContext {
            script: request.action.script_name(),
            started_at: running.started_at,
            last_phase: &running.phase,
            timeout: component.timeout(request.action),
            kill_grace: self.config.kill_grace,
        };
        let status = report::finished(request, &ctx, &result);
        let outcome = if status.success == Some(true) {
            "succeeded"
        } else {
            "failed"
        };
        let fields = (
            id.as_str(),
            request.component.as_str(),
            request.action.as_str(),
            status.code.as_deref().unwrap_or(""),
        );
        if status.success == Some(true) {
            info!(
                request_id = fields.0,
                component = fields.1,
                action = fields.2,
                outcome,
                duration_ms = status.duration_ms,
                "request finished: {}",
                status.message
            );
        } else {
            warn!(
                request_id = fields.0,
                component = fields.1,
                action = fields.2,
                outcome,
                code = fields.3,
                "request finished: {}",
                status.message
            );
        }
        self.conclude(&running.job, &status);
    }

    /// Writes a job's final status durably, then removes its request file: from here on the
    /// request is answered and will never run again.
    fn conclude(&mut self, job: &Job, status: &Status) {
        if self.write_status(
            &job.request.id,
            status,
            Durability::Durable,
            Some(job.owner_uid),
        ) {
            self.remove_request_file(&job.file_name, true);
        }
        self.in_flight.remove(&job.file_name);
        self.in_flight_ids.remove(&job.request.id);
    }

    /// Returns whether the status is on disk. Failures are logged here, once.
    fn write_status(
        &self,
        id: &RequestId,
        status: &Status,
        durability: Durability,
        owner: Option<u32>,
    ) -> bool {
        match self.status.write(id, status, durability, owner) {
            Ok(()) => true,
            Err(e) => {
                error!(request_id = %id, error = %e, dir = %self.status.path().display(), "cannot write the status file");
                false
            }
        }
    }

    fn remove_request_file(&self, name: &str, durable: bool) {
        if let Err(e) = spool::remove_request(&self.requests, name, durable) {
            error!(file = %printable(name), error = %e, "cannot remove the request file");
        }
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

    /// Intake is already stopped. Queued requests stay in `requests/` for the next start.
    /// Running scripts get `shutdown_grace` to finish; then they are terminated and answered
    /// `interrupted`. Returns once every running request has its final status.
    async fn shut_down(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Msg>,
        sigterm: &mut tokio::signal::unix::Signal,
        watchdog: &mut Option<tokio::time::Interval>,
    ) {
        let waiting = self.running.len();
        info!(
            running = waiting,
            queued = self.queue.len(),
            "stopping: no new requests are taken"
        );
        systemd::stopping(&format!(
            "stopping: waiting for {waiting} running script(s)"
        ));
        let grace = tokio::time::sleep(self.config.shutdown_grace);
        tokio::pin!(grace);
        while !self.running.is_empty() {
            tokio::select! {
                Some(msg) = rx.recv() => match msg {
                    Msg::Phase { id, phase } => self.progress(&id, phase),
                    Msg::Finished { id, result } => self.finish(&id, result),
                    Msg::Spool(_) | Msg::Recheck(_) => {}
                },
                () = &mut grace, if !*self.stop.borrow() => self.terminate_running("shutdown grace period over"),
                _ = sigterm.recv() => self.terminate_running("second stop signal"),
                _ = tick(watchdog) => systemd::watchdog(),
            }
        }
        info!("stopped");
    }

    fn terminate_running(&self, reason: &str) {
        warn!(
            reason,
            running = self.running.len(),
            "terminating running scripts"
        );
        self.stop.send_replace(true);
    }
}

/// The argv, directory and environment for one request's script.
fn invocation(
    config: &Config,
    component: &Component,
    request: &Request,
    program: PathBuf,
) -> Invocation {
    let mut env = vec![
        ("REQUEST_ID".to_owned(), request.id.to_string()),
        ("COMPONENT".to_owned(), request.component.clone()),
        ("ACTION".to_owned(), request.action.to_string()),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
    ];
    if let Some(home) = std::env::var_os("HOME") {
        env.push(("HOME".to_owned(), home.to_string_lossy().into_owned()));
    }
    let args = match &request.version {
        Some(version) => {
            env.push(("VERSION".to_owned(), version.as_str().to_owned()));
            vec![version.as_str().to_owned()]
        }
        None => Vec::new(),
    };
    Invocation {
        program,
        args,
        cwd: component.dir.clone(),
        env,
        timeout: component.timeout(request.action),
        kill_grace: config.kill_grace,
        tail_bytes: config.output_tail_bytes,
    }
}
