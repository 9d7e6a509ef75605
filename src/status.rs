//! Status files: the [`Status`] type *is* the file format, plus the atomic write.
//!
//! The client polls `status/<request_id>.json`. `message == "in_progress"` (with
//! `success: null`) means "keep waiting"; anything else is final. A file is either complete or
//! absent: we write a temp file in the same directory and rename it over the name. Final
//! statuses are also fsynced (file, then directory) before anything depends on them, i.e.
//! before the request file is removed. In-progress statuses are not fsynced: losing one costs
//! nothing, because the request file is still in `requests/` until the final status is durable.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::dir::Dir;
use crate::request::RequestId;

/// The `message` of every non-final status.
pub const IN_PROGRESS: &str = "in_progress";

/// One status file. Optional fields are omitted when unset, so old clients see the fields they
/// know (`success`, `message`, `output`, `error`, `phase`) and new ones see more.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub request_id: String,
    pub component: Option<String>,
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `null` while in progress; `true`/`false` when final.
    pub success: Option<bool>,
    /// `"in_progress"` while running; a human sentence when final.
    pub message: String,
    /// Stable machine code of a failure (`invalid_json`, `timeout`, `script_failed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `queued`, `running`, the script's own `PHASE:` names, then `done` or `failed`.
    pub phase: String,
    /// Tail of the script's stdout.
    pub output: String,
    /// Tail of the script's stderr.
    pub error: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub output_truncated: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub error_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal number that ended the script, when it did not exit by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub timed_out: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The kernel's OOM killer killed a process of the run (its memory limit was reached).
    #[serde(default, skip_serializing_if = "is_false")]
    pub oom_killed: bool,
    /// Peak memory of the run, in bytes (see `limits.mechanism` for how it was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<u64>,
    /// CPU time (user + system) of the run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<u64>,
    /// The request was a dry run: nothing ran; `message` says what would have.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
    /// A health-gated update: `updated`, `rolled_back`, `rollback_failed` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// A health-gated update: each script run (update, health checks, rollback) and its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<crate::procedure::Step>>,
    /// The resource limits that applied, by which mechanism, and those not enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::limits::Applied>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// In progress: percent done, from the script's `PROGRESS:<n>` lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// In progress: the last lines of output (stdout and stderr, as they came).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
    /// In progress: when this status was last rewritten (a heartbeat while output flows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Queued: how many requests are ahead of this one, plus one (1 = next). Refreshed at
    /// most once a second, for the first few in line only; further back it may be stale (too
    /// high, never too low).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
    /// Phase `scheduled`: when the request will start (RFC 3339, UTC): its `not_before`, or
    /// the next opening of its component's maintenance window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<String>,
    /// A multi-component update: each component's version and outcome, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<crate::procedure::MemberOutcome>>,
    /// RFC 3339, UTC, when this status was written.
    pub timestamp: String,
}

fn is_false(b: &bool) -> bool {
    !b
}

impl Status {
    pub fn is_final(&self) -> bool {
        self.message != IN_PROGRESS
    }
}

/// RFC 3339 with zone (UTC), millisecond precision.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// Whether a write must survive power loss before the caller goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and the directory (final statuses).
    Durable,
    /// fsync the file before the rename, not the directory: after a power cut the name is
    /// absent, the old file, or the whole new one, never an empty file (ext4 allocates a new
    /// file's data late, and a rename that creates a name can reach the disk before the
    /// data does). For the first status a client reads (queued), which then may sit for
    /// minutes; later rewrites replace it, which ext4 orders by itself (auto_da_alloc).
    NeverEmpty,
    /// Atomic rename only (progress updates).
    BestEffort,
}

/// The `status/` directory, through a handle (see [`Dir`]).
#[derive(Debug)]
pub struct StatusDir {
    dir: Dir,
}

/// Status files are small; a bigger one was not written by us and is not read.
const MAX_STATUS_BYTES: u64 = 4 * 1024 * 1024;

