//! The journal (`state/journal.jsonl`): every durable fact about every request, appended one
//! JSON line at a time by the coordinator alone. Appending costs no flush; [`Journal::sync`]
//! makes everything appended so far durable with one `fdatasync`, however many requests it
//! covers (group commit: the daemon calls it once per loop turn, before anything that depends
//! on those records becomes visible). See docs/durability.md for which records must be durable
//! before what.
//!
//! A power cut can leave the end of the file torn (a partial line, or zeros where the data
//! never reached the disk). Only the coordinator writes, one whole line per `write`, and a
//! failed write is cut back off, so the file is always valid lines followed by at most one torn
//! tail: readers stop at the first line that is not a complete JSON object, and the coordinator
//! truncates the tail at start-up, before appending again.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Accepted, ExitRecord, RunSpec};
use crate::dir::Dir;
use crate::status::Status;

pub const FILE: &str = "journal.jsonl";

/// One line of the journal. Per request id the latest line decides where it stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    /// Taken from the spool: from now on never lost, never run twice.
    Accepted(Accepted),
    /// About to run: written (and flushed) before its monitor exists.
    Started(Box<RunSpec>),
    /// A start that never launched its script, undone at a restart: queued again.
    Unstarted { request_id: String },
    /// How its script ended (copied from the monitor's exit file).
    Exited {
        request_id: String,
        record: Box<ExitRecord>,
    },
    /// Its final answer.
    Finished {
        request_id: String,
        /// Nanoseconds since the epoch: when it was answered (for the retention period).
        at_ns: u128,
        status: Box<Status>,
    },
}

impl Entry {
    pub fn request_id(&self) -> &str {
        match self {
            Entry::Accepted(accepted) => &accepted.request_id,
            Entry::Started(spec) => &spec.accepted.request_id,
            Entry::Unstarted { request_id }
            | Entry::Exited { request_id, .. }
            | Entry::Finished { request_id, .. } => request_id,
        }
    }
}

/// Where one line is in the file (its newline included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub offset: u64,
    pub len: u32,
}

/// The valid lines of a journal's bytes, in order, and where the valid part ends. Pure, so the
/// fuzzer can feed it anything.
pub fn parse(bytes: &[u8]) -> (Vec<(Loc, Entry)>, u64) {
    let mut entries = Vec::new();
    let mut offset = 0usize;
    while let Some(end) = bytes[offset..].iter().position(|&b| b == b'\n') {
        let line = &bytes[offset..offset + end];
        let Ok(entry) = serde_json::from_slice::<Entry>(line) else {
            break;
        };
        let len = end + 1;
        entries.push((
            Loc {
                offset: offset as u64,
                len: len as u32,
            },
            entry,
        ));
        offset += len;
    }
    (entries, offset as u64)
}

/// The valid lines of a journal, in order, with where each is.
pub type Lines = Vec<(Loc, Entry)>;

