//! Run records in the state directory: what was accepted, whether it started, how its script
//! ended, and the final answer. A crash or power cut at any instant leaves records the next
//! start can interpret (see docs/durability.md for the write order).
//!
//! ```text
//! state/journal.jsonl            every durable record, appended (see [`journal`])
//! state/runs/<id>/run.json       a started run's spec, for its monitor (not flushed: the
//!                                journal has the durable copy)
//! state/runs/<id>/lock           held (flock) by the run's monitor while it lives
//! state/runs/<id>/launched       empty; created by the monitor just before it starts the script
//! state/runs/<id>/monitor.pid    the monitor's pid, once it can be signalled (for a cancel)
//! state/runs/<id>/stop           empty; a cancel came before the monitor could be signalled
//! state/exits/<id>.json          the monitor's record of how the script ended (not flushed:
//!                                the coordinator copies it into the journal and flushes that)
//! state/coordinator.lock         held by the running coordinator (see crate::instance)
//! ```
//! `runs/<id>/` lives from a run's start until it is concluded; nothing in it is flushed. The
//! file formats are in [`run`] (the accepted request, the run's spec), [`exit`] (the exit
//! record) and [`journal`] (the lines).

mod exit;
pub mod journal;
mod run;

pub use exit::ExitRecord;
pub use run::{Accepted, RunSpec};

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use serde::Deserialize;

use self::journal::{Entry, Journal, Loc};
use crate::dir::Dir;
use crate::request::RequestId;
use crate::status::{Durability, Status, remove_temp_files, write_atomic};

/// In a run's directory: a cancel asked the run to stop (read by a monitor that was not yet
/// ready to be signalled when the cancel came).
pub const STOP_MARKER: &str = "stop";

/// A journal this much larger than what it must keep is rewritten (compacted)...
const COMPACT_RATIO: u64 = 2;
/// ...once it is at least this large (a small journal is cheaper to keep than to rewrite).
const COMPACT_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// Where a run stands, as read back at start-up.
#[derive(Debug)]
pub enum RunState {
    /// Accepted, not started: goes back into the queue.
    Queued,
    /// Started; the monitor may still be alive (see [`RunStore::monitor_alive`]), and its
    /// exit may be known already (see [`RunStore::exit`]).
    Started(Box<RunSpec>),
    /// Answered.
    Finished(Box<Status>),
}

#[derive(Debug)]
pub struct RunRecord {
    pub accepted: Accepted,
    pub state: RunState,
}

/// What the journal holds for one request: where its latest lines are.
#[derive(Debug, Clone)]
struct Slot {
    accepted: Loc,
    accepted_at_ns: u128,
    started: Option<Loc>,
    exited: Option<Loc>,
    /// The final answer, and when it was given (nanoseconds since the epoch).
    finished: Option<(Loc, u128)>,
}

impl Slot {
    /// The lines a compacted journal keeps: the accepted request, then what still matters.
    fn live_lines(&self) -> Vec<Loc> {
        let mut lines = vec![self.accepted];
        match self.finished {
            Some((finished, _)) => lines.push(finished),
            None => lines.extend(self.started.iter().chain(&self.exited)),
        }
        lines
    }
}

/// The per-run files the coordinator and the monitors share: `runs/<id>/` and `exits/`.
/// Nothing here is flushed; what must survive a power cut is in the journal.
#[derive(Debug)]
pub struct RunFiles {
    root: PathBuf,
    runs: Dir,
    exits: Dir,
}

