//! Configuration: TOML file → checked [`Config`]. Owns every path the service touches.
//!
//! Defaults match DuneBugger, so an empty file (or none at the default path) works. Relative
//! paths in the file are resolved against the file's own directory, so a config and the
//! directories it names can be moved together (the demo relies on this).

mod check;
mod raw;
mod spools;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::limits::Limits;
use crate::request::Action;
use crate::spool::Writers;

pub const DEFAULT_PATH: &str = "/etc/dunebugger/update-coordinator.toml";
pub const DEFAULT_SPOOL_ROOT: &str = "/var/dunebugger/updates";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/update-coordinator";
pub const DEFAULT_GROUP: &str = "dunebugger-updates";
pub const DEFAULT_COMPONENTS: [&str; 3] = ["core", "scheduler", "remote"];
const DEFAULT_COMPONENT_PARENT: &str = "/opt/dunebugger";

/// The checked configuration. Built only by [`Config::load`] / [`Config::from_toml`].
#[derive(Debug, Clone)]
pub struct Config {
    /// `requests/` and `status/` live beneath it.
    pub spool_root: PathBuf,
    /// Request files larger than this are refused without being read.
    pub max_request_bytes: u64,
    /// At most this many requests wait for their turn; more are refused `queue_full`.
    /// Requests waiting for their time (phase `scheduled`) are not counted.
    pub max_queued: usize,
    /// One writer's share of `max_queued` (see [`crate::fairshare`]).
    pub max_queued_per_writer: usize,
    /// Requests one writer may have waiting for their `not_before` or a window. All writers
    /// together may have at most `max_queued` of them (a bound on memory, not a share).
    pub max_scheduled_per_writer: usize,
    /// When non-empty, only files owned by these uids/gids are read.
    pub writers: Writers,
    /// The group that may drop requests; the spool's permissions are checked against it.
    /// `None` (configured as "") skips the check, for unprivileged demo setups.
    pub spool_group: Option<String>,
    /// Progress records go into `status/<id>.json` itself instead of beside it (for clients
    /// that all keep polling past `message: "in_progress"`; see docs/protocol.md).
    pub progress_in_status: bool,
    /// Uids besides root and the service's own user whose scripts are trusted.
    pub script_owners: Vec<u32>,
    /// Signed requests, when required.
    pub signature: Option<SignatureConfig>,
    /// `[fleet]`: updates take a slot of the group's semaphore in etcd (see [`crate::fleet`]).
    pub fleet: Option<crate::fleet::FleetConfig>,
    /// Serialize update/rollback across all components (they share one compose file).
    pub serialize_updates: bool,
    /// How many scripts may run at once (health checks run alongside an update).
    pub max_concurrent: usize,
    /// How many of them may run one writer's requests.
    pub max_running_per_writer: usize,
    /// Time between SIGTERM and SIGKILL when a script is stopped.
    pub kill_grace: Duration,
    /// Run records live here (systemd `StateDirectory=`).
    pub state_dir: PathBuf,
    /// Finished run records and uncollected final statuses are removed after this long.
    pub retention: Duration,
    /// The audit log (`state/audit.jsonl`) is rotated past this size; 3 old files are kept.
    pub audit_max_bytes: u64,
    /// How much of the end of stdout and of stderr a status carries.
    pub output_tail_bytes: usize,
    /// Allow-listed components by name.
    pub components: BTreeMap<String, Component>,
    /// Every spool: `[spool]` first (its root is `spool_root`), then `[spools.NAME]` by name.
    pub spools: Vec<SpoolConfig>,
}

/// One spool: a drop box with its own `requests/` and `status/`. The first is `[spool]`; the
/// others are `[spools.NAME]`, one per client container, so that each container's requests,
/// answers and ids are out of the others' reach even where uids say nothing (containers that
/// all run as root).
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolConfig {
    /// `NAME` of `[spools.NAME]`; [`MAIN_SPOOL`] for `[spool]`.
    pub name: String,
    pub root: PathBuf,
    /// Components requests dropped here may name; `None`: every configured one.
    pub components: Option<Vec<String>>,
    /// Actions requests dropped here may ask for; `None`: all. Cancel is always allowed (a
    /// writer's own requests only).
    pub actions: Option<Vec<Action>>,
}

