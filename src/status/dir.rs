//! The `status/` directory: where answers and progress records are read and written. Its
//! own file because `status/` is writable by clients: every read is of an untrusted file,
//! every name the coordinator writes may hold something planted, and a record a client
//! deleted must stay deleted.
//!
//! Only the first progress record is created; later ones replace it only while it is there,
//! so a record a client deleted is never re-created. Final statuses are fsynced (file, then
//! directory) before anything depends on them, i.e. before the request file is removed.
//! Progress records are not: losing one costs nothing, because the request file is still in
//! `requests/` until the final status is durable.

use std::io::{self, Read};
use std::path::Path;

use super::Status;
use super::atomic::{Durability, Place, write_via};
use crate::dir::Dir;
use crate::request::RequestId;

/// How a progress record may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The request's first record (at acceptance): created.
    First,
    /// Every later one: replaces the record only while it is there. A record the client
    /// deleted (or the coordinator withdrew for a hand-off) stays deleted.
    Update,
    /// Written again at start-up for an in-flight request whose record may have been lost in
    /// a power cut: re-created where it is a file of its own (only the coordinator removes
    /// that), only replaced where it is the status file (a client may have deleted that).
    Restore,
}

/// The `status/` directory, through a handle (see [`Dir`]).
#[derive(Debug)]
pub struct StatusDir {
    dir: Dir,
    /// Progress records live in `<id>.json` instead of `<id>.progress.json`.
    progress_in_status: bool,
}

/// Status files are small; a bigger one was not written by us and is not read.
const MAX_STATUS_BYTES: u64 = 4 * 1024 * 1024;

impl StatusDir {
    pub fn open(path: &Path, progress_in_status: bool) -> io::Result<Self> {
        Ok(Self {
            dir: Dir::open(path)?,
            progress_in_status,
        })
    }

