//! Intake: from a name in `requests/` to a queued job or an answered refusal.

use std::sync::Arc;
use std::time::SystemTime;

use tracing::{error, info, warn};

use super::commit::AfterFlush;
use super::{Daemon, Job, Msg, SETTLE, Seen, SpoolIx};
use crate::audit::Event;
use crate::fairshare::Writer;
use crate::record::Accepted;
use crate::report::{self, Refusal};
use crate::request::{Request, RequestError, RequestId, printable};
use crate::spool;
use crate::status::Code;
use crate::status::Durability;

impl Daemon {
    pub(super) fn rescan(&mut self, ix: SpoolIx, reason: &str) {
        let requests = &self.spools[ix].requests;
        let listing = match spool::scan(requests) {
            Ok(listing) => listing,
            Err(e) => {
                let dir = requests.path().display();
                return error!(error = %e, %dir, "cannot list the request directory");
            }
        };
        info!(
            reason,
            spool = %self.spools[ix].config.name,
            files = listing.requests.len(),
            "scanning the request directory"
        );
        for junk in listing.junk {
            self.remove_junk(ix, &junk);
        }
        for name in listing.requests {
            self.take(ix, &name, Seen::Listing);
        }
    }

    pub(super) fn remove_junk(&self, ix: SpoolIx, name: &std::ffi::OsStr) {
        let file = printable(&name.to_string_lossy());
        warn!(%file, "removing a request file whose name is not UTF-8");
        if let Err(e) = spool::remove_junk(&self.spools[ix].requests, name) {
            error!(error = %e, %file, "cannot remove it");
        }
    }

