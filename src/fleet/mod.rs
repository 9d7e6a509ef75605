//! Fleet coordination through etcd: a host takes a slot of its group's semaphore before an
//! update or rollback starts and gives it back once the run has concluded, so that at most
//! `fleet.max_concurrent` hosts of the group update at once (docs/fleet.md).
//!
//! Only `[fleet]` in the config starts any of it. [`config`] checks the table; [`semaphore`]
//! (pure) is airlock's semaphore value and what taking or giving back a slot makes of it;
//! [`etcd`] is the client; [`agent`] is the one thread that talks to etcd. The service loop
//! holds a [`Fleet`]: it says whether it wants a slot, and hears back through [`Report`]s.

mod agent;
pub mod config;
mod etcd;
pub mod keys;
pub mod liveness;
pub mod rollout;
pub mod semaphore;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::warn;

pub use config::{FailMode, FleetConfig, HostId};

/// What the agent tells the service.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// This host holds a slot, for the wish numbered `seq`; `without_slot`: it does not, but
    /// etcd cannot be reached and `fleet.fail = "open"` lets updates run anyway.
    Held { seq: u64, without_slot: bool },
    /// No slot yet, for the wish numbered `seq`, and why.
    Waiting { seq: u64, wait: SlotWait },
    /// The group's rollouts changed: each with its count of failed hosts.
    Rollouts(Vec<(rollout::Rollout, u64)>),
}

/// Why updates wait for a slot, as their status shows it (`fleet_slot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotWait {
    /// Hosts holding a slot of the group (0 when etcd cannot be reached).
    pub holders: usize,
    pub total_slots: u64,
    pub reason: WaitReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum WaitReason {
    /// Every slot is held by other hosts.
    Full,
    /// etcd cannot be reached (or refuses); the detail says what failed.
    Unreachable(String),
}

impl SlotWait {
    /// A sentence for the status's `fleet_slot.reason` and the journal.
    pub fn describe(&self, group: &str) -> String {
        match &self.reason {
            WaitReason::Full => format!(
                "all {} slot(s) of fleet group {group} are held ({} holder(s)); waiting for one",
                self.total_slots, self.holders
            ),
            WaitReason::Unreachable(why) => {
                format!("etcd cannot be reached, so no fleet slot can be taken: {why}")
            }
        }
    }
}

/// One read of the group's semaphore, for `check`: who holds its slots, or why etcd could
/// not be asked.
pub fn probe(config: &FleetConfig) -> Result<String, String> {
    let client = etcd::Client::new(config).map_err(|e| e.to_string())?;
    let read = client
        .get(&keys::semaphore(&config.group))
        .map_err(|e| e.to_string())?;
    Ok(match read.value {
        None => {
            "answers; the group's semaphore is not created yet (the first update creates it)".into()
        }
        Some(value) => {
            let sem = semaphore::Semaphore::parse(&value)?;
            format!(
                "answers; {} of {} slot(s) held{}",
                sem.holders.len(),
                sem.total_slots,
                if sem.holders.is_empty() {
                    String::new()
                } else {
                    format!(" by {}", sem.holders.join(", "))
                }
            )
        }
    })
}

/// The hosts of `group` whose coordinators are up (with what they run), and those that ever
/// joined it.
fn read_liveness(
    client: &etcd::Client,
    group: &str,
) -> Result<(BTreeMap<String, liveness::Alive>, BTreeSet<String>), etcd::EtcdError> {
    let alive_prefix = keys::alive_prefix(group);
    let alive = client
        .get_prefix(&alive_prefix)?
        .into_iter()
        .filter_map(|(key, value)| {
            let host = key.strip_prefix(&alive_prefix)?.to_owned();
            Some((host, serde_json::from_slice(&value).unwrap_or_default()))
        })
        .collect();
    let members_prefix = keys::members_prefix(group);
    let members = client
        .get_prefix(&members_prefix)?
        .into_iter()
        .filter_map(|(key, _)| Some(key.strip_prefix(&members_prefix)?.to_owned()))
        .collect();
    Ok((alive, members))
}

