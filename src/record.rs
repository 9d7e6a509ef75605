//! Durable run records in the state directory: what was accepted, whether it started, how its
//! script ended, and the final answer. A crash at any instant leaves files the next start can
//! interpret (see docs/durability.md for the fsync order).
//!
//! ```text
//! state/runs/<id>/request.json   accepted (the request, its file name, its writer)
//! state/runs/<id>/run.json       started: what the monitor runs and until when
//! state/runs/<id>/lock           held (flock) by the run's monitor while it lives
//! state/exits/<id>.json          the monitor's record of how the script ended
//! state/runs/<id>/final.json     the final status, kept for the retention period
//! state/coordinator.lock         held by the running coordinator (see crate::instance)
//! ```
//! Every file is written with [`write_atomic`] (temp, fsync, rename, fsync dir), so each one
//! is either complete or absent.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::dir::Dir;
use crate::request::{Action, Request, RequestId, Version};
use crate::runner::{Captured, Exit, Invocation, Outcome, Stopped};
use crate::status::{Durability, Place, Status, remove_temp_files, write_atomic};

/// The accepted request, as the record keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accepted {
    pub request_id: String,
    pub component: String,
    pub action: String,
    pub version: Option<String>,
    /// The spool it was dropped into (`[spools.NAME]`); empty for the main `[spool]`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub spool: String,
    /// Name of the request file in `requests/` (removed once answered).
    pub file_name: String,
    pub owner_uid: u32,
    /// Nanoseconds since the epoch; orders the queue after a restart.
    pub accepted_at_ns: u128,
    /// The request's `not_before` (RFC 3339), if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// A multi-component update: `[component, version]` in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<(String, String)>,
}

impl Accepted {
    pub fn new(request: &Request, spool: &str, file_name: &str, owner_uid: u32) -> Self {
        Self {
            // The main spool is recorded as "" (records written before there were others).
            spool: if spool == crate::config::MAIN_SPOOL {
                String::new()
            } else {
                spool.to_owned()
            },
            request_id: request.id.to_string(),
            component: request.component.clone(),
            action: request.action.to_string(),
            version: request.version.as_ref().map(|v| v.as_str().to_owned()),
            file_name: file_name.to_owned(),
            owner_uid,
            accepted_at_ns: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
            not_before: request.not_before.map(|t| t.to_string()),
            batch: request
                .batch
                .iter()
                .map(|m| (m.component.clone(), m.version.as_str().to_owned()))
                .collect(),
        }
    }

    /// The request again, re-checked (a record is our own file, but a checked type is cheap).
    pub fn request(&self) -> Option<Request> {
        Some(Request {
            id: RequestId::parse(&self.request_id).ok()?,
            component: self.component.clone(),
            action: Action::parse(&self.action)?,
            version: match &self.version {
                Some(v) => Some(Version::parse(v).ok()?),
                None => None,
            },
            dry_run: false, // dry runs are answered at once, never recorded
            not_before: match &self.not_before {
                Some(t) => Some(t.parse().ok()?),
                None => None,
            },
            batch: self
                .batch
                .iter()
                .map(|(component, version)| {
                    Some(crate::request::Member {
                        component: component.clone(),
                        version: Version::parse(version).ok()?,
                    })
                })
                .collect::<Option<_>>()?,
        })
    }
}

/// What a monitor runs, written before it starts. The deadline is on the monotonic clock,
/// which all processes share until the next boot, so a timeout survives coordinator restarts
/// and is immune to wall-clock jumps (a Pi without RTC jumps when NTP syncs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub invocation: Invocation,
    pub boot_id: String,
    pub deadline_monotonic_ns: u128,
    pub started_at: SystemTime,
    /// Where the monitor writes in-progress statuses, and for whom.
    pub status_dir: std::path::PathBuf,
    /// `[spool] progress_in_status`: progress goes into the status file itself.
    #[serde(default)]
    pub progress_in_status: bool,
    pub owner_uid: u32,
    pub accepted: Accepted,
    /// The limits configured for the script.
    #[serde(default)]
    pub limits: crate::limits::Limits,
    /// What the coordinator could enforce, and how (the monitor runs inside that scope).
    #[serde(default)]
    pub applied: Option<crate::limits::Applied>,
    /// For a health-gated update: the health check and rollback that follow `update.sh`.
    #[serde(default)]
    pub procedure: Option<crate::procedure::Procedure>,
    /// A multi-component update: every component's update, in order (`invocation` is the
    /// first one's, for messages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<crate::procedure::Member>,
}

