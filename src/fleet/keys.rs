//! The keys this fleet uses in etcd. The semaphore's is airlock's own, so that Zincati hosts
//! behind airlock and these hosts count against one limit.

/// A group's semaphore: airlock's `com.coreos.airlock/groups/<group>/v1/semaphore`. airlock
/// URL-escapes the group; [`super::config`] allows only names that escaping leaves alone.
pub fn semaphore(group: &str) -> String {
    format!("com.coreos.airlock/groups/{group}/v1/semaphore")
}

/// Where this program keeps its own keys for a group (airlock's stay under its own prefix).
fn ours(group: &str) -> String {
    format!("update-coordinator/fleet/{group}/")
}

/// Hosts of the group that are up: one key per host, on a lease its coordinator keeps alive,
/// holding what it runs; gone once the lease expires.
pub fn alive_prefix(group: &str) -> String {
    format!("{}alive/", ours(group))
}

pub fn alive(group: &str, host: &str) -> String {
    format!("{}{host}", alive_prefix(group))
}

/// Hosts that ever joined the group (no lease): a holder listed here but not alive is a
/// coordinator that died or was cut off; a holder in neither is another client of the
/// semaphore (Zincati behind airlock).
pub fn members_prefix(group: &str) -> String {
    format!("{}members/", ours(group))
}

pub fn member(group: &str, host: &str) -> String {
    format!("{}{host}", members_prefix(group))
}

/// Everything of ours for a group: a watch on it sees rollouts and outcomes change.
pub fn group_prefix(group: &str) -> String {
    ours(group)
}

/// Rollouts: one key per component (its latest rollout).
pub fn rollouts_prefix(group: &str) -> String {
    format!("{}rollouts/", ours(group))
}

pub fn rollout(group: &str, component: &str) -> String {
    format!("{}{component}", rollouts_prefix(group))
}

/// Each host's outcome of a rollout: `outcomes/<rollout id>/<host>`.
pub fn outcomes_prefix(group: &str) -> String {
    format!("{}outcomes/", ours(group))
}

pub fn outcome(group: &str, rollout_id: &str, host: &str) -> String {
    format!("{}{rollout_id}/{host}", outcomes_prefix(group))
}
