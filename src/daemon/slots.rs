//! The fleet gate (only with `[fleet]`, see [`crate::fleet`]): updates and rollbacks start
//! only while this host holds a slot of its group's semaphore; the slot is wanted while any
//! of them runs or is due, and given back once none is (the run concluded: health gate passed
//! or rollback finished). Those held back show phase `waiting_for_slot`.

use std::time::Duration;

use tracing::info;

use super::{Daemon, Job, Msg};
use crate::fleet::Fleet;
use crate::report::{self, Refusal};
use crate::request::{Action, Request};
use crate::status::{Progress, Status};

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
        if self.fleet.is_none() {
            return due;
        }
        let due = self.wave_gate(due);
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
            self.show_progress(job, &status, Progress::Update);
            let job = &mut self.queue[i];
            job.shown.slot = status.fleet_slot;
            job.shown.position = None;
        }
        may
    }

    /// Of the due jobs, those not waiting for their host's wave of a fleet rollout; those
    /// that wait show phase `scheduled` with the rollout, the wave and when it opens, and the
    /// loop is woken then. Requests of a halted rollout go on, to be refused when they start.
    fn wave_gate(&mut self, due: Vec<usize>) -> Vec<usize> {
        let Some(fleet) = &self.fleet else {
            return due;
        };
        let mut may = Vec::with_capacity(due.len());
        let mut waits = Vec::new();
        for i in due {
            let request = &self.queue[i].request;
            let gate = match (&request.action, &request.version) {
                (Action::Update, Some(v)) if !request.is_batch() => {
                    fleet.rollout_gate(&request.component, v.as_str())
                }
                _ => None,
            };
            match gate {
                Some((rollout, crate::fleet::rollout::Gate::Wait { wave, opens_at })) => {
                    waits.push((i, (rollout.id.clone(), wave, opens_at)));
                }
                _ => may.push(i),
            }
        }
        let mut moved = false;
        for &i in &may {
            moved |= self.queue[i].shown.wave.take().is_some();
        }
        if moved {
            self.positions_moved();
        }
        for (i, shown) in waits {
            if let Some(at) = shown.2 {
                let wait = Duration::from_secs(
                    at.saturating_sub(jiff::Timestamp::now().as_second()).max(0) as u64,
                );
                let wake = tokio::time::Instant::now() + wait.min(super::SCHEDULED_RECHECK);
                self.scheduled_wake = Some(self.scheduled_wake.map_or(wake, |w| w.min(wake)));
            }
            let job = &self.queue[i];
            if job.shown.wave.as_ref() == Some(&shown) {
                continue;
            }
            let (id, wave, opens_at) = &shown;
            info!(request_id = %job.request.id, component = %job.request.component, rollout = %id, wave, phase = "scheduled", "waiting for this host's wave of the fleet rollout");
            let status = report::waiting_for_wave(&job.request, id, *wave, *opens_at);
            self.show_progress(job, &status, Progress::Update);
            let job = &mut self.queue[i];
            job.shown.wave = Some(shown);
            job.shown.position = None;
        }
        may
    }

    /// Why `request` may not start, if a fleet rollout of its version halted or was aborted.
    pub(super) fn rollout_refusal(&self, request: &Request) -> Option<Refusal> {
        let version = request.version.as_ref()?;
        if request.action != Action::Update || request.is_batch() {
            return None;
        }
        let (rollout, gate) = self
            .fleet
            .as_ref()?
            .rollout_gate(&request.component, version.as_str())?;
        let crate::fleet::rollout::Gate::Halted { state, failures } = gate else {
            return None;
        };
        let why = match state {
            crate::fleet::rollout::State::Aborted => "was aborted".to_owned(),
            _ => format!("halted after {failures} failed host(s)"),
        };
        Some(Refusal::of_request(
            request,
            crate::status::Code::RolloutHalted,
            format!(
                "the fleet rollout {} of {} {} {why}; this host did not start it",
                rollout.id, rollout.component, rollout.version
            ),
        ))
    }

    /// Records a concluded update's outcome in its fleet rollout, if it belongs to one and
    /// ran (a refusal is nobody's failure).
    pub(super) fn rollout_outcome(&self, request: &Request, status: &Status) {
        let Some(fleet) = &self.fleet else { return };
        let Some(version) = &request.version else {
            return;
        };
        if request.action != Action::Update || status.started_at.is_none() {
            return;
        }
        if let Some((rollout, _)) = fleet.rollout_gate(&request.component, version.as_str()) {
            fleet.outcome(rollout, status.success != Some(true));
        }
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
