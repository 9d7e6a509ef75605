//! Resource limits for scripts, enforced by the kernel through cgroup v2 where the host gives
//! it, and what each run used.
//!
//! Mechanism: each run's monitor (and with it the script) is started inside a transient
//! systemd scope (`systemd-run --scope -p MemoryMax= -p CPUQuota= -p TasksMax=`), in
//! `update-coordinator.slice`. The limits hold for the run as a whole (the monitor adds a few
//! MiB and threads); `systemctl stop` or `kill` of the service does not reach into the scope,
//! so runs survive the coordinator even under a `KillMode=` that kills the unit's cgroup. Why not sub-cgroups of the service's own delegated cgroup? On
//! systemd 252 (Bookworm) a delegated unit whose cgroup has controllers enabled for children
//! cannot take a new main process (cgroup v2's "no internal processes" rule; systemd 254's
//! `DelegateSubgroup=` fixes it), so a restart of the coordinator, which must leave running
//! scripts alone, would fail. A scope is systemd's own unit, outlives our restarts, and
//! `systemd-run --scope` execs the script in place, so it keeps its pid, process group and
//! output pipes.
//!
//! Each controller is detected separately (Raspberry Pi OS ships the memory controller off);
//! limits whose controller is missing are reported as not enforced, with the fix. Without
//! systemd or cgroups the runner still kills the whole process tree (process group, then a
//! sweep of orphans reparented to the monitor as child subreaper) and says that no limit is
//! enforced.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Limits for one component's scripts (all optional: `None` means "no limit").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes of memory (the script and everything it starts).
    pub memory_max: Option<u64>,
    /// Percent of one CPU (100 = one full core).
    pub cpu_quota: Option<u32>,
    /// Processes and threads.
    pub tasks_max: Option<u32>,
}

impl Limits {
    /// Defaults for a Raspberry Pi: generous enough for `docker compose pull`, small enough
    /// that a runaway script cannot take the board down.
    pub fn pi_defaults() -> Self {
        Self {
            memory_max: Some(512 * 1024 * 1024),
            cpu_quota: Some(80),
            tasks_max: Some(256),
        }
    }
}

/// Parses sizes like `512M`, `1G`, `65536` (bytes), `100K`.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor).filter(|&b| b > 0)
}

/// Which cgroup v2 controllers the host has, and whether systemd can give us scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub systemd: bool,
    pub systemd_run: Option<PathBuf>,
    pub memory: bool,
    pub cpu: bool,
    pub pids: bool,
}

impl Host {
    pub fn detect() -> Self {
        let controllers =
            std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
        let has = |name: &str| controllers.split_whitespace().any(|c| c == name);
        Self {
            systemd: Path::new("/run/systemd/system").exists(),
            systemd_run: ["/usr/bin/systemd-run", "/bin/systemd-run"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists()),
            memory: has("memory"),
            cpu: has("cpu"),
            pids: has("pids"),
        }
    }

    /// Scopes are usable at all.
    pub fn scopes(&self) -> bool {
        self.systemd && self.systemd_run.is_some()
    }
}

/// What enforces a run's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// `systemd-scope`: a transient scope unit per run (cgroup v2).
    SystemdScope,
    /// `none`: the process group and the orphan sweep only.
    #[default]
    None,
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mechanism::SystemdScope => "systemd-scope",
            Mechanism::None => "none",
        })
    }
}

/// What a run gets: the limits actually enforced and by what, and those that are not.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub mechanism: Mechanism,
    /// The limits enforced by the kernel.
    pub enforced: Limits,
    /// Human sentences: each configured limit that is not enforced, why, and how to fix it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_enforced: Vec<String>,
    /// The scope unit, when there is one.
    pub unit: Option<String>,
}

// Why a limit is not enforced when the host lacks its cgroup controller, and what to do.
const NO_MEMORY: &str = "the memory controller is disabled; add `cgroup_enable=memory cgroup_memory=1` to the kernel command line (/boot/firmware/cmdline.txt on Raspberry Pi OS) and reboot";
const NO_CPU: &str = "the cpu controller is not available in cgroup v2";
const NO_PIDS: &str = "the pids controller is not available in cgroup v2";

/// Decides what can be enforced for `wanted` on `host`. With scopes, `unit` is a fresh scope
/// name for the run.
pub fn plan(wanted: &Limits, host: &Host) -> Applied {
    let mut applied = Applied {
        mechanism: if host.scopes() {
            Mechanism::SystemdScope
        } else {
            Mechanism::None
        },
        unit: host
            .scopes()
            .then(|| format!("uc-run-{}.scope", uuid::Uuid::new_v4().simple())),
        ..Default::default()
    };
    let mut note = |what: &str, why: String| {
        applied
            .not_enforced
            .push(format!("{what} not enforced: {why}"))
    };
    if !host.scopes() {
        let why = if host.systemd {
            "systemd-run is missing; install systemd".to_string()
        } else {
            "systemd is not running (no per-run cgroup); the script's process tree is still killed on timeout".to_string()
        };
        if wanted != &Limits::default() {
            note("limits", why);
        }
        return applied;
    }
    // Each limit is enforced where the host has its controller, and noted where it has not.
    let mut enforce = |what: &str, available: bool, why: &str| {
        if !available {
            note(what, why.to_string());
        }
        available
    };
    applied.enforced = Limits {
        memory_max: wanted
            .memory_max
            .filter(|_| enforce("memory_max", host.memory, NO_MEMORY)),
        cpu_quota: wanted
            .cpu_quota
            .filter(|_| enforce("cpu_quota", host.cpu, NO_CPU)),
        tasks_max: wanted
            .tasks_max
            .filter(|_| enforce("tasks_max", host.pids, NO_PIDS)),
    };
    applied
}

