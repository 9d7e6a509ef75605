//! The self-update hand-off. A client that asks for its own container to be updated cannot
//! wait for the answer: the update replaces it. DuneBugger's remote client (branch
//! 23-remote-update) therefore writes the request id into `<spool>/.pending_remote_request`,
//! and the container that replaces it waits for `status/<id>.json` to exist, reads it once
//! without looking at `message` and deletes it.
//!
//! With progress records beside the status file (the default) that already works: the status
//! file only ever holds the answer. With `[spool] progress_in_status`, the moment the hand-off
//! file names an in-flight request, that request's in-progress record is withdrawn; later
//! progress writes only ever replace an existing record (see [`crate::status::Progress`]), so
//! the next thing under its name is the answer.
//!
//! The hand-off file belongs to the client, but a client that never starts again would leave
//! it for ever: once it is older than the retention period and names nothing in flight, it is
//! removed with the uncollected statuses.

use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::{Daemon, SpoolIx};
use crate::request::RequestId;
use crate::spool::{self, ReadError, Writers};

/// The hand-off file's name, in the spool root.
pub const HANDOFF_FILE: &str = ".pending_remote_request";

/// A request id and a newline; anything longer is not a hand-off file.
const MAX_HANDOFF_BYTES: u64 = 512;

impl Daemon {
    /// The request the hand-off file names, and when it was written. The file is written by a
    /// container: it is read like a request file (no links, no FIFOs, bounded).
    fn handoff_file(&self, ix: SpoolIx) -> Option<(Option<RequestId>, SystemTime)> {
        match spool::read_request(
            &self.spools[ix].root,
            HANDOFF_FILE,
            MAX_HANDOFF_BYTES,
            &Writers::default(),
        ) {
            Ok(file) => {
                let text = String::from_utf8_lossy(&file.bytes);
                Some((RequestId::parse(text.trim()).ok(), file.modified))
            }
            Err(ReadError::Gone) => None,
            Err(e) => {
                warn!(file = HANDOFF_FILE, error = %e, "cannot read the self-update hand-off file");
                None
            }
        }
    }

    /// Whether `id`, dropped into spool `ix`, is handed off and must never show progress in
    /// its status file.
    pub(super) fn handed_off(&self, ix: SpoolIx, id: &RequestId) -> bool {
        self.config.progress_in_status
            && self.handoff_file(ix).and_then(|(named, _)| named).as_ref() == Some(id)
    }

    /// Spool `ix`'s hand-off file was written: withdraw the named request's in-progress record.
    pub(super) fn handoff(&mut self, ix: SpoolIx) {
        if !self.config.progress_in_status {
            return;
        }
        let Some((Some(id), _)) = self.handoff_file(ix) else {
            return;
        };
        // Only a request of this spool still in flight: a finished one has its answer under
        // that name, and another spool's is none of this client's business.
        if !self.in_flight.has_id(&id) || self.job(&id).is_none_or(|job| job.spool != ix) {
            return;
        }
        match self.spools[ix].status.withdraw_progress(&id) {
            Ok(true) => {
                info!(request_id = %id, "self-update hand-off: in-progress status withdrawn; the status file will hold only the answer")
            }
            Ok(false) => {}
            Err(e) => {
                warn!(request_id = %id, error = %e, "self-update hand-off: cannot withdraw the in-progress status")
            }
        }
    }

    /// Removes a hand-off file nobody came back for (see the module doc).
    pub(super) fn expire_handoff(&self, ix: SpoolIx, retention: Duration) {
        let Some((named, written)) = self.handoff_file(ix) else {
            return;
        };
        let old = written.elapsed().is_ok_and(|age| age > retention);
        if old && !named.is_some_and(|id| self.in_flight.has_id(&id)) {
            match self.spools[ix].root.remove(HANDOFF_FILE) {
                Ok(()) => info!(
                    file = HANDOFF_FILE,
                    "removed a self-update hand-off file nobody collected within the retention period"
                ),
                Err(e) => {
                    warn!(file = HANDOFF_FILE, error = %e, "cannot remove an old self-update hand-off file")
                }
            }
        }
    }
}
