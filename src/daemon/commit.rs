//! Group commit: what a loop turn recorded in the journal (acceptances, starts, exits,
//! answers) is made durable with one flush at the end of the turn, and only then does anything
//! that depends on it become visible: a queued status, a monitor (and so its script), a final
//! answer. One request costs two flushes (accept and start in the same turn, then its exit);
//! a burst shares them (docs/durability.md, "Group commit").

use std::fs::File;

use tracing::error;

use super::{Daemon, Job, SpoolIx};
use crate::record::RunSpec;
use crate::request::RequestId;
use crate::status::{Durability, Progress, Status};

/// A newly accepted request shows `queued` at most this long after it was taken, when no
/// other flush comes sooner.
const QUEUED_SHOWN_WITHIN: std::time::Duration = std::time::Duration::from_millis(20);

/// Answers shown are flushed to the disk (one `syncfs` for all of them) in the background this
/// long after the last of them...
const VIEWS_FLUSHED_WITHIN: std::time::Duration = std::time::Duration::from_millis(200);
/// ...or this long after the first, if answers keep coming (see [`Daemon::flush_views`]).
const VIEWS_FLUSHED_AT_THE_LATEST: std::time::Duration = std::time::Duration::from_secs(2);

/// Something that must wait until the journal's records behind it are durable.
pub(super) enum AfterFlush {
    /// A newly accepted request's first progress record (queued).
    Show {
        spool: SpoolIx,
        id: RequestId,
        owner_uid: u32,
        status: Box<Status>,
    },
    /// A run whose start is recorded: its monitor may now start the script.
    Launch {
        id: RequestId,
        spec: Box<RunSpec>,
        lock: File,
    },
    /// A concluded request: its answer may now be shown.
    Answer { job: Box<Job>, status: Box<Status> },
}

impl Daemon {
    /// Flushes the journal once and carries out what waited for it, until nothing waits (an
    /// action may record more: a monitor that cannot start is concluded, and that answer waits
    /// for the next flush).
    pub(super) fn commit(&mut self) {
        // Only queued statuses wait: they may wait a little for a flush that something else
        // needs anyway (a burst's acceptances ride along with its runs' starts and answers).
        let only_shows = self
            .after_flush
            .iter()
            .all(|action| matches!(action, AfterFlush::Show { .. }));
        if only_shows && !self.after_flush.is_empty() {
            let due = *self
                .commit_due
                .get_or_insert_with(|| tokio::time::Instant::now() + QUEUED_SHOWN_WITHIN);
            if tokio::time::Instant::now() < due {
                return; // the loop wakes at `commit_due`
            }
        }
        self.commit_due = None;
        while !self.after_flush.is_empty() {
            if let Err(e) = self.store.sync() {
                // Nothing is shown or started on records that may not survive a power cut.
                // Kept for the next turn (a timer wakes the loop to try again).
                error!(error = %e, waiting = self.after_flush.len(), "cannot flush the journal; answers and starts wait");
                self.retry_commit_soon();
                return;
            }
            let actions = std::mem::take(&mut self.after_flush);
            tracing::debug!(
                shows = actions
                    .iter()
                    .filter(|a| matches!(a, AfterFlush::Show { .. }))
                    .count(),
                launches = actions
                    .iter()
                    .filter(|a| matches!(a, AfterFlush::Launch { .. }))
                    .count(),
                answers = actions
                    .iter()
                    .filter(|a| matches!(a, AfterFlush::Answer { .. }))
                    .count(),
                "flushed"
            );
            // Accepted and started in this same turn: its first record says running at once.
            let launching: Vec<RequestId> = actions
                .iter()
                .filter_map(|a| match a {
                    AfterFlush::Launch { id, .. } => Some(id.clone()),
                    _ => None,
                })
                .collect();
            let mut unshown = Vec::new();
            for action in actions {
                match action {
                    AfterFlush::Show {
                        spool,
                        id,
                        owner_uid,
                        status,
                    } => {
                        // Handed off meanwhile (see `handoff`): its status file is the
                        // answer's alone, no progress record may appear there.
                        if self.handed_off(spool, &id) {
                            continue;
                        }
                        if launching.contains(&id) {
                            unshown.push(id);
                            continue;
                        }
                        // Still queued: what it waits for now (its time, or its turn), which
                        // this turn may have changed; else the status it was accepted with,
                        // which its start or answer replaces next.
                        let status = self.queued_view(&id).unwrap_or(*status);
                        self.show(spool, &id, owner_uid, &status, Progress::First)
                    }
                    AfterFlush::Launch { id, spec, lock } => {
                        let first = unshown.contains(&id);
                        self.launch(&id, &spec, lock, first)
                    }
                    AfterFlush::Answer { job, status } => {
                        self.show_answer(&job, &status);
                        // 200 ms after the last answer, 2 s after the first at the latest:
                        // a burst costs one flush at its end, not one every 200 ms.
                        let now = tokio::time::Instant::now();
                        let first = *self.views_first_answer.get_or_insert(now);
                        self.views_flush_due = Some(
                            (now + VIEWS_FLUSHED_WITHIN).min(first + VIEWS_FLUSHED_AT_THE_LATEST),
                        );
                    }
                }
            }
        }
    }

