//! Logging: to journald when started by systemd (`JOURNAL_STREAM` set), else human-readable
//! to stderr. Request events carry `request_id`, `component`, `action`, `phase` fields, which
//! journald stores as `REQUEST_ID=` etc. so `journalctl REQUEST_ID=<id>` finds them.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `verbose` raises the level (0 = info, 1 = debug, 2+ = trace); `RUST_LOG` overrides.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let registry = tracing_subscriber::registry().with(filter);

    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(journald) => {
                // Without this, fields are stored as F_REQUEST_ID and `REQUEST_ID=` finds nothing.
                registry
                    .with(
                        journald
                            .with_custom_fields(object_unit())
                            .with_priority_mappings(priorities())
                            .with_field_prefix(None)
                            .with_syslog_identifier("update-coordinator".into()),
                    )
                    .init();
                return;
            }
            Err(e) => eprintln!("journald is not reachable ({e}); logging to stderr"),
        }
    }
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .init();
}

/// Journal priorities: info is "informational" (6), not "notice", so script stdout lines and
/// routine events stay below warnings (script stderr) in `journalctl -p`.
fn priorities() -> tracing_journald::PriorityMappings {
    tracing_journald::PriorityMappings {
        info: tracing_journald::Priority::Informational,
        debug: tracing_journald::Priority::Debug,
        ..tracing_journald::PriorityMappings::new()
    }
}

/// Set by the coordinator for the monitors it starts: the service unit they work for.
pub const UNIT_ENV: &str = "UPDATE_COORDINATOR_UNIT";

/// A monitor runs in its own scope, so journald files its lines under that scope. Tagging them
/// `OBJECT_SYSTEMD_UNIT=<the service>` (a root process speaking about a unit) makes
/// `journalctl -u dunebugger-update-coordinator` include them, so one request's story,
/// phases and script output included, stays in one place.
fn object_unit() -> Vec<(&'static str, String)> {
    std::env::var(UNIT_ENV)
        .ok()
        .filter(|unit| !unit.is_empty())
        .map(|unit| vec![("OBJECT_SYSTEMD_UNIT", unit)])
        .unwrap_or_default()
}

/// The systemd unit this process runs in (from its cgroup path), if any.
pub fn own_unit() -> Option<String> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    path.rsplit('/')
        .find(|part| part.ends_with(".service"))
        .map(str::to_owned)
}
