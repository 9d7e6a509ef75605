//! The keys this fleet uses in etcd. The semaphore's is airlock's own, so that Zincati hosts
//! behind airlock and these hosts count against one limit.

/// A group's semaphore: airlock's `com.coreos.airlock/groups/<group>/v1/semaphore`. airlock
/// URL-escapes the group; [`super::config`] allows only names that escaping leaves alone.
pub fn semaphore(group: &str) -> String {
    format!("com.coreos.airlock/groups/{group}/v1/semaphore")
}
