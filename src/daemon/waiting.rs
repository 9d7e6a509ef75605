//! Waiting requests: maintenance windows and `not_before` (phase `scheduled`), the turn of
//! each due request among the writers' (round-robin, see [`crate::schedule::Rounds`]), and the
//! queue position queued statuses show.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use tracing::info;

use super::{Daemon, Job, POSITION_REFRESH, POSITIONS_SHOWN, SCHEDULED_RECHECK};
use crate::audit::Event;
use crate::fairshare::Writer;
use crate::report;
use crate::request::{Action, Request};
use crate::status::Phase;
use crate::status::Progress;

impl Daemon {
    /// When `request` may start, if not now (see [`crate::window`]). `any_window`: whether
    /// any component has a window (asked once per pass over the queue, not per request).
    pub(super) fn start_time(
        &self,
        request: &Request,
        now: Timestamp,
        any_window: bool,
    ) -> Option<Timestamp> {
        if request.not_before.is_none() && !any_window {
            return None; // the common case, checked for every queued request at every turn
        }
        let windows: Vec<&crate::window::Window> = if request.action == Action::Update {
            request
                .components()
                .iter()
                .filter_map(|c| self.config.components.get(*c)?.window.as_ref())
                .collect()
        } else {
            Vec::new()
        };
        crate::window::start_time(now, request.not_before, &windows, &self.zone)
    }

    /// Indices of the queued jobs that may start now, in arrival order; each has its round.
    /// Jobs that must wait get (or leave) the `scheduled` phase in their status, and the loop
    /// is woken for the earliest.
    pub(super) fn due_jobs(&mut self) -> Vec<usize> {
        let now = Timestamp::now();
        let mut due = Vec::with_capacity(self.queue.len());
        let mut earliest: Option<Timestamp> = None;
        let mut changed = Vec::new();
        let any_window = self.config.components.values().any(|c| c.window.is_some());
        let starts: Vec<Option<Timestamp>> = self
            .queue
            .iter()
            .map(|job| self.start_time(&job.request, now, any_window))
            .collect();
        // Each writer's latest round, for the requests that are due from now on.
        let mut latest: HashMap<Writer, u64> = HashMap::new();
        let rounds = self.running.values().map(|r| &r.job);
        for job in rounds.chain(self.queue.iter()) {
            if let Some(round) = job.round {
                let writers = latest.entry(job.writer()).or_insert(round);
                *writers = (*writers).max(round);
            }
        }
        for (i, (job, start)) in self.queue.iter_mut().zip(starts).enumerate() {
            job.waits_until = start;
            match start {
                None => {
                    due.push(i);
                    if job.round.is_none() {
                        // Due from now on: it takes its turn like any other.
                        let round = self.rounds.join(latest.get(&job.writer()).copied());
                        latest.insert(job.writer(), round);
                        job.round = Some(round);
                    }
                }
                Some(t) => {
                    earliest = Some(earliest.map_or(t, |e| e.min(t)));
                    job.round = None;
                }
            }
            if job.shown.scheduled_for != start {
                changed.push((i, start));
            }
        }
        for (i, start) in changed {
            self.show_scheduled(i, start);
        }
        self.scheduled_wake = earliest.map(|t| {
            let wait = Duration::try_from(t.duration_since(now)).unwrap_or_default();
            tokio::time::Instant::now() + wait.min(SCHEDULED_RECHECK)
        });
        due
    }

    /// Rewrites a queued job's status for its new wait: `scheduled` until `start`, or back to
    /// `queued` when it is due.
    fn show_scheduled(&mut self, index: usize, start: Option<Timestamp>) {
        let job = &self.queue[index];
        let status = report::waiting(&job.request, start);
        if let Some(t) = start {
            let why = match job.request.not_before {
                Some(nb) if nb >= t => "its not_before".to_owned(),
                _ => format!(
                    "the maintenance window of {}",
                    job.request.component_label()
                ),
            };
            info!(request_id = %job.request.id, component = %job.request.component, action = %job.request.action, phase = %Phase::Scheduled, scheduled_for = %t, "waiting for {why}");
            self.audit(Event::of("scheduled", &job.request).detail(format!("until {t} ({why})")));
        }
        self.show_progress(job, &status, Progress::Update);
        let job = &mut self.queue[index];
        job.shown.scheduled_for = start;
        job.shown.position = None;
        self.positions_moved();
    }

    /// `due` (indices of due jobs, in arrival order) in the order they are considered:
    /// round-robin between writers.
    pub(super) fn fair_order(&self, due: Vec<usize>) -> Vec<usize> {
        let rounds: Vec<u64> = due
            .iter()
            .map(|&i| self.queue[i].round.unwrap_or(u64::MAX))
            .collect();
        crate::schedule::fair_order(&rounds)
            .into_iter()
            .map(|k| due[k])
            .collect()
    }

    /// The queue moved: refresh the front statuses' positions soon (coalesced).
    pub(super) fn positions_moved(&mut self) {
        if self.positions_due.is_none() {
            self.positions_due = Some(tokio::time::Instant::now() + POSITION_REFRESH);
        }
    }

    /// Rewrites the queued statuses of the first few in line whose position changed, and of
    /// those that fell back out of the first few (round-robin can put another writer's
    /// request ahead of one), so a position shown is never too low.
    pub(super) fn publish_positions(&mut self) {
        self.positions_due = None;
        // Requests that wait for their time, not for their turn, have no position.
        let waiting: Vec<usize> = (0..self.queue.len())
            .filter(|&i| self.queue[i].waits_until.is_none())
            .collect();
        let end_of_line = waiting.len();
        for (position, index) in (1..).zip(self.fair_order(waiting)) {
            let shown = self.queue[index].shown.position;
            if position <= POSITIONS_SHOWN {
                if shown != Some(position) {
                    self.show_position(index, position);
                }
            } else if shown.is_some_and(|p| p < position) {
                // Further back, the end of the line: too high is allowed, and it stays true
                // until the line grows.
                self.show_position(index, end_of_line);
            }
        }
    }

    /// Writes a queued job's status with its position (1 = next).
    pub(super) fn show_position(&mut self, index: usize, position: usize) {
        let job: &Job = &self.queue[index];
        let status = report::moved_in_line(&job.request, position);
        self.show_progress(job, &status, Progress::Update);
        self.queue[index].shown.position = Some(position);
    }

    /// Appends to the audit log; a failure is logged, never fatal (the log is for people).
    pub(super) fn audit(&self, event: Event) {
        if let Err(e) = self.audit.record(&event) {
            tracing::warn!(error = %e, "cannot append to the audit log");
        }
    }
}
