//! Durable run records in the state directory: what was accepted, whether it started, how its
//! script ended, and the final answer. A crash at any instant leaves files the next start can
//! interpret (see docs/durability.md for the fsync order).
//!
//! ```text
//! state/runs/<id>/request.json   accepted (the request, its file name, its writer)
//! state/runs/<id>/run.json       started: what the monitor runs and until when
//! state/runs/<id>/lock           held (flock) by the run's monitor while it lives
//! state/runs/<id>/launched       empty; created by the monitor just before it starts the script
//! state/runs/<id>/monitor.pid    the monitor's pid, once it can be signalled (for a cancel)
//! state/runs/<id>/stop           empty; a cancel came before the monitor could be signalled
//! state/exits/<id>.json          the monitor's record of how the script ended
//! state/runs/<id>/final.json     the final status, kept for the retention period
//! state/coordinator.lock         held by the running coordinator (see crate::instance)
//! ```
//! Every JSON file is written with [`write_atomic`] (temp, fsync, rename, fsync dir), so each
//! one is either complete or absent; `launched` is created and its directory fsynced. The
//! file formats are in [`run`] (`request.json`, `run.json`) and [`exit`] (the exit record).

mod exit;
mod run;

pub use exit::ExitRecord;
pub use run::{Accepted, RunSpec};

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::dir::Dir;
use crate::request::RequestId;
use crate::status::{Durability, Status, remove_temp_files, write_atomic};

/// In a run's directory: a cancel asked the run to stop (read by a monitor that was not yet
/// ready to be signalled when the cancel came).
pub const STOP_MARKER: &str = "stop";

/// Whether reading the records may repair what a crash left (only the service, at start-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repair {
    AtStartUp,
    Never,
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
    write_atomic(dir, name, &bytes, Durability::Durable)
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
    use std::time::SystemTime;

    use super::*;
    use crate::request::Request;
    use crate::runner::Invocation;

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
}