/// The slice all run scopes live in.
pub const SLICE: &str = "update-coordinator.slice";

/// The argv prefix that starts a program inside a new scope with `applied`'s limits.
pub fn scope_command(systemd_run: &Path, unit: &str, applied: &Applied) -> Vec<String> {
    let mut argv = vec![
        systemd_run.display().to_string(),
        "--scope".into(),
        "--quiet".into(),
        "--collect".into(),
        format!("--unit={unit}"),
        format!("--slice={SLICE}"),
        "--property=MemoryAccounting=yes".into(),
        "--property=CPUAccounting=yes".into(),
        "--property=TasksAccounting=yes".into(),
    ];
    if let Some(bytes) = applied.enforced.memory_max {
        argv.push(format!("--property=MemoryMax={bytes}"));
        // No swap escape hatch: the limit is what the script gets.
        argv.push("--property=MemorySwapMax=0".into());
    }
    if let Some(percent) = applied.enforced.cpu_quota {
        argv.push(format!("--property=CPUQuota={percent}%"));
    }
    if let Some(tasks) = applied.enforced.tasks_max {
        argv.push(format!("--property=TasksMax={tasks}"));
    }
    argv.push("--".into());
    argv
}

/// What a run used, as the kernel counted it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Peak memory of the whole run (cgroup `memory.peak`), or of its largest process
    /// (`ru_maxrss`) without a cgroup.
    pub memory_peak_bytes: Option<u64>,
    /// User + system CPU time of the whole run.
    pub cpu_time_ms: Option<u64>,
    /// The kernel's OOM killer killed something in the run.
    pub oom_killed: bool,
    /// Where the numbers come from: `cgroup` or `rusage`.
    pub source: String,
}

/// Reads a scope's accounting (while it still exists).
pub fn read_cgroup_usage(cgroup: &Path) -> Option<Usage> {
    let peak = std::fs::read_to_string(cgroup.join("memory.peak"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let cpu = stat_field(cgroup, "cpu.stat", "usage_usec").map(|usec| usec / 1000);
    let oom = stat_field(cgroup, "memory.events", "oom_kill").is_some_and(|n| n > 0);
    (peak.is_some() || cpu.is_some()).then(|| Usage {
        memory_peak_bytes: peak,
        cpu_time_ms: cpu,
        oom_killed: oom,
        source: "cgroup".into(),
    })
}

/// The number after `key` in one of a cgroup's flat-keyed files (`cpu.stat`, `memory.events`:
/// a `key value` pair a line).
fn stat_field(cgroup: &Path, file: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(cgroup.join(file))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_host() -> Host {
        Host {
            systemd: true,
            systemd_run: Some("/usr/bin/systemd-run".into()),
            memory: true,
            cpu: true,
            pids: true,
        }
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("100k"), Some(100 << 10));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("12X"), None);
        assert_eq!(parse_size("M"), None);
    }

    #[test]
    fn every_limit_is_enforced_on_a_full_host() {
        let applied = plan(&Limits::pi_defaults(), &full_host());
        assert_eq!(applied.mechanism, Mechanism::SystemdScope);
        assert_eq!(applied.enforced, Limits::pi_defaults());
        assert!(applied.not_enforced.is_empty());
        let unit = applied.unit.as_deref().unwrap_or_default();
        assert!(
            unit.starts_with("uc-run-") && unit.ends_with(".scope"),
            "{unit}"
        );
        let argv = scope_command(
            Path::new("/usr/bin/systemd-run"),
            "uc-run-x.scope",
            &applied,
        );
        assert!(argv.contains(&"--property=MemoryMax=536870912".to_string()));
        assert!(argv.contains(&"--property=CPUQuota=80%".to_string()));
        assert!(argv.contains(&"--property=TasksMax=256".to_string()));
        assert_eq!(argv.last().unwrap(), "--");
    }

    #[test]
    fn a_missing_memory_controller_is_reported_with_the_fix() {
        let host = Host {
            memory: false,
            ..full_host()
        };
        let applied = plan(&Limits::pi_defaults(), &host);
        assert_eq!(applied.enforced.memory_max, None);
        assert_eq!(applied.enforced.tasks_max, Some(256));
        assert_eq!(applied.not_enforced.len(), 1);
        assert!(applied.not_enforced[0].contains("cgroup_enable=memory cgroup_memory=1"));
    }

    #[test]
    fn without_systemd_nothing_is_enforced_and_it_says_so() {
        let applied = plan(&Limits::pi_defaults(), &Host::default());
        assert_eq!(applied.mechanism, Mechanism::None);
        assert_eq!(applied.enforced, Limits::default());
        assert!(applied.not_enforced[0].contains("limits not enforced"));
    }

    #[test]
    fn a_scopes_accounting_is_read_from_its_cgroup_files() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = dir.path();
        std::fs::write(cgroup.join("memory.peak"), "1048576\n").unwrap();
        std::fs::write(
            cgroup.join("cpu.stat"),
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
        )
        .unwrap();
        std::fs::write(
            cgroup.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        let usage = read_cgroup_usage(cgroup).unwrap();
        assert_eq!(
            (usage.memory_peak_bytes, usage.cpu_time_ms, usage.oom_killed),
            (Some(1_048_576), Some(2500), true)
        );
        // A scope already gone (nothing readable) has no accounting.
        assert_eq!(read_cgroup_usage(&cgroup.join("gone")), None);
    }
}