/// Takes `host` out of the group's semaphore (compare-on-version, again while other hosts
/// write first); whether it held a slot.
fn release_holder(client: &etcd::Client, group: &str, host: &str) -> Result<bool, etcd::EtcdError> {
    let key = keys::semaphore(group);
    for _ in 0..16 {
        let read = client.get(&key)?;
        let Some(value) = read.value else {
            return Ok(false);
        };
        let current = semaphore::Semaphore::parse(&value).map_err(etcd::EtcdError::Refused)?;
        let Some(next) = current.release(host) else {
            return Ok(false);
        };
        if client.put_if_version(&key, read.version, &next.to_json())? {
            return Ok(true);
        }
    }
    Err(etcd::EtcdError::Refused(
        "the semaphore kept changing under the release; try again".into(),
    ))
}

/// What `fleet status` shows: the group's slots, who holds them, who is alive.
pub fn group_view(config: &FleetConfig) -> Result<liveness::GroupView, String> {
    let client = etcd::Client::new(config).map_err(|e| e.to_string())?;
    let read = client
        .get(&keys::semaphore(&config.group))
        .map_err(|e| e.to_string())?;
    let sem = read
        .value
        .map(|v| semaphore::Semaphore::parse(&v))
        .transpose()?;
    let (alive, members) = read_liveness(&client, &config.group).map_err(|e| e.to_string())?;
    let mut view = liveness::view(&config.group, sem.as_ref(), &alive, &members);
    let fetch = |prefix: String| client.get_prefix(&prefix).map_err(|e| e.to_string());
    let outcomes_prefix = keys::outcomes_prefix(&config.group);
    let mut outcomes: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (key, value) in fetch(outcomes_prefix.clone())? {
        let Some((id, host)) = key
            .strip_prefix(&outcomes_prefix)
            .and_then(|k| k.split_once('/'))
        else {
            continue;
        };
        let doc: serde_json::Value = serde_json::from_slice(&value).unwrap_or_default();
        let outcome = doc["outcome"].as_str().unwrap_or("unknown").to_owned();
        outcomes
            .entry(id.to_owned())
            .or_default()
            .insert(host.to_owned(), outcome);
    }
    for (_, value) in fetch(keys::rollouts_prefix(&config.group))? {
        let Ok(rollout) = serde_json::from_slice::<rollout::Rollout>(&value) else {
            continue;
        };
        let of_it = outcomes.remove(&rollout.id).unwrap_or_default();
        view.rollouts
            .push(liveness::rollout_view(rollout, &members, &of_it));
    }
    Ok(view)
}

/// Why `fleet release` did not free a slot.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(
        "{host} is alive ({doing}); it gives its slot back itself once its run has concluded. Use --force to free it anyway"
    )]
    Alive { host: String, doing: String },
    #[error("{0}")]
    Etcd(String),
}

/// `fleet release HOST`: frees `host`'s slot, unless its coordinator is alive and not
/// `force`d; whether it held one.
pub fn release(config: &FleetConfig, host: &str, force: bool) -> Result<bool, ReleaseError> {
    let client = etcd::Client::new(config).map_err(|e| ReleaseError::Etcd(e.to_string()))?;
    let held = client
        .get(&keys::semaphore(&config.group))
        .map_err(|e| ReleaseError::Etcd(e.to_string()))?
        .value
        .and_then(|v| semaphore::Semaphore::parse(&v).ok())
        .is_some_and(|sem| sem.holds(host));
    if !held {
        return Ok(false);
    }
    let (alive, _) =
        read_liveness(&client, &config.group).map_err(|e| ReleaseError::Etcd(e.to_string()))?;
    if let Some(record) = alive.get(host)
        && !force
    {
        let doing = if record.running.is_empty() {
            "running nothing".to_owned()
        } else {
            format!("running {}", record.running.join(", "))
        };
        return Err(ReleaseError::Alive {
            host: host.to_owned(),
            doing,
        });
    }
    release_holder(&client, &config.group, host).map_err(|e| ReleaseError::Etcd(e.to_string()))
}

/// What an operator does to a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutChange {
    Pause,
    Resume,
    Abort,
}