    /// Reads, checks and queues (or answers) one request file of spool `ix`.
    pub(super) fn take(&mut self, ix: SpoolIx, name: &str, seen: Seen) {
        if self.in_flight.is_taken(ix, name) {
            return;
        }
        let config = Arc::clone(&self.config);
        let file = match spool::read_request(
            &self.spools[ix].requests,
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
                return self.refuse(ix, name, &refusal, None);
            }
        };
        let owner = Some(file.owner_uid);
        if let Some(cancel) = crate::request::Cancel::parse(&file.bytes) {
            return match cancel {
                Err(rejection) => self.refuse(ix, name, &Refusal::from(&*rejection), owner),
                Ok(cancel) => self.cancel(ix, name, &file.bytes, cancel, file.owner_uid),
            };
        }
        let request = match Request::parse(&file.bytes, config.component_names()) {
            Ok(request) => request,
            Err(rejection) => {
                let young = file.modified.elapsed().map_or(true, |age| age < SETTLE);
                if seen == Seen::Listing
                    && young
                    && matches!(rejection.error, RequestError::InvalidJson(_))
                {
                    // Possibly still being written in place; its close will send an event.
                    return self.settle(ix, name);
                }
                return self.refuse(ix, name, &Refusal::from(&*rejection), owner);
            }
        };
        if RequestId::from_file_name(name).is_none() {
            let message = format!(
                "the request file name {:?} is not allowed: name it <request_id>.json with 1-128 characters from A-Z a-z 0-9 . _ -",
                printable(name)
            );
            return self.refuse(
                ix,
                name,
                &Refusal::of_request(&request, Code::InvalidFileName, message),
                owner,
            );
        }
        if let Some(verifier) = &self.verifier
            && let Err(e) = verifier.verify(&file.bytes, SystemTime::now())
        {
            return self.refuse(
                ix,
                name,
                &Refusal::of_request(&request, e.code(), e.to_string()),
                owner,
            );
        }
        if let Some(message) = self.spools[ix]
            .config
            .refuses(&request.components(), request.action)
        {
            return self.refuse(
                ix,
                name,
                &Refusal::of_request(&request, Code::NotAllowedHere, message),
                owner,
            );
        }
        self.accept(ix, name, request, file.owner_uid);
    }

    pub(super) fn settle(&mut self, ix: SpoolIx, name: &str) {
        self.in_flight.settling(ix, name);
        let tx = self.tx.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(SETTLE).await;
            let _ = tx.send(Msg::Recheck(ix, name));
        });
    }

    /// Queued, running, or already answered: such an id is never run again.
    pub(super) fn is_known(&self, id: &RequestId) -> bool {
        // Not the status file: a client may delete it, or plant one for an id it can guess.
        self.in_flight.has_id(id) || self.store.exists(id)
    }

    pub(super) fn accept(&mut self, ix: SpoolIx, name: &str, request: Request, owner_uid: u32) {
        if self.is_known(&request.id) {
            return self.duplicate(ix, name, &request.id);
        }
        self.audit(Event::of("received", &request));
        if request.dry_run {
            let status = self.dry_run_status(&request);
            info!(request_id = %request.id, component = %request.component, action = %request.action, outcome = "dry_run", "{}", status.message);
            self.audit(
                Event::of("dry_run", &request)
                    .code(status.code.as_ref())
                    .detail(status.message.clone()),
            );
            // Answered like a refusal: at once, made durable with this batch, never recorded.
            if self.answer(
                ix,
                &request.id,
                &status,
                Durability::BestEffort,
                Some(owner_uid),
            ) {
                self.answered_files.push((ix, name.to_owned()));
            }
            return;
        }
        // Its writer's share of the queue, or of the requests that wait for their time, and
        // of the hourly caps (see `admission`).
        let any_window = self.config.components.values().any(|c| c.window.is_some());
        let waits_until = self.start_time(&request, jiff::Timestamp::now(), any_window);
        let writer = Writer {
            spool: ix,
            uid: owner_uid,
        };
        if let Err(refusal) = self.admit(&request, writer, waits_until) {
            return self.refuse(ix, name, &refusal, Some(owner_uid));
        }
        // Recorded before anything else, and durable (flushed with the rest of this turn)
        // before its queued status shows: from then on it is never lost nor run twice.
        let accepted = Accepted::new(&request, &self.spools[ix].config.name, name, owner_uid);
        if let Err(e) = self.store.accept(&accepted) {
            // The file stays in requests/ and is taken again at the next scan.
            return error!(request_id = %request.id, component = %request.component, action = %request.action, error = %e, "cannot record the accepted request");
        }
        // Its position: every request ahead of it, also those waiting for their window (an
        // upper bound; the front of the line is refreshed as it moves).
        let position = self.queue.len() + 1;
        let queued = report::queued(&request, position);
        let job = Job::new(ix, request, name.to_owned(), owner_uid);
        if let Err(e) = self.spools[ix].status.claim(&job.request.id) {
            warn!(request_id = %job.request.id, error = %e, "cannot clear a name planted at the request's status file");
        }
        // A request handed off already (see `handoff`) never shows progress in its status file.
        if !self.handed_off(ix, &job.request.id) {
            self.after_flush.push(AfterFlush::Show {
                spool: ix,
                id: job.request.id.clone(),
                owner_uid,
                status: Box::new(queued),
            });
        }
        let request = &job.request;
        info!(
            request_id = %request.id,
            component = %request.component,
            action = %request.action,
            version = request.version.as_ref().map(|v| v.as_str()),
            "request accepted"
        );
        self.in_flight.track(&job);
        self.audit(Event::of("queued", request).detail(format!("position {position}")));
        let mut job = job;
        job.shown.position = Some(position);
        job.waits_until = waits_until;
        self.queue.push_back(job);
    }

    /// A cancel request: a queued target is answered `cancelled` at once; a running one is
    /// asked to stop (its monitor gets SIGTERM, the script gets SIGTERM and may trap it) and is
    /// answered `cancelled` when it has.
    fn cancel(
        &mut self,
        ix: SpoolIx,
        name: &str,
        bytes: &[u8],
        cancel: crate::request::Cancel,
        owner_uid: u32,
    ) {
        let answer = |code: Code, message: String| Refusal {
            id: Some(cancel.id.clone()),
            component: None,
            action: Some("cancel".into()),
            code,
            message,
        };
        if RequestId::from_file_name(name).is_none() {
            return self.refuse(
                ix,
                name,
                &answer(
                    Code::InvalidFileName,
                    format!("the request file name {:?} is not allowed", printable(name)),
                ),
                Some(owner_uid),
            );
        }
        if let Some(verifier) = &self.verifier
            && let Err(e) = verifier.verify(bytes, SystemTime::now())
        {
            return self.refuse(ix, name, &answer(e.code(), e.to_string()), Some(owner_uid));
        }
        if self.is_known(&cancel.id) {
            return self.duplicate(ix, name, &cancel.id);
        }
        let target = &cancel.target;
        // Only its own writer (or root, in the same spool) may cancel a request; to anyone
        // else, another writer's request does not exist (the same answer as for an id nobody
        // used).
        let may_cancel = |w: Writer| w.spool == ix && (w.uid == owner_uid || owner_uid == 0);
        let theirs = self.writer_of(target).is_some_and(may_cancel);
        let (code, message) = if !theirs {
            (
                Some(Code::UnknownTarget),
                format!("you have no queued or running request {target}"),
            )
        } else if let Some(pos) = self.queue.iter().position(|j| &j.request.id == target) {
            let job = self.queue.remove(pos).expect("the position was just found");
            self.positions_moved();
            let status = report::cancelled(
                &job.request,
                format!("cancelled by request {} before it started", cancel.id),
            );
            self.conclude(job, &status);
            (None, format!("cancelled the queued request {target}"))
        } else if self.running.contains_key(target) {
            if self.stop_run(target) {
                self.in_flight.cancel_asked(target, &cancel.id);
                (
                    None,
                    format!(
                        "asked the running request {target} to stop: its script gets SIGTERM (it may trap it to stop safely); its own status will say cancelled"
                    ),
                )
            } else {
                (
                    Some(Code::CancelFailed),
                    format!("cannot signal the monitor of {target}; it keeps running"),
                )
            }
        } else if self.store.exists(target) {
            (
                Some(Code::AlreadyFinished),
                format!("{target} has already finished; nothing to cancel"),
            )
        } else {
            (
                Some(Code::UnknownTarget),
                format!("you have no queued or running request {target}"),
            )
        };
        info!(request_id = %cancel.id, target = %target, action = "cancel", outcome = if code.is_none() { "succeeded" } else { "failed" }, "{message}");
        let mut event = Event::about("cancel", Some(&cancel.id))
            .code(code.as_ref())
            .detail(message.clone());
        event.action = Some("cancel".into());
        self.audit(event);
        let status = report::cancel_answer(&cancel.id, code, message);
        if self.answer(
            ix,
            &cancel.id,
            &status,
            Durability::BestEffort,
            Some(owner_uid),
        ) {
            self.answered_files.push((ix, name.to_owned()));
        }
    }

    /// Who wrote request `id` (its spool and uid), while it is queued, running or recorded.
    pub(super) fn writer_of(&self, id: &RequestId) -> Option<Writer> {
        match self.job(id) {
            Some(job) => Some(job.writer()),
            None => {
                let (spool, uid) = self.store.owner(id)?;
                Some(Writer {
                    spool: self.spool_ix(&spool),
                    uid,
                })
            }
        }
    }

    /// A request id seen before. Never run again. If its own writer sends it again after the
    /// answer was collected (a client restarted mid-request), the recorded result is written
    /// again. A copy from anyone else gets no answer at all: an answer would either overwrite
    /// the original's status or re-create it under the original's name, and either way tell
    /// the copier something about another container's request.
    pub(super) fn duplicate(&mut self, ix: SpoolIx, name: &str, id: &RequestId) {
        let copier = self.spools[ix]
            .requests
            .lstat(name)
            .ok()
            .map(|st| st.st_uid);
        let same_writer =
            copier.is_some_and(|uid| self.writer_of(id) == Some(Writer { spool: ix, uid }));
        match self.store.final_status(id) {
            _ if !same_writer => {
                warn!(request_id = %id, file = %printable(name), writer_uid = copier, spool = %self.spools[ix].config.name, "a request reuses the id of another writer's request; removed without an answer")
            }
            // Not while its first answer waits for the journal's flush (still in flight).
            Some(status) if !self.spools[ix].status.has_final(id) && !self.in_flight.has_id(id) => {
                info!(request_id = %id, file = name, "request already finished; answering with the recorded result");
                if !self.answer(ix, id, &status, Durability::BestEffort, copier) {
                    return;
                }
            }
            _ => {
                warn!(request_id = %id, file = name, "duplicate request id: already queued, running or answered; ignoring this copy")
            }
        }
        self.audit(Event::about("duplicate", Some(id)).detail(format!("file {}", printable(name))));
        self.remove_request_file(ix, name);
    }

    /// Answers a refused request (unless its id is unusable, or already answered or in flight:
    /// never overwrite another request's answer). The file is removed once the answer is
    /// durable, in [`Daemon::commit_answered`].
    pub(super) fn refuse(
        &mut self,
        ix: SpoolIx,
        name: &str,
        refusal: &Refusal,
        owner: Option<u32>,
    ) {
        let id = refusal
            .id
            .clone()
            .or_else(|| RequestId::from_file_name(name));
        warn!(
            request_id = id.as_ref().map(RequestId::as_str),
            file = %printable(name),
            component = refusal.component.as_deref(),
            action = refusal.action.as_deref(),
            code = %refusal.code,
            outcome = "refused",
            "request refused: {}", refusal.message
        );
        let mut event = Event::about("rejected", id.as_ref())
            .code(Some(&refusal.code))
            .detail(refusal.message.clone());
        event.component = refusal.component.clone();
        event.action = refusal.action.clone();
        self.audit(event);
        // The writer gets the answer, so it can delete it from the sticky status directory.
        let owner = owner.or_else(|| {
            self.spools[ix]
                .requests
                .lstat(name)
                .ok()
                .map(|st| st.st_uid)
        });
        match id {
            Some(id) if !self.is_known(&id) => {
                if self.answer(
                    ix,
                    &id,
                    &report::refused(&id, refusal),
                    Durability::BestEffort,
                    owner,
                ) {
                    self.answered_files.push((ix, name.to_owned()));
                } // else keep the file: without an answer it must not disappear
            }
            _ => self.remove_request_file(ix, name),
        }
    }

    /// Makes this batch's answers (refusals, dry runs, cancels) durable with one filesystem
    /// sync per spool, then removes their files.
    pub(super) fn commit_answered(&mut self) {
        if self.answered_files.is_empty() {
            return;
        }
        let files = std::mem::take(&mut self.answered_files);
        let mut spools: Vec<SpoolIx> = files.iter().map(|(ix, _)| *ix).collect();
        spools.sort_unstable();
        spools.dedup();
        for ix in spools {
            if let Err(e) = self.spools[ix].status.sync_filesystem() {
                // The files stay; the next scan finds them answered and removes them.
                error!(error = %e, "cannot sync the status directory; answered requests stay for now");
                continue;
            }
            for (_, name) in files.iter().filter(|(i, _)| *i == ix) {
                self.remove_request_file(ix, name);
            }
            if let Err(e) = self.spools[ix].requests.sync() {
                error!(error = %e, "cannot sync the request directory");
            }
        }
    }
}