    /// Flushes the spools' filesystems in a thread of its own, off the loop: the answers
    /// shown since the last time reach the disk within [`VIEWS_FLUSHED_WITHIN`] instead of
    /// the kernel's 30 s. Not needed for correctness (the next start writes a lost answer
    /// again from the journal), but a client container that starts before the service after
    /// a power cut reads its status file directly. One `syncfs` per filesystem, however many
    /// answers it covers; a slow one (a card busy with an image pull) holds nobody up.
    pub(super) fn flush_views(&mut self) {
        self.views_flush_due = None;
        self.views_first_answer = None;
        let mut roots: Vec<std::path::PathBuf> = Vec::new();
        let mut devices = Vec::new();
        for spool in &self.spools {
            let device = std::fs::metadata(spool.status.path())
                .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
                .ok();
            if !devices.contains(&device) {
                devices.push(device);
                roots.push(spool.status.path().to_owned());
            }
        }
        let spawned = std::thread::Builder::new()
            .name("flush-views".into())
            .spawn(move || {
                for root in roots {
                    if let Err(e) = crate::dir::Dir::open(&root).and_then(|d| d.sync_filesystem())
                    {
                        tracing::warn!(dir = %root.display(), error = %e, "cannot flush the status files");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a thread to flush the status files");
        }
    }

    /// Whether this turn's flush waits for company: an answer waits for it, requests queue (so
    /// their starts can share the flush), and other runs are going, whose ends may be near.
    pub(super) fn worth_waiting_for_company(&self) -> bool {
        !self.queue.is_empty()
            && !self.running.is_empty()
            && self
                .after_flush
                .iter()
                .any(|action| matches!(action, AfterFlush::Answer { .. }))
    }

    /// A queued job's status as it stands: `scheduled` for its time or its fleet wave,
    /// waiting for a fleet slot, or its place in line.
    fn queued_view(&self, id: &RequestId) -> Option<Status> {
        let job = self.queue.iter().find(|job| &job.request.id == id)?;
        let shown = &job.shown;
        Some(if let Some((rollout, wave, opens_at)) = &shown.wave {
            crate::report::waiting_for_wave(&job.request, rollout, *wave, *opens_at)
        } else if let Some(slot) = &shown.slot {
            crate::report::waiting_in_slot_line(&job.request, slot.clone())
        } else if let Some(start) = shown.scheduled_for {
            crate::report::waiting(&job.request, Some(start))
        } else {
            crate::report::queued(&job.request, shown.position.unwrap_or(1))
        })
    }

    /// [`Daemon::commit`] without letting queued statuses wait (at start-up and shutdown).
    pub(super) fn commit_now(&mut self) {
        self.commit_due = Some(tokio::time::Instant::now());
        self.commit();
    }

    fn retry_commit_soon(&self) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let _ = tx.send(super::Msg::Wake);
        });
    }

    /// Writes a progress record (best effort: the answer is what counts).
    pub(super) fn show(
        &self,
        spool: SpoolIx,
        id: &RequestId,
        owner_uid: u32,
        status: &Status,
        how: Progress,
    ) {
        self.write_progress(spool, id, owner_uid, status, how, Durability::BestEffort);
    }

    /// [`Daemon::show`], as durable as asked (a failure is logged here, once).
    pub(super) fn write_progress(
        &self,
        spool: SpoolIx,
        id: &RequestId,
        owner_uid: u32,
        status: &Status,
        how: Progress,
        durability: Durability,
    ) {
        let dir = &self.spools[spool].status;
        if let Err(e) = dir.progress(id, status, durability, Some(owner_uid), how) {
            tracing::warn!(request_id = %id, error = %e, dir = %dir.path().display(), "cannot write the progress record");
        }
    }
}