impl RunFiles {
    /// Opens `runs/` and `exits/` of the state directory (created by [`RunStore::open`]).
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        Ok(Self {
            root: state_dir.to_owned(),
            runs: Dir::open(&state_dir.join("runs"))?,
            exits: Dir::open(&state_dir.join("exits"))?,
        })
    }

    pub fn run_path(&self, id: &RequestId) -> PathBuf {
        self.root.join("runs").join(id.as_str())
    }

    fn run_dir(&self, id: &RequestId) -> io::Result<Dir> {
        self.runs.open_dir(id.as_str())
    }

    /// The spec the coordinator left for the run's monitor.
    pub fn spec(&self, id: &RequestId) -> Option<RunSpec> {
        read_json(&self.run_dir(id).ok()?, "run.json")
    }

    /// Written by the monitor just before it starts the script: without it (and with the
    /// run's lock free, in the same boot), the script certainly never ran and the run may
    /// start again. Not flushed: after a power cut a started run without an exit record is
    /// answered `interrupted` whether or not this survived.
    pub fn mark_launched(&self, id: &RequestId) -> io::Result<()> {
        match self.run_dir(id)?.create_new("launched", 0o600) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    }

    pub fn launched(&self, id: &RequestId) -> bool {
        self.run_dir(id)
            .is_ok_and(|dir| dir.lstat("launched").is_ok())
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

    /// The monitor's exit file (written atomically, not flushed).
    pub fn exit_file(&self, id: &RequestId) -> Option<ExitRecord> {
        read_json(&self.exits, &format!("{id}.json"))
    }

    /// By the monitor: how the script ended. Atomic (a reader sees all of it or nothing) but
    /// not flushed: the coordinator copies it into the journal with its next group flush, and
    /// only then shows the answer.
    pub fn write_exit(&self, id: &RequestId, record: &ExitRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
        write_atomic(
            &self.exits,
            &format!("{id}.json"),
            &bytes,
            Durability::BestEffort,
        )
    }

    /// Removes what the run left in `runs/` and `exits/` once it is concluded.
    pub fn forget(&self, id: &RequestId) {
        let _ = std::fs::remove_dir_all(self.run_path(id));
        let _ = self.exits.remove(&format!("{id}.json"));
    }
}

/// The state directory's records: the journal and the per-run files.
#[derive(Debug)]
pub struct RunStore {
    root: PathBuf,
    files: RunFiles,
    journal: Journal,
    index: HashMap<String, Slot>,
    /// Opened by an operator's command: nothing is written.
    read_only: bool,
}

