//! Run records across restarts: at start-up every record an earlier process left is picked up
//! where it was (the decision is [`crate::recovery::decide`]), and records past the retention
//! period are removed.

use std::time::SystemTime;

use tracing::{error, info, warn};

use super::{Daemon, Job, Running, SpoolIx};
use crate::record::{Accepted, RunState, boot_id};
use crate::recovery::{self, Found, Recovery, Started};
use crate::report;
use crate::request::printable;
use crate::status::{Durability, Phase, Progress, Status};

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
            let found = self.found(&job, &record.state, &this_boot);
            self.carry_out(job, record.state, recovery::decide(found));
        }
        self.positions_moved();
        self.expire();
    }

    /// What is on disk for a run besides its record: its lock, `launched`, its exit record,
    /// its request file.
    fn found(&self, job: &Job, state: &RunState, this_boot: &str) -> Found {
        let id = &job.request.id;
        match state {
            RunState::Queued => Found::Accepted,
            RunState::Started(spec) => {
                let this_boot = spec.boot_id == this_boot;
                Found::Started(Started {
                    this_boot,
                    // A lock of another boot is not asked: its holder is certainly gone.
                    monitor_alive: this_boot && self.store.monitor_alive(id),
                    launched: self.store.launched(id),
                    exit_record: self.store.exit(id).is_some(),
                })
            }
            RunState::Finished(_) => Found::Finished {
                request_file: self.spools[job.spool]
                    .requests
                    .lstat(&job.file_name)
                    .is_ok(),
                answer_lost: self.spools[job.spool].status.lost_answer(id),
            },
        }
    }

    /// Does what [`recovery::decide`] decided for the run of `job`, whose record is `state`.
    fn carry_out(&mut self, job: Job, state: RunState, decision: Recovery) {
        let id = job.request.id.clone();
        match (decision, state) {
            (Recovery::AnswerAgain | Recovery::Tidy, RunState::Finished(status)) => {
                self.finish_leftovers(&job, &status, decision == Recovery::AnswerAgain)
            }
            (Recovery::Requeue | Recovery::Unstart, _) => {
                if decision == Recovery::Unstart {
                    // Stopped between recording the start and launching the script: it
                    // never ran, so it simply waits for its turn again.
                    info!(request_id = %id, component = %job.request.component, action = %job.request.action, "run never launched before the restart; re-queued");
                    if let Err(e) = self.store.unstart(&id) {
                        warn!(request_id = %id, component = %job.request.component, action = %job.request.action, error = %e, "cannot reset the run record");
                    }
                } else {
                    info!(request_id = %id, component = %job.request.component, action = %job.request.action, "re-queued after restart");
                }
                self.repair_status(&job, Phase::Queued, None);
                self.in_flight.track(&job);
                self.queue.push_back(job);
            }
            (
                Recovery::Reattach | Recovery::Conclude | Recovery::Interrupted { .. },
                RunState::Started(spec),
            ) => {
                let started_at = spec.started_at;
                self.in_flight.track(&job);
                if decision == Recovery::Reattach {
                    self.repair_status(&job, Phase::Running, Some(started_at));
                    info!(request_id = %id, component = %job.request.component, action = %job.request.action, "re-attached to a running script");
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
                match decision {
                    Recovery::Conclude => self.exited(&format!("{id}.json")),
                    Recovery::Interrupted { rebooted } => self.interrupted(&id, &spec, rebooted),
                    _ => {} // followed from now on (see `check_reattached`)
                }
            }
            // `decide` gives these only for records in another state.
            (decision, state) => {
                warn!(request_id = %id, ?decision, ?state, "no recovery for this record")
            }
        }
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
        // Its data flushed: a record restored after a power cut must not come back empty
        // from another one (rare, and only at start-up).
        self.write_progress(
            job.spool,
            id,
            job.owner_uid,
            &status,
            Progress::Restore,
            Durability::NeverEmpty,
        );
    }

    /// A finished run. `answer_again`: its request file is still there, or its status came
    /// back unreadable from a power cut (neither is flushed): write the answer again (the
    /// same one, from the journal) and remove the file.
    fn finish_leftovers(&mut self, job: &Job, status: &Status, answer_again: bool) {
        if answer_again
            && self.answer(
                job.spool,
                &job.request.id,
                status,
                Durability::BestEffort,
                Some(job.owner_uid),
            )
        {
            self.remove_request_file(job.spool, &job.file_name);
        }
        self.store.files().forget(&job.request.id);
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
                .expire(retention, |id| self.in_flight.has_id(id))
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

/// A queued job again, from its record (in spool `spool`).
fn job_from(spool: SpoolIx, accepted: &Accepted) -> Option<Job> {
    Some(Job::new(
        spool,
        accepted.request()?,
        accepted.file_name.clone(),
        accepted.owner_uid,
    ))
}
