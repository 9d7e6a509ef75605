//! Starting a run: recording it, starting its monitor (which runs the script, see
//! [`crate::monitor`]) and following that monitor until it ends or is asked to stop.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::SystemTime;

use tracing::{error, info, warn};

use super::commit::AfterFlush;
use super::preflight::members;
use super::{Daemon, Job, Msg, Running};
use crate::config::{Component, Config};
use crate::record::{Accepted, RunSpec, boot_id, monotonic_now_ns};
use crate::report::{self, RunContext};
use crate::request::{Request, RequestId};
use crate::runner::Invocation;
use crate::status::{Phase, Progress};
use crate::trust;

impl Daemon {
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
                return self.conclude(job, &status);
            }
        };
        // A single request is run by `invocation` and `procedure` below, not as a batch.
        let batch_members = if request.is_batch() {
            members(request)
        } else {
            Vec::new()
        };
        let batch: Vec<crate::procedure::ComponentUpdate> = batch_members
            .into_iter()
            .zip(&programs)
            .map(|(member, program)| {
                let component = &self.config.components[&member.component];
                crate::procedure::ComponentUpdate {
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
        // Recorded now, flushed with everything else this turn; the monitor (and so the
        // script) starts only after that flush (see `commit`).
        let lock = match self.store.start(&request.id, &spec) {
            Ok(lock) => lock,
            Err(e) => {
                error!(request_id = %request.id, error = %e, "cannot record the run's start");
                return self.launch_failed(job, &spec, started_at, e);
            }
        };
        let id = request.id.clone();
        self.after_flush.push(AfterFlush::Launch {
            id: id.clone(),
            spec: Box::new(spec),
            lock,
        });
        self.running.insert(
            id,
            Running {
                job,
                phase: Phase::Running,
                started_at,
                reattached: false,
            },
        );
    }

    /// Once the run's start is durable: shows it running and starts its monitor.
    pub(super) fn launch(&mut self, id: &RequestId, spec: &RunSpec, lock: std::fs::File) {
        let Some(running) = self.running.get(id) else {
            return;
        };
        let job = &running.job;
        let status = report::in_progress(&job.request, Phase::Running, Some(spec.started_at));
        self.show(job.spool, id, job.owner_uid, &status, Progress::Update);
        if let Err(e) = self.spawn_monitor(id, spec, lock) {
            error!(request_id = %id, error = %e, "cannot start the run's monitor");
            if let Some(running) = self.running.remove(id) {
                self.launch_failed(running.job, spec, spec.started_at, e);
            }
            // Its slot is free: a loop turn starts the next one.
            let _ = self.tx.send(Msg::Wake);
        }
    }

    /// A run that could not be started: answered with why (never run, so never interrupted).
    fn launch_failed(
        &mut self,
        job: Job,
        spec: &RunSpec,
        started_at: SystemTime,
        error: std::io::Error,
    ) {
        let ctx = RunContext {
            script: job.request.action.script_name(),
            started_at,
            last_phase: &Phase::Running,
            timeout: spec.invocation.timeout,
            kill_grace: spec.invocation.kill_grace,
        };
        let status = report::finished(&job.request, &ctx, &Err(error));
        self.conclude(job, &status);
    }

    /// The health gate and rollback for an update, when the component wants them and its
    /// scripts can be trusted (an untrusted one is left out, with a log line).
    pub(super) fn procedure(
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

    /// Locks the run's lock file and hands the lock to a new monitor as its stdin, so the
    /// lock is held from before the monitor exists until it exits.
    fn spawn_monitor(
        &self,
        id: &RequestId,
        spec: &RunSpec,
        lock: std::fs::File,
    ) -> std::io::Result<()> {
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
