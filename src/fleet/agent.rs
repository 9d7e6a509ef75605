//! The fleet agent: one thread (started only with `[fleet]`) that brings the group's
//! semaphore in line with what the service wants, "hold a slot" or "hold none", and says
//! how that goes. It blocks on its input while nothing is to be done; while the group is
//! full it watches the semaphore's key instead of reading it again and again; while etcd
//! cannot be reached it tries again after a growing pause.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use tracing::{info, warn};

use super::config::{FailMode, FleetConfig, HostId};
use super::etcd::{Client, EtcdError};
use super::semaphore::{Semaphore, Take};
use super::{Report, SlotWait, WaitReason};

/// How long one watch lasts before it is set up again (a member that went silent is left
/// after this long at the latest).
const WATCH_SPAN: Duration = Duration::from_secs(30);

/// Pauses between tries while etcd cannot be reached: from the first to the last, doubling.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_LAST: Duration = Duration::from_secs(8);

/// Compare-on-version writes lost to other hosts' in a row before pausing like after an error.
const MAX_CONFLICTS: usize = 16;

pub(super) enum Input {
    /// The service wants a slot (`want`), or none; `seq` numbers its wishes, so that it can
    /// tell an answer to its latest from an earlier one.
    Want { seq: u64, want: bool },
    /// The watched semaphore changed (or the watch ended): read it again.
    Changed,
    /// The service stops: give the slot back if nothing needs it, then answer on `done`.
    Stop { release: bool, done: Sender<()> },
}

/// How a pass over the semaphore ended.
enum Pass {
    /// It is as wanted; nothing to do until the service wants something else.
    Settled,
    /// Every slot is taken; a watch is running.
    Full,
    /// etcd could not be reached or refused; try again after a pause.
    Failed,
}

pub(super) struct Agent {
    client: Client,
    key: String,
    host: HostId,
    slots: u64,
    fail: FailMode,
    inputs: Receiver<Input>,
    /// Watches send [`Input::Changed`] here.
    to_self: Sender<Input>,
    report: Box<dyn Fn(Report) + Send>,
    last_report: Option<Report>,
    watching: bool,
    /// Whether the loss of etcd was already logged (once per outage, not per try).
    unreachable_since: Option<std::time::Instant>,
}

impl Agent {
    pub(super) fn new(
        config: &FleetConfig,
        host: HostId,
        client: Client,
        inputs: Receiver<Input>,
        to_self: Sender<Input>,
        report: Box<dyn Fn(Report) + Send>,
    ) -> Agent {
        Agent {
            client,
            key: super::keys::semaphore(&config.group),
            host,
            slots: config.max_concurrent,
            fail: config.fail,
            inputs,
            to_self,
            report,
            last_report: None,
            watching: false,
            unreachable_since: None,
        }
    }

