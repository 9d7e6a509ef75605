//! `update-coordinator check`: the same config loading as `run`, then a look at everything the
//! service will touch. Each finding is said once, at one of three levels: `ok`; `warn`, for what
//! works but less well than it could or could not be checked here (limits not enforced, no
//! systemd, a spool directory the service would create without the containers' permissions);
//! `PROBLEM`, for what would fail a request or the service. Warnings and problems say how to
//! fix them. Exit status: 1 if there is a problem, else 0 (warnings are shown, and counted in
//! the summary and the JSON, but do not fail the check).

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use super::ConfigArg;
use crate::config::Config;
use crate::request::Action;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

/// How a finding counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// As it should be.
    Ok,
    /// Works, but less well than it could, or not checked here: shown, exit status 0.
    Warn,
    /// Would fail a request or the service: exit status 1.
    Problem,
}

/// One thing looked at.
#[derive(Debug, Serialize)]
pub struct Finding {
    /// config, spool, permissions, signature, service, limits, script
    pub area: &'static str,
    pub subject: String,
    pub level: Level,
    /// False exactly for problems (what fails the check); `level` tells ok from warn.
    pub ok: bool,
    /// What was found (for warnings and problems: what is wrong and how to fix it).
    pub detail: String,
}

impl Finding {
    fn new(
        level: Level,
        area: &'static str,
        subject: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            area,
            subject: subject.into(),
            level,
            ok: level != Level::Problem,
            detail: detail.into(),
        }
    }

    fn ok(area: &'static str, subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(Level::Ok, area, subject, detail)
    }

    fn warn(area: &'static str, subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(Level::Warn, area, subject, detail)
    }

    fn problem(area: &'static str, subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(Level::Problem, area, subject, detail)
    }
}

