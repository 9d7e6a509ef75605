//! The config file as TOML gives it: every key optional, unknown keys refused. Only
//! [`super::check`] turns these into a [`super::Config`]. The types also serialize, so the
//! keys they accept can be listed from the types themselves ([`accepted_keys`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::limits::Limits;

/// Parses config text into the raw tables; a TOML error names its line and key.
pub(super) fn parse(text: &str) -> Result<RawConfig, String> {
    toml::from_str(text).map_err(|e| describe_toml_error(text, &e))
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) spool: Option<RawSpool>,
    pub(super) limits: Option<RawLimits>,
    pub(super) state: Option<RawState>,
    pub(super) signature: Option<RawSignature>,
    pub(super) execution: Option<RawExecution>,
    pub(super) components: Option<BTreeMap<String, RawComponent>>,
    pub(super) spools: Option<BTreeMap<String, RawDropBox>>,
    pub(super) fleet: Option<crate::fleet::config::RawFleet>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDropBox {
    pub(super) root: Option<PathBuf>,
    pub(super) components: Option<Vec<String>>,
    pub(super) actions: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpool {
    pub(super) root: Option<PathBuf>,
    pub(super) max_request_bytes: Option<u64>,
    pub(super) max_queued: Option<usize>,
    pub(super) max_queued_per_writer: Option<usize>,
    pub(super) max_scheduled_per_writer: Option<usize>,
    pub(super) allowed_uids: Option<Vec<u32>>,
    pub(super) allowed_gids: Option<Vec<u32>>,
    pub(super) group: Option<String>,
    pub(super) progress_in_status: Option<bool>,
    pub(super) components: Option<Vec<String>>,
    pub(super) actions: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) dir: Option<PathBuf>,
    pub(super) retention_days: Option<f64>,
    pub(super) audit_max_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSignature {
    pub(super) required: Option<bool>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) max_age: Option<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExecution {
    pub(super) serialize_updates: Option<bool>,
    pub(super) max_concurrent: Option<usize>,
    pub(super) max_running_per_writer: Option<usize>,
    pub(super) kill_grace: Option<f64>,
    pub(super) output_tail_bytes: Option<usize>,
    pub(super) script_owners: Option<Vec<u32>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawComponent {
    pub(super) dir: Option<PathBuf>,
    pub(super) max_updates_per_hour: Option<u32>,
    pub(super) max_updates_per_hour_per_writer: Option<u32>,
    pub(super) auto_rollback: Option<bool>,
    pub(super) health_retries: Option<u32>,
    pub(super) health_interval: Option<f64>,
    pub(super) min_free_disk_mb: Option<u64>,
    pub(super) disk_path: Option<PathBuf>,
    pub(super) window: Option<String>,
    pub(super) timeouts: Option<RawTimeouts>,
    pub(super) limits: Option<RawLimits>,
}

/// `memory_max = "512M"` (or "none"), `cpu_quota = 80` (percent of one CPU; 0 = none),
/// `tasks_max = 256` (0 = none).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) memory_max: Option<String>,
    pub(super) cpu_quota: Option<u32>,
    pub(super) tasks_max: Option<u32>,
}

impl RawLimits {
    /// These settings over `base`; `key` names the table for errors.
    pub(super) fn over(&self, base: &Limits, key: &str) -> Result<Limits, String> {
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

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) update: Option<f64>,
    pub(super) rollback: Option<f64>,
    pub(super) health: Option<f64>,
}

/// Every key the config file accepts, as dotted paths with `*` for a name the operator
/// chooses: `spool.root`, `components.*.timeouts.update`, `spools.*.root`, ... Read from the
/// raw types themselves (every table present, every value unset), so a key added there is
/// listed here: tests compare it with the packaged config and the documentation.
pub fn accepted_keys() -> BTreeSet<String> {
    let every_table = RawConfig {
        spool: Some(RawSpool::default()),
        limits: Some(RawLimits::default()),
        state: Some(RawState::default()),
        signature: Some(RawSignature::default()),
        execution: Some(RawExecution::default()),
        components: Some(BTreeMap::from([(
            "*".to_owned(),
            RawComponent {
                timeouts: Some(RawTimeouts::default()),
                limits: Some(RawLimits::default()),
                ..RawComponent::default()
            },
        )])),
        spools: Some(BTreeMap::from([("*".to_owned(), RawDropBox::default())])),
        fleet: Some(Default::default()),
    };
    fn walk(value: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(table) => {
                for (key, value) in table {
                    walk(value, &format!("{prefix}{key}."), out);
                }
            }
            // An unset value: a key.
            _ => {
                out.insert(prefix.trim_end_matches('.').to_owned());
            }
        }
    }
    let mut keys = BTreeSet::new();
    let value = serde_json::to_value(&every_table).unwrap_or_default();
    walk(&value, "", &mut keys);
    keys
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
    use super::accepted_keys;
    use crate::config::Config;
    use std::path::Path;

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
    fn the_accepted_keys_are_read_from_the_raw_types() {
        let keys = accepted_keys();
        for key in [
            "spool.root",
            "limits.memory_max",
            "components.*.timeouts.health",
            "components.*.limits.cpu_quota",
            "spools.*.actions",
            "state.audit_max_bytes",
        ] {
            assert!(keys.contains(key), "{key} missing from {keys:?}");
        }
        assert!(
            !keys.iter().any(|k| k.ends_with('.') || k == "components.*"),
            "{keys:?}"
        );
    }
}
