//! The fleet agent: one thread (started only with `[fleet]`) that brings the group's
//! semaphore in line with what the service wants, "hold a slot" or "hold none", and says
//! how that goes. It blocks on its input while nothing is to be done; while the group is
//! full it watches the semaphore's key instead of reading it again and again; while etcd
//! cannot be reached it tries again after a growing pause.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

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

/// The liveness key's lease: the host counts as gone this long after its coordinator last
/// renewed it...
const LIVENESS_TTL: Duration = Duration::from_secs(10);
/// ...which it does this often.
const KEEPALIVE: Duration = Duration::from_secs(3);

/// Compare-on-version writes lost to other hosts' in a row before pausing like after an error.
const MAX_CONFLICTS: usize = 16;

pub(super) enum Input {
    /// The service wants a slot (`want`), or none; `seq` numbers its wishes, so that it can
    /// tell an answer to its latest from an earlier one.
    Want { seq: u64, want: bool },
    /// A watched key changed (or the watch ended): read the semaphore again. Numbered by
    /// the watch it comes from; only the latest watch's count.
    Changed(u64),
    /// What the host runs now, for its liveness key (`fleet status` shows it).
    Running(Vec<String>),
    /// Something under the group's own prefix changed (rollouts, outcomes): read the
    /// rollouts again. Numbered like [`Input::Changed`].
    RolloutsChanged(u64),
    /// This host's outcome of a rollout, to record (and to halt it at `max_failures`).
    Outcome {
        rollout: super::rollout::Rollout,
        failed: bool,
    },
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
    /// The number of the latest watch.
    watch: u64,
    /// Whether the loss of etcd was already logged (once per outage, not per try).
    unreachable_since: Option<Instant>,
    group: String,
    stale_after: Option<Duration>,
    /// Since when each holder was seen gone (for `stale_after`), and when the next is due.
    gone_since: HashMap<String, Instant>,
    stale_due: Option<Instant>,
    /// The liveness key's lease, when it is known to exist; when to renew it.
    lease: Option<i64>,
    renew_at: Instant,
    /// The member key is written once per process.
    joined: bool,
    alive: super::liveness::Alive,
    /// The liveness key does not say what `alive` says yet.
    alive_stale: bool,
    /// The rollouts as last reported, whether to read them again, the latest watch on them.
    rollouts: Option<Vec<(super::rollout::Rollout, u64)>>,
    rollouts_look: bool,
    rollouts_watch: u64,
    /// Outcomes not yet recorded in etcd.
    outcomes: Vec<(super::rollout::Rollout, bool)>,
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
            watch: 0,
            unreachable_since: None,
            group: config.group.clone(),
            stale_after: config.stale_after,
            gone_since: HashMap::new(),
            stale_due: None,
            lease: None,
            renew_at: Instant::now(),
            joined: false,
            alive: super::liveness::Alive {
                running: Vec::new(),
                since: crate::status::now_rfc3339(),
            },
            alive_stale: true,
            rollouts: None,
            rollouts_look: true,
            rollouts_watch: 0,
            outcomes: Vec::new(),
        }
    }

    pub(super) fn run(mut self, mut seq: u64, mut want: bool) {
        let mut pause = RETRY_FIRST;
        // Whether the semaphore needs a look: at start, after an input, a failure or when a
        // gone holder's time is up; not when the liveness key is merely renewed.
        let mut look = true;
        loop {
            let mut failed = self.upkeep(want).is_err();
            // Outcomes first: a failure that halts a rollout is in etcd before the slot of
            // its run is given back, so the next holder reads the rollout halted.
            failed |= self.record_outcomes().is_err();
            if look {
                self.stale_due = None;
                failed |= matches!(self.pass(seq, want), Pass::Failed);
                look = failed;
            }
            if self.rollouts_look {
                let read = self.read_rollouts();
                failed |= read.is_err();
                self.rollouts_look = read.is_err();
            }
            let mut wake = self.renew_at;
            if failed {
                wake = wake.min(Instant::now() + pause);
                pause = (pause * 2).min(RETRY_LAST);
            } else {
                pause = RETRY_FIRST;
            }
            if let Some(due) = self.stale_due {
                wake = wake.min(due);
            }
            let first = self
                .inputs
                .recv_timeout(wake.saturating_duration_since(Instant::now()));
            let mut next = match first {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => {
                    look |= self.stale_due.is_some_and(|due| due <= Instant::now());
                    None
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Only the latest wish counts.
            while let Some(input) = next.take().or_else(|| self.inputs.try_recv().ok()) {
                match input {
                    Input::Want { seq: s, want: w } => {
                        (seq, want) = (s, w);
                        look = true;
                    }
                    Input::Changed(watch) => {
                        if watch == self.watch {
                            self.watching = false;
                            look = true;
                        }
                    }
                    Input::RolloutsChanged(watch) => {
                        self.rollouts_look |= watch == self.rollouts_watch;
                    }
                    Input::Outcome { rollout, failed } => self.outcomes.push((rollout, failed)),
                    Input::Running(running) => {
                        self.alive_stale |= running != self.alive.running;
                        self.alive.running = running;
                    }
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

    /// Keeps this host's liveness key: a lease renewed every [`KEEPALIVE`], the key on it
    /// saying what runs, and (once) the member key.
    fn upkeep(&mut self, want: bool) -> Result<(), EtcdError> {
        let result = self.upkeep_once();
        match &result {
            Ok(()) => self.reconnected(),
            Err(e) => {
                self.lost(e, want);
                self.renew_at = Instant::now() + RETRY_FIRST.max(KEEPALIVE / 2);
            }
        }
        result
    }

    fn upkeep_once(&mut self) -> Result<(), EtcdError> {
        let now = Instant::now();
        if let Some(lease) = self.lease
            && now >= self.renew_at
        {
            if !self.client.keep_alive(lease)? {
                // It expired (etcd was out of reach for longer than its TTL): a new one.
                self.lease = None;
            }
            self.renew_at = now + KEEPALIVE;
        }
        let lease = match self.lease {
            Some(lease) => lease,
            None => {
                let lease = self.client.grant(LIVENESS_TTL)?;
                self.lease = Some(lease);
                self.alive_stale = true;
                self.renew_at = now + KEEPALIVE;
                lease
            }
        };
        if !self.joined {
            let member = super::keys::member(&self.group, self.host.as_str());
            self.client.put(&member, "{}", 0)?;
            self.joined = true;
        }
        if self.alive_stale {
            let key = super::keys::alive(&self.group, self.host.as_str());
            let value = serde_json::to_string(&self.alive).unwrap_or_default();
            self.client.put(&key, &value, lease)?;
            self.alive_stale = false;
        }
        Ok(())
    }

    /// Reads the semaphore and writes it until it holds this host exactly when `want`.
    fn pass(&mut self, seq: u64, want: bool) -> Pass {
        for _ in 0..MAX_CONFLICTS {
            match self.step(want) {
                Ok(Some(done)) => {
                    self.reconnected();
                    return match done {
                        Step::Holds => {
                            // The service decides with the rollouts as they are now, not as
                            // the last watch event left them: a rollout halted by the host
                            // whose slot this was is seen halted.
                            if self.read_rollouts().is_err() {
                                return Pass::Failed;
                            }
                            self.tell(Report::Held {
                                seq,
                                without_slot: false,
                            });
                            Pass::Settled
                        }
                        Step::HoldsNone => Pass::Settled,
                        Step::Full { holders, revision } => {
                            if self.free_stale(&holders) {
                                continue;
                            }
                            let holders = holders.len();
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
                    holders: current.holders.clone(),
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

    /// Reads the group's rollouts and their failures, tells the service when they changed,
    /// and watches for the next change.
    fn read_rollouts(&mut self) -> Result<(), EtcdError> {
        let prefix = super::keys::rollouts_prefix(&self.group);
        let revision = self.client.get(&prefix)?.revision;
        let rollouts: Vec<super::rollout::Rollout> = self
            .client
            .get_prefix(&prefix)?
            .into_iter()
            .filter_map(|(_, value)| serde_json::from_slice(&value).ok())
            .collect();
        let failures = self.failures()?;
        let counted: Vec<(super::rollout::Rollout, u64)> = rollouts
            .into_iter()
            .map(|r| {
                let n = failures.get(&r.id).copied().unwrap_or(0);
                (r, n)
            })
            .collect();
        if self.rollouts.as_ref() != Some(&counted) {
            self.rollouts = Some(counted.clone());
            (self.report)(Report::Rollouts(counted));
        }
        self.rollouts_watch += 1;
        let (client, tx, watch) = (
            self.client.clone(),
            self.to_self.clone(),
            self.rollouts_watch,
        );
        let key = super::keys::group_prefix(&self.group);
        let _ = std::thread::Builder::new()
            .name("fleet-watch".into())
            .spawn(move || {
                if client.watch(&key, true, revision, WATCH_SPAN).is_err() {
                    std::thread::sleep(RETRY_FIRST);
                }
                let _ = tx.send(Input::RolloutsChanged(watch));
            });
        Ok(())
    }

    /// Failed hosts per rollout id.
    fn failures(&self) -> Result<HashMap<String, u64>, EtcdError> {
        let prefix = super::keys::outcomes_prefix(&self.group);
        let mut failures = HashMap::new();
        for (key, value) in self.client.get_prefix(&prefix)? {
            let Some((id, _host)) = key.strip_prefix(&prefix).and_then(|k| k.split_once('/'))
            else {
                continue;
            };
            let outcome: serde_json::Value = serde_json::from_slice(&value).unwrap_or_default();
            if outcome["outcome"] == "failed" {
                *failures.entry(id.to_owned()).or_insert(0) += 1;
            }
        }
        Ok(failures)
    }

    /// Records the outcomes not yet in etcd; a failure that brings a rollout to its
    /// `max_failures` halts it.
    fn record_outcomes(&mut self) -> Result<(), EtcdError> {
        while let Some((rollout, failed)) = self.outcomes.first().cloned() {
            let key = super::keys::outcome(&self.group, &rollout.id, self.host.as_str());
            let value = serde_json::json!({
                "outcome": if failed { "failed" } else { "updated" },
                "at": crate::status::now_rfc3339(),
            });
            self.client.put(&key, &value.to_string(), 0)?;
            info!(rollout = %rollout.id, outcome = if failed { "failed" } else { "updated" }, "recorded this host's rollout outcome");
            if failed && rollout.max_failures > 0 {
                let failures = self.failures()?.get(&rollout.id).copied().unwrap_or(0);
                if failures >= rollout.max_failures {
                    self.halt(&rollout.id, &rollout.component, failures)?;
                }
            }
            self.outcomes.remove(0);
        }
        Ok(())
    }

    /// Sets the rollout `id` of `component` to halted (compare-on-version).
    fn halt(&self, id: &str, component: &str, failures: u64) -> Result<(), EtcdError> {
        let key = super::keys::rollout(&self.group, component);
        for _ in 0..MAX_CONFLICTS {
            let read = self.client.get(&key)?;
            let Some(value) = read.value else {
                return Ok(());
            };
            let Ok(mut rollout) = serde_json::from_slice::<super::rollout::Rollout>(&value) else {
                return Ok(());
            };
            use super::rollout::State;
            if rollout.id != id || matches!(rollout.state, State::Halted | State::Aborted) {
                return Ok(());
            }
            rollout.state = State::Halted;
            let text = serde_json::to_string(&rollout).unwrap_or_default();
            if self.client.put_if_version(&key, read.version, &text)? {
                warn!(rollout = %id, component = %component, failures, "halted the rollout: its failed hosts reached max_failures");
                return Ok(());
            }
        }
        Ok(())
    }

    /// With `stale_after`: frees the slots of holders whose coordinators have been gone that
    /// long (as this host has seen); whether it freed any.
    fn free_stale(&mut self, holders: &[String]) -> bool {
        let Some(after) = self.stale_after else {
            return false;
        };
        // On an error the next read says why.
        let Ok((alive, members)) = super::read_liveness(&self.client, &self.group) else {
            return false;
        };
        let seen: Vec<(String, super::liveness::Liveness)> = holders
            .iter()
            .map(|h| (h.clone(), super::liveness::liveness(h, &alive, &members)))
            .collect();
        let (due, next) =
            super::liveness::stale(&seen, &mut self.gone_since, Instant::now(), after);
        self.stale_due = next;
        let mut freed = false;
        for holder in due {
            match super::release_holder(&self.client, &self.group, &holder) {
                Ok(true) => {
                    warn!(holder = %holder, stale_after = %humantime::format_duration(after), "freed the fleet slot of a host gone for longer than fleet.stale_after");
                    self.gone_since.remove(&holder);
                    freed = true;
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(holder = %holder, error = %e, "cannot free the fleet slot of a gone host")
                }
            }
        }
        freed
    }

    /// Watches the semaphore from after `revision` on a thread of its own, which says
    /// [`Input::Changed`] when the key changes or the watch ends; with `stale_after`, the
    /// liveness keys too (a lease that expires changes no semaphore).
    fn watch(&mut self, revision: i64) {
        if self.watching {
            return;
        }
        self.watching = true;
        self.watch += 1;
        let mut keys = vec![(super::keys::semaphore(&self.group), false)];
        if self.stale_after.is_some() {
            keys.push((super::keys::alive_prefix(&self.group), true));
        }
        for (key, prefix) in keys {
            let (client, tx, watch) = (self.client.clone(), self.to_self.clone(), self.watch);
            let spawned = std::thread::Builder::new()
                .name("fleet-watch".into())
                .spawn(move || {
                    if client.watch(&key, prefix, revision, WATCH_SPAN).is_err() {
                        // No endpoint took the watch: the next read says why; no busy loop.
                        std::thread::sleep(RETRY_FIRST);
                    }
                    let _ = tx.send(Input::Changed(watch));
                });
            if spawned.is_err() {
                self.watching = false;
            }
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
    Full { holders: Vec<String>, revision: i64 },
}