/// In a run's directory: a cancel asked the run to stop (read by a monitor that was not yet
/// ready to be signalled when the cancel came).
pub const STOP_MARKER: &str = "stop";

/// Whether reading the records may repair what a crash left (only the service, at start-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repair {
    AtStartUp,
    Never,
}

/// How the script ended, written by the monitor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Stopped on request (the monitor got SIGTERM).
    pub stopped: bool,
    /// The script could not be started at all.
    pub spawn_error: Option<String>,
    pub spawn_error_kind: Option<String>,
    pub duration_ms: u64,
    pub last_phase: crate::status::Phase,
    pub stdout: String,
    pub stdout_truncated: bool,
    pub stderr: String,
    pub stderr_truncated: bool,
    /// What the run used, and the limits that applied.
    #[serde(default)]
    pub usage: Option<crate::limits::Usage>,
    /// A health-gated update: every script run, and how it ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<crate::procedure::Step>,
    #[serde(default)]
    pub outcome: Option<crate::procedure::UpdateOutcome>,
    #[serde(default)]
    pub outcome_message: Option<String>,
    /// A multi-component update: each component's outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<crate::procedure::MemberOutcome>,
    #[serde(default)]
    pub limits: Option<crate::limits::Applied>,
}

impl ExitRecord {
    pub fn from_result(result: &io::Result<Outcome>, last_phase: &crate::status::Phase) -> Self {
        let mut record = ExitRecord {
            exit_code: None,
            signal: None,
            timed_out: false,
            stopped: false,
            spawn_error: None,
            spawn_error_kind: None,
            duration_ms: 0,
            last_phase: last_phase.clone(),
            stdout: String::new(),
            stdout_truncated: false,
            stderr: String::new(),
            stderr_truncated: false,
            usage: None,
            limits: None,
            steps: Vec::new(),
            outcome: None,
            outcome_message: None,
            members: Vec::new(),
        };
        match result {
            Err(e) => {
                record.spawn_error = Some(e.to_string());
                record.spawn_error_kind = Some(format!("{:?}", e.kind()));
            }
            Ok(o) => {
                match o.exit {
                    Exit::Code(c) => record.exit_code = Some(c),
                    Exit::Signal(s) => record.signal = Some(s),
                }
                record.timed_out = o.stopped == Some(Stopped::TimedOut);
                record.stopped = o.stopped == Some(Stopped::Shutdown);
                record.duration_ms = o.duration.as_millis() as u64;
                record.stdout = o.stdout.text.clone();
                record.stdout_truncated = o.stdout.truncated;
                record.stderr = o.stderr.text.clone();
                record.stderr_truncated = o.stderr.truncated;
            }
        }
        record
    }

    /// Back to the runner's result type, for [`crate::report::finished`].
    pub fn to_result(&self) -> io::Result<Outcome> {
        if let Some(message) = &self.spawn_error {
            let kind = match self.spawn_error_kind.as_deref() {
                Some("NotFound") => io::ErrorKind::NotFound,
                Some("PermissionDenied") => io::ErrorKind::PermissionDenied,
                _ => io::ErrorKind::Other,
            };
            return Err(io::Error::new(kind, message.clone()));
        }
        let exit = match (self.exit_code, self.signal) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            (None, None) => Exit::Code(-1),
        };
        let stopped = if self.timed_out {
            Some(Stopped::TimedOut)
        } else if self.stopped {
            Some(Stopped::Shutdown)
        } else {
            None
        };
        let captured = |text: &str, truncated| Captured {
            text: text.to_owned(),
            truncated,
            total_bytes: text.len() as u64,
        };
        Ok(Outcome {
            exit,
            stopped,
            duration: Duration::from_millis(self.duration_ms),
            stdout: captured(&self.stdout, self.stdout_truncated),
            stderr: captured(&self.stderr, self.stderr_truncated),
        })
    }
}

