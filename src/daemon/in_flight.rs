//! Which requests the loop is busy with, so that the same file or id is never taken twice:
//! request files queued, running or waiting to settle, the ids of queued and running requests,
//! and running requests a cancel asked to stop.

use std::collections::{HashMap, HashSet};

use super::{Job, SpoolIx};
use crate::request::RequestId;

#[derive(Default)]
pub(super) struct InFlight {
    /// File names of queued and running requests, so repeated events for them are ignored.
    files: HashSet<(SpoolIx, String)>,
    /// Ids of queued and running requests: a second request with one of them is a duplicate.
    ids: HashSet<RequestId>,
    /// File names waiting for a [`super::Msg::Recheck`] (maybe still being written).
    settling: HashSet<(SpoolIx, String)>,
    /// Running requests asked to stop, and by which cancel request.
    cancelling: HashMap<RequestId, RequestId>,
}

impl InFlight {
    /// A job is queued (or running): its file and id are taken.
    pub(super) fn track(&mut self, job: &Job) {
        self.files.insert((job.spool, job.file_name.clone()));
        self.ids.insert(job.request.id.clone());
    }

    /// A job is concluded: its file and id are free again (the run record now keeps the id
    /// from running twice).
    pub(super) fn done(&mut self, job: &Job) {
        self.files.remove(&(job.spool, job.file_name.clone()));
        self.ids.remove(&job.request.id);
    }

    /// Whether an event for this file is to be ignored: its request is in flight, or the file
    /// is waiting to settle and will be looked at then.
    pub(super) fn is_taken(&self, ix: SpoolIx, name: &str) -> bool {
        let key = (ix, name.to_owned());
        self.files.contains(&key) || self.settling.contains(&key)
    }

    /// Whether a queued or running request has this id.
    pub(super) fn has_id(&self, id: &RequestId) -> bool {
        self.ids.contains(id)
    }

    /// A file is left to settle before it is read again.
    pub(super) fn settling(&mut self, ix: SpoolIx, name: &str) {
        self.settling.insert((ix, name.to_owned()));
    }

    /// Its time to settle is over: it is read again now.
    pub(super) fn settled(&mut self, ix: SpoolIx, name: &str) {
        self.settling.remove(&(ix, name.to_owned()));
    }

    /// A cancel request `by` asked the running request `target` to stop.
    pub(super) fn cancel_asked(&mut self, target: &RequestId, by: &RequestId) {
        self.cancelling.insert(target.clone(), by.clone());
    }

    /// The cancel request that asked `id` to stop, if one did (forgotten from now on).
    pub(super) fn take_cancel(&mut self, id: &RequestId) -> Option<RequestId> {
        self.cancelling.remove(id)
    }
}