pub fn run(args: &CheckArgs) -> ExitCode {
    let findings = match args.config.load() {
        Ok((config, source)) => {
            let mut findings = vec![Finding::ok("config", source, "loaded")];
            findings.extend(inspect(&config));
            findings
        }
        Err(e) => vec![Finding::problem("config", "config", e.to_string())],
    };
    let count = |level| findings.iter().filter(|f| f.level == level).count();
    let (problems, warnings) = (count(Level::Problem), count(Level::Warn));
    if args.json {
        let report = serde_json::json!({
            "ok": problems == 0,
            "problems": problems,
            "warnings": warnings,
            "findings": findings,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print(&findings, problems, warnings);
    }
    if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Everything `check` looks at besides loading the config.
pub fn inspect(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    for spool in &config.spools {
        inspect_spool(config, spool, &mut findings);
    }
    if let Some(sig) = &config.signature {
        findings.extend(key_findings(&sig.key_file, config.spool_group.as_deref()));
    }
    findings.extend(service_findings());
    findings.extend(limit_findings(config));
    if let Some(fleet) = &config.fleet {
        findings.extend(fleet_findings(fleet));
    }

    let owners = crate::trust::trusted_owners(&config.script_owners);
    for (name, component) in &config.components {
        for action in Action::ALL {
            let script = component.script(action);
            let subject = format!(
                "{name} {} ({}, timeout {} s)",
                action.as_str(),
                script.display(),
                component.timeout(action).as_secs_f64()
            );
            findings.push(
                match crate::trust::check_script(&component.dir, &script, &owners) {
                    Ok(_) => Finding::ok("script", subject, "trusted"),
                    Err(untrusted) => Finding::problem("script", subject, untrusted.to_string()),
                },
            );
        }
    }
    findings
}

/// `[fleet]`: the settings, the host id and TLS files it needs, and whether etcd answers
/// (one read of the group's semaphore, within the call deadline).
fn fleet_findings(fleet: &crate::fleet::FleetConfig) -> Vec<Finding> {
    let mut findings: Vec<Finding> = fleet
        .describe()
        .into_iter()
        .map(|(subject, detail)| Finding::ok("fleet", subject, detail))
        .collect();
    if let Err(e) = crate::fleet::HostId::resolve(fleet.host_id.as_ref()) {
        findings.push(Finding::problem("fleet", "host id", e));
    }
    let files = fleet
        .ca_file
        .iter()
        .chain(fleet.client_cert.iter().flat_map(|(cert, key)| [cert, key]));
    for file in files {
        if let Err(e) = crate::fleet::config::readable(file) {
            findings.push(Finding::problem("fleet", file.display().to_string(), e));
        }
    }
    findings.push(match crate::fleet::probe(fleet) {
        Ok(state) => Finding::ok("fleet", "etcd", state),
        Err(e) => Finding::warn(
            "fleet",
            "etcd",
            format!(
                "{e}; updates and rollbacks would wait (fleet.fail = {})",
                fleet.fail.as_str()
            ),
        ),
    });
    findings
}

/// The signing key: long enough (the same check as `run`), owned by root or the service's
/// user, and readable by nobody but them and the spool group (whose containers sign with it).
fn key_findings(path: &Path, spool_group: Option<&str>) -> Vec<Finding> {
    use std::os::unix::fs::MetadataExt;
    let subject = path.display().to_string();
    let mut findings = Vec::new();
    match crate::signature::read_key(path) {
        Ok(_) => findings.push(Finding::ok(
            "signature",
            &subject,
            "signed requests required; key present and long enough",
        )),
        Err(e) => findings.push(Finding::problem("signature", &subject, e.to_string())),
    }
    let Ok(meta) = std::fs::metadata(path) else {
        return findings;
    };
    let fix = format!(
        "chown root:{} {subject} && chmod 0640 {subject}",
        spool_group.unwrap_or("root")
    );
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        findings.push(Finding::problem(
            "signature",
            &subject,
            format!(
                "owned by uid {}, not root or the service's user: its owner can change the key; {fix}",
                meta.uid()
            ),
        ));
    }
    let spool_gid = spool_group
        .and_then(|g| nix::unistd::Group::from_name(g).ok().flatten())
        .map(|g| g.gid.as_raw());
    let mode = meta.mode() & 0o777;
    let mut exposed = Vec::new();
    if mode & 0o006 != 0 {
        exposed.push("others".to_string());
    }
    if mode & 0o020 != 0 {
        exposed.push("its group (write)".to_string());
    }
    if mode & 0o040 != 0 && meta.gid() != 0 && Some(meta.gid()) != spool_gid {
        exposed.push(format!("group gid {}, not the spool group", meta.gid()));
    }
    if !exposed.is_empty() {
        findings.push(Finding::problem(
            "signature",
            &subject,
            format!(
                "mode {mode:04o}: open to {}; whoever reads the key can sign requests, whoever writes it can change it. Only root and the spool group may read it: {fix}",
                exposed.join(", ")
            ),
        ));
    }
    findings
}

/// Under systemd: is the unit installed? (Not a problem when the demo runs without systemd.)
fn service_findings() -> Vec<Finding> {
    const UNIT: &str = "dunebugger-update-coordinator.service";
    if !Path::new("/run/systemd/system").exists() {
        return vec![Finding::warn(
            "service",
            UNIT,
            "systemd is not running here; not checked (fine for the demo; under systemd, install.sh installs the unit)",
        )];
    }
    let installed = [
        "/etc/systemd/system",
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
        "/usr/local/lib/systemd/system",
    ]
    .iter()
    .any(|dir| Path::new(dir).join(UNIT).exists());
    vec![if installed {
        Finding::ok("service", UNIT, "installed")
    } else {
        Finding::problem(
            "service",
            UNIT,
            "not installed; run `sudo ./install.sh` from the source tree",
        )
    }]
}

/// Which resource limits the host can enforce. A limit that cannot be is a problem on a
/// systemd host (the fix is given); without systemd (demo, containers) a warning.
fn limit_findings(config: &Config) -> Vec<Finding> {
    let host = crate::limits::Host::detect();
    let mut findings = Vec::new();
    let controllers: Vec<&str> = [
        ("memory", host.memory),
        ("cpu", host.cpu),
        ("pids", host.pids),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(name, _)| *name)
    .collect();
    let mechanism = if host.scopes() {
        "systemd scope per run (cgroup v2)"
    } else {
        "none: process group and orphan sweep only"
    };
    findings.push(Finding::ok(
        "limits",
        "mechanism",
        format!(
            "{mechanism}; cgroup controllers available: {}",
            if controllers.is_empty() {
                "none".to_string()
            } else {
                controllers.join(", ")
            }
        ),
    ));
    let mut seen = std::collections::BTreeSet::new();
    for component in config.components.values() {
        for note in crate::limits::plan(&component.limits, &host).not_enforced {
            if seen.insert(note.clone()) {
                findings.push(if host.systemd {
                    Finding::problem("limits", "enforcement", note)
                } else {
                    Finding::warn("limits", "enforcement", note)
                });
            }
        }
    }
    findings
}

fn print(findings: &[Finding], problems: usize, warnings: usize) {
    let mut area = "";
    for f in findings {
        if f.area != area {
            println!("{}:", f.area);
            area = f.area;
        }
        let mark = match f.level {
            Level::Ok => "ok     ",
            Level::Warn => "warn   ",
            Level::Problem => "PROBLEM",
        };
        println!("  {mark} {}: {}", f.subject, f.detail);
    }
    println!();
    match (problems, warnings) {
        (0, 0) => println!("all checks passed"),
        (0, w) => println!("no problems; {w} warning(s)"),
        (p, 0) => println!("{p} problem(s) found"),
        (p, w) => println!("{p} problem(s) found; {w} warning(s)"),
    }
}

/// One spool's directories and their permissions. A missing directory is said once: without
/// a spool group the service's own creation is all it needs; with one, the service would create
/// it root-only at start, so containers could not use it until it is created as installed.
fn inspect_spool(config: &Config, spool: &crate::config::SpoolConfig, findings: &mut Vec<Finding>) {
    let group = config.spool_group.as_deref();
    // Permissions are looked at once both directories can be (the findings below say why not).
    let mut all_there = true;
    for dir in [spool.requests_dir(), spool.status_dir()] {
        let subject = dir.display().to_string();
        findings.push(match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => Finding::ok("spool", subject, "exists"),
            Ok(_) => Finding::problem("spool", subject, "exists but is not a directory; remove it, the service (or install.sh) creates the directory"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                all_there = false;
                match group {
                    None => Finding::ok("spool", subject, "missing; the service creates it at start"),
                    Some(group) => Finding::warn("spool", subject, format!("missing; create it as installed (root:{group} 1730) with `sudo ./install.sh` or `systemd-tmpfiles --create` (install.sh installs the rules): the service would create it at start, but only root could write to it")),
                }
            }
            Err(e) => {
                all_there = false;
                Finding::problem("spool", subject, e.to_string())
            }
        });
    }
    match group {
        Some(_) if !all_there => {}
        Some(group) => {
            let deviations = crate::spool::permission_deviations(
                &spool.requests_dir(),
                &spool.status_dir(),
                group,
            );
            for deviation in &deviations {
                findings.push(Finding::problem(
                    "permissions",
                    format!("spool {}", spool.name),
                    format!("{deviation}; fix with `systemd-tmpfiles --create` (install.sh installs the rules) or chown/chmod by hand"),
                ));
            }
            if deviations.is_empty() {
                findings.push(Finding::ok(
                    "permissions",
                    format!("spool {}", spool.name),
                    format!("requests/ root:{group} 1730, status/ root:{group} 1730"),
                ));
            }
        }
        None => findings.push(Finding::warn(
            "permissions",
            format!("spool {}", spool.name),
            "not checked (spool.group = \"\": fine for the demo and tests; installed spools name the containers' group)",
        )),
    }
}
