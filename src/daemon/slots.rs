//! The fleet gate (only with `[fleet]`, see [`crate::fleet`]): updates and rollbacks start
//! only while this host holds a slot of its group's semaphore; the slot is wanted while any
//! of them runs or is due, and given back once none is (the run concluded: health gate passed
//! or rollback finished). Those held back show phase `waiting_for_slot`.

use tracing::info;

use super::{Daemon, Job, Msg};
use crate::fleet::Fleet;
use crate::report;
use crate::request::Action;
use crate::status::{Durability, Progress};

/// Whether a request must hold a fleet slot to run.
fn needs_slot(job: &Job) -> bool {
    matches!(job.request.action, Action::Update | Action::Rollback)
}

/// What runs, as the liveness key shows it: `remote update 2.0.1`, sorted.
fn running_now<'a>(jobs: impl Iterator<Item = &'a Job>) -> Vec<String> {
    let mut running: Vec<String> = jobs
        .map(|job| {
            let r = &job.request;
            match &r.version {
                Some(v) => format!("{} {} {}", r.component_label(), r.action, v.as_str()),
                None => format!("{} {}", r.component_label(), r.action),
            }
        })
        .collect();
    running.sort();
    running
}

impl Daemon {
    /// Starts the fleet agent once the runs of an earlier process are recovered: a slot held
    /// for one of them stays held; one held with nothing to run is given back.
    pub(super) fn start_fleet(&mut self) -> Result<(), String> {
        let Some(config) = &self.config.fleet else {
            return Ok(());
        };
        let tx = self.tx.clone();
        let want = self.running.values().any(|r| needs_slot(&r.job))
            || self
                .queue
                .iter()
                .any(|job| needs_slot(job) && job.waits_until.is_none());
        self.fleet = Some(Fleet::start(config, want, move |report| {
            let _ = tx.send(Msg::Fleet(report));
        })?);
        Ok(())
    }

    /// Of the due jobs (indices into the queue), those that may start as far as the fleet
    /// is concerned; tells the agent whether a slot is wanted. Without `[fleet]`: all.
    pub(super) fn slot_gate(&mut self, due: Vec<usize>) -> Vec<usize> {
        let Some(fleet) = &mut self.fleet else {
            return due;
        };
        let want = self.running.values().any(|r| needs_slot(&r.job))
            || due.iter().any(|&i| needs_slot(&self.queue[i]));
        fleet.want(want);
        fleet.running(running_now(self.running.values().map(|r| &r.job)));
        if fleet.may_start() {
            // Those shown waiting for a slot go back to their place in line.
            let mut moved = false;
            for &i in &due {
                moved |= self.queue[i].shown.slot.take().is_some();
            }
            if moved {
                self.positions_moved();
            }
            return due;
        }
        let (group, wait) = (fleet.group().to_owned(), fleet.wait().cloned());
        let (held_back, may): (Vec<usize>, Vec<usize>) =
            due.into_iter().partition(|&i| needs_slot(&self.queue[i]));
        for i in held_back {
            let job = &self.queue[i];
            let status = report::waiting_for_slot(&job.request, &group, wait.as_ref());
            if job.shown.slot == status.fleet_slot {
                continue;
            }
            if job.shown.slot.is_none() {
                let why = status.fleet_slot.as_ref().map(|s| s.reason.as_str());
                info!(request_id = %job.request.id, component = %job.request.component, action = %job.request.action, phase = "waiting_for_slot", "waiting for a fleet slot: {}", why.unwrap_or_default());
            }
            self.show_progress(job, &status, Durability::BestEffort, Progress::Update);
            let job = &mut self.queue[i];
            job.shown.slot = status.fleet_slot;
            job.shown.position = None;
        }
        may
    }

    /// A report from the fleet agent.
    pub(super) fn fleet_report(&mut self, report: crate::fleet::Report) {
        if let Some(fleet) = &mut self.fleet {
            fleet.apply(report);
        }
    }

    /// At shutdown: the slot goes back unless a run that needs it carries on.
    pub(super) fn stop_fleet(&mut self) {
        if let Some(fleet) = &self.fleet {
            fleet.stop(!self.running.values().any(|r| needs_slot(&r.job)));
        }
    }
}
