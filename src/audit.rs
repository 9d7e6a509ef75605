//! The audit log: an append-only JSON-lines file in the state
//! directory, one line per thing that happened to a request, for operators asking "what
//! happened to remote last night?" (`update-coordinator history`).
//!
//! ```text
//! state/audit.jsonl      current file, appended to
//! state/audit.jsonl.1    the previous one (rotated by size), up to .3
//! ```
//! The log is a record for people, not a source of truth: the run records are (see
//! [`crate::record`]). So lines are appended without fsync (an update costs no extra disk
//! flush), and a reader skips a line torn by a power cut. Each line is written with one
//! `write` on an `O_APPEND` descriptor, so the service and the run monitors (separate
//! processes) can append at once without interleaving. Only the service rotates.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::request::{Request, RequestId};

pub const FILE: &str = "audit.jsonl";
/// Rotated generations kept besides the current file (`audit.jsonl.1` … `.3`).
pub const GENERATIONS: usize = 3;

/// One line of the log. Optional fields are left out when empty.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339, UTC.
    pub time: String,
    /// `received`, `rejected`, `duplicate`, `queued`, `scheduled`, `started`, `phase`,
    /// `health_failed`, `rolled_back`, `finished`, `cancelled`, `dry_run`.
    pub event: String,
    pub request_id: Option<String>,
    pub component: Option<String>,
    pub action: Option<String>,
    pub version: Option<String>,
    /// For `finished`: `succeeded`, `failed`, or the update's outcome (`updated`, `rolled_back`…).
    pub outcome: Option<String>,
    /// The status's machine code, when there is one (`exit_code`, `timeout`, `queue_full`…).
    pub code: Option<String>,
    /// A phase name, a reason, the final message: whatever says most in one line.
    pub detail: Option<String>,
}

impl Event {
    /// An event about a request, stamped now.
    pub fn of(event: &str, request: &Request) -> Self {
        Self {
            time: crate::status::now_rfc3339(),
            event: event.to_owned(),
            request_id: Some(request.id.to_string()),
            component: Some(request.component_label()),
            action: Some(request.action.to_string()),
            version: request.version_text(),
            ..Default::default()
        }
    }

    /// An event about something that is not (yet) a valid request, stamped now.
    pub fn about(event: &str, id: Option<&RequestId>) -> Self {
        Self {
            time: crate::status::now_rfc3339(),
            event: event.to_owned(),
            request_id: id.map(RequestId::to_string),
            ..Default::default()
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn code(mut self, code: Option<&crate::status::Code>) -> Self {
        self.code = code.map(ToString::to_string);
        self
    }

    pub fn outcome(mut self, outcome: &str) -> Self {
        self.outcome = Some(outcome.to_owned());
        self
    }
}

/// The log in a state directory.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
    /// Rotate once the current file is larger than this.
    max_bytes: u64,
}

impl AuditLog {
    pub fn new(state_dir: &Path, max_bytes: u64) -> Self {
        Self {
            path: state_dir.join(FILE),
            max_bytes,
        }
    }

    /// Appends one line (monitors use this too). Never rotates: see [`AuditLog::record`].
    pub fn append(&self, event: &Event) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NOFOLLOW)
            .open(&self.path)?;
        // One write: O_APPEND makes it land whole at the end, even with other writers.
        file.write_all(&line)
    }

    /// Appends one line and rotates the file when it has grown past the size limit. Only the
    /// service calls this, so rotations never race each other.
    pub fn record(&self, event: &Event) -> io::Result<()> {
        self.append(event)?;
        let size = std::fs::symlink_metadata(&self.path)?.len();
        if size > self.max_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    /// `audit.jsonl` → `.1` → `.2` → `.3`; the oldest falls off.
    fn rotate(&self) -> io::Result<()> {
        for generation in (1..GENERATIONS).rev() {
            let from = generation_path(&self.path, generation);
            if from.exists() {
                std::fs::rename(&from, generation_path(&self.path, generation + 1))?;
            }
        }
        std::fs::rename(&self.path, generation_path(&self.path, 1))
    }

    /// Every event still on disk, oldest first. Lines that do not parse (torn by a power cut,
    /// or from a newer version) are skipped and counted.
    pub fn read_all(&self) -> io::Result<(Vec<Event>, usize)> {
        let mut events = Vec::new();
        let mut skipped = 0;
        for generation in (0..=GENERATIONS).rev() {
            let path = generation_path(&self.path, generation);
            let text = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                match serde_json::from_slice::<Event>(line) {
                    Ok(event) => events.push(event),
                    Err(_) => skipped += 1,
                }
            }
        }
        Ok((events, skipped))
    }
}

/// `audit.jsonl` for 0, `audit.jsonl.N` otherwise.
fn generation_path(current: &Path, generation: usize) -> PathBuf {
    if generation == 0 {
        current.to_owned()
    } else {
        let mut name = current.as_os_str().to_owned();
        name.push(format!(".{generation}"));
        PathBuf::from(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> Event {
        Event::about("received", None).detail(format!("event {n}"))
    }

    #[test]
    fn events_come_back_oldest_first_across_rotations_and_old_ones_fall_off() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path(), 300);
        for n in 0..40 {
            log.record(&event(n)).unwrap();
        }
        let (events, skipped) = log.read_all().unwrap();
        assert_eq!(skipped, 0);
        let numbers: Vec<usize> = events
            .iter()
            .map(|e| e.detail.as_deref().unwrap()[6..].parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        assert_eq!(*numbers.last().unwrap(), 39);
        assert!(
            numbers[0] > 0,
            "the oldest events should have been rotated away"
        );
        assert!(generation_path(&dir.path().join(FILE), GENERATIONS).exists());
        assert!(!generation_path(&dir.path().join(FILE), GENERATIONS + 1).exists());
        let total: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(
            total < 300 * (GENERATIONS as u64 + 2),
            "{total} bytes on disk"
        );
    }

    #[test]
    fn a_torn_last_line_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path(), 1 << 20);
        log.record(&event(1)).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap()
            .write_all(br#"{"time":"2026-11-27T0"#)
            .unwrap();
        let (events, skipped) = log.read_all().unwrap();
        assert_eq!((events.len(), skipped), (1, 1));
    }

    #[test]
    fn empty_fields_are_left_out_of_the_line() {
        let line = serde_json::to_string(&Event {
            time: "t".into(),
            event: "received".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(line, r#"{"time":"t","event":"received"}"#);
    }
}
