//! Who holds the slots and whether they are still there: each coordinator keeps a key on an
//! etcd lease (its [`Alive`] record: what it runs), and a lease-less member key once it joined.
//! Pure: from what etcd holds to a [`GroupView`] (`fleet status`), and which holders are gone
//! long enough for `stale_after` to free their slots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::semaphore::Semaphore;

/// The value of a host's liveness key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alive {
    /// What it runs now, e.g. `remote update 2.0.1`.
    #[serde(default)]
    pub running: Vec<String>,
    /// When its coordinator started (RFC 3339).
    #[serde(default)]
    pub since: String,
}

/// Whether a holder is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Its coordinator keeps its liveness key alive.
    Alive,
    /// A coordinator of this group whose lease expired: dead, stopped or cut off from etcd.
    Gone,
    /// Not a coordinator of this group (a Zincati node behind airlock): no liveness known.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostView {
    pub host: String,
    pub liveness: Liveness,
    pub holds_slot: bool,
    pub running: Vec<String>,
}

/// What `fleet status` shows of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupView {
    pub group: String,
    /// `None`: no host has created the semaphore yet.
    pub total_slots: Option<u64>,
    /// The holders first (in the semaphore's order), then the other hosts by name.
    pub hosts: Vec<HostView>,
    /// Each component's latest rollout and where every known host stands in it.
    pub rollouts: Vec<RolloutView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutView {
    #[serde(flatten)]
    pub rollout: super::rollout::Rollout,
    /// The hosts of the group (members and those with an outcome), each with its wave and
    /// outcome: `updated`, `failed`, or `waiting` (none recorded yet).
    pub hosts: Vec<RolloutHost>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutHost {
    pub host: String,
    pub wave: usize,
    pub outcome: String,
}

/// Where each host stands in `rollout`: `outcomes` maps hosts to their recorded outcome.
pub fn rollout_view(
    rollout: super::rollout::Rollout,
    members: &BTreeSet<String>,
    outcomes: &BTreeMap<String, String>,
) -> RolloutView {
    let hosts: BTreeSet<&String> = members.iter().chain(outcomes.keys()).collect();
    let hosts = hosts
        .into_iter()
        .map(|h| RolloutHost {
            host: h.clone(),
            wave: super::rollout::wave_of(h, &rollout),
            outcome: outcomes.get(h).cloned().unwrap_or_else(|| "waiting".into()),
        })
        .collect();
    RolloutView { rollout, hosts }
}

pub fn view(
    group: &str,
    semaphore: Option<&Semaphore>,
    alive: &BTreeMap<String, Alive>,
    members: &BTreeSet<String>,
) -> GroupView {
    let holders: Vec<String> = semaphore.map(|s| s.holders.clone()).unwrap_or_default();
    let host = |name: &str, holds_slot: bool| HostView {
        host: name.to_owned(),
        liveness: liveness(name, alive, members),
        holds_slot,
        running: alive
            .get(name)
            .map(|a| a.running.clone())
            .unwrap_or_default(),
    };
    let mut hosts: Vec<HostView> = holders.iter().map(|h| host(h, true)).collect();
    let others: BTreeSet<&String> = alive
        .keys()
        .chain(members.iter())
        .filter(|h| !holders.contains(h))
        .collect();
    hosts.extend(others.into_iter().map(|h| host(h, false)));
    GroupView {
        group: group.to_owned(),
        total_slots: semaphore.map(|s| s.total_slots),
        hosts,
        rollouts: Vec::new(),
    }
}

pub fn liveness(
    host: &str,
    alive: &BTreeMap<String, Alive>,
    members: &BTreeSet<String>,
) -> Liveness {
    if alive.contains_key(host) {
        Liveness::Alive
    } else if members.contains(host) {
        Liveness::Gone
    } else {
        Liveness::Unknown
    }
}

/// Keeps, per holder, since when this host has seen it gone; returns those gone for at least
/// `stale_after` (to be freed), and when the next one will be. Holders of unknown liveness
/// (not coordinators of this group) are never freed: nothing says they are gone.
pub fn stale(
    holders: &[(String, Liveness)],
    gone_since: &mut HashMap<String, Instant>,
    now: Instant,
    stale_after: Duration,
) -> (Vec<String>, Option<Instant>) {
    gone_since.retain(|h, _| {
        holders
            .iter()
            .any(|(holder, l)| holder == h && *l == Liveness::Gone)
    });
    let mut due = Vec::new();
    let mut next = None::<Instant>;
    for (holder, liveness) in holders {
        if *liveness != Liveness::Gone {
            continue;
        }
        let since = *gone_since.entry(holder.clone()).or_insert(now);
        let at = since + stale_after;
        if at <= now {
            due.push(holder.clone());
        } else {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    (due, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(hosts: &[(&str, &[&str])]) -> BTreeMap<String, Alive> {
        hosts
            .iter()
            .map(|(h, running)| {
                let running = running.iter().map(|r| r.to_string()).collect();
                (
                    h.to_string(),
                    Alive {
                        running,
                        since: String::new(),
                    },
                )
            })
            .collect()
    }

    fn set(hosts: &[&str]) -> BTreeSet<String> {
        hosts.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn holders_come_first_with_their_liveness_and_what_they_run() {
        let sem = Semaphore {
            total_slots: 3,
            holders: vec!["a".into(), "dead".into(), "zincati".into()],
        };
        let v = view(
            "g",
            Some(&sem),
            &alive(&[("a", &["remote update 2.0"]), ("idle", &[])]),
            &set(&["a", "dead", "idle"]),
        );
        let shown: Vec<(&str, Liveness, bool, usize)> = v
            .hosts
            .iter()
            .map(|h| (h.host.as_str(), h.liveness, h.holds_slot, h.running.len()))
            .collect();
        assert_eq!(
            shown,
            [
                ("a", Liveness::Alive, true, 1),
                ("dead", Liveness::Gone, true, 0),
                ("zincati", Liveness::Unknown, true, 0),
                ("idle", Liveness::Alive, false, 0),
            ]
        );
        assert_eq!(v.total_slots, Some(3));
    }

    #[test]
    fn a_group_nobody_updated_yet_has_no_slots_to_show() {
        let v = view("g", None, &alive(&[("a", &[])]), &set(&["a"]));
        assert_eq!(v.total_slots, None);
        assert!(!v.hosts[0].holds_slot);
    }

    #[test]
    fn only_a_holder_gone_for_stale_after_is_freed_and_never_one_of_unknown_liveness() {
        let t0 = Instant::now();
        let after = Duration::from_secs(60);
        let holders = vec![
            ("dead".to_string(), Liveness::Gone),
            ("zincati".to_string(), Liveness::Unknown),
            ("a".to_string(), Liveness::Alive),
        ];
        let mut seen = HashMap::new();
        assert_eq!(
            stale(&holders, &mut seen, t0, after),
            (vec![], Some(t0 + after))
        );
        let later = t0 + Duration::from_secs(59);
        assert_eq!(
            stale(&holders, &mut seen, later, after).0,
            Vec::<String>::new()
        );
        let (due, _) = stale(&holders, &mut seen, t0 + after, after);
        assert_eq!(due, ["dead"]);
    }

    #[test]
    fn a_holder_that_comes_back_starts_its_count_again() {
        let t0 = Instant::now();
        let after = Duration::from_secs(60);
        let mut seen = HashMap::new();
        stale(&[("h".into(), Liveness::Gone)], &mut seen, t0, after);
        stale(
            &[("h".into(), Liveness::Alive)],
            &mut seen,
            t0 + Duration::from_secs(30),
            after,
        );
        let (due, next) = stale(
            &[("h".into(), Liveness::Gone)],
            &mut seen,
            t0 + after,
            after,
        );
        assert!(due.is_empty());
        assert_eq!(next, Some(t0 + after + after));
    }
}
