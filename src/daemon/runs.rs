//! Runs: starting a job's monitor, following it, and concluding it with exactly one final
//! status, including across restarts (recovery from the run records).

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::SystemTime;

use tracing::{error, info, warn};

use super::{Daemon, Job, Msg, Running, SpoolIx};
use crate::config::{Component, Config};
use crate::record::{Accepted, RunSpec, RunState, boot_id, monotonic_now_ns};
use crate::report::{self, Refusal, RunContext};
use crate::request::{Request, RequestId, printable};
use crate::runner::Invocation;
use crate::status::{Code, Durability, Phase, Progress, Status};
use crate::{spool, status, trust};

impl Daemon {
    /// Reads the run records left by earlier processes and picks every run up where it was:
    /// queued runs go back into the queue, live monitors are re-attached, ended scripts are
    /// answered, and runs whose monitor vanished (reboot, kill) are answered `interrupted`.
    pub(super) fn recover(&mut self) {
        let (records, problems) = match self.store.load() {
            Ok(loaded) => loaded,
            Err(e) => return error!(error = %e, "cannot read the run records"),
        };
        for problem in problems {
            warn!("run records: {problem}");
        }
        let this_boot = boot_id();
        for record in records {
            let spool = self.spool_ix(&record.accepted.spool);
            let Some(job) = job_from(spool, &record.accepted) else {
                warn!(request_id = %printable(&record.accepted.request_id), "run record names an unknown request; skipped");
                continue;
            };
            let id = job.request.id.clone();
            match record.state {
                RunState::Finished(status) => self.finish_leftovers(&job, &status),
                RunState::Queued => {
                    info!(request_id = %id, component = %job.request.component, action = %job.request.action, "re-queued after restart");
                    self.repair_status(&job, Phase::Queued, None);
                    self.track(&job);
                    self.queue.push_back(job);
                }
                RunState::Started(spec) => {
                    let started_at = spec.started_at;
                    self.track(&job);
                    let alive = spec.boot_id == this_boot && self.store.monitor_alive(&id);
                    if !alive && self.store.exit(&id).is_none() && !self.store.launched(&id) {
                        // Stopped between recording the start and launching the script: it
                        // never ran, so it simply waits for its turn again.
                        info!(request_id = %id, component = %job.request.component, action = %job.request.action, "run never launched before the restart; re-queued");
                        if let Err(e) = self.store.unstart(&id) {
                            warn!(request_id = %id, component = %job.request.component, action = %job.request.action, error = %e, "cannot reset the run record");
                        }
                        self.repair_status(&job, Phase::Queued, None);
                        self.queue.push_back(job);
                        continue;
                    }
                    if alive {
                        self.repair_status(&job, Phase::Running, Some(started_at));
                    }
                    self.running.insert(
                        id.clone(),
                        Running {
                            job,
                            phase: Phase::Running,
                            started_at,
                            reattached: true,
                        },
                    );
                    if self.store.exit(&id).is_some() {
                        self.exited(&format!("{id}.json"));
                    } else if alive {
                        let request = &self.running[&id].job.request;
                        info!(request_id = %id, component = %request.component, action = %request.action, "re-attached to a running script");
                    } else {
                        self.interrupted(&id, &spec, spec.boot_id != this_boot);
                    }
                }
            }
        }
        self.positions_moved();
        self.expire();
    }

    /// At start-up, an in-flight request's in-progress status may be gone or unreadable: its
    /// writes are not fsynced, and after a power cut ext4 often brings such a file back empty.
    /// A client must never take that for an answer, so it is written again (a readable one is
    /// left alone: its monitor's phase and output tail are newer than what we know).
    fn repair_status(&self, job: &Job, phase: Phase, started_at: Option<SystemTime>) {
        let id = &job.request.id;
        if matches!(self.spools[job.spool].status.read_progress(id), Ok(Some(_))) {
            return;
        }
        let status = report::in_progress(&job.request, phase, started_at);
        self.show_progress(job, &status, Durability::NeverEmpty, Progress::Restore);
    }

    fn track(&mut self, job: &Job) {
        self.in_flight.insert((job.spool, job.file_name.clone()));
        self.in_flight_ids.insert(job.request.id.clone());
    }

