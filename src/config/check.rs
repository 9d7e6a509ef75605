//! Raw TOML values → the checked [`Config`]: defaults filled in, every value in range, paths
//! resolved against the config file's directory. Errors name the key ("key spool.max_queued:
//! ...") so the operator can go straight to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawComponent, RawConfig, RawSignature};
use super::*;

/// Checks a parsed config; relative paths are resolved against `base`.
pub(super) fn config(raw: RawConfig, base: &Path) -> Result<Config, String> {
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
        let health_retries = at_least_one(
            &format!("components.{name}.health_retries"),
            c.health_retries,
            3,
        )?;
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

    let max_concurrent = at_least_one("execution.max_concurrent", exec.max_concurrent, 4)?;
    let max_running_per_writer = share(
        "execution.max_running_per_writer",
        exec.max_running_per_writer,
        "execution.max_concurrent",
        max_concurrent,
    )?;
    let output_tail_bytes = exec.output_tail_bytes.unwrap_or(64 * 1024);
    if !(1024..=16 * 1024 * 1024).contains(&output_tail_bytes) {
        return Err("key execution.output_tail_bytes: must be between 1024 and 16777216".into());
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
    let fleet = raw
        .fleet
        .map(|fleet| crate::fleet::FleetConfig::check(fleet, resolve))
        .transpose()?;
    let spools =
        super::spools::spools(&spool, raw.spools.unwrap_or_default(), &components, resolve)?;
    let max_queued = at_least_one("spool.max_queued", spool.max_queued, 100)?;
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
        fleet,
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

/// A count `key`: `default` when unset; set, at least 1.
fn at_least_one<N: Copy + PartialEq + From<u8>>(
    key: &str,
    value: Option<N>,
    default: N,
) -> Result<N, String> {
    match value.unwrap_or(default) {
        n if n == N::from(0) => Err(format!("key {key}: must be at least 1")),
        n => Ok(n),
    }
}

/// A per-writer bound `key` on the total `total_key`: by default [`crate::fairshare::half`]
/// of it; set, between 1 and the total.
pub(super) fn share(
    key: &str,
    value: Option<usize>,
    total_key: &str,
    total: usize,
) -> Result<usize, String> {
    match value {
        None => Ok(crate::fairshare::half(total)),
        Some(0) => Err(format!("key {key}: must be at least 1")),
        Some(n) if n > total => Err(format!("key {key}: {n} is more than {total_key} ({total})")),
        Some(n) => Ok(n),
    }
}

pub(super) fn seconds(key: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero() && value <= 366.0 * 24.0 * 3600.0)
        .ok_or_else(|| format!("key {key}: {value} is not a positive duration of at most a year"))
}

/// Removes `.` and `..` components lexically (`/a/b/../c` → `/a/c`), for readable paths.
pub(super) fn normalize(path: &Path) -> PathBuf {
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

pub(super) fn is_component_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
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
    fn a_one_component_example_parses_and_lists_exactly_its_components() {
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
}