/// The journal, open for appending.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Bytes of valid lines: where the next line goes.
    len: u64,
    /// Lines were appended since the last flush.
    dirty: bool,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir` and replays it; a torn tail is cut off
    /// first. Returns the journal and its lines.
    pub fn open(dir: &Path) -> io::Result<(Self, Lines)> {
        let path = dir.join(FILE);
        let created = !path.exists();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)?;
        if created {
            // The name must survive a power cut as much as what is appended under it.
            Dir::open(dir)?.sync()?;
        }
        let (journal, entries, read) = Self::replay(file, path)?;
        if journal.len == read {
            // What an earlier process appended may still be only in the page cache (it was
            // killed before its flush): durable before anything is done on it.
            journal.file.sync_data()?;
        } else {
            tracing::warn!(
                path = %journal.path.display(),
                valid_bytes = journal.len,
                torn_bytes = read - journal.len,
                "the journal ends with a torn line (a crash or power cut while it was written); cut off"
            );
            journal.file.set_len(journal.len)?;
            journal.file.sync_data()?;
        }
        Ok((journal, entries))
    }

    /// Opens the journal in `dir` for reading only, beside a live service: nothing is cut
    /// off or created (a torn tail is simply not read).
    pub fn open_read_only(dir: &Path) -> io::Result<(Self, Lines)> {
        let path = dir.join(FILE);
        let file = File::open(&path)?;
        let (journal, entries, _) = Self::replay(file, path)?;
        Ok((journal, entries))
    }

    /// Reads the whole file: the journal positioned after its valid lines, those lines, and
    /// how many bytes the file had.
    fn replay(mut file: File, path: PathBuf) -> io::Result<(Self, Lines, u64)> {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (entries, len) = parse(&bytes);
        let journal = Self {
            file,
            path,
            len,
            dirty: false,
        };
        Ok((journal, entries, bytes.len() as u64))
    }

    /// Appends one line; durable only after the next [`Journal::sync`].
    pub fn append(&mut self, entry: &Entry) -> io::Result<Loc> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line) {
            // Never leave half a line for the next one to follow (readers stop there).
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        let loc = Loc {
            offset: self.len,
            len: line.len() as u32,
        };
        self.len += line.len() as u64;
        self.dirty = true;
        Ok(loc)
    }

    /// Makes every line appended so far durable: one `fdatasync`, or nothing if there is
    /// nothing new. Returns whether it flushed.
    pub fn sync(&mut self) -> io::Result<bool> {
        if !self.dirty {
            return Ok(false);
        }
        self.file.sync_data()?;
        self.dirty = false;
        Ok(true)
    }

    /// The bytes of one line, as written.
    pub fn line(&self, loc: Loc) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0; loc.len as usize];
        self.file.read_exact_at(&mut bytes, loc.offset)?;
        Ok(bytes)
    }

    pub fn entry(&self, loc: Loc) -> Option<Entry> {
        serde_json::from_slice(self.line(loc).ok()?.trim_ascii_end()).ok()
    }

    pub fn size_bytes(&self) -> u64 {
        self.len
    }

    /// Replaces the journal with only the lines at `keep` (in that order), durably: a temp
    /// file, flushed, renamed over the journal, the directory flushed. Returns the new
    /// journal's lines, read back from what was written.
    pub fn compact(&mut self, keep: &[Loc]) -> io::Result<Lines> {
        let dir_path = self.path.parent().unwrap_or(Path::new("/")).to_owned();
        let dir = Dir::open(&dir_path)?;
        let tmp = format!(".{FILE}.{}.tmp", uuid::Uuid::new_v4().simple());
        let mut bytes = Vec::new();
        let written = (|| {
            for &loc in keep {
                bytes.extend_from_slice(&self.line(loc)?);
            }
            let mut file = dir.create_new(&tmp, 0o600)?;
            file.write_all(&bytes)?;
            file.sync_data()?;
            dir.rename(&tmp, FILE)?;
            dir.sync()
        })();
        if let Err(e) = written {
            let _ = dir.remove(&tmp);
            return Err(e);
        }
        self.file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)?;
        let (lines, len) = parse(&bytes);
        self.len = len;
        self.dirty = false;
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unstarted(id: &str) -> Entry {
        Entry::Unstarted {
            request_id: id.into(),
        }
    }

    #[test]
    fn lines_appended_are_read_back_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut journal, entries) = Journal::open(tmp.path()).unwrap();
        assert!(entries.is_empty());
        let a = journal.append(&unstarted("a")).unwrap();
        let b = journal.append(&unstarted("b")).unwrap();
        assert!(journal.sync().unwrap(), "something to flush");
        assert!(!journal.sync().unwrap(), "nothing new: no flush");
        assert_eq!(journal.entry(b).unwrap().request_id(), "b");
        let (_, again) = Journal::open(tmp.path()).unwrap();
        let ids: Vec<_> = again.iter().map(|(_, e)| e.request_id()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!((again[0].0, again[1].0), (a, b));
    }

    #[test]
    fn a_torn_tail_is_cut_off_at_start_up_and_appending_goes_on_after_the_valid_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(tmp.path()).unwrap();
        journal.append(&unstarted("a")).unwrap();
        drop(journal);
        let path = tmp.path().join(FILE);
        for torn in [&b"{\"unstarted\":{\"request_"[..], &[0u8; 64][..]] {
            let mut bytes = std::fs::read(&path).unwrap();
            bytes.extend_from_slice(torn);
            std::fs::write(&path, &bytes).unwrap();
            let (mut journal, entries) = Journal::open(tmp.path()).unwrap();
            assert_eq!(entries.len(), 1);
            journal.append(&unstarted("b")).unwrap();
            let (_, entries) = Journal::open(tmp.path()).unwrap();
            assert_eq!(entries.len(), 2, "the new line follows the valid ones");
            // Back to one line for the next round.
            drop(journal);
            std::fs::write(
                &path,
                &std::fs::read(&path).unwrap()[..entries[0].0.len as usize],
            )
            .unwrap();
        }
    }

    #[test]
    fn compaction_keeps_only_the_lines_asked_for() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(tmp.path()).unwrap();
        let locs: Vec<Loc> = ["a", "b", "c"]
            .iter()
            .map(|id| journal.append(&unstarted(id)).unwrap())
            .collect();
        let moved = journal.compact(&[locs[2], locs[0]]).unwrap();
        assert_eq!(journal.entry(moved[0].0).unwrap().request_id(), "c");
        journal.append(&unstarted("d")).unwrap();
        let ids: Vec<String> = Journal::open_read_only(tmp.path())
            .unwrap()
            .1
            .iter()
            .map(|(_, e)| e.request_id().to_owned())
            .collect();
        assert_eq!(ids, ["c", "a", "d"]);
        let leftovers = std::fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temp file left");
    }

    #[test]
    fn parse_stops_at_the_first_line_that_is_not_a_record() {
        let text = b"{\"unstarted\":{\"request_id\":\"a\"}}\nnot json\n{\"unstarted\":{\"request_id\":\"b\"}}\n";
        let (entries, valid) = parse(text);
        assert_eq!(entries.len(), 1);
        assert_eq!(valid, 33, "the first line and its newline");
    }
}