    /// A finished run whose request file is still there: the crash came between recording the
    /// result and removing the file, so the status may never have been written. Write it
    /// (again), then remove the file.
    fn finish_leftovers(&mut self, job: &Job, status: &Status) {
        if self.spools[job.spool]
            .requests
            .lstat(&job.file_name)
            .is_ok()
        {
            self.answer(
                job.spool,
                &job.request.id,
                status,
                Durability::Durable,
                Some(job.owner_uid),
            );
            self.remove_request_file(job.spool, &job.file_name, true);
        }
        let _ = self.store.remove_exit(&job.request.id);
    }

    /// The monitor is gone without an exit record: what the script did is unknown. Answer
    /// that, never run it again.
    fn interrupted(&mut self, id: &RequestId, spec: &RunSpec, rebooted: bool) {
        let Some(running) = self.running.remove(id) else {
            return;
        };
        let request = &running.job.request;
        let why = if rebooted {
            "the machine restarted while it was running"
        } else {
            "its monitor process was killed"
        };
        let command = std::iter::once(request.action.script_name().to_owned())
            .chain(spec.invocation.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let message = format!(
            "interrupted: `{command}` started at {}, but {why}; whether it completed is unknown and it is not run again; check the component and submit a new request if needed",
            status::rfc3339(spec.started_at),
        );
        warn!(request_id = %id, component = %request.component, action = %request.action, code = %Code::Interrupted, outcome = "failed", "{message}");
        let status = report::interrupted(request, spec.started_at, message);
        self.conclude(&running.job, &status);
    }

    /// Starts a job: checks its script, records the run, and starts its monitor.
    pub(super) fn start(&mut self, job: Job) {
        let request = &job.request;
        let component: &Component = &self.config.components[&request.component];
        let checked = self.preflight_all(request);
        let programs = match checked {
            Ok(programs) => programs,
            Err(refusal) => {
                error!(request_id = %request.id, component = %request.component, action = %request.action, code = %refusal.code, outcome = "failed", "{}", refusal.message);
                let status = report::refused(&request.id, &refusal);
                return self.conclude(&job, &status);
            }
        };
        // A single request is run by `invocation` and `procedure` below, not as a batch.
        let batch_members = if request.is_batch() {
            members(request)
        } else {
            Vec::new()
        };
        let batch: Vec<crate::procedure::Member> = batch_members
            .into_iter()
            .zip(&programs)
            .map(|(member, program)| {
                let component = &self.config.components[&member.component];
                crate::procedure::Member {
                    component: member.component.clone(),
                    version: member.version_text().unwrap_or_default(),
                    update: invocation(&self.config, component, &member, program.clone()),
                    procedure: self.procedure(component, &member),
                }
            })
            .collect();
        let program = programs.into_iter().next().unwrap_or_default();
        let invocation = invocation(&self.config, component, request, program);
        let started_at = SystemTime::now();
        let accepted = Accepted::new(
            request,
            &self.spools[job.spool].config.name,
            &job.file_name,
            job.owner_uid,
        );
        let spec = RunSpec {
            deadline_monotonic_ns: monotonic_now_ns() + invocation.timeout.as_nanos(),
            invocation,
            boot_id: boot_id(),
            started_at,
            status_dir: self.spools[job.spool].config.status_dir(),
            progress_in_status: self.config.progress_in_status,
            owner_uid: job.owner_uid,
            accepted,
            limits: component.limits.clone(),
            applied: Some(crate::limits::plan(&component.limits, &self.host)),
            procedure: if batch.is_empty() {
                self.procedure(component, request)
            } else {
                None
            },
            batch,
        };
        info!(
            request_id = %request.id,
            component = %request.component,
            action = %request.action,
            script = %spec.invocation.program.display(),
            "running script"
        );
        self.audit(crate::audit::Event::of("started", request));
        let running = report::in_progress(request, Phase::Running, Some(started_at));
        self.show_progress(&job, &running, Durability::BestEffort, Progress::Update);

        if let Err(e) = self.spawn_monitor(&request.id, &spec) {
            error!(request_id = %request.id, error = %e, "cannot start the run's monitor");
            let ctx = RunContext {
                script: request.action.script_name(),
                started_at,
                last_phase: &Phase::Running,
                timeout: spec.invocation.timeout,
                kill_grace: spec.invocation.kill_grace,
            };
            let status = report::finished(request, &ctx, &Err(e));
            return self.conclude(&job, &status);
        }
        self.running.insert(
            request.id.clone(),
            Running {
                job,
                phase: Phase::Running,
                started_at,
                reattached: false,
            },
        );
    }

    /// What must hold before a script runs: it is trusted, and (for an update) the disk has
    /// the configured free space. Returns the script to execute.
    pub(super) fn preflight(
        &self,
        component: &Component,
        request: &Request,
    ) -> Result<PathBuf, Refusal> {
        let script = component.script(request.action);
        let program = trust::check_script(&component.dir, &script, &self.script_owners).map_err(
            |untrusted| {
                let message = format!(
                    "refusing to run {}: {untrusted}",
                    request.action.script_name()
                );
                Refusal::of_request(request, untrusted.code(), message)
            },
        )?;
        if request.action == crate::request::Action::Update && component.min_free_disk_mb > 0 {
            let path = &component.disk_path;
            let free_mb = nix::sys::statvfs::statvfs(path)
                // The casts matter on 32-bit ARM (armhf), where these counts are 32-bit.
                .map(|st| {
                    #[allow(clippy::unnecessary_cast)]
                    let (blocks, size) = (st.blocks_available() as u64, st.fragment_size() as u64);
                    blocks * size / (1024 * 1024)
                })
                .map_err(|e| {
                    Refusal::of_request(
                        request,
                        Code::InsufficientDisk,
                        format!("cannot measure the free space on {}: {e}", path.display()),
                    )
                })?;
            if free_mb < component.min_free_disk_mb {
                let message = format!(
                    "not enough free disk space for the update: {free_mb} MB free on {}, {} MB required (components.{}.min_free_disk_mb)",
                    path.display(),
                    component.min_free_disk_mb,
                    request.component
                );
                return Err(Refusal::of_request(
                    request,
                    Code::InsufficientDisk,
                    message,
                ));
            }
        }
        Ok(program)
    }

    /// [`Daemon::preflight`] for every component of the request; the scripts in order.
    pub(super) fn preflight_all(&self, request: &Request) -> Result<Vec<PathBuf>, Refusal> {
        members(request)
            .iter()
            .map(|member| {
                let component = &self.config.components[&member.component];
                self.preflight(component, member).map_err(|mut refusal| {
                    // Answered for the whole request, naming the component that failed.
                    if request.is_batch() {
                        refusal.message = format!("{}: {}", member.component, refusal.message);
                    }
                    refusal.component = Some(request.component_label());
                    refusal
                })
            })
            .collect()
    }

    /// A dry run: everything a real run would check, and a description of what it would do.
    pub(super) fn dry_run_status(&self, request: &Request) -> Status {
        if request.is_batch() {
            return self.batch_dry_run_status(request);
        }
        let component = &self.config.components[&request.component];
        let mut status = match self.preflight(component, request) {
            Err(refusal) => {
                let mut refusal = refusal;
                refusal.message =
                    format!("dry run: a real request would fail: {}", refusal.message);
                report::refused(&request.id, &refusal)
            }
            Ok(program) => {
                let command = std::iter::once(program.display().to_string())
                    .chain(request.version.iter().map(|v| v.as_str().to_owned()))
                    .collect::<Vec<_>>()
                    .join(" ");
                let gate = match self.procedure(component, request) {
                    Some(p) => format!(
                        ", then health-check.sh (up to {} attempts, {} s apart) and rollback.sh if the update fails or stays unhealthy",
                        p.health_retries,
                        p.health_interval.as_secs_f64()
                    ),
                    None => String::new(),
                };
                let applied = crate::limits::plan(&component.limits, &self.host);
                let limits = describe_limits(&applied);
                let mut status = report::in_progress(request, Phase::Done, None);
                status.success = Some(true);
                status.message = format!(
                    "dry run: would run `{command}` in {} with a {} s timeout{gate}; {limits}. Nothing was run.",
                    component.dir.display(),
                    component.timeout(request.action).as_secs_f64()
                );
                status.limits = Some(applied);
                status
            }
        };
        status.dry_run = true;
        status
    }

    /// A multi-component dry run: every component checked, the order of the updates told.
    fn batch_dry_run_status(&self, request: &Request) -> Status {
        let mut status = match self.preflight_all(request) {
            Err(mut refusal) => {
                refusal.message =
                    format!("dry run: a real request would fail: {}", refusal.message);
                report::refused(&request.id, &refusal)
            }
            Ok(programs) => {
                let steps: Vec<String> = members(request)
                    .iter()
                    .zip(programs)
                    .map(|(member, program)| {
                        let component = &self.config.components[&member.component];
                        let gate = if self.procedure(component, member).is_some() {
                            " (health-gated)"
                        } else {
                            " (no health gate: auto_rollback = false)"
                        };
                        format!(
                            "`{} {}`{gate}",
                            program.display(),
                            member.version_text().unwrap_or_default()
                        )
                    })
                    .collect();
                let mut status = report::in_progress(request, Phase::Done, None);
                status.success = Some(true);
                status.message = format!(
                    "dry run: would run in order {}; if one fails, the ones already updated are rolled back, newest first. Nothing was run.",
                    steps.join(", then ")
                );
                status
            }
        };
        status.dry_run = true;
        status
    }

    /// The health gate and rollback for an update, when the component wants them and its
    /// scripts can be trusted (an untrusted one is left out, with a log line).
    fn procedure(
        &self,
        component: &Component,
        request: &Request,
    ) -> Option<crate::procedure::Procedure> {
        if request.action != crate::request::Action::Update || !component.auto_rollback {
            return None;
        }
        let mut scripts = Vec::new();
        for action in [
            crate::request::Action::Health,
            crate::request::Action::Rollback,
        ] {
            match trust::check_script(
                &component.dir,
                &component.script(action),
                &self.script_owners,
            ) {
                Ok(program) => scripts.push(program),
                Err(untrusted) => {
                    warn!(request_id = %request.id, component = %request.component, "no health-gated update: {untrusted}");
                    return None;
                }
            }
        }
        let as_action = |action: crate::request::Action, program: PathBuf| {
            let mut inv = invocation(&self.config, component, request, program);
            inv.args.clear();
            if let Some(entry) = inv.env.iter_mut().find(|(k, _)| k == "ACTION") {
                entry.1 = action.to_string();
            }
            inv.timeout = component.timeout(action);
            inv
        };
        let rollback = scripts.pop()?;
        let health = scripts.pop()?;
        Some(crate::procedure::Procedure {
            health: as_action(crate::request::Action::Health, health),
            rollback: as_action(crate::request::Action::Rollback, rollback),
            health_retries: component.health_retries,
            health_interval: component.health_interval,
        })
    }

    /// Records the run durably, locks its lock file and hands the lock to a new monitor as its
    /// stdin, so the lock is held from before the monitor exists until it exits.
    fn spawn_monitor(&self, id: &RequestId, spec: &RunSpec) -> std::io::Result<()> {
        let lock = self.store.start(id, spec)?;
        // Not `Flock`: its drop would unlock, and the lock must outlive our copy of the file.
        #[allow(deprecated)]
        nix::fcntl::flock(
            lock.as_raw_fd(),
            nix::fcntl::FlockArg::LockExclusiveNonblock,
        )?;
        // With systemd, the monitor (and so the script) starts inside the run's own scope:
        // the limits apply to the run, and stopping or killing the service leaves it alone.
        let mut command = match (&spec.applied, &self.host.systemd_run) {
            (Some(applied), Some(systemd_run))
                if applied.mechanism == crate::limits::Mechanism::SystemdScope
                    && applied.unit.is_some() =>
            {
                let unit = applied.unit.as_deref().unwrap_or_default();
                let mut argv = crate::limits::scope_command(systemd_run, unit, applied);
                let mut command = Command::new(argv.remove(0));
                command.args(argv).arg(&self.exe);
                command
            }
            _ => Command::new(&self.exe),
        };
        command
            .arg("__monitor")
            .arg("--state-dir")
            .arg(&self.config.state_dir)
            .arg("--id")
            .arg(id.as_str())
            .env(
                crate::logging::UNIT_ENV,
                self.unit.as_deref().unwrap_or_default(),
            )
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::from(lock))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // Its own process group: a signal meant for the coordinator's group never reaches it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn()?;
        let stdout = child.stdout.take();
        let tx = self.tx.clone();
        let phase_id = id.clone();
        std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || {
                if let Some(stdout) = stdout {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        if let Some(phase) = line.strip_prefix("PHASE ") {
                            let _ = tx.send(Msg::Phase {
                                id: phase_id.clone(),
                                phase: phase.to_owned(),
                            });
                        }
                    }
                }
                // Reap it; its exit record, not its exit status, carries the result.
                let _ = child.wait();
                let _ = tx.send(Msg::MonitorGone(phase_id));
            })?;
        Ok(())
    }

    /// A monitor exited. Normally its exit record is there (its event may still be on the
    /// way); without one, the monitor died mid-run.
    pub(super) fn monitor_gone(&mut self, id: &RequestId) {
        if !self.running.contains_key(id) {
            return; // concluded already
        }
        if self.store.exit(id).is_some() {
            return self.exited(&format!("{id}.json"));
        }
        let spec = self.store.spec(id);
        match spec {
            Some(spec) => self.interrupted(id, &spec, false),
            None => warn!(request_id = %id, "a monitor exited and its run record is unreadable"),
        }
    }

    /// Re-attached runs whose monitor died without an exit record (no child to tell us).
    pub(super) fn check_reattached(&mut self) {
        let ids: Vec<RequestId> = self
            .running
            .iter()
            .filter(|(_, r)| r.reattached)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if !self.store.monitor_alive(&id) {
                self.monitor_gone(&id);
            }
        }
    }

    pub(super) fn progress(&mut self, id: &RequestId, phase: String) {
        if let Some(running) = self.running.get_mut(id) {
            running.phase = Phase::from(phase);
        }
    }

    /// Asks a run's monitor to stop its script (SIGTERM). Returns whether it was asked: a
    /// monitor still starting up finds the stop marker instead (see `monitor`).
    pub(super) fn stop_run(&self, id: &RequestId) -> bool {
        let run = self.store.run_path(id);
        // Before the pid is read: a monitor that publishes its pid after this sees the marker.
        let marked = std::fs::write(run.join(crate::record::STOP_MARKER), "").is_ok();
        let starting = self.running.get(id).is_some_and(|r| !r.reattached);
        let Some(pid) = std::fs::read_to_string(run.join("monitor.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        else {
            // Our own monitor, still starting up: it reads the marker once it can be stopped.
            return marked && starting;
        };
        // Only a live monitor of this very run: the pid file may be stale.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !(cmdline.contains("__monitor") && cmdline.contains(id.as_str())) {
            return false;
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .is_ok()
    }

    /// Looks at every exit record (after lost events or at start-up).
    pub(super) fn collect_exits(&mut self) {
        let ids: Vec<RequestId> = self.running.keys().cloned().collect();
        for id in ids {
            if self.store.exit(&id).is_some() {
                self.exited(&format!("{id}.json"));
            }
        }
    }

    /// An exit record appeared: conclude that run with the script's real result.
    pub(super) fn exited(&mut self, name: &str) {
        let Some(id) = RequestId::from_file_name(name) else {
            return;
        };
        let Some(record) = self.store.exit(&id) else {
            return;
        };
        let Some(running) = self.running.remove(&id) else {
            // Not ours (already concluded): an exit record left by a crash after concluding.
            let _ = self.store.remove_exit(&id);
            return;
        };
        let request = &running.job.request;
        let component = &self.config.components[&request.component];
        let ctx = RunContext {
            script: request.action.script_name(),
            started_at: running.started_at,
            last_phase: &record.last_phase,
            timeout: component.timeout(request.action),
            kill_grace: self.config.kill_grace,
        };
        let mut status = report::finished(request, &ctx, &record.to_result());
        report::add_usage(&mut status, record.usage.as_ref(), record.limits.as_ref());
        report::add_procedure(
            &mut status,
            record.outcome,
            record.outcome_message.as_deref(),
            &record.steps,
        );
        if !record.members.is_empty() {
            status.components = Some(record.members.clone());
        }
        // Last: a cancelled run is `cancelled`, whatever else its steps say.
        if let Some(by) = self.cancelling.remove(&id)
            && record.stopped
        {
            status.code = Some(Code::Cancelled);
            status.success = Some(false);
            status.phase = Phase::Failed;
            status.message = format!(
                "cancelled by request {by}: {} was stopped (SIGTERM to its process group)",
                request.action.script_name()
            );
        }
        let outcome = if status.success == Some(true) {
            "succeeded"
        } else {
            "failed"
        };
        let code = status.code.as_ref().map_or("", Code::as_str);
        if status.success == Some(true) {
            info!(request_id = %id, component = %request.component, action = %request.action, outcome, duration_ms = status.duration_ms, "request finished: {}", status.message);
        } else {
            warn!(request_id = %id, component = %request.component, action = %request.action, outcome, code, "request finished: {}", status.message);
        }
        // The exit record is durable: show the answer now, and make it durable (with the
        // run's final record) right after. A crash in between concludes again from the exit
        // record: the same answer, never another (docs/durability.md).
        self.record_in_inventory(&running.job.request, &status);
        let shown = self.answer(
            running.job.spool,
            &id,
            &status,
            Durability::BestEffort,
            Some(running.job.owner_uid),
        );
        self.finish_job(&running.job, &status, shown);
    }

    /// Concludes a job: the result is recorded, then the status written, then the request
    /// file removed, each durable before the next (docs/durability.md). From here on the
    /// request is answered and never runs again.
    pub(super) fn conclude(&mut self, job: &Job, status: &Status) {
        // Before the status: a client that reads its final status then the inventory sees
        // the inventory already updated.
        self.record_in_inventory(&job.request, status);
        self.finish_job(job, status, false);
    }

    /// [`Daemon::conclude`] once the inventory is updated; `shown`: the final status is
    /// already in `status/` (best effort) and only needs to be made durable.
    fn finish_job(&mut self, job: &Job, status: &Status, shown: bool) {
        let id = &job.request.id;
        if let Err(e) = self.store.finish(id, status) {
            error!(request_id = %id, error = %e, "cannot record the final result");
        }
        let durable = shown
            && match self.spools[job.spool].status.make_durable(id) {
                Ok(_) => true, // still there, now durable; or collected by the client already
                Err(e) => {
                    warn!(request_id = %id, error = %e, "cannot flush the status file; writing it again");
                    false
                }
            };
        if durable
            || self.answer(
                job.spool,
                id,
                status,
                Durability::Durable,
                Some(job.owner_uid),
            )
        {
            self.remove_request_file(job.spool, &job.file_name, true);
        }
        if let Err(e) = self.store.remove_exit(id) {
            warn!(request_id = %id, error = %e, "cannot remove the exit record");
        }
        self.in_flight.remove(&(job.spool, job.file_name.clone()));
        self.in_flight_ids.remove(id);
        let cancelled = status.code == Some(Code::Cancelled);
        let outcome = match status.outcome {
            Some(outcome) => outcome.as_str(),
            None if status.success == Some(true) => "succeeded",
            None => "failed",
        };
        self.audit(
            crate::audit::Event::of(
                if cancelled { "cancelled" } else { "finished" },
                &job.request,
            )
            .outcome(outcome)
            .code(status.code.as_ref())
            .detail(status.message.clone()),
        );
    }

    /// Records a final result in the inventory and publishes it.
    fn record_in_inventory(&mut self, request: &Request, status: &Status) {
        match &status.components {
            // Each component of a batch is recorded with its own version and outcome.
            Some(outcomes) => {
                for (member, result) in members(request).iter().zip(outcomes) {
                    self.inventory
                        .record_member(member, result.outcome, &status.timestamp);
                }
            }
            None => {
                for member in members(request) {
                    self.inventory.record(&member, status);
                }
            }
        }
        self.save_inventory();
    }

    /// Loads the inventory and adds configured components it does not list yet.
    pub(super) fn load_inventory(&mut self) {
        self.inventory = self.store.inventory().unwrap_or_default();
        for (name, component) in &self.config.components {
            self.inventory
                .discover(name, &component.dir, &self.script_owners);
        }
        self.save_inventory();
    }

    /// Saves the inventory in the state directory and publishes it as status/inventory.json.
    fn save_inventory(&self) {
        if let Err(e) = self.store.save_inventory(&self.inventory) {
            warn!(error = %e, "cannot save the inventory");
        }
        match serde_json::to_vec_pretty(&self.inventory.published()) {
            Ok(bytes) => {
                for spool in &self.spools {
                    if let Err(e) = spool.status.publish(crate::inventory::FILE, &bytes) {
                        warn!(spool = %spool.config.name, error = %e, "cannot publish status/inventory.json");
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot serialize the inventory"),
        }
    }

    /// Writes a final status. Returns whether it is on disk. Failures are logged here, once.
    pub(super) fn answer(
        &self,
        ix: SpoolIx,
        id: &RequestId,
        status: &Status,
        durability: Durability,
        owner: Option<u32>,
    ) -> bool {
        let dir = &self.spools[ix].status;
        match dir.answer(id, status, durability, owner) {
            Ok(()) => true,
            Err(e) => {
                error!(request_id = %id, error = %e, dir = %dir.path().display(), "cannot write the status file");
                false
            }
        }
    }

    /// Writes an in-flight job's progress record (best effort: the answer is what counts).
    pub(super) fn show_progress(
        &self,
        job: &Job,
        status: &Status,
        durability: Durability,
        how: Progress,
    ) {
        let id = &job.request.id;
        let dir = &self.spools[job.spool].status;
        if let Err(e) = dir.progress(id, status, durability, Some(job.owner_uid), how) {
            warn!(request_id = %id, error = %e, dir = %dir.path().display(), "cannot write the progress record");
        }
    }

    pub(super) fn remove_request_file(&self, ix: SpoolIx, name: &str, durable: bool) {
        if let Err(e) = spool::remove_request(&self.spools[ix].requests, name, durable) {
            error!(file = %printable(name), error = %e, "cannot remove the request file");
        }
    }

    /// Removes finished records and uncollected final statuses older than the retention.
    pub(super) fn expire(&mut self) {
        let retention = self.config.retention;
        match self.store.expire(retention) {
            Ok(0) => {}
            Ok(n) => info!(
                records = n,
                "removed finished run records past the retention period"
            ),
            Err(e) => warn!(error = %e, "cannot remove old run records"),
        }
        for (ix, spool) in self.spools.iter().enumerate() {
            match spool
                .status
                .expire(retention, |id| self.in_flight_ids.contains(id))
            {
                Ok(0) => {}
                Ok(n) => info!(
                    spool = %spool.config.name,
                    statuses = n,
                    "removed final statuses nobody collected within the retention period"
                ),
                Err(e) => {
                    warn!(spool = %spool.config.name, error = %e, "cannot remove old status files")
                }
            }
            self.expire_handoff(ix, retention);
            crate::quarantine::sweep(&spool.root);
        }
    }
}

/// The request as one request per component (itself, unless it is a batch).
fn members(request: &Request) -> Vec<Request> {
    if !request.is_batch() {
        return vec![request.clone()];
    }
    request
        .batch
        .iter()
        .map(|member| Request {
            component: member.component.clone(),
            version: Some(member.version.clone()),
            batch: Vec::new(),
            ..request.clone()
        })
        .collect()
}

/// A queued job again, from its record (in spool `spool`).
fn job_from(spool: SpoolIx, accepted: &Accepted) -> Option<Job> {
    Some(Job::new(
        spool,
        accepted.request()?,
        accepted.file_name.clone(),
        accepted.owner_uid,
    ))
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
        ("HOME".to_owned(), home_dir()),
        // Lets a script restart the coordinator it runs under (self-update).
        ("COORDINATOR_PID".to_owned(), std::process::id().to_string()),
    ];
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

/// `HOME` for scripts: the service's, or its user's home (systemd sets none for root units;
/// docker finds its registry credentials through it).
fn home_dir() -> String {
    if let Some(home) = std::env::var_os("HOME") {
        return home.to_string_lossy().into_owned();
    }
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.dir.display().to_string())
        .unwrap_or_else(|| "/".into())
}

/// "limits: memory_max 512 MiB, cpu_quota 80 %, tasks_max 256 (systemd-scope)" and what is not
/// enforced.
fn describe_limits(applied: &crate::limits::Applied) -> String {
    let e = &applied.enforced;
    let mut parts = Vec::new();
    if let Some(b) = e.memory_max {
        parts.push(format!("memory_max {} MiB", b / (1024 * 1024)));
    }
    if let Some(p) = e.cpu_quota {
        parts.push(format!("cpu_quota {p} %"));
    }
    if let Some(t) = e.tasks_max {
        parts.push(format!("tasks_max {t}"));
    }
    let enforced = if parts.is_empty() {
        "no limits enforced".to_string()
    } else {
        format!("limits {} ({})", parts.join(", "), applied.mechanism)
    };
    if applied.not_enforced.is_empty() {
        enforced
    } else {
        format!("{enforced}; {}", applied.not_enforced.join("; "))
    }
}
