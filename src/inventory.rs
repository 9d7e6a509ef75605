//! The version inventory: per component, the version running now, the last action and its
//! outcome, and the last results, so a client can tell what is deployed without asking each
//! container. Kept in the state directory and published as `status/inventory.json` for
//! containers to read; `update-coordinator inventory` prints it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::procedure::{MemberResult, UpdateOutcome};
use crate::request::{Action, Request};
use crate::status::Status;

/// Results kept per component.
pub const RECENT: usize = 10;
/// The published file's name in `status/` (a reserved request id).
pub const FILE: &str = "inventory.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub updated_at: String,
    pub components: BTreeMap<String, ComponentState>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComponentState {
    /// The version running now, as far as the coordinator knows.
    pub version: Option<String>,
    /// Where `version` comes from: `update` (a successful update), `rollback`, `VERSION`
    /// (the component's VERSION file), `version.sh`, or `unknown`.
    pub version_source: String,
    /// The version before the last successful update (what a rollback returns to).
    pub previous_version: Option<String>,
    pub last_action: Option<String>,
    pub last_outcome: Option<String>,
    /// Kept in the state directory only: the copy published in `status/` names no request
    /// (every container can read it, and an id is the key to another container's answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request_id: Option<String>,
    pub last_at: Option<String>,
    /// The last results, newest first.
    pub recent: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Empty in the published copy (see [`ComponentState::last_request_id`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub success: bool,
    /// `succeeded`, or the failure code (`rolled_back`, `script_failed`, ...).
    pub outcome: String,
    pub at: String,
}

impl Inventory {
    /// The copy every container may read (`status/inventory.json`): no request ids.
    pub fn published(&self) -> Inventory {
        let mut copy = self.clone();
        for state in copy.components.values_mut() {
            state.last_request_id = None;
            for entry in &mut state.recent {
                entry.request_id.clear();
            }
        }
        copy
    }

    /// Adds a component that is not listed yet, with the version its directory declares.
    /// `version.sh` runs as root like the other scripts, so only if it passes the same trust
    /// check (`script_owners`: see [`crate::trust`]).
    pub fn discover(&mut self, name: &str, dir: &Path, script_owners: &[u32]) {
        if self.components.contains_key(name) {
            return;
        }
        let (version, source) = declared_version(dir, script_owners);
        self.components.insert(
            name.to_owned(),
            ComponentState {
                version,
                version_source: source.into(),
                ..Default::default()
            },
        );
    }

    /// Records a final answer for a request that ran (or was refused at its turn).
    pub fn record(&mut self, request: &Request, status: &Status) {
        let success = status.success == Some(true);
        let outcome = match &status.code {
            _ if success => "succeeded",
            Some(code) => code.as_str(),
            None => "failed",
        };
        self.record_result(request, success, outcome, &status.timestamp);
    }

    /// Records how one component of a multi-component update ended (`request` is that
    /// component's own part of it), at `at`.
    pub fn record_member(&mut self, request: &Request, result: MemberResult, at: &str) {
        let updated = result == MemberResult::Ended(UpdateOutcome::Updated);
        let outcome = if updated {
            "succeeded"
        } else {
            result.as_str()
        };
        self.record_result(request, updated, outcome, at);
    }

    fn record_result(&mut self, request: &Request, success: bool, outcome: &str, at: &str) {
        let state = self
            .components
            .entry(request.component.clone())
            .or_default();
        let outcome = outcome.to_owned();
        let version = request.version.as_ref().map(|v| v.as_str().to_owned());
        match (request.action, success) {
            (Action::Update, true) => {
                if state.version != version {
                    state.previous_version = state.version.take();
                }
                state.version = version.clone();
                state.version_source = "update".into();
            }
            (Action::Rollback, true) if state.previous_version.is_some() => {
                state.version = state.previous_version.take();
                state.version_source = "rollback".into();
            }
            _ => {}
        }
        state.last_action = Some(request.action.to_string());
        state.last_outcome = Some(outcome.clone());
        state.last_request_id = Some(request.id.to_string());
        state.last_at = Some(at.to_owned());
        state.recent.insert(
            0,
            Entry {
                request_id: request.id.to_string(),
                action: request.action.to_string(),
                version,
                success,
                outcome,
                at: at.to_owned(),
            },
        );
        state.recent.truncate(RECENT);
        self.updated_at = crate::status::now_rfc3339();
    }
}

/// The version a component's directory declares: its `VERSION` file, else the output of its
/// `version.sh` (run for at most 5 s), else unknown.
fn declared_version(dir: &Path, script_owners: &[u32]) -> (Option<String>, &'static str) {
    let clean = |text: &str| {
        let line = text.lines().next().unwrap_or("").trim();
        (!line.is_empty() && line.len() <= 64).then(|| crate::request::printable(line))
    };
    if let Some(v) = std::fs::read_to_string(dir.join("VERSION"))
        .ok()
        .and_then(|t| clean(&t))
    {
        return (Some(v), "VERSION");
    }
    let script = dir.join("version.sh");
    if script.is_file()
        && let Ok(script) = crate::trust::check_script(dir, &script, script_owners)
        && let Some(v) = run_briefly(&script, dir, Duration::from_secs(5)).and_then(|t| clean(&t))
    {
        return (Some(v), "version.sh");
    }
    (None, "unknown")
}

fn run_briefly(script: &Path, dir: &Path, limit: Duration) -> Option<String> {
    let mut child = std::process::Command::new(script)
        .current_dir(dir)
        .env_clear()
        .env("PATH", crate::runner::SCRIPT_PATH)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let started = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Code;

    fn request(action: &str, version: Option<&str>, id: &str) -> Request {
        let v = version
            .map(|v| format!(r#","version":"{v}""#))
            .unwrap_or_default();
        Request::parse(
            format!(r#"{{"component":"remote","action":"{action}","request_id":"{id}"{v}}}"#)
                .as_bytes(),
            ["remote"],
        )
        .unwrap()
    }

    fn status(success: bool, code: Option<Code>) -> Status {
        Status {
            success: Some(success),
            code,
            timestamp: "2026-11-27T08:00:00.000Z".into(),
            ..Default::default()
        }
    }

    #[test]
    fn versions_follow_updates_and_rollbacks() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("VERSION"), "1.0.0\n").unwrap();
        let mut inv = Inventory::default();
        inv.discover("remote", tmp.path(), &[]);
        assert_eq!(inv.components["remote"].version.as_deref(), Some("1.0.0"));
        assert_eq!(inv.components["remote"].version_source, "VERSION");

        inv.record(&request("update", Some("1.1.0"), "a"), &status(true, None));
        let r = &inv.components["remote"];
        assert_eq!(
            (r.version.as_deref(), r.previous_version.as_deref()),
            (Some("1.1.0"), Some("1.0.0"))
        );

        inv.record(
            &request("update", Some("1.2.0"), "b"),
            &status(false, Some(Code::RolledBack)),
        );
        let r = &inv.components["remote"];
        assert_eq!(
            r.version.as_deref(),
            Some("1.1.0"),
            "a rolled back update changes nothing"
        );
        assert_eq!(r.last_outcome.as_deref(), Some("rolled_back"));

        inv.record(&request("rollback", None, "c"), &status(true, None));
        let r = &inv.components["remote"];
        assert_eq!(
            (r.version.as_deref(), r.version_source.as_str()),
            (Some("1.0.0"), "rollback")
        );
        assert_eq!(
            r.recent
                .iter()
                .map(|e| e.request_id.as_str())
                .collect::<Vec<_>>(),
            ["c", "b", "a"]
        );
    }

    #[test]
    fn version_sh_is_asked_when_there_is_no_version_file() {
        let tmp = tempfile::tempdir().unwrap();
        let script = tmp.path().join("version.sh");
        std::fs::write(&script, "#!/bin/sh\necho 2026.01.5\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut inv = Inventory::default();
        inv.discover("core", tmp.path(), &crate::trust::trusted_owners(&[]));
        assert_eq!(inv.components["core"].version.as_deref(), Some("2026.01.5"));
        assert_eq!(inv.components["core"].version_source, "version.sh");

        // A version.sh others could change is never run as root.
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let mut inv = Inventory::default();
        inv.discover("core", tmp.path(), &crate::trust::trusted_owners(&[]));
        assert_eq!(inv.components["core"].version_source, "unknown");
    }

    #[test]
    fn only_the_last_results_are_kept() {
        let mut inv = Inventory::default();
        for i in 0..15 {
            inv.record(
                &request("health", None, &format!("h{i}")),
                &status(true, None),
            );
        }
        assert_eq!(inv.components["remote"].recent.len(), RECENT);
        assert_eq!(inv.components["remote"].recent[0].request_id, "h14");
    }
}