impl RunStore {
    /// Opens (creating if needed, mode 0700) the state directory and replays its journal.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        for sub in ["runs", "exits"] {
            let path = state_dir.join(sub);
            std::fs::create_dir_all(&path)?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        }
        let (journal, entries) = Journal::open(state_dir)?;
        Self::with(state_dir, journal, entries, false)
    }

    /// Opens the state directory for reading only (the operator's commands, beside a live
    /// service): creates and repairs nothing.
    pub fn open_existing(state_dir: &Path) -> io::Result<Self> {
        let (journal, entries) = Journal::open_read_only(state_dir)?;
        Self::with(state_dir, journal, entries, true)
    }

    fn with(
        state_dir: &Path,
        journal: Journal,
        entries: Vec<(Loc, Entry)>,
        read_only: bool,
    ) -> io::Result<Self> {
        let mut store = Self {
            root: state_dir.to_owned(),
            files: RunFiles::open(state_dir)?,
            journal,
            index: HashMap::new(),
            read_only,
        };
        for (loc, entry) in entries {
            store.index_entry(loc, &entry);
        }
        Ok(store)
    }

    fn index_entry(&mut self, loc: Loc, entry: &Entry) {
        match entry {
            Entry::Accepted(accepted) => {
                self.index.insert(
                    accepted.request_id.clone(),
                    Slot {
                        accepted: loc,
                        accepted_at_ns: accepted.accepted_at_ns,
                        started: None,
                        exited: None,
                        finished: None,
                    },
                );
            }
            Entry::Started(_) => {
                if let Some(slot) = self.index.get_mut(entry.request_id()) {
                    slot.started = Some(loc);
                }
            }
            Entry::Unstarted { request_id } => {
                if let Some(slot) = self.index.get_mut(request_id) {
                    slot.started = None;
                }
            }
            Entry::Exited { request_id, .. } => {
                if let Some(slot) = self.index.get_mut(request_id) {
                    slot.exited = Some(loc);
                }
            }
            Entry::Finished {
                request_id, at_ns, ..
            } => {
                if let Some(slot) = self.index.get_mut(request_id) {
                    slot.finished = Some((loc, *at_ns));
                }
            }
        }
    }

    fn append(&mut self, entry: Entry) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::other("the run records are open read only"));
        }
        let loc = self.journal.append(&entry)?;
        self.index_entry(loc, &entry);
        Ok(())
    }

    /// Makes every record written so far durable, with one flush whatever their number
    /// (group commit). Returns whether it flushed.
    pub fn sync(&mut self) -> io::Result<bool> {
        self.journal.sync()
    }

    pub fn files(&self) -> &RunFiles {
        &self.files
    }

    pub fn exits_path(&self) -> PathBuf {
        self.root.join("exits")
    }

    pub fn run_path(&self, id: &RequestId) -> PathBuf {
        self.files.run_path(id)
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
        self.index.contains_key(id.as_str())
    }

    /// Records an accepted request: from the next [`RunStore::sync`] on it is never lost nor
    /// run twice. This record, not the request file, is what survives a power cut: clients
    /// write their request files without fsync, and after a cut the file is often empty.
    pub fn accept(&mut self, accepted: &Accepted) -> io::Result<()> {
        self.append(Entry::Accepted(accepted.clone()))
    }

    /// Records that a run starts, leaves its spec for the monitor and returns the lock the
    /// monitor will hold. The record must be flushed ([`RunStore::sync`]) before the monitor
    /// is started, so a crash can never lead to a re-run.
    pub fn start(&mut self, id: &RequestId, spec: &RunSpec) -> io::Result<File> {
        self.append(Entry::Started(Box::new(spec.clone())))?;
        match std::fs::create_dir(self.files.run_path(id)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let dir = self.files.run_dir(id)?;
        let bytes = serde_json::to_vec(spec).map_err(io::Error::other)?;
        write_atomic(&dir, "run.json", &bytes, Durability::BestEffort)?;
        match dir.create_new("lock", 0o600) {
            Ok(file) => Ok(file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => dir.open_untrusted("lock"),
            Err(e) => Err(e),
        }
    }

    /// Forgets that a run started (it never launched), so it can start again.
    pub fn unstart(&mut self, id: &RequestId) -> io::Result<()> {
        self.append(Entry::Unstarted {
            request_id: id.to_string(),
        })?;
        let _ = std::fs::remove_dir_all(self.files.run_path(id));
        Ok(())
    }

    pub fn launched(&self, id: &RequestId) -> bool {
        self.files.launched(id)
    }

    pub fn monitor_alive(&self, id: &RequestId) -> bool {
        self.files.monitor_alive(id)
    }

    fn slot(&self, id: &RequestId) -> Option<&Slot> {
        self.index.get(id.as_str())
    }

    pub fn spec(&self, id: &RequestId) -> Option<RunSpec> {
        match self.journal.entry(self.slot(id)?.started?)? {
            Entry::Started(spec) => Some(*spec),
            _ => None,
        }
    }

    /// How the run's script ended, if known: from the journal, or from the monitor's exit
    /// file not yet copied there.
    pub fn exit(&self, id: &RequestId) -> Option<ExitRecord> {
        self.journal_exit(id).or_else(|| self.files.exit_file(id))
    }

    /// The exit record, only if the journal has it.
    pub fn journal_exit(&self, id: &RequestId) -> Option<ExitRecord> {
        match self.journal.entry(self.slot(id)?.exited?)? {
            Entry::Exited { record, .. } => Some(*record),
            _ => None,
        }
    }

    /// Copies the exit record into the journal (durable with the next [`RunStore::sync`]).
    pub fn record_exit(&mut self, id: &RequestId, record: &ExitRecord) -> io::Result<()> {
        self.append(Entry::Exited {
            request_id: id.to_string(),
            record: Box::new(record.clone()),
        })
    }

    /// Records the final answer; kept for idempotency until the retention period ends.
    pub fn finish(&mut self, id: &RequestId, status: &Status) -> io::Result<()> {
        self.append(Entry::Finished {
            request_id: id.to_string(),
            at_ns: now_ns(),
            status: Box::new(status.clone()),
        })
    }

    /// Who wrote request `id` (its spool's name and the uid that owned its file), if it is
    /// recorded.
    pub fn owner(&self, id: &RequestId) -> Option<(String, u32)> {
        let accepted = self.accepted(self.slot(id)?)?;
        Some((accepted.spool, accepted.owner_uid))
    }

    fn accepted(&self, slot: &Slot) -> Option<Accepted> {
        match self.journal.entry(slot.accepted)? {
            Entry::Accepted(accepted) => Some(accepted),
            _ => None,
        }
    }

    pub fn final_status(&self, id: &RequestId) -> Option<Status> {
        match self.journal.entry(self.slot(id)?.finished?.0)? {
            Entry::Finished { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Every record, oldest accepted first. What a crash left in `runs/` and `exits/` (temp
    /// files, the directories of runs no longer running) is removed on the way, except for
    /// live monitors.
    pub fn load(&self) -> io::Result<(Vec<RunRecord>, Vec<String>)> {
        let mut problems = Vec::new();
        // Only the coordinator writes in the state directory itself (the inventory, the
        // journal's compaction).
        remove_temp_files(&Dir::open(&self.root)?, |_| false)?;
        remove_temp_files(&self.files.exits, |target| {
            RequestId::from_file_name(target).is_some_and(|id| self.monitor_alive(&id))
        })?;
        for name in self.files.runs.names()? {
            let Some(name) = name.to_str() else { continue };
            let Ok(id) = RequestId::parse(name) else {
                problems.push(format!("runs/{name}: not a request id"));
                continue;
            };
            if self.monitor_alive(&id) {
                continue;
            }
            let running = self
                .slot(&id)
                .is_some_and(|s| s.started.is_some() && s.finished.is_none());
            if running {
                remove_temp_files(&self.files.run_dir(&id)?, |_| false)?;
            } else {
                // Concluded (or never recorded as started): nothing will read it again.
                let _ = std::fs::remove_dir_all(self.run_path(&id));
            }
        }
        Ok((self.records(), problems))
    }

    /// Every record, as [`RunStore::load`], but changing nothing: for the operator's
    /// commands, which run beside a live service.
    pub fn read(&self) -> io::Result<(Vec<RunRecord>, Vec<String>)> {
        Ok((self.records(), Vec::new()))
    }

    fn records(&self) -> Vec<RunRecord> {
        let mut slots: Vec<&Slot> = self.index.values().collect();
        slots.sort_by_key(|slot| (slot.accepted_at_ns, slot.accepted.offset));
        slots
            .into_iter()
            .filter_map(|slot| {
                let accepted = self.accepted(slot)?;
                let state = match (slot.finished, slot.started) {
                    (Some((loc, _)), _) => match self.journal.entry(loc)? {
                        Entry::Finished { status, .. } => RunState::Finished(status),
                        _ => return None,
                    },
                    (None, Some(loc)) => match self.journal.entry(loc)? {
                        Entry::Started(spec) => RunState::Started(spec),
                        _ => return None,
                    },
                    (None, None) => RunState::Queued,
                };
                Some(RunRecord { accepted, state })
            })
            .collect()
    }

    /// Forgets finished records older than `retention`, and compacts the journal when that
    /// (or everything since the last compaction) left it mostly dead lines. Returns how many
    /// records were forgotten.
    pub fn expire(&mut self, retention: Duration) -> io::Result<usize> {
        let cutoff = now_ns().saturating_sub(retention.as_nanos());
        let before = self.index.len();
        self.index
            .retain(|_, slot| slot.finished.is_none_or(|(_, at)| at >= cutoff));
        let removed = before - self.index.len();
        if removed > 0 {
            // Gone from the file too, not only from memory (an hourly rewrite at most).
            self.compact()?;
        } else {
            self.compact_if_worth_it()?;
        }
        Ok(removed)
    }

    /// Rewrites the journal with only its live lines, when dead ones make up most of it.
    pub fn compact_if_worth_it(&mut self) -> io::Result<bool> {
        if self.read_only || self.journal.size_bytes() < COMPACT_MIN_BYTES {
            return Ok(false);
        }
        let live: u64 = self
            .index
            .values()
            .flat_map(Slot::live_lines)
            .map(|loc| u64::from(loc.len))
            .sum();
        if self.journal.size_bytes() < live * COMPACT_RATIO {
            return Ok(false);
        }
        self.compact()?;
        Ok(true)
    }

    /// Rewrites the journal with only the lines the index still needs, oldest request first.
    /// The index is then rebuilt from the new journal, as at start-up.
    pub fn compact(&mut self) -> io::Result<()> {
        let mut slots: Vec<&Slot> = self.index.values().collect();
        slots.sort_by_key(|slot| (slot.accepted_at_ns, slot.accepted.offset));
        let keep: Vec<Loc> = slots.into_iter().flat_map(Slot::live_lines).collect();
        let lines = self.journal.compact(&keep)?;
        self.index.clear();
        for (loc, entry) in lines {
            self.index_entry(loc, &entry);
        }
        Ok(())
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
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

    fn finished(id: &str) -> Status {
        Status {
            request_id: id.into(),
            message: "done".into(),
            success: Some(true),
            ..Default::default()
        }
    }

    #[test]
    fn records_move_from_queued_to_started_to_finished() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = RunStore::open(tmp.path()).unwrap();
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
        assert!(
            store.files().spec(&r.id).is_some(),
            "the monitor's copy of the spec"
        );
        assert!(!store.monitor_alive(&r.id), "nobody holds the lock yet");
        let held = Flock::lock(lock, FlockArg::LockExclusiveNonblock).unwrap();
        assert!(store.monitor_alive(&r.id), "the lock is held");
        drop(held);
        assert!(!store.monitor_alive(&r.id), "released when its holder goes");

        store.finish(&r.id, &finished("r1")).unwrap();
        assert!(
            matches!(&store.load().unwrap().0[0].state, RunState::Finished(s) if s.success == Some(true))
        );
        assert!(
            !store.run_path(&r.id).exists(),
            "a finished run's directory is removed at start-up"
        );
        assert_eq!(store.expire(Duration::from_secs(3600)).unwrap(), 0);
        assert_eq!(store.expire(Duration::ZERO).unwrap(), 1);
        assert!(store.load().unwrap().0.is_empty());
    }

    #[test]
    fn a_reopened_store_knows_what_the_journal_says_and_nothing_more() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = RunStore::open(tmp.path()).unwrap();
        let (queued, ran) = (request("q1"), request("s1"));
        for r in [&queued, &ran] {
            store
                .accept(&Accepted::new(r, "main", "x.json", 1000))
                .unwrap();
        }
        let accepted = Accepted::new(&ran, "main", "s1.json", 1000);
        drop(store.start(&ran.id, &spec(&accepted)).unwrap());
        let record = ExitRecord::from_result(
            &Err(io::ErrorKind::NotFound.into()),
            &crate::status::Phase::Running,
        );
        store.files().write_exit(&ran.id, &record).unwrap();
        assert!(store.exit(&ran.id).is_some(), "from the monitor's file");
        assert!(store.journal_exit(&ran.id).is_none());
        store.record_exit(&ran.id, &record).unwrap();
        store.finish(&ran.id, &finished("s1")).unwrap();
        assert!(store.sync().unwrap());
        drop(store);

        let store = RunStore::open(tmp.path()).unwrap();
        assert!(store.exists(&queued.id) && store.exists(&ran.id));
        assert!(!store.exists(&request("other").id));
        assert_eq!(store.owner(&ran.id), Some((String::new(), 1000)));
        assert_eq!(store.final_status(&ran.id).unwrap().message, "done");
        assert!(store.journal_exit(&ran.id).is_some());
        let reader = RunStore::open_existing(tmp.path()).unwrap();
        let (records, _) = reader.read().unwrap();
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn compaction_keeps_every_record_that_still_matters() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = RunStore::open(tmp.path()).unwrap();
        let ids: Vec<Request> = (0..20).map(|i| request(&format!("r{i}"))).collect();
        for (i, r) in ids.iter().enumerate() {
            let accepted = Accepted::new(r, "main", "x.json", 1000);
            store.accept(&accepted).unwrap();
            if i % 2 == 0 {
                drop(store.start(&r.id, &spec(&accepted)).unwrap());
            }
            if i % 4 == 0 {
                store.finish(&r.id, &finished(r.id.as_str())).unwrap();
            }
        }
        let before = store.read().unwrap().0;
        store.compact().unwrap();
        let after = RunStore::open(tmp.path()).unwrap().read().unwrap().0;
        let summary = |records: &[RunRecord]| -> Vec<(String, &'static str)> {
            records
                .iter()
                .map(|r| {
                    let state = match r.state {
                        RunState::Queued => "queued",
                        RunState::Started(_) => "started",
                        RunState::Finished(_) => "finished",
                    };
                    (r.accepted.request_id.clone(), state)
                })
                .collect()
        };
        assert_eq!(summary(&before), summary(&after));
        assert_eq!(summary(&store.read().unwrap().0), summary(&before));
    }
}
