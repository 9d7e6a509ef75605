//! What is checked before a script runs (trusted scripts, free disk space), and the dry-run
//! answer built from the same checks: a dry run tells what a real request would do.

use std::path::PathBuf;

use super::Daemon;
use crate::config::Component;
use crate::report::{self, Refusal};
use crate::request::Request;
use crate::status::Status;
use crate::trust;

impl Daemon {
    /// What must hold before a script runs: it is trusted, and (for an update) the disk has
    /// the configured free space. Returns the script to execute.
    pub(super) fn preflight(
        &self,
        component: &Component,
        request: &Request,
    ) -> Result<PathBuf, Refusal> {
        let script = component.script(request.action);
        let program = trust::check_script(&component.dir, &script, &self.script_owners).map_err(
            |untrusted| {
                let message = format!(
                    "refusing to run {}: {untrusted}",
                    request.action.script_name()
                );
                Refusal::of_request(request, untrusted.code(), message)
            },
        )?;
        if request.action == crate::request::Action::Update && component.min_free_disk_mb > 0 {
            let path = &component.disk_path;
            let free_mb = nix::sys::statvfs::statvfs(path)
                // The casts matter on 32-bit ARM (armhf), where these counts are 32-bit.
                .map(|st| {
                    #[allow(clippy::unnecessary_cast)]
                    let (blocks, size) = (st.blocks_available() as u64, st.fragment_size() as u64);
                    blocks * size / (1024 * 1024)
                })
                .map_err(|e| {
                    Refusal::of_request(
                        request,
                        crate::status::Code::InsufficientDisk,
                        format!("cannot measure the free space on {}: {e}", path.display()),
                    )
                })?;
            if free_mb < component.min_free_disk_mb {
                let message = format!(
                    "not enough free disk space for the update: {free_mb} MB free on {}, {} MB required (components.{}.min_free_disk_mb)",
                    path.display(),
                    component.min_free_disk_mb,
                    request.component
                );
                return Err(Refusal::of_request(
                    request,
                    crate::status::Code::InsufficientDisk,
                    message,
                ));
            }
        }
        Ok(program)
    }

    /// [`Daemon::preflight`] for every component of the request; the scripts in order.
    pub(super) fn preflight_all(&self, request: &Request) -> Result<Vec<PathBuf>, Refusal> {
        if let Some(refusal) = self.rollout_refusal(request) {
            return Err(refusal);
        }
        members(request)
            .iter()
            .map(|member| {
                let component = &self.config.components[&member.component];
                self.preflight(component, member).map_err(|mut refusal| {
                    // Answered for the whole request, naming the component that failed.
                    if request.is_batch() {
                        refusal.message = format!("{}: {}", member.component, refusal.message);
                    }
                    refusal.component = Some(request.component_label());
                    refusal
                })
            })
            .collect()
    }

    /// A dry run: everything a real run would check, and a description of what it would do.
    pub(super) fn dry_run_status(&self, request: &Request) -> Status {
        if request.is_batch() {
            return self.batch_dry_run_status(request);
        }
        let component = &self.config.components[&request.component];
        let program = match self.preflight(component, request) {
            Ok(program) => program,
            Err(refusal) => return report::dry_run_refused(&request.id, &refusal),
        };
        let command = std::iter::once(program.display().to_string())
            .chain(request.version.iter().map(|v| v.as_str().to_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        let gate = match self.procedure(component, request) {
            Some(p) => format!(
                ", then health-check.sh (up to {} attempts, {} s apart) and rollback.sh if the update fails or stays unhealthy",
                p.health_retries,
                p.health_interval.as_secs_f64()
            ),
            None => String::new(),
        };
        let applied = crate::limits::plan(&component.limits, &self.host);
        let limits = describe_limits(&applied);
        let plan = format!(
            "run `{command}` in {} with a {} s timeout{gate}; {limits}",
            component.dir.display(),
            component.timeout(request.action).as_secs_f64()
        );
        report::dry_run(request, &plan, Some(applied))
    }

    /// A multi-component dry run: every component checked, the order of the updates told.
    fn batch_dry_run_status(&self, request: &Request) -> Status {
        let programs = match self.preflight_all(request) {
            Ok(programs) => programs,
            Err(refusal) => return report::dry_run_refused(&request.id, &refusal),
        };
        let steps: Vec<String> = members(request)
            .iter()
            .zip(programs)
            .map(|(member, program)| {
                let component = &self.config.components[&member.component];
                let gate = if self.procedure(component, member).is_some() {
                    " (health-gated)"
                } else {
                    " (no health gate: auto_rollback = false)"
                };
                format!(
                    "`{} {}`{gate}",
                    program.display(),
                    member.version_text().unwrap_or_default()
                )
            })
            .collect();
        let plan = format!(
            "run in order {}; if one fails, the ones already updated are rolled back, newest first",
            steps.join(", then ")
        );
        report::dry_run(request, &plan, None)
    }
}

/// The request as one request per component (itself, unless it is a batch).
pub(super) fn members(request: &Request) -> Vec<Request> {
    if !request.is_batch() {
        return vec![request.clone()];
    }
    request
        .batch
        .iter()
        .map(|member| Request {
            component: member.component.clone(),
            version: Some(member.version.clone()),
            batch: Vec::new(),
            ..request.clone()
        })
        .collect()
}

/// "limits: memory_max 512 MiB, cpu_quota 80 %, tasks_max 256 (systemd-scope)" and what is not
/// enforced.
fn describe_limits(applied: &crate::limits::Applied) -> String {
    let e = &applied.enforced;
    let mut parts = Vec::new();
    if let Some(b) = e.memory_max {
        parts.push(format!("memory_max {} MiB", b / (1024 * 1024)));
    }
    if let Some(p) = e.cpu_quota {
        parts.push(format!("cpu_quota {p} %"));
    }
    if let Some(t) = e.tasks_max {
        parts.push(format!("tasks_max {t}"));
    }
    let enforced = if parts.is_empty() {
        "no limits enforced".to_string()
    } else {
        format!("limits {} ({})", parts.join(", "), applied.mechanism)
    };
    if applied.not_enforced.is_empty() {
        enforced
    } else {
        format!("{enforced}; {}", applied.not_enforced.join("; "))
    }
}