/// The name of the `[spool]` table's spool in logs and records.
pub const MAIN_SPOOL: &str = "main";

impl SpoolConfig {
    pub fn requests_dir(&self) -> PathBuf {
        self.root.join("requests")
    }

    pub fn status_dir(&self) -> PathBuf {
        self.root.join("status")
    }

    /// Why a request may not be dropped here, if it may not.
    pub fn refuses(&self, components: &[&str], action: Action) -> Option<String> {
        if let Some(allowed) = &self.actions
            && !allowed.contains(&action)
        {
            let list: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
            return Some(format!(
                "spool {} may not ask for {action}; it may ask for: {} (spools.{}.actions)",
                self.name,
                list.join(", "),
                self.name
            ));
        }
        if let Some(allowed) = &self.components
            && let Some(other) = components.iter().find(|c| !allowed.iter().any(|a| a == *c))
        {
            return Some(format!(
                "spool {} may not ask for component {other}; it may ask for: {} (spools.{}.components)",
                self.name,
                allowed.join(", "),
                self.name
            ));
        }
        None
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SignatureConfig {
    /// Holds the shared HMAC key (raw bytes; a trailing newline is ignored).
    pub key_file: PathBuf,
    /// How far a request's timestamp may be from the coordinator's clock.
    pub max_age: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// Holds `update.sh`, `rollback.sh`, `health-check.sh`.
    pub dir: PathBuf,
    /// Update and rollback requests accepted per hour at most; 0 = unlimited.
    pub max_updates_per_hour: u32,
    /// How many of them one writer may use; 0 = unlimited.
    pub max_updates_per_hour_per_writer: u32,
    pub update_timeout: Duration,
    pub rollback_timeout: Duration,
    pub health_timeout: Duration,
    /// Resource limits for this component's scripts (see [`crate::limits`]).
    pub limits: Limits,
    /// After a successful `update.sh`, run `health-check.sh` (up to `health_retries` times,
    /// `health_interval` apart); if it never passes, or the update fails, run `rollback.sh`.
    pub auto_rollback: bool,
    pub health_retries: u32,
    pub health_interval: Duration,
    /// Before an update: at least this much free space on `disk_path` (0 = no check).
    pub min_free_disk_mb: u64,
    /// Where to measure free space (default: the component's directory).
    pub disk_path: PathBuf,
    /// When update and rollback requests may start (local time); `None` = any time.
    pub window: Option<crate::window::Window>,
}

impl Component {
    pub fn timeout(&self, action: Action) -> Duration {
        match action {
            Action::Update => self.update_timeout,
            Action::Rollback => self.rollback_timeout,
            Action::Health => self.health_timeout,
        }
    }

    pub fn script(&self, action: Action) -> PathBuf {
        self.dir.join(action.script_name())
    }
}

impl Config {
    pub fn requests_dir(&self) -> PathBuf {
        self.spool_root.join("requests")
    }

    pub fn status_dir(&self) -> PathBuf {
        self.spool_root.join("status")
    }

    pub fn component_names(&self) -> impl Iterator<Item = &str> + Clone {
        self.components.keys().map(String::as_str)
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        // Scripts run with their component dir as cwd, so every path must be absolute.
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let base = absolute.parent().unwrap_or(Path::new("/"));
        Self::from_toml(&text, base).map_err(|detail| ConfigError::Invalid {
            path: path.to_owned(),
            detail,
        })
    }

    /// The built-in DuneBugger defaults, as an empty file gives them.
    pub fn defaults() -> Config {
        Self::from_toml("", Path::new("/")).expect("the empty config is valid")
    }

    /// Parses config text; relative paths are resolved against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, String> {
        check::config(raw::parse(text)?, base)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

pub use raw::accepted_keys;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[spool\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("line 1"),
            "{err}"
        );
    }
}
