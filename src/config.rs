//! Configuration: TOML file → checked [`Config`]. Owns every path the service touches.
//!
//! Defaults match DuneBugger, so an empty file (or none at the default path) works. Relative
//! paths in the file are resolved against the file's own directory, so a config and the
//! directories it names can be moved together (the demo relies on this).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
        let raw: RawConfig = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        let spool = raw.spool.unwrap_or_default();
        let exec = raw.execution.unwrap_or_default();
        let state = raw.state.unwrap_or_default();
        let resolve = |p: PathBuf| normalize(&base.join(p));

        let default_limits = raw
            .limits
            .clone()
            .unwrap_or_default()
            .over(&Limits::pi_defaults(), "limits")?;
        let raw_components = raw.components.unwrap_or_else(|| {
            DEFAULT_COMPONENTS
                .iter()
                .map(|name| (name.to_string(), RawComponent::default()))
                .collect()
        });
        let mut components = BTreeMap::new();
        for (name, c) in raw_components {
            if !is_component_name(&name) {
                return Err(format!(
                    "key components.{name}: a component name uses a-z, 0-9, _ and - (at most 64 characters)"
                ));
            }
            let t = c.timeouts.unwrap_or_default();
            let key = |action: &str| format!("components.{name}.timeouts.{action}");
            let limits = c
                .limits
                .clone()
                .unwrap_or_default()
                .over(&default_limits, &format!("components.{name}.limits"))?;
            let health_retries = c.health_retries.unwrap_or(3);
            if health_retries == 0 {
                return Err(format!(
                    "key components.{name}.health_retries: must be at least 1"
                ));
            }
            let dir = resolve(
                c.dir
                    .clone()
                    .unwrap_or_else(|| Path::new(DEFAULT_COMPONENT_PARENT).join(&name)),
            );
            let max_updates_per_hour = c.max_updates_per_hour.unwrap_or(20);
            let max_updates_per_hour_per_writer = match c.max_updates_per_hour_per_writer {
                None if max_updates_per_hour == 0 => 0,
                None => crate::fairshare::half(max_updates_per_hour as usize) as u32,
                Some(n) if max_updates_per_hour == 0 || n <= max_updates_per_hour => n,
                Some(n) => {
                    return Err(format!(
                        "key components.{name}.max_updates_per_hour_per_writer: {n} is more than components.{name}.max_updates_per_hour ({max_updates_per_hour})"
                    ));
                }
            };
            let window = match c.window.as_deref() {
                None | Some("") => None,
                Some(text) => Some(
                    crate::window::Window::parse(text)
                        .map_err(|e| format!("key components.{name}.window: {e}"))?,
                ),
            };
            let component = Component {
                window,
                min_free_disk_mb: c.min_free_disk_mb.unwrap_or(0),
                disk_path: c
                    .disk_path
                    .clone()
                    .map(resolve)
                    .unwrap_or_else(|| dir.clone()),
                limits,
                auto_rollback: c.auto_rollback.unwrap_or(true),
                health_retries,
                health_interval: match c.health_interval {
                    Some(0.0) => Duration::ZERO,
                    Some(s) => seconds(&format!("components.{name}.health_interval"), s)?,
                    None => Duration::from_secs(5),
                },
                max_updates_per_hour,
                max_updates_per_hour_per_writer,
                dir,
                update_timeout: seconds(&key("update"), t.update.unwrap_or(600.0))?,
                rollback_timeout: seconds(&key("rollback"), t.rollback.unwrap_or(600.0))?,
                health_timeout: seconds(&key("health"), t.health.unwrap_or(60.0))?,
            };
            components.insert(name, component);
        }

        let max_concurrent = exec.max_concurrent.unwrap_or(4);
        if max_concurrent == 0 {
            return Err("key execution.max_concurrent: must be at least 1".into());
        }
        let max_running_per_writer = share(
            "execution.max_running_per_writer",
            exec.max_running_per_writer,
            "execution.max_concurrent",
            max_concurrent,
        )?;
        let output_tail_bytes = exec.output_tail_bytes.unwrap_or(64 * 1024);
        if !(1024..=16 * 1024 * 1024).contains(&output_tail_bytes) {
            return Err(
                "key execution.output_tail_bytes: must be between 1024 and 16777216".into(),
            );
        }
        let signature = match raw.signature.unwrap_or_default() {
            RawSignature {
                required: Some(true),
                key_file,
                max_age,
            } => Some(SignatureConfig {
                key_file: resolve(
                    key_file
                        .ok_or("key signature.key_file: required when signature.required = true")?,
                ),
                max_age: seconds("signature.max_age", max_age.unwrap_or(300.0))?,
            }),
            _ => None,
        };
        let spools = spools(&spool, raw.spools.unwrap_or_default(), &components, resolve)?;
        let max_queued = spool.max_queued.unwrap_or(100);
        if max_queued == 0 {
            return Err("key spool.max_queued: must be at least 1".into());
        }
        let max_queued_per_writer = share(
            "spool.max_queued_per_writer",
            spool.max_queued_per_writer,
            "spool.max_queued",
            max_queued,
        )?;
        let max_scheduled_per_writer = match spool
            .max_scheduled_per_writer
            .unwrap_or(10.min(max_queued))
        {
            0 => return Err("key spool.max_scheduled_per_writer: must be at least 1".into()),
            n if n > max_queued => {
                return Err(format!(
                    "key spool.max_scheduled_per_writer: {n} is more than spool.max_queued ({max_queued}), which bounds scheduled requests of all writers together"
                ));
            }
            n => n,
        };
        Ok(Config {
            spool_root: spools[0].root.clone(),
            max_request_bytes: spool.max_request_bytes.unwrap_or(64 * 1024),
            max_queued,
            max_queued_per_writer,
            max_scheduled_per_writer,
            writers: Writers {
                uids: spool.allowed_uids.unwrap_or_default(),
                gids: spool.allowed_gids.unwrap_or_default(),
            },
            spool_group: match spool.group {
                Some(g) if g.is_empty() => None,
                Some(g) => Some(g),
                None => Some(DEFAULT_GROUP.into()),
            },
            progress_in_status: spool.progress_in_status.unwrap_or(false),
            script_owners: exec.script_owners.unwrap_or_default(),
            signature,
            serialize_updates: exec.serialize_updates.unwrap_or(true),
            max_concurrent,
            max_running_per_writer,
            kill_grace: seconds("execution.kill_grace", exec.kill_grace.unwrap_or(10.0))?,
            state_dir: resolve(state.dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into())),
            retention: seconds(
                "state.retention_days",
                state.retention_days.unwrap_or(7.0) * 86400.0,
            )?,
            output_tail_bytes,
            audit_max_bytes: match state.audit_max_bytes.unwrap_or(1024 * 1024) {
                n if n >= 4096 => n,
                _ => return Err("key state.audit_max_bytes: must be at least 4096".into()),
            },
            components,
            spools,
        })
    }
}