    fn progress_name(&self, id: &RequestId) -> String {
        if self.progress_in_status {
            id.status_file_name()
        } else {
            id.progress_file_name()
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Reads a status; `Ok(None)` when there is none. The directory is writable by clients, so
    /// this reads like an untrusted file: no symlinks, regular files only, bounded. A file that
    /// does not parse counts as absent, never as final.
    pub fn read(&self, id: &RequestId) -> io::Result<Option<Status>> {
        self.read_name(&id.status_file_name())
    }

    /// Reads a request's progress record, wherever this spool keeps it (see [`Self::read`]).
    pub fn read_progress(&self, id: &RequestId) -> io::Result<Option<Status>> {
        Ok(self
            .read_name(&self.progress_name(id))?
            .filter(|status| !status.is_final()))
    }

    /// What a client polling the request sees now, whichever way the spool keeps progress:
    /// the status file (the answer, or with `progress_in_status` the progress record), else
    /// the progress record beside it. How the project's own clients poll.
    pub fn read_latest(&self, id: &RequestId) -> io::Result<Option<Status>> {
        match self.read(id)? {
            Some(status) => Ok(Some(status)),
            None => self.read_name(&id.progress_file_name()),
        }
    }

    fn read_name(&self, name: &str) -> io::Result<Option<Status>> {
        let file = match self.dir.open_untrusted(name) {
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

    /// Atomically writes the final answer to `status/<id>.json`, then removes the progress
    /// record beside it. With `owner`, the file is given to that uid (the request's writer)
    /// so the client can delete it in a sticky directory.
    pub fn answer(
        &self,
        id: &RequestId,
        status: &Status,
        durability: Durability,
        owner: Option<u32>,
    ) -> io::Result<()> {
        debug_assert!(status.is_final(), "an answer must be final");
        let json = to_json(status)?;
        self.write(
            &id.status_file_name(),
            &json,
            durability,
            owner,
            Place::Always,
        )?;
        if !self.progress_in_status {
            match self.dir.remove(&id.progress_file_name()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes a request's progress record (see [`Progress`] for when it is created).
    /// Returns `false` when it was not written because the record is gone.
    pub fn progress(
        &self,
        id: &RequestId,
        status: &Status,
        durability: Durability,
        owner: Option<u32>,
        how: Progress,
    ) -> io::Result<bool> {
        debug_assert!(!status.is_final(), "a progress record is never final");
        let place = match how {
            Progress::First => Place::Always,
            Progress::Restore if !self.progress_in_status => Place::Always,
            Progress::Update | Progress::Restore => Place::OnlyOverExisting,
        };
        match self.write(
            &self.progress_name(id),
            &to_json(status)?,
            durability,
            owner,
            place,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound && place == Place::OnlyOverExisting => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Clears the status name of a request just accepted: nothing legitimate can be there yet,
    /// so whatever is (a forged "answer" a writer planted for an id it guessed, a directory,
    /// a FIFO) is removed or quarantined, and the client only ever finds the real answer.
    /// With `progress_in_status` the first progress record replaces it instead.
    pub fn claim(&self, id: &RequestId) -> io::Result<()> {
        if self.progress_in_status {
            return Ok(());
        }
        let name = id.status_file_name();
        match self.dir.remove(&name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::libc::EISDIR) => {
                crate::spool::quarantine(&self.dir, &name)
            }
            other => {
                if other.is_ok() {
                    tracing::warn!(request_id = %id, "removed a status file planted for a request that had none yet");
                }
                other
            }
        }
    }

    /// Removes a request's progress record, so that nothing but its answer is found under
    /// its name from now on (the self-update hand-off, see the daemon). Returns whether
    /// there was one.
    pub fn withdraw_progress(&self, id: &RequestId) -> io::Result<bool> {
        match self.dir.remove(&self.progress_name(id)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The status file is there but holds no final answer: after a power cut an answer
    /// written without a flush can come back empty, or as the progress record it replaced.
    pub fn lost_answer(&self, id: &RequestId) -> bool {
        let there = self
            .dir
            .lstat(&id.status_file_name())
            .is_ok_and(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG);
        there && !self.has_final(id)
    }

    /// Publishes a non-status file (the inventory) atomically, readable by everyone.
    pub fn publish(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.write(name, bytes, Durability::BestEffort, None, Place::Always)
    }

    /// [`write_via`] for `status/`, which clients can write to. The temp file's name is random
    /// and carries no request id (a writer watching `status/` learns nothing from it). The
    /// coordinator owns every name it writes: whatever a writer planted there is moved aside
    /// (a symlink, FIFO or file is simply replaced by the rename; a directory is quarantined).
    fn write(
        &self,
        name: &str,
        bytes: &[u8],
        durability: Durability,
        owner: Option<u32>,
        place: Place,
    ) -> io::Result<()> {
        let temp = || format!(".{}.tmp", uuid::Uuid::new_v4().simple());
        match write_via(&self.dir, &temp(), name, bytes, durability, owner, place) {
            Err(e) if is_directory_in_the_way(&e) => {
                crate::spool::quarantine(&self.dir, name)?;
                tracing::warn!(
                    file = name,
                    "a directory planted at a status file's name was moved to quarantine/"
                );
                write_via(&self.dir, &temp(), name, bytes, durability, owner, place)
            }
            other => other,
        }
    }

    /// Flushes everything written to the status directory's filesystem (one call for a batch
    /// of statuses, instead of an fsync each).
    pub fn sync_filesystem(&self) -> io::Result<()> {
        self.dir.sync_filesystem()
    }

    /// Removes final statuses older than `retention` that nobody collected, except those of
    /// requests still in flight, and progress records of requests no longer in flight (a
    /// crash between an answer and the removal of its progress record). Returns how many
    /// were removed.
    pub fn expire(
        &self,
        retention: std::time::Duration,
        in_flight: impl Fn(&RequestId) -> bool,
    ) -> io::Result<usize> {
        let mut removed = 0;
        for name in self.dir.names()? {
            if let Some(id) = name.to_str().and_then(RequestId::from_progress_file_name)
                && !in_flight(&id)
            {
                match self.dir.remove(&id.progress_file_name()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
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

    /// Removes temp files a crash left behind (called at start-up, before anything of ours
    /// writes here). Their names say nothing about their request, so a live monitor's temp
    /// file, which exists for microseconds, may go too: that costs it one progress update,
    /// never an answer. Returns how many were removed.
    pub fn remove_stale_temp_files(&self) -> io::Result<usize> {
        let mut removed = 0;
        for name in self.dir.names()? {
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with('.') && name.ends_with(".tmp")) {
                continue;
            }
            let Ok(st) = self.dir.lstat(name) else {
                continue;
            };
            let regular = st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG;
            // Not ours if it is not a plain file: left alone (and never descended into).
            if regular && self.dir.remove(name).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// `rename` over a directory fails like this (a file cannot replace a directory).
fn is_directory_in_the_way(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EISDIR | nix::libc::ENOTEMPTY | nix::libc::EEXIST)
    )
}

fn to_json(status: &Status) -> io::Result<Vec<u8>> {
    let mut json = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
    json.push(b'\n');
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{IN_PROGRESS, Phase};
    use std::fs;

    fn id(s: &str) -> RequestId {
        RequestId::parse(s).unwrap()
    }

    fn in_progress(phase: Phase) -> Status {
        Status {
            request_id: "r1".into(),
            message: IN_PROGRESS.into(),
            phase,
            ..Default::default()
        }
    }

    /// Writes a progress record in `phase` for request `r`, as the daemon does (best effort);
    /// whether it was written.
    fn show(status_dir: &StatusDir, r: &str, phase: Phase, how: Progress) -> bool {
        status_dir
            .progress(
                &id(r),
                &in_progress(phase),
                Durability::BestEffort,
                None,
                how,
            )
            .unwrap()
    }

    /// A status directory in a fresh temporary directory.
    fn status_dir(progress_in_status: bool) -> (tempfile::TempDir, StatusDir) {
        let dir = tempfile::tempdir().unwrap();
        let status_dir = StatusDir::open(dir.path(), progress_in_status).unwrap();
        (dir, status_dir)
    }

    /// Writes [`done`] as request `r`'s answer, as the daemon does (durably).
    fn answer_done(status_dir: &StatusDir, r: &str) {
        status_dir
            .answer(&id(r), &done(), Durability::Durable, None)
            .unwrap();
    }

    fn done() -> Status {
        Status {
            request_id: "r1".into(),
            message: "done".into(),
            success: Some(true),
            ..Default::default()
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn by_default_the_status_file_holds_only_the_answer_and_progress_goes_beside_it() {
        let (dir, status_dir) = status_dir(false);
        let r1 = id("r1");
        assert!(show(&status_dir, "r1", Phase::Queued, Progress::First));
        assert!(show(&status_dir, "r1", Phase::Running, Progress::Update));
        assert_eq!(names(dir.path()), ["r1.progress.json"]);
        // A client that takes the first status it can parse finds nothing yet.
        assert_eq!(status_dir.read(&r1).unwrap(), None);
        assert_eq!(
            status_dir.read_latest(&r1).unwrap().unwrap().phase,
            Phase::Running
        );
        answer_done(&status_dir, "r1");
        // The answer replaces the progress record: nothing else is left, no temp file either.
        assert_eq!(names(dir.path()), ["r1.json"]);
        assert_eq!(status_dir.read(&r1).unwrap().unwrap(), done());
        assert_eq!(status_dir.read_latest(&r1).unwrap().unwrap(), done());
        assert!(status_dir.has_final(&r1));
        // Lost in a power cut: restored (nobody but the coordinator removes it).
        let r2 = id("r2");
        assert!(
            status_dir
                .progress(
                    &r2,
                    &in_progress(Phase::Queued),
                    Durability::NeverEmpty,
                    None,
                    Progress::Restore
                )
                .unwrap()
        );
        assert!(dir.path().join("r2.progress.json").exists());
    }

    #[test]
    fn in_the_status_file_a_progress_record_the_client_deleted_is_never_recreated() {
        let (dir, status_dir) = status_dir(true);
        let r1 = id("r1");
        assert!(show(&status_dir, "r1", Phase::Queued, Progress::First));
        assert_eq!(names(dir.path()), ["r1.json"]);
        assert_eq!(status_dir.read(&r1).unwrap().unwrap().phase, Phase::Queued);
        assert!(show(&status_dir, "r1", Phase::Running, Progress::Update));
        assert_eq!(
            status_dir.read_progress(&r1).unwrap().unwrap().phase,
            Phase::Running
        );
        // An old client took it for the answer and deleted it.
        fs::remove_file(dir.path().join("r1.json")).unwrap();
        assert!(!show(
            &status_dir,
            "r1",
            Phase::from("installing"),
            Progress::Update
        ));
        assert!(!show(
            &status_dir,
            "r1",
            Phase::from("installing"),
            Progress::Restore
        ));
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
        // The answer is always written.
        answer_done(&status_dir, "r1");
        assert_eq!(names(dir.path()), ["r1.json"]);
        // Withdrawn for a hand-off: the same.
        let r2 = id("r2");
        show(&status_dir, "r2", Phase::Queued, Progress::First);
        assert!(status_dir.withdraw_progress(&r2).unwrap());
        assert!(!show(&status_dir, "r2", Phase::Running, Progress::Update));
        assert_eq!(names(dir.path()), ["r1.json"]);
    }

    #[test]
    fn orphaned_progress_records_are_expired() {
        let (dir, status_dir) = status_dir(false);
        for name in ["gone", "alive"] {
            show(&status_dir, name, Phase::Running, Progress::First);
        }
        let removed = status_dir
            .expire(std::time::Duration::from_secs(3600), |id| {
                id.as_str() == "alive"
            })
            .unwrap();
        assert_eq!(removed, 1);
        assert_eq!(names(dir.path()), ["alive.progress.json"]);
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
        let status_dir = StatusDir::open(&status, false).unwrap();
        status_dir
            .answer(&id("r1"), &s, Durability::Durable, None)
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
    fn temp_files_left_by_a_crash_are_cleaned_up() {
        let (dir, status_dir) = status_dir(false);
        fs::write(dir.path().join(".0123abcd.tmp"), "left by a crash").unwrap();
        fs::write(
            dir.path().join(".r1.json.abc.tmp"),
            "left by an older version",
        )
        .unwrap();
        fs::create_dir(dir.path().join(".planted.tmp")).unwrap();
        fs::write(dir.path().join("r2.json"), "{}").unwrap();
        assert_eq!(status_dir.remove_stale_temp_files().unwrap(), 2);
        assert_eq!(names(dir.path()), [".planted.tmp", "r2.json"]);
    }

    #[test]
    fn a_directory_planted_at_a_status_name_is_quarantined_and_the_answer_written() {
        let root = tempfile::tempdir().unwrap();
        let status = root.path().join("status");
        fs::create_dir_all(status.join("r1.json/inner")).unwrap();
        fs::create_dir_all(status.join("r1.progress.json")).unwrap();
        let status_dir = StatusDir::open(&status, false).unwrap();
        assert!(show(&status_dir, "r1", Phase::Queued, Progress::First));
        answer_done(&status_dir, "r1");
        assert_eq!(status_dir.read(&id("r1")).unwrap().unwrap(), done());
        assert_eq!(names(&status), ["r1.json"]);
        assert_eq!(names(&root.path().join("quarantine")).len(), 2);
    }
}
