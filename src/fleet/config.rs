//! `[fleet]`: which etcd cluster, which group, how many hosts of the group may update at once,
//! and who this host is. Checked here once; nothing downstream re-checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the host's id is read from when `fleet.host_id` is not set.
pub const MACHINE_ID: &str = "/etc/machine-id";

/// Every etcd call gives up after this long unless `fleet.call_timeout` says otherwise.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// `[fleet]` as TOML gives it (see [`crate::config`]'s raw tables).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFleet {
    pub(crate) endpoints: Option<Vec<String>>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) cert_file: Option<PathBuf>,
    pub(crate) key_file: Option<PathBuf>,
    pub(crate) group: Option<String>,
    pub(crate) max_concurrent: Option<u64>,
    pub(crate) host_id: Option<String>,
    pub(crate) fail: Option<String>,
    pub(crate) call_timeout: Option<f64>,
    pub(crate) stale_after: Option<f64>,
}

/// The checked `[fleet]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// etcd client URLs (`http://` or `https://`, host and port, no path), tried in turn.
    pub endpoints: Vec<String>,
    /// TLS: the CA that signed the etcd servers' certificates, and this host's client
    /// certificate and key (both or neither).
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The semaphore's group: hosts (and Zincati hosts behind airlock) of one group share its
    /// slots.
    pub group: String,
    /// Slots of a group's semaphore when this host is the first to create it.
    pub max_concurrent: u64,
    /// This host's id in the semaphore; `None`: read from [`MACHINE_ID`] at start.
    pub host_id: Option<HostId>,
    /// What an update does while etcd cannot be reached.
    pub fail: FailMode,
    /// The deadline of every etcd call.
    pub call_timeout: Duration,
    /// A holder whose coordinator has been gone (its liveness lease expired) this long has its
    /// slot freed by a host waiting for one; `None`: only `fleet release` frees it.
    pub stale_after: Option<Duration>,
}

/// What an update or rollback does while etcd cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// It waits (phase `waiting_for_slot`) until etcd answers: no host updates outside the
    /// fleet's limit. The default.
    Closed,
    /// It runs without a slot, logged loudly: a host cut off from etcd still gets its fixes.
    Open,
}

impl FailMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Closed => "closed",
            FailMode::Open => "open",
        }
    }
}

/// A host's id as it stands in the semaphore's `holders` and in etcd keys: 1 to 64 of
/// `[A-Za-z0-9._-]` (a machine-id is 32 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(String);

impl HostId {
    pub fn parse(text: &str) -> Result<HostId, String> {
        let text = text.trim();
        let fine = !text.is_empty()
            && text.len() <= 64
            && !text.starts_with('.')
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if fine {
            Ok(HostId(text.to_owned()))
        } else {
            Err(format!(
                "{text:?} is not a host id: use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with .)"
            ))
        }
    }