/// `[spool]` and the `[spools.NAME]` drop boxes, checked: distinct roots, none inside
/// another, components and actions that exist.
fn spools(
    main: &RawSpool,
    drop_boxes: BTreeMap<String, RawDropBox>,
    components: &BTreeMap<String, Component>,
    resolve: impl Fn(PathBuf) -> PathBuf,
) -> Result<Vec<SpoolConfig>, String> {
    let checked = |name: &str,
                   key: &str,
                   root: PathBuf,
                   allowed: Option<&Vec<String>>,
                   actions: Option<&Vec<String>>|
     -> Result<SpoolConfig, String> {
        if let Some(allowed) = allowed
            && let Some(unknown) = allowed.iter().find(|c| !components.contains_key(*c))
        {
            return Err(format!(
                "key {key}.components: {unknown:?} is not a configured component"
            ));
        }
        let actions = match actions {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|a| {
                        Action::parse(a).ok_or_else(|| {
                            format!("key {key}.actions: {a:?} is not update, rollback or health")
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        // A list of everything is no restriction (and reads as the default).
        let every_component =
            allowed.is_some_and(|list| components.keys().all(|name| list.contains(name)));
        let every_action = actions.as_ref().is_some_and(|list| {
            [Action::Update, Action::Rollback, Action::Health]
                .iter()
                .all(|a| list.contains(a))
        });
        Ok(SpoolConfig {
            name: name.to_owned(),
            root: resolve(root),
            components: allowed.filter(|_| !every_component).cloned(),
            actions: actions.filter(|_| !every_action),
        })
    };
    let mut spools = vec![checked(
        MAIN_SPOOL,
        "spool",
        main.root
            .clone()
            .unwrap_or_else(|| DEFAULT_SPOOL_ROOT.into()),
        main.components.as_ref(),
        main.actions.as_ref(),
    )?];
    for (name, raw) in drop_boxes {
        let key = format!("spools.{name}");
        if !is_component_name(&name) || name == MAIN_SPOOL {
            return Err(format!(
                "key {key}: a spool name uses a-z, 0-9, _ and - (at most 64 characters) and is not {MAIN_SPOOL:?}"
            ));
        }
        let root = raw
            .root
            .clone()
            .ok_or(format!("key {key}.root: required"))?;
        spools.push(checked(
            &name,
            &key,
            root,
            raw.components.as_ref(),
            raw.actions.as_ref(),
        )?);
    }
    for (i, a) in spools.iter().enumerate() {
        for b in &spools[i + 1..] {
            if a.root.starts_with(&b.root) || b.root.starts_with(&a.root) {
                return Err(format!(
                    "spools {} and {} share a directory ({} and {}): give each its own root",
                    a.name,
                    b.name,
                    a.root.display(),
                    b.root.display()
                ));
            }
        }
    }
    Ok(spools)
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    spool: Option<RawSpool>,
    limits: Option<RawLimits>,
    state: Option<RawState>,
    signature: Option<RawSignature>,
    execution: Option<RawExecution>,
    components: Option<BTreeMap<String, RawComponent>>,
    spools: Option<BTreeMap<String, RawDropBox>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDropBox {
    root: Option<PathBuf>,
    components: Option<Vec<String>>,
    actions: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    root: Option<PathBuf>,
    max_request_bytes: Option<u64>,
    max_queued: Option<usize>,
    max_queued_per_writer: Option<usize>,
    max_scheduled_per_writer: Option<usize>,
    allowed_uids: Option<Vec<u32>>,
    allowed_gids: Option<Vec<u32>>,
    group: Option<String>,
    progress_in_status: Option<bool>,
    components: Option<Vec<String>>,
    actions: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<PathBuf>,
    retention_days: Option<f64>,
    audit_max_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignature {
    required: Option<bool>,
    key_file: Option<PathBuf>,
    max_age: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExecution {
    serialize_updates: Option<bool>,
    max_concurrent: Option<usize>,
    max_running_per_writer: Option<usize>,
    kill_grace: Option<f64>,
    output_tail_bytes: Option<usize>,
    script_owners: Option<Vec<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    dir: Option<PathBuf>,
    max_updates_per_hour: Option<u32>,
    max_updates_per_hour_per_writer: Option<u32>,
    auto_rollback: Option<bool>,
    health_retries: Option<u32>,
    health_interval: Option<f64>,
    min_free_disk_mb: Option<u64>,
    disk_path: Option<PathBuf>,
    window: Option<String>,
    timeouts: Option<RawTimeouts>,
    limits: Option<RawLimits>,
}

/// `memory_max = "512M"` (or "none"), `cpu_quota = 80` (percent of one CPU; 0 = none),
/// `tasks_max = 256` (0 = none).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_max: Option<String>,
    cpu_quota: Option<u32>,
    tasks_max: Option<u32>,
}

impl RawLimits {
    /// These settings over `base`; `key` names the table for errors.
    fn over(&self, base: &Limits, key: &str) -> Result<Limits, String> {
        let memory_max = match self.memory_max.as_deref() {
            None => base.memory_max,
            Some("none") | Some("0") => None,
            Some(text) => Some(crate::limits::parse_size(text).ok_or_else(|| {
                format!("key {key}.memory_max: {text:?} is not a size; use e.g. \"512M\", \"1G\" or \"none\"")
            })?),
        };
        let cpu_quota = match self.cpu_quota {
            None => base.cpu_quota,
            Some(0) => None,
            Some(p) if p <= 100 * 64 => Some(p),
            Some(p) => return Err(format!("key {key}.cpu_quota: {p} is more than 64 CPUs")),
        };
        let tasks_max = match self.tasks_max {
            None => base.tasks_max,
            Some(0) => None,
            Some(n) => Some(n),
        };
        Ok(Limits {
            memory_max,
            cpu_quota,
            tasks_max,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    update: Option<f64>,
    rollback: Option<f64>,
    health: Option<f64>,
}

/// A per-writer bound `key` on the total `total_key`: by default [`crate::fairshare::half`]
/// of it; set, between 1 and the total.
fn share(key: &str, value: Option<usize>, total_key: &str, total: usize) -> Result<usize, String> {
    match value {
        None => Ok(crate::fairshare::half(total)),
        Some(0) => Err(format!("key {key}: must be at least 1")),
        Some(n) if n > total => Err(format!("key {key}: {n} is more than {total_key} ({total})")),
        Some(n) => Ok(n),
    }
}

fn seconds(key: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero() && value <= 366.0 * 24.0 * 3600.0)
        .ok_or_else(|| format!("key {key}: {value} is not a positive duration of at most a year"))
}

/// Removes `.` and `..` components lexically (`/a/b/../c` → `/a/c`), for readable paths.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn is_component_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Turns a TOML error into "line N, key a.b.c: message" so the operator can go straight to it.
fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim_end();
    let Some(span) = err.span() else {
        return message.to_owned();
    };
    let before = &text[..span.start.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    // The innermost table header above the error, and the key on the error's own line.
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().to_owned())
        .filter(|k| !k.is_empty() && !line.starts_with('['));
    let full_key = match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k,
        (Some(t), None) => t,
        (None, None) => String::from("(top level)"),
    };
    format!("line {line_no}, key {full_key}: {message} (in `{line}`)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_dunebugger_defaults() {
        let c = Config::from_toml("", Path::new("/etc")).unwrap();
        assert_eq!(c.spool_root, Path::new("/var/dunebugger/updates"));
        assert_eq!(
            c.requests_dir(),
            Path::new("/var/dunebugger/updates/requests")
        );
        assert_eq!(
            c.component_names().collect::<Vec<_>>(),
            ["core", "remote", "scheduler"]
        );
        let remote = &c.components["remote"];
        assert_eq!(remote.dir, Path::new("/opt/dunebugger/remote"));
        assert_eq!(remote.timeout(Action::Update), Duration::from_secs(600));
        assert_eq!(remote.timeout(Action::Rollback), Duration::from_secs(600));
        assert_eq!(remote.timeout(Action::Health), Duration::from_secs(60));
        assert_eq!(
            remote.script(Action::Health),
            Path::new("/opt/dunebugger/remote/health-check.sh")
        );
        assert!(c.serialize_updates);
        assert_eq!((c.max_queued, remote.max_updates_per_hour), (100, 20));
        assert_eq!(c.state_dir, Path::new("/var/lib/update-coordinator"));
        assert!(remote.auto_rollback);
        assert_eq!(
            (remote.health_retries, remote.health_interval),
            (3, Duration::from_secs(5))
        );
        assert_eq!(c.retention, Duration::from_secs(7 * 86400));
        assert_eq!(c.spool_group.as_deref(), Some("dunebugger-updates"));
        assert_eq!(c.writers, Writers::default());
        assert!(c.signature.is_none());
    }

    #[test]
    fn limits_default_for_a_pi_and_components_override_them() {
        let text = "[limits]\nmemory_max = \"256M\"\n[components.a]\n[components.b.limits]\nmemory_max = \"none\"\ncpu_quota = 150\ntasks_max = 0\n";
        let c = Config::from_toml(text, Path::new("/")).unwrap();
        assert_eq!(
            c.components["a"].limits,
            Limits {
                memory_max: Some(256 << 20),
                cpu_quota: Some(80),
                tasks_max: Some(256)
            }
        );
        assert_eq!(
            c.components["b"].limits,
            Limits {
                memory_max: None,
                cpu_quota: Some(150),
                tasks_max: None
            }
        );
        let err = Config::from_toml(
            "[components.a.limits]\nmemory_max = \"lots\"\n",
            Path::new("/"),
        )
        .unwrap_err();
        assert!(err.contains("components.a.limits.memory_max"), "{err}");
        assert_eq!(
            Config::defaults().components["remote"].limits,
            Limits::pi_defaults()
        );
    }

    #[test]
    fn security_settings_parse() {
        let text = "[spool]\nallowed_uids = [1000]\nallowed_gids = [995]\ngroup = \"\"\nmax_queued = 5\n\
                    [execution]\nscript_owners = [1001]\n\
                    [signature]\nrequired = true\nkey_file = \"key\"\nmax_age = 60\n\
                    [components.remote]\nmax_updates_per_hour = 0\n";
        let c = Config::from_toml(text, Path::new("/etc/dunebugger")).unwrap();
        assert_eq!(
            c.writers,
            Writers {
                uids: vec![1000],
                gids: vec![995]
            }
        );
        assert_eq!(
            (c.spool_group, c.max_queued, c.script_owners),
            (None, 5, vec![1001])
        );
        let sig = c.signature.unwrap();
        assert_eq!(
            (sig.key_file.as_path(), sig.max_age),
            (Path::new("/etc/dunebugger/key"), Duration::from_secs(60))
        );
        assert_eq!(c.components["remote"].max_updates_per_hour, 0);
        let err = Config::from_toml("[signature]\nrequired = true\n", Path::new("/")).unwrap_err();
        assert!(err.contains("signature.key_file"), "{err}");
    }

    #[test]
    fn the_issue_example_parses_and_lists_exactly_its_components() {
        let text = r#"
[spool]
root = "/var/dunebugger/updates"
[components.remote]
dir = "/opt/dunebugger/remote"
[components.remote.timeouts]
update = 900
health = 2.5
"#;
        let c = Config::from_toml(text, Path::new("/etc")).unwrap();
        assert_eq!(c.component_names().collect::<Vec<_>>(), ["remote"]);
        let remote = &c.components["remote"];
        assert_eq!(remote.update_timeout, Duration::from_secs(900));
        assert_eq!(remote.health_timeout, Duration::from_millis(2500));
        assert_eq!(remote.rollback_timeout, Duration::from_secs(600));
    }

    #[test]
    fn relative_paths_resolve_against_the_config_files_directory() {
        let text = "[spool]\nroot = \"../spool\"\n[components.demo]\ndir = \"scripts/demo\"\n";
        let c = Config::from_toml(text, Path::new("/srv/cfg")).unwrap();
        assert_eq!(c.spool_root, Path::new("/srv/spool"));
        assert_eq!(c.components["demo"].dir, Path::new("/srv/cfg/scripts/demo"));
    }

    #[test]
    fn a_wrong_type_names_the_line_and_the_full_key() {
        let text = "[spool]\nroot = \"/x\"\n\n[components.remote.timeouts]\nupdate = \"ten\"\n";
        let err = Config::from_toml(text, Path::new("/")).unwrap_err();
        assert!(err.contains("line 5"), "{err}");
        assert!(err.contains("components.remote.timeouts.update"), "{err}");
    }

    #[test]
    fn a_misspelt_key_is_refused_not_ignored() {
        let err = Config::from_toml("[spool]\nrot = \"/x\"\n", Path::new("/")).unwrap_err();
        assert!(err.contains("line 2") && err.contains("spool.rot"), "{err}");
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let err = Config::from_toml("[components.a.timeouts]\nhealth = -1\n", Path::new("/"))
            .unwrap_err();
        assert!(err.contains("components.a.timeouts.health"), "{err}");
        let err = Config::from_toml("[components.\"A/b\"]\n", Path::new("/")).unwrap_err();
        assert!(err.contains("component name"), "{err}");
        let err =
            Config::from_toml("[execution]\nmax_concurrent = 0\n", Path::new("/")).unwrap_err();
        assert!(err.contains("execution.max_concurrent"), "{err}");
    }

    #[test]
    fn drop_boxes_are_checked_and_say_what_they_refuse() {
        let c = Config::from_toml(
            "[spools.sched]\nroot = \"/srv/sched\"\ncomponents = [\"scheduler\"]\nactions = [\"health\"]\n",
            Path::new("/"),
        )
        .unwrap();
        let names: Vec<&str> = c.spools.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [MAIN_SPOOL, "sched"]);
        let sched = &c.spools[1];
        assert_eq!(sched.status_dir(), Path::new("/srv/sched/status"));
        assert_eq!(sched.refuses(&["scheduler"], Action::Health), None);
        let why = sched.refuses(&["scheduler"], Action::Update).unwrap();
        assert!(
            why.contains("may not ask for update") && why.contains("spools.sched.actions"),
            "{why}"
        );
        let why = sched.refuses(&["core"], Action::Health).unwrap();
        assert!(why.contains("component core"), "{why}");
        // The main spool may ask for anything unless told otherwise.
        assert_eq!(c.spools[0].refuses(&["core"], Action::Update), None);

        for (text, expected) in [
            (
                "[spools.a]\nroot = \"/var/dunebugger/updates/a\"\n",
                "share a directory",
            ),
            (
                "[spools.a]\nroot = \"/srv/a\"\n[spools.b]\nroot = \"/srv/a\"\n",
                "share a directory",
            ),
            ("[spools.a]\n", "spools.a.root: required"),
            (
                "[spools.a]\nroot = \"/a\"\ncomponents = [\"nas\"]\n",
                "not a configured component",
            ),
            (
                "[spools.a]\nroot = \"/a\"\nactions = [\"reboot\"]\n",
                "spools.a.actions",
            ),
            ("[spools.main]\nroot = \"/a\"\n", "spool name"),
        ] {
            let err = Config::from_toml(text, Path::new("/")).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn per_writer_shares_default_to_half_of_their_total() {
        let c = Config::defaults();
        assert_eq!(
            (
                c.max_queued_per_writer,
                c.max_scheduled_per_writer,
                c.max_running_per_writer
            ),
            (50, 10, 2)
        );
        assert_eq!(c.components["remote"].max_updates_per_hour_per_writer, 10);
        let text = "[spool]\nmax_queued = 5\n[execution]\nmax_concurrent = 1\n\
                    [components.a]\nmax_updates_per_hour = 1\n[components.b]\nmax_updates_per_hour = 0\n";
        let c = Config::from_toml(text, Path::new("/")).unwrap();
        assert_eq!(
            (
                c.max_queued_per_writer,
                c.max_scheduled_per_writer,
                c.max_running_per_writer
            ),
            (2, 5, 1)
        );
        assert_eq!(c.components["a"].max_updates_per_hour_per_writer, 1);
        assert_eq!(c.components["b"].max_updates_per_hour_per_writer, 0);
        for (text, key) in [
            (
                "[spool]\nmax_queued_per_writer = 101\n",
                "spool.max_queued_per_writer",
            ),
            (
                "[spool]\nmax_queued_per_writer = 0\n",
                "spool.max_queued_per_writer",
            ),
            (
                "[spool]\nmax_scheduled_per_writer = 0\n",
                "spool.max_scheduled_per_writer",
            ),
            (
                "[execution]\nmax_running_per_writer = 5\n",
                "execution.max_running_per_writer",
            ),
            (
                "[components.a]\nmax_updates_per_hour_per_writer = 21\n",
                "components.a.max_updates_per_hour_per_writer",
            ),
        ] {
            let err = Config::from_toml(text, Path::new("/")).unwrap_err();
            assert!(err.contains(key), "{err}");
        }
    }

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
