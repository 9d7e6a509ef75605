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
