//! Concluding a run: from its exit record (or a refusal at its turn) to exactly one final
//! status, recorded in the inventory, written, made durable, and the request file removed, in
//! the order docs/durability.md gives.

use tracing::{error, info, warn};

use super::commit::AfterFlush;
use super::preflight::members;
use super::{Daemon, Job, SpoolIx};
use crate::record::RunSpec;
use crate::report::{self, RunContext};
use crate::request::{Request, RequestId, printable};
use crate::status::{Code, Durability, Progress, Status};
use crate::{spool, status};

impl Daemon {
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
        if !self.running.contains_key(&id) {
            // Not ours (already concluded): an exit file left by a crash after concluding.
            if !self.in_flight.has_id(&id) {
                self.store.files().forget(&id);
            }
            return;
        }
        // From the journal if an earlier process copied it there already, else the monitor's
        // file, copied into the journal now: flushed before the answer is shown.
        let record = match self.store.journal_exit(&id) {
            Some(record) => record,
            None => {
                let Some(record) = self.store.files().exit_file(&id) else {
                    return;
                };
                if let Err(e) = self.store.record_exit(&id, &record) {
                    // Not concluded: the exit file stays, and the next start concludes it.
                    return error!(request_id = %id, error = %e, "cannot record how the script ended");
                }
                record
            }
        };
        let Some(running) = self.running.remove(&id) else {
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
        let cancelled_by = self.in_flight.take_cancel(&id).filter(|_| record.stopped);
        let status = report::from_exit(request, &ctx, &record, cancelled_by.as_ref());
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
        self.conclude(running.job, &status);
    }

    /// The monitor is gone without an exit record: what the script did is unknown. Answer
    /// that, never run it again.
    pub(super) fn interrupted(&mut self, id: &RequestId, spec: &RunSpec, rebooted: bool) {
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
        self.conclude(running.job, &status);
    }

    /// Concludes a job: its final answer is recorded in the journal now and shown once that
    /// is durable (see `commit`). From here on the request is answered and never runs again.
    pub(super) fn conclude(&mut self, job: Job, status: &Status) {
        if let Err(e) = self.store.finish(&job.request.id, status) {
            error!(request_id = %job.request.id, error = %e, "cannot record the final result");
        }
        self.after_flush.push(AfterFlush::Answer {
            job: Box::new(job),
            status: Box::new(status.clone()),
        });
    }

    /// Once its answer (or the exit record it comes from) is durable: the inventory, then the
    /// final status, then the request file removed. None of these is flushed: after a power
    /// cut the next start writes the answer again from the journal if the request file is
    /// still there or the status came back unreadable (docs/durability.md).
    pub(super) fn show_answer(&mut self, job: &Job, status: &Status) {
        let id = &job.request.id;
        // The fleet learns the outcome once it is durable here (see `crate::fleet`).
        self.rollout_outcome(&job.request, status);
        // Before the status: a client that reads its final status then the inventory sees
        // the inventory already updated.
        self.record_in_inventory(&job.request, status);
        if self.answer(
            job.spool,
            id,
            status,
            Durability::BestEffort,
            Some(job.owner_uid),
        ) {
            self.remove_request_file(job.spool, &job.file_name);
        }
        self.store.files().forget(id);
        self.in_flight.done(job);
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
    pub(super) fn show_progress(&self, job: &Job, status: &Status, how: Progress) {
        self.show(job.spool, &job.request.id, job.owner_uid, status, how);
    }

    pub(super) fn remove_request_file(&self, ix: SpoolIx, name: &str) {
        if let Err(e) = spool::remove_request(&self.spools[ix].requests, name) {
            error!(file = %printable(name), error = %e, "cannot remove the request file");
        }
    }
}