impl StatusDir {
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            dir: Dir::open(path)?,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, id: &RequestId) -> PathBuf {
        self.path().join(id.status_file_name())
    }

    /// Reads a status; `Ok(None)` when there is none. The directory is writable by clients, so
    /// this reads like an untrusted file: no symlinks, regular files only, bounded. A file that
    /// does not parse counts as absent, never as final.
    pub fn read(&self, id: &RequestId) -> io::Result<Option<Status>> {
        let file = match self.dir.open_untrusted(&id.status_file_name()) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !file.metadata()?.is_file() {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        file.take(MAX_STATUS_BYTES).read_to_end(&mut bytes)?;
        Ok(serde_json::from_slice(&bytes).ok())
    }

    pub fn has_final(&self, id: &RequestId) -> bool {
        matches!(self.read(id), Ok(Some(s)) if s.is_final())
    }

    /// Atomically replaces `status/<id>.json` with `status`. With `owner`, the file is given to
    /// that uid (the request's writer) so the client can delete it in a sticky directory.
    pub fn write(
        &self,
        id: &RequestId,
        status: &Status,
        durability: Durability,
        owner: Option<u32>,
    ) -> io::Result<()> {
        let mut json = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
        json.push(b'\n');
        write_atomic(&self.dir, &id.status_file_name(), &json, durability, owner)
    }

    /// Makes a status written with [`Durability::BestEffort`] durable without rewriting it.
    /// Returns `false` when it is gone: the client collected it already (it had the answer).
    pub fn make_durable(&self, id: &RequestId) -> io::Result<bool> {
        let file = match self.dir.open_untrusted(&id.status_file_name()) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        // The directory is writable by clients: only our own kind of file is worth a flush.
        if file.metadata()?.is_file() {
            file.sync_all()?;
        }
        self.dir.sync()?;
        Ok(true)
    }

    /// Publishes a non-status file (the inventory) atomically, readable by everyone.
    pub fn publish(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        write_atomic(&self.dir, name, bytes, Durability::BestEffort, None)
    }

    /// Flushes everything written to the status directory's filesystem (one call for a batch
    /// of statuses, instead of an fsync each).
    pub fn sync_filesystem(&self) -> io::Result<()> {
        self.dir.sync_filesystem()
    }

    /// Removes final statuses older than `retention` that nobody collected, except those of
    /// requests still in flight. Returns how many were removed.
    pub fn expire(
        &self,
        retention: std::time::Duration,
        in_flight: impl Fn(&RequestId) -> bool,
    ) -> io::Result<usize> {
        let mut removed = 0;
        for name in self.dir.names()? {
            let Some(id) = name.to_str().and_then(RequestId::from_file_name) else {
                continue;
            };
            let Ok(st) = self.dir.lstat(name.to_str().unwrap_or_default()) else {
                continue;
            };
            let modified =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(st.st_mtime.max(0) as u64);
            let old = modified.elapsed().is_ok_and(|age| age > retention);
            if old && !in_flight(&id) && self.has_final(&id) {
                self.dir.remove(&id.status_file_name())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes temp files a crash left behind, except those of requests for which
    /// `being_written` is true (a live monitor may be writing them right now).
    pub fn remove_stale_temp_files(
        &self,
        being_written: impl Fn(&RequestId) -> bool,
    ) -> io::Result<usize> {
        remove_temp_files(&self.dir, |target| {
            RequestId::from_file_name(target).is_some_and(|id| being_written(&id))
        })
    }
}

/// The file a temp file of [`write_atomic`] was going to become: `.<target>.<hex>.tmp`.
pub fn temp_target(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    Some(inner.rsplit_once('.')?.0)
}

/// Removes the temp files [`write_atomic`] left in `dir` when its writer died, except those
/// whose target `keep` says is still being written. Returns how many were removed.
pub fn remove_temp_files(dir: &Dir, keep: impl Fn(&str) -> bool) -> io::Result<usize> {
    let mut removed = 0;
    for name in dir.names()? {
        let Some(name) = name.to_str() else { continue };
        let Some(target) = temp_target(name) else {
            continue;
        };
        if !keep(target) {
            match dir.remove(name) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Temp file in the same directory (random name, exclusive create, so nothing planted can
/// redirect the write), optionally fsync, rename over `name`, optionally fsync the directory.
pub fn write_atomic(
    dir: &Dir,
    name: &str,
    bytes: &[u8],
    durability: Durability,
    owner: Option<u32>,
) -> io::Result<()> {
    let tmp = format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple());
    let foreign_owner = owner.filter(|&uid| uid != nix::unistd::geteuid().as_raw());
    // A file given to a client is private to it; our own files are world-readable.
    let mode = if foreign_owner.is_some() {
        0o600
    } else {
        0o644
    };
    let result = (|| {
        let mut file = dir.create_new(&tmp, mode)?;
        if let Some(uid) = foreign_owner {
            nix::unistd::fchown(&file, Some(nix::unistd::Uid::from_raw(uid)), None)?;
        }
        file.write_all(bytes)?;
        if durability != Durability::BestEffort {
            file.sync_all()?;
        }
        dir.rename(&tmp, name)
    })();
    if result.is_err() {
        let _ = dir.remove(&tmp);
    }
    result?;
    if durability == Durability::Durable {
        dir.sync()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn id(s: &str) -> RequestId {
        RequestId::parse(s).unwrap()
    }

    #[test]
    fn an_in_progress_status_has_null_success_and_is_not_final() {
        let s = Status {
            request_id: "a".into(),
            message: IN_PROGRESS.into(),
            phase: "queued".into(),
            ..Default::default()
        };
        assert!(!s.is_final());
        let json: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(json["success"], serde_json::Value::Null);
        assert_eq!(json["phase"], "queued");
        // Fields the existing client reads are always present.
        for key in [
            "success",
            "message",
            "output",
            "error",
            "phase",
            "timestamp",
        ] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
    }

    #[test]
    fn write_replaces_atomically_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let status_dir = StatusDir::open(dir.path()).unwrap();
        let mut s = Status {
            request_id: "r1".into(),
            message: IN_PROGRESS.into(),
            ..Default::default()
        };
        status_dir
            .write(&id("r1"), &s, Durability::BestEffort, None)
            .unwrap();
        s.message = "done".into();
        s.success = Some(true);
        status_dir
            .write(&id("r1"), &s, Durability::Durable, None)
            .unwrap();
        assert_eq!(status_dir.read(&id("r1")).unwrap().unwrap(), s);
        assert!(status_dir.has_final(&id("r1")));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["r1.json"]);
    }

    #[test]
    fn a_planted_symlink_at_the_status_name_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let status = dir.path().join("status");
        fs::create_dir(&status).unwrap();
        std::os::unix::fs::symlink(&victim, status.join("r1.json")).unwrap();
        let s = Status {
            request_id: "r1".into(),
            message: "done".into(),
            ..Default::default()
        };
        let status_dir = StatusDir::open(&status).unwrap();
        status_dir
            .write(&id("r1"), &s, Durability::Durable, None)
            .unwrap();
        // Reading does not follow a planted symlink either.
        std::os::unix::fs::symlink(&victim, status.join("r2.json")).unwrap();
        assert!(status_dir.read(&id("r2")).unwrap().is_none());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(
            !fs::symlink_metadata(status.join("r1.json"))
                .unwrap()
                .is_symlink()
        );
    }

    #[test]
    fn stale_temp_files_are_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".r1.json.abc.tmp"), "x").unwrap();
        fs::write(dir.path().join(".r3.json.abc.tmp"), "being written").unwrap();
        fs::write(dir.path().join("r2.json"), "{}").unwrap();
        let n = StatusDir::open(dir.path())
            .unwrap()
            .remove_stale_temp_files(|id| id.as_str() == "r3")
            .unwrap();
        assert_eq!(n, 1);
        assert!(dir.path().join("r2.json").exists());
        assert!(
            dir.path().join(".r3.json.abc.tmp").exists(),
            "still being written: kept"
        );
    }
}