    /// The host id `host_id` names, or the machine's id from [`MACHINE_ID`].
    pub fn resolve(configured: Option<&HostId>) -> Result<HostId, String> {
        if let Some(id) = configured {
            return Ok(id.clone());
        }
        let text = std::fs::read_to_string(MACHINE_ID).map_err(|e| {
            format!("cannot read {MACHINE_ID} for the fleet host id ({e}); set fleet.host_id")
        })?;
        HostId::parse(&text).map_err(|e| format!("{MACHINE_ID}: {e}; set fleet.host_id"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for HostId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl FleetConfig {
    /// Checks `[fleet]`; relative paths are resolved by `resolve` (against the config's
    /// directory). Each error names the key and says what to write instead.
    pub(crate) fn check(
        raw: RawFleet,
        resolve: impl Fn(PathBuf) -> PathBuf,
    ) -> Result<FleetConfig, String> {
        let endpoints = raw.endpoints.unwrap_or_default();
        if endpoints.is_empty() {
            return Err(
                "key fleet.endpoints: required with [fleet]: the etcd client URLs, e.g. [\"https://etcd1:2379\", \"https://etcd2:2379\"]"
                    .into(),
            );
        }
        let endpoints = endpoints
            .iter()
            .map(|e| endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        let client_cert = match (raw.cert_file, raw.key_file) {
            (Some(cert), Some(key)) => Some((resolve(cert), resolve(key))),
            (None, None) => None,
            _ => {
                return Err(
                    "keys fleet.cert_file and fleet.key_file: set both (a client certificate and its key) or neither"
                        .into(),
                );
            }
        };
        let tls = raw.ca_file.is_some() || client_cert.is_some();
        if tls && let Some(plain) = endpoints.iter().find(|e| e.starts_with("http://")) {
            return Err(format!(
                "key fleet.endpoints: {plain} is plain http but fleet.ca_file/cert_file are set: use https:// for every endpoint"
            ));
        }
        let group = raw.group.unwrap_or_else(|| "default".into());
        let group_fine = !group.is_empty()
            && group.len() <= 64
            && group
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !group_fine {
            return Err(format!(
                "key fleet.group: {group:?} is not a group name: use 1 to 64 of A-Z a-z 0-9 . _ -"
            ));
        }
        let max_concurrent = match raw.max_concurrent.unwrap_or(1) {
            0 => {
                return Err(
                    "key fleet.max_concurrent: must be at least 1 (hosts of the group updating at once)"
                        .into(),
                );
            }
            n => n,
        };
        let host_id = raw
            .host_id
            .map(|id| HostId::parse(&id).map_err(|e| format!("key fleet.host_id: {e}")))
            .transpose()?;
        let fail = match raw.fail.as_deref().unwrap_or("closed") {
            "closed" => FailMode::Closed,
            "open" => FailMode::Open,
            other => {
                return Err(format!(
                    "key fleet.fail: {other:?} is neither \"closed\" (updates wait while etcd is unreachable) nor \"open\" (they run without a slot)"
                ));
            }
        };
        let call_timeout = match raw.call_timeout {
            None => DEFAULT_CALL_TIMEOUT,
            Some(s) if (0.1..=60.0).contains(&s) => Duration::from_secs_f64(s),
            Some(s) => {
                return Err(format!(
                    "key fleet.call_timeout: {s} is not between 0.1 and 60 seconds"
                ));
            }
        };
        let stale_after = match raw.stale_after {
            None => None,
            Some(s) if (1.0..=30.0 * 86400.0).contains(&s) => Some(Duration::from_secs_f64(s)),
            Some(s) => {
                return Err(format!(
                    "key fleet.stale_after: {s} is not between 1 second and 30 days (leave it out to free slots only by `fleet release`)"
                ));
            }
        };
        Ok(FleetConfig {
            stale_after,
            endpoints,
            ca_file: raw.ca_file.map(&resolve),
            client_cert,
            group,
            max_concurrent,
            host_id,
            fail,
            call_timeout,
        })
    }

    /// Each setting as (what, value), for `update-coordinator check`.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut lines = vec![
            ("endpoints".into(), self.endpoints.join(", ")),
            (
                "group".into(),
                format!(
                    "{} (semaphore {})",
                    self.group,
                    super::keys::semaphore(&self.group)
                ),
            ),
            (
                "max_concurrent".into(),
                format!(
                    "{} host(s) of the group update at once",
                    self.max_concurrent
                ),
            ),
            (
                "fail".into(),
                format!(
                    "{}: while etcd cannot be reached, {} (each call gives up after {})",
                    self.fail.as_str(),
                    match self.fail {
                        FailMode::Closed => "updates and rollbacks wait",
                        FailMode::Open => "updates and rollbacks run without a slot",
                    },
                    humantime::format_duration(self.call_timeout)
                ),
            ),
        ];
        match &self.host_id {
            Some(id) => lines.push(("host id".into(), id.to_string())),
            None => {
                if let Ok(id) = HostId::resolve(None) {
                    lines.push(("host id".into(), format!("{id} (from {MACHINE_ID})")));
                }
            }
        }
        lines.push((
            "stale_after".into(),
            match self.stale_after {
                Some(after) => format!(
                    "slots of hosts gone for {} are freed",
                    humantime::format_duration(after)
                ),
                None => "not set: only `fleet release HOST` frees a gone host's slot".into(),
            },
        ));
        if let Some(ca) = &self.ca_file {
            lines.push(("TLS CA".into(), ca.display().to_string()));
        }
        if let Some((cert, key)) = &self.client_cert {
            lines.push((
                "client certificate".into(),
                format!("{} (key {})", cert.display(), key.display()),
            ));
        }
        lines
    }
}

/// A checked endpoint URL, without a trailing slash.
fn endpoint(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"));
    let Some(rest) = rest else {
        return Err(format!(
            "key fleet.endpoints: {text:?} is not an etcd client URL: write http://HOST:PORT or https://HOST:PORT"
        ));
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', ' ', '@']) {
        return Err(format!(
            "key fleet.endpoints: {text:?}: give only scheme, host and port (https://etcd1:2379), no path or user"
        ));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// Whether `path` exists as a readable file: `check` reports the TLS files it cannot read.
pub fn readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml: &str) -> Result<FleetConfig, String> {
        let raw: RawFleet = toml::from_str(toml).unwrap();
        FleetConfig::check(raw, |p| Path::new("/etc/uc").join(p))
    }

    #[test]
    fn endpoints_alone_give_the_default_group_one_slot_and_failing_closed() {
        let c = check("endpoints = [\"http://127.0.0.1:2379/\"]").unwrap();
        assert_eq!(c.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(c.group, "default");
        assert_eq!(c.max_concurrent, 1);
        assert_eq!(c.host_id, None);
        assert_eq!(c.fail, FailMode::Closed);
        assert_eq!(c.call_timeout, DEFAULT_CALL_TIMEOUT);
    }

    #[test]
    fn tls_files_are_resolved_against_the_config_directory() {
        let c = check(
            "endpoints = [\"https://e1:2379\"]\nca_file = \"ca.pem\"\ncert_file = \"/k/h.pem\"\nkey_file = \"h.key\"",
        )
        .unwrap();
        assert_eq!(c.ca_file.as_deref(), Some(Path::new("/etc/uc/ca.pem")));
        assert_eq!(
            c.client_cert,
            Some(("/k/h.pem".into(), "/etc/uc/h.key".into()))
        );
    }

    #[test]
    fn each_mistake_names_its_key_and_what_to_write() {
        for (toml, says) in [
            ("group = \"a\"", "fleet.endpoints: required"),
            ("endpoints = [\"etcd1:2379\"]", "http://HOST:PORT"),
            ("endpoints = [\"http://e/v3\"]", "no path"),
            (
                "endpoints = [\"http://e:1\"]\ncert_file = \"c\"",
                "set both",
            ),
            (
                "endpoints = [\"http://e:1\"]\nca_file = \"c\"",
                "use https://",
            ),
            (
                "endpoints = [\"http://e:1\"]\ngroup = \"a/b\"",
                "fleet.group",
            ),
            (
                "endpoints = [\"http://e:1\"]\nmax_concurrent = 0",
                "at least 1",
            ),
            (
                "endpoints = [\"http://e:1\"]\nhost_id = \"a b\"",
                "fleet.host_id",
            ),
            (
                "endpoints = [\"http://e:1\"]\nfail = \"wait\"",
                "\"closed\"",
            ),
            (
                "endpoints = [\"http://e:1\"]\ncall_timeout = 0",
                "fleet.call_timeout",
            ),
            (
                "endpoints = [\"http://e:1\"]\nstale_after = 0.5",
                "fleet.stale_after",
            ),
        ] {
            let err = check(toml).unwrap_err();
            assert!(err.contains(says), "{toml}: {err}");
        }
    }

    #[test]
    fn a_host_id_is_a_safe_name_and_a_machine_id_is_one() {
        assert!(HostId::parse("0123456789abcdef0123456789abcdef\n").is_ok());
        assert_eq!(HostId::parse(" pi-7 ").unwrap().as_str(), "pi-7");
        for bad in ["", ".hidden", "a/b", "x y", &"a".repeat(65)] {
            assert!(HostId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