    pub(super) fn run(mut self, mut seq: u64, mut want: bool) {
        let mut pause = RETRY_FIRST;
        loop {
            let wait = match self.pass(seq, want) {
                Pass::Settled | Pass::Full => {
                    pause = RETRY_FIRST;
                    None
                }
                Pass::Failed => {
                    let this = pause;
                    pause = (pause * 2).min(RETRY_LAST);
                    Some(this)
                }
            };
            let first = match wait {
                None => self
                    .inputs
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some(pause) => self.inputs.recv_timeout(pause),
            };
            let mut next = match first {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Only the latest wish counts.
            while let Some(input) = next.take().or_else(|| self.inputs.try_recv().ok()) {
                match input {
                    Input::Want { seq: s, want: w } => (seq, want) = (s, w),
                    Input::Changed => self.watching = false,
                    Input::Stop { release, done } => {
                        if release {
                            let _ = self.pass(seq, false);
                        }
                        let _ = done.send(());
                        return;
                    }
                }
            }
        }
    }

    /// Reads the semaphore and writes it until it holds this host exactly when `want`.
    fn pass(&mut self, seq: u64, want: bool) -> Pass {
        for _ in 0..MAX_CONFLICTS {
            match self.step(want) {
                Ok(Some(done)) => {
                    self.reconnected();
                    return match done {
                        Step::Holds => {
                            self.tell(Report::Held {
                                seq,
                                without_slot: false,
                            });
                            Pass::Settled
                        }
                        Step::HoldsNone => Pass::Settled,
                        Step::Full { holders, revision } => {
                            self.tell(Report::Waiting {
                                seq,
                                wait: SlotWait {
                                    holders,
                                    total_slots: self.slots,
                                    reason: WaitReason::Full,
                                },
                            });
                            self.watch(revision);
                            Pass::Full
                        }
                    };
                }
                Ok(None) => continue, // another host wrote first: read again
                Err(e) => {
                    self.lost(&e, want);
                    if want {
                        self.tell(match self.fail {
                            FailMode::Closed => Report::Waiting {
                                seq,
                                wait: SlotWait {
                                    holders: 0,
                                    total_slots: self.slots,
                                    reason: WaitReason::Unreachable(e.to_string()),
                                },
                            },
                            FailMode::Open => Report::Held {
                                seq,
                                without_slot: true,
                            },
                        });
                    }
                    return Pass::Failed;
                }
            }
        }
        Pass::Failed
    }

    /// One read and at most one write; `None` when the write lost to another host's.
    fn step(&mut self, want: bool) -> Result<Option<Step>, EtcdError> {
        let read = self.client.get(&self.key)?;
        let current = match &read.value {
            Some(value) => Semaphore::parse(value).map_err(EtcdError::Refused)?,
            None if want => {
                // The first host of the group (or airlock) creates it.
                let fresh = Semaphore::new(self.slots);
                let created = self.client.put_if_version(&self.key, 0, &fresh.to_json())?;
                if created {
                    info!(key = %self.key, total_slots = self.slots, "created the fleet semaphore");
                }
                return Ok(None);
            }
            None => return Ok(Some(Step::HoldsNone)),
        };
        if current.total_slots != self.slots {
            self.slots = current.total_slots;
        }
        let version = read.version;
        if want {
            match current.take(self.host.as_str()) {
                Take::AlreadyHeld => Ok(Some(Step::Holds)),
                Take::Full => Ok(Some(Step::Full {
                    holders: current.holders.len(),
                    revision: read.revision,
                })),
                Take::Write(next) => {
                    if !self
                        .client
                        .put_if_version(&self.key, version, &next.to_json())?
                    {
                        return Ok(None);
                    }
                    info!(host = %self.host, holders = next.holders.len(), total_slots = next.total_slots, "took a fleet slot");
                    Ok(Some(Step::Holds))
                }
            }
        } else {
            let Some(next) = current.release(self.host.as_str()) else {
                return Ok(Some(Step::HoldsNone));
            };
            if !self
                .client
                .put_if_version(&self.key, version, &next.to_json())?
            {
                return Ok(None);
            }
            info!(host = %self.host, holders = next.holders.len(), "gave the fleet slot back");
            Ok(Some(Step::HoldsNone))
        }
    }

    /// Watches the semaphore from after `revision` on a thread of its own, which says
    /// [`Input::Changed`] when the key changes or the watch ends.
    fn watch(&mut self, revision: i64) {
        if self.watching {
            return;
        }
        self.watching = true;
        let (client, key, tx) = (self.client.clone(), self.key.clone(), self.to_self.clone());
        let spawned = std::thread::Builder::new()
            .name("fleet-watch".into())
            .spawn(move || {
                if client.watch(&key, revision, WATCH_SPAN).is_err() {
                    // No endpoint took the watch: the next read will say why; no busy loop.
                    std::thread::sleep(RETRY_FIRST);
                }
                let _ = tx.send(Input::Changed);
            });
        if spawned.is_err() {
            self.watching = false;
        }
    }

    fn tell(&mut self, report: Report) {
        if self.last_report.as_ref() != Some(&report) {
            self.last_report = Some(report.clone());
            (self.report)(report);
        }
    }

    fn lost(&mut self, error: &EtcdError, want: bool) {
        if self.unreachable_since.is_none() {
            self.unreachable_since = Some(std::time::Instant::now());
            let consequence = match (want, self.fail) {
                (false, _) => "a slot this host may hold is given back once it answers",
                (true, FailMode::Closed) => {
                    "updates and rollbacks wait for it (fleet.fail = closed)"
                }
                (true, FailMode::Open) => {
                    "updates and rollbacks run without a slot (fleet.fail = open)"
                }
            };
            warn!(error = %error, "cannot reach etcd; {consequence}");
        }
    }

    fn reconnected(&mut self) {
        if let Some(since) = self.unreachable_since.take() {
            info!(after = %humantime::format_duration(Duration::from_secs(since.elapsed().as_secs())), "etcd answers again");
        }
    }
}

enum Step {
    Holds,
    HoldsNone,
    Full { holders: usize, revision: i64 },
}