/// `fleet rollout start`: writes a new rollout of `component` to `version` (refused while
/// another of the component is under way: abort it first).
pub fn start_rollout(
    config: &FleetConfig,
    component: &str,
    version: &str,
    waves: Vec<u8>,
    wave_delay: Duration,
    max_failures: u64,
) -> Result<rollout::Rollout, String> {
    let client = etcd::Client::new(config).map_err(|e| e.to_string())?;
    let key = keys::rollout(&config.group, component);
    let read = client.get(&key).map_err(|e| e.to_string())?;
    if let Some(value) = &read.value
        && let Ok(current) = serde_json::from_slice::<rollout::Rollout>(value)
        && matches!(
            current.state,
            rollout::State::Active | rollout::State::Paused
        )
    {
        return Err(format!(
            "rollout {} of {component} {} is under way ({:?}): `fleet rollout abort --component {component}` first",
            current.id, current.version, current.state
        ));
    }
    let now = jiff::Timestamp::now().as_second();
    let new = rollout::Rollout {
        id: format!("{component}-{version}-{now}"),
        component: component.to_owned(),
        version: version.to_owned(),
        waves,
        wave_delay_secs: wave_delay.as_secs(),
        max_failures,
        started_at: now,
        state: rollout::State::Active,
        paused_at: None,
        paused_secs: 0,
    };
    let text = serde_json::to_string(&new).map_err(|e| e.to_string())?;
    if !client
        .put_if_version(&key, read.version, &text)
        .map_err(|e| e.to_string())?
    {
        return Err(
            "another rollout of this component was written meanwhile; look at `fleet status`"
                .into(),
        );
    }
    Ok(new)
}