/// Where a run stands, as read back at start-up.
#[derive(Debug)]
pub enum RunState {
    /// Accepted, not started: goes back into the queue.
    Queued,
    /// Started; the monitor may still be alive (see [`RunStore::monitor_alive`]).
    Started(Box<RunSpec>),
    /// Answered.
    Finished(Box<Status>),
}

#[derive(Debug)]
pub struct RunRecord {
    pub accepted: Accepted,
    pub state: RunState,
}

/// The state directory's `runs/` and `exits/`.
#[derive(Debug)]
pub struct RunStore {
    root: std::path::PathBuf,
    runs: Dir,
    exits: Dir,
}

impl RunStore {
    /// Opens (creating if needed, mode 0700) the state directory.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        for sub in ["runs", "exits"] {
            let path = state_dir.join(sub);
            std::fs::create_dir_all(&path)?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        }
        Self::open_existing(state_dir)
    }

    /// Opens the state directory for reading only (the operator's commands): creates nothing.
    pub fn open_existing(state_dir: &Path) -> io::Result<Self> {
        Ok(Self {
            root: state_dir.to_owned(),
            runs: Dir::open(&state_dir.join("runs"))?,
            exits: Dir::open(&state_dir.join("exits"))?,
        })
    }

    pub fn exits_path(&self) -> std::path::PathBuf {
        self.root.join("exits")
    }

    pub fn run_path(&self, id: &RequestId) -> std::path::PathBuf {
        self.root.join("runs").join(id.as_str())
    }

    fn run_dir(&self, id: &RequestId) -> io::Result<Dir> {
        Dir::open(&self.run_path(id))
    }

    /// The saved inventory, if any.
    pub fn inventory(&self) -> Option<crate::inventory::Inventory> {
        let root = Dir::open(&self.root).ok()?;
        read_json(&root, crate::inventory::FILE)
    }

    /// Saved atomically but not fsynced: it is rewritten after every request, and losing the
    /// last rewrite to a power cut costs a stale line, not an answer (the answers are durable).
    pub fn save_inventory(&self, inventory: &crate::inventory::Inventory) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(inventory).map_err(io::Error::other)?;
        write_atomic(
            &Dir::open(&self.root)?,
            crate::inventory::FILE,
            &bytes,
            Durability::BestEffort,
            None,
            Place::Always,
        )
    }

    /// Whether any record (in any state) exists for this id.
    pub fn exists(&self, id: &RequestId) -> bool {
        self.runs.lstat(id.as_str()).is_ok()
    }

    /// Records an accepted request durably: from now on it is never lost nor run twice. This
    /// record, not the request file, is what survives a power cut: clients write their
    /// request files without fsync, and after a cut the file is often empty (the power-cut
    /// system test found requests lost when this record was not fsynced).
    pub fn accept(&self, accepted: &Accepted) -> io::Result<()> {
        let path = self.root.join("runs").join(&accepted.request_id);
        match std::fs::create_dir(&path) {
            Ok(()) => self.runs.sync()?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let dir = Dir::open(&path)?;
        write_json(&dir, "request.json", accepted)
    }

    /// Records that a run starts, and returns the lock its monitor will hold. The record is
    /// durable before the monitor exists, so a crash right after can never lead to a re-run.
    /// `run.json` holds the accepted request too.
    pub fn start(&self, id: &RequestId, spec: &RunSpec) -> io::Result<File> {
        let dir = self.run_dir(id)?;
        write_json(&dir, "run.json", spec)?;
        let lock = match dir.create_new("lock", 0o600) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => dir.open_untrusted("lock")?,
            Err(e) => return Err(e),
        };
        Ok(lock)
    }

    /// Written by the monitor just before it starts the script: without it, the script
    /// certainly never ran and the run may start again. An empty file: its name is the
    /// record, so one directory fsync makes it durable.
    pub fn mark_launched(&self, id: &RequestId) -> io::Result<()> {
        let dir = self.run_dir(id)?;
        match dir.create_new("launched", 0o600) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        dir.sync()
    }

    pub fn launched(&self, id: &RequestId) -> bool {
        self.run_dir(id)
            .is_ok_and(|dir| dir.lstat("launched").is_ok())
    }

    /// Forgets that a run started (it never launched), so it can start again.
    pub fn unstart(&self, id: &RequestId) -> io::Result<()> {
        let dir = self.run_dir(id)?;
        match dir.remove("run.json") {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        dir.sync()
    }

    /// Whether the run's monitor is alive: it holds the run's lock for its whole life.
    pub fn monitor_alive(&self, id: &RequestId) -> bool {
        let Ok(dir) = self.run_dir(id) else {
            return false;
        };
        let Ok(lock) = dir.open_untrusted("lock") else {
            return false;
        };
        match Flock::lock(lock, FlockArg::LockExclusiveNonblock) {
            Ok(_held) => false, // dropped at once: nobody else had it
            Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
        }
    }

    pub fn spec(&self, id: &RequestId) -> Option<RunSpec> {
        read_json(&self.run_dir(id).ok()?, "run.json")
    }

    pub fn exit(&self, id: &RequestId) -> Option<ExitRecord> {
        read_json(&self.exits, &format!("{id}.json"))
    }

    pub fn write_exit(&self, id: &RequestId, record: &ExitRecord) -> io::Result<()> {
        write_json(&self.exits, &format!("{id}.json"), record)
    }

    pub fn remove_exit(&self, id: &RequestId) -> io::Result<()> {
        match self.exits.remove(&format!("{id}.json")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Records the final answer durably; kept for idempotency until the retention period ends.
    pub fn finish(&self, id: &RequestId, status: &Status) -> io::Result<()> {
        write_json(&self.run_dir(id)?, "final.json", status)
    }

    /// Who wrote request `id` (its spool's name and the uid that owned its file), if it is
    /// recorded.
    pub fn owner(&self, id: &RequestId) -> Option<(String, u32)> {
        let dir = self.run_dir(id).ok()?;
        read_json::<Accepted>(&dir, "request.json")
            .or_else(|| read_json::<RunSpec>(&dir, "run.json").map(|spec| spec.accepted))
            .map(|accepted| (accepted.spool, accepted.owner_uid))
    }

    pub fn final_status(&self, id: &RequestId) -> Option<Status> {
        read_json(&self.run_dir(id).ok()?, "final.json")
    }

    /// Every record, oldest accepted first. Unreadable records are skipped with a reason.
    /// Temp files a crash left behind are removed on the way.
    pub fn load(&self) -> io::Result<(Vec<RunRecord>, Vec<String>)> {
        self.load_records(Repair::AtStartUp)
    }

    /// Every record, as [`RunStore::load`], but read only: for the CLI, which runs beside a
    /// live service (whose half-written records are not leftovers of a crash).
    pub fn read(&self) -> io::Result<(Vec<RunRecord>, Vec<String>)> {
        self.load_records(Repair::Never)
    }

    fn load_records(&self, repair: Repair) -> io::Result<(Vec<RunRecord>, Vec<String>)> {
        let mut records = Vec::new();
        let mut problems = Vec::new();
        let repairing = repair == Repair::AtStartUp;
        if repairing {
            // Only the coordinator writes in the state directory itself (the inventory).
            remove_temp_files(&Dir::open(&self.root)?, |_| false)?;
            remove_temp_files(&self.exits, |target| {
                RequestId::from_file_name(target).is_some_and(|id| self.monitor_alive(&id))
            })?;
        }
        for name in self.runs.names()? {
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let Ok(id) = RequestId::parse(name) else {
                problems.push(format!("{name}: not a request id"));
                continue;
            };
            let Ok(dir) = self.run_dir(&id) else { continue };
            if repairing && !self.monitor_alive(&id) {
                remove_temp_files(&dir, |_| false)?;
            }
            let spec = read_json::<RunSpec>(&dir, "run.json");
            // A started run's `run.json` has the accepted request too.
            let accepted = read_json::<Accepted>(&dir, "request.json")
                .or_else(|| spec.as_ref().map(|s| s.accepted.clone()));
            let Some(accepted) = accepted else {
                // Created, but the accept record never became durable (a crash in the middle
                // of `accept`): the request file is still in requests/, so the spool scan
                // takes it again. (Read only: a request being accepted right now.)
                if repairing {
                    let _ = std::fs::remove_dir_all(self.run_path(&id));
                }
                continue;
            };
            let state = if let Some(status) = read_json::<Status>(&dir, "final.json") {
                RunState::Finished(Box::new(status))
            } else if let Some(spec) = spec {
                RunState::Started(Box::new(spec))
            } else {
                RunState::Queued
            };
            records.push(RunRecord { accepted, state });
        }
        records.sort_by_key(|r| r.accepted.accepted_at_ns);
        Ok((records, problems))
    }

    /// Removes finished records older than `retention`; returns how many.
    pub fn expire(&self, retention: Duration) -> io::Result<usize> {
        let mut removed = 0;
        for name in self.runs.names()? {
            let Some(name) = name.to_str() else { continue };
            let Ok(id) = RequestId::parse(name) else {
                continue;
            };
            let final_file = self.run_path(&id).join("final.json");
            let old = std::fs::metadata(&final_file)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > retention);
            if old {
                std::fs::remove_dir_all(self.run_path(&id))?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.runs.sync()?;
        }
        Ok(removed)
    }
}

fn write_json(dir: &Dir, name: &str, value: &impl Serialize) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(dir, name, &bytes, Durability::Durable, None, Place::Always)
}

fn read_json<T: for<'de> Deserialize<'de>>(dir: &Dir, name: &str) -> Option<T> {
    let mut bytes = Vec::new();
    dir.open_untrusted(name)
        .ok()?
        .take(16 * 1024 * 1024)
        .read_to_end(&mut bytes)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// This boot's id: a monitor recorded under another boot is certainly gone.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The monotonic clock, shared by all processes until the next boot.
pub fn monotonic_now_ns() -> u128 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u128 * 1_000_000_000 + t.tv_nsec() as u128)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Phase;

    fn request(id: &str) -> Request {
        Request::parse(
            format!(r#"{{"component":"remote","action":"update","version":"1.2.3","request_id":"{id}"}}"#).as_bytes(),
            ["remote"],
        )
        .unwrap()
    }

    fn spec(accepted: &Accepted) -> RunSpec {
        RunSpec {
            invocation: Invocation {
                program: "/bin/true".into(),
                args: vec![],
                cwd: "/".into(),
                env: vec![],
                timeout: Duration::from_secs(1),
                kill_grace: Duration::from_secs(1),
                tail_bytes: 1024,
            },
            boot_id: boot_id(),
            deadline_monotonic_ns: monotonic_now_ns(),
            started_at: SystemTime::now(),
            status_dir: "/nonexistent".into(),
            progress_in_status: false,
            owner_uid: 0,
            accepted: accepted.clone(),
            limits: Default::default(),
            applied: None,
            procedure: None,
            batch: Vec::new(),
        }
    }

    #[test]
    fn an_accepted_batch_with_not_before_survives_its_record() {
        let request = Request::parse(
            br#"{"action":"update","components":{"remote":"1.0","core":"2.0"},"request_id":"b","not_before":"2026-11-28T02:00:00Z"}"#,
            ["remote", "core"],
        )
        .unwrap();
        let accepted = Accepted::new(&request, "main", "b.json", 1000);
        let again: Accepted =
            serde_json::from_slice(&serde_json::to_vec(&accepted).unwrap()).unwrap();
        assert_eq!(again.request().unwrap(), request);
    }

    #[test]
    fn records_move_from_queued_to_started_to_finished() {
        let tmp = tempfile::tempdir().unwrap();
        let store = RunStore::open(tmp.path()).unwrap();
        let r = request("r1");
        let accepted = Accepted::new(&r, "main", "r1.json", 1000);
        store.accept(&accepted).unwrap();
        let (records, _) = store.load().unwrap();
        assert!(matches!(records[0].state, RunState::Queued));
        assert_eq!(records[0].accepted.request().unwrap(), r);

        let lock = store.start(&r.id, &spec(&accepted)).unwrap();
        assert!(matches!(
            store.load().unwrap().0[0].state,
            RunState::Started(_)
        ));
        assert!(!store.monitor_alive(&r.id), "nobody holds the lock yet");
        let held = Flock::lock(lock, FlockArg::LockExclusiveNonblock).unwrap();
        assert!(store.monitor_alive(&r.id), "the lock is held");
        drop(held);
        assert!(!store.monitor_alive(&r.id), "released when its holder goes");

        let status = Status {
            request_id: "r1".into(),
            message: "done".into(),
            success: Some(true),
            ..Default::default()
        };
        store.finish(&r.id, &status).unwrap();
        assert!(
            matches!(&store.load().unwrap().0[0].state, RunState::Finished(s) if s.success == Some(true))
        );
        assert_eq!(store.expire(Duration::from_secs(3600)).unwrap(), 0);
        assert_eq!(store.expire(Duration::ZERO).unwrap(), 1);
        assert!(store.load().unwrap().0.is_empty());
    }

    /// A crash in the middle of `accept` can leave `request.json` empty or missing.
    #[test]
    fn a_half_written_record_is_dropped_if_never_started_and_kept_if_started() {
        let tmp = tempfile::tempdir().unwrap();
        let store = RunStore::open(tmp.path()).unwrap();
        let (queued, started) = (request("q1"), request("s1"));
        for r in [&queued, &started] {
            store
                .accept(&Accepted::new(r, "main", "x.json", 1000))
                .unwrap();
        }
        let _lock = store
            .start(
                &started.id,
                &spec(&Accepted::new(&started, "main", "s1.json", 1000)),
            )
            .unwrap();
        for r in [&queued, &started] {
            std::fs::write(store.run_path(&r.id).join("request.json"), "").unwrap();
        }
        let (records, _) = store.load().unwrap();
        assert_eq!(
            records.len(),
            1,
            "the never-started one is dropped: its file is taken again"
        );
        assert_eq!(records[0].accepted.request().unwrap(), started);
        assert!(matches!(records[0].state, RunState::Started(_)));
        assert!(
            !store.exists(&queued.id),
            "so its id is not taken for a duplicate"
        );
    }

    #[test]
    fn an_exit_record_round_trips_to_the_runner_result() {
        let outcome = Outcome {
            exit: Exit::Signal(9),
            stopped: Some(Stopped::TimedOut),
            duration: Duration::from_millis(1500),
            stdout: Captured {
                text: "out".into(),
                truncated: true,
                total_bytes: 99,
            },
            stderr: Captured::default(),
        };
        let record = ExitRecord::from_result(&Ok(outcome), &Phase::from("downloading"));
        let back = record.to_result().unwrap();
        assert_eq!(
            (back.exit, back.stopped, back.duration),
            (
                Exit::Signal(9),
                Some(Stopped::TimedOut),
                Duration::from_millis(1500)
            )
        );
        assert!(back.stdout.truncated);
        let missing =
            ExitRecord::from_result(&Err(io::ErrorKind::NotFound.into()), &Phase::Running);
        assert_eq!(
            missing.to_result().unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