/// `fleet rollout pause|resume|abort`: changes the rollout of `component`.
pub fn change_rollout(
    config: &FleetConfig,
    component: &str,
    change: RolloutChange,
) -> Result<rollout::Rollout, String> {
    use rollout::State;
    let client = etcd::Client::new(config).map_err(|e| e.to_string())?;
    let key = keys::rollout(&config.group, component);
    for _ in 0..16 {
        let read = client.get(&key).map_err(|e| e.to_string())?;
        let Some(value) = read.value else {
            return Err(format!(
                "no rollout of {component} in fleet group {}",
                config.group
            ));
        };
        let mut r: rollout::Rollout = serde_json::from_slice(&value).map_err(|e| e.to_string())?;
        let now = jiff::Timestamp::now().as_second();
        match (change, r.state) {
            (RolloutChange::Pause, State::Active) => {
                r.state = State::Paused;
                r.paused_at = Some(now);
            }
            (RolloutChange::Resume, State::Paused) => {
                r.paused_secs += now - r.paused_at.take().unwrap_or(now);
                r.state = State::Active;
            }
            (RolloutChange::Abort, State::Active | State::Paused) => r.state = State::Aborted,
            (_, state) => {
                return Err(format!(
                    "rollout {} is {}: nothing to {}",
                    r.id,
                    serde_json::to_value(state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    format!("{change:?}").to_lowercase()
                ));
            }
        }
        let text = serde_json::to_string(&r).map_err(|e| e.to_string())?;
        if client
            .put_if_version(&key, read.version, &text)
            .map_err(|e| e.to_string())?
        {
            return Ok(r);
        }
    }
    Err("the rollout kept changing; try again".into())
}

/// The service's side of the agent.
#[derive(Debug)]
pub struct Fleet {
    inputs: mpsc::Sender<agent::Input>,
    group: String,
    call_timeout: Duration,
    /// The number of the latest wish sent.
    seq: u64,
    wanted: bool,
    /// A slot is held (or failing open lets updates run) for the latest wish.
    held: bool,
    /// Why not, while not.
    wait: Option<SlotWait>,
    /// What the liveness key was last told this host runs.
    shown_running: Vec<String>,
    /// The group's rollouts as last read, each with its failed hosts; `None` until read.
    rollouts: Option<Vec<(rollout::Rollout, u64)>>,
    host: HostId,
}

impl Fleet {
    /// Starts the agent thread; `want`: whether the runs and requests recovered at start
    /// need a slot (a slot held for a run that survived a crash stays held; one held with
    /// nothing to run is given back).
    pub fn start(
        config: &FleetConfig,
        want: bool,
        report: impl Fn(Report) + Send + 'static,
    ) -> Result<Fleet, String> {
        let host = HostId::resolve(config.host_id.as_ref())?;
        let client = etcd::Client::new(config).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel();
        let agent = agent::Agent::new(
            config,
            host.clone(),
            client,
            rx,
            tx.clone(),
            Box::new(report),
        );
        std::thread::Builder::new()
            .name("fleet".into())
            .spawn(move || agent.run(0, want))
            .map_err(|e| format!("cannot start the fleet thread: {e}"))?;
        tracing::info!(host = %host, group = %config.group, endpoints = %config.endpoints.join(","), "fleet coordination through etcd");
        Ok(Fleet {
            inputs: tx,
            group: config.group.clone(),
            call_timeout: config.call_timeout,
            seq: 0,
            wanted: want,
            held: false,
            wait: None,
            shown_running: Vec::new(),
            rollouts: None,
            host,
        })
    }

    /// Tells the agent whether a slot is wanted now (only a change is sent). Not wanting one
    /// counts as not holding one at once: a run may start only on a slot taken afterwards.
    pub fn want(&mut self, want: bool) {
        if want == self.wanted {
            return;
        }
        self.wanted = want;
        self.seq += 1;
        self.held = false;
        self.wait = None;
        let _ = self.inputs.send(agent::Input::Want {
            seq: self.seq,
            want,
        });
    }

    /// Tells the agent what this host runs (for its liveness key); only a change is sent.
    pub fn running(&mut self, running: Vec<String>) {
        if running != self.shown_running {
            self.shown_running = running.clone();
            let _ = self.inputs.send(agent::Input::Running(running));
        }
    }

    /// The rollout of `component` to `version`, if one is under way or halted, and what a
    /// request of this host for it must do now.
    pub fn rollout_gate(
        &self,
        component: &str,
        version: &str,
    ) -> Option<(&rollout::Rollout, rollout::Gate)> {
        let now = jiff::Timestamp::now().as_second();
        self.rollouts
            .iter()
            .flatten()
            .find(|(r, _)| r.covers(component, version))
            .map(|(r, failures)| (r, r.gate(self.host.as_str(), now, *failures)))
    }

    /// Records this host's outcome of `rollout` in etcd (the agent retries until it can).
    pub fn outcome(&self, rollout: &rollout::Rollout, failed: bool) {
        let _ = self.inputs.send(agent::Input::Outcome {
            rollout: rollout.clone(),
            failed,
        });
    }

    /// Takes in a report; stale ones (for an earlier wish) are dropped.
    pub fn apply(&mut self, report: Report) {
        match report {
            Report::Held { seq, without_slot } if seq == self.seq => {
                if without_slot {
                    warn!(group = %self.group, "running an update without a fleet slot: etcd cannot be reached and fleet.fail = \"open\"");
                }
                self.held = true;
                self.wait = None;
            }
            Report::Waiting { seq, wait } if seq == self.seq => {
                self.held = false;
                self.wait = Some(wait);
            }
            Report::Rollouts(rollouts) => self.rollouts = Some(rollouts),
            _ => {}
        }
    }

    /// Whether updates and rollbacks may start now: a slot is held and the group's
    /// rollouts are known (an update of a rolled-out version must wait for its wave).
    pub fn may_start(&self) -> bool {
        self.wanted && self.held && self.rollouts.is_some()
    }

    /// Why they wait, once the agent has said (until then: they wait for its first answer).
    pub fn wait(&self) -> Option<&SlotWait> {
        self.wait.as_ref()
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// At shutdown: gives the slot back if nothing running needs it (one try, within the
    /// call deadline), and stops the agent.
    pub fn stop(&self, release: bool) {
        let (done, finished) = mpsc::channel();
        if self
            .inputs
            .send(agent::Input::Stop { release, done })
            .is_ok()
        {
            let _ = finished.recv_timeout(self.call_timeout * 3);
        }
    }
}
