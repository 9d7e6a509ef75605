//! One coordinator per state directory: `run` holds an exclusive lock on
//! `<state>/coordinator.lock` for its whole life, so a second one refuses to start instead of
//! scanning the same spool and writing the same records. The kernel releases the lock when the
//! holder dies, however it dies: a lock file left behind by a crash holds nobody up.
//!
//! A POSIX record lock (`fcntl(F_SETLK)`), not `flock`: an `flock` belongs to the open file,
//! which every child shares from `fork` until its `exec` closes it, so a coordinator killed
//! while starting a monitor left the lock held by that child for a moment and its successor
//! refused to start (the crash test saw it). A record lock belongs to the process alone: no
//! child (monitor, script, `systemd-run`) ever holds it, and none needs it (monitors have their
//! own per-run locks, see [`crate::record`]), so a restarted coordinator gets it while the old
//! monitors still run. It also tells a refused process who holds it (`F_GETLK`); the holder
//! writes its pid into the file too, for operators.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "coordinator.lock";

/// Held for as long as the coordinator runs; dropping it (or dying) releases the lock. Nothing
/// else in the process may open the lock file: closing any descriptor of it releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another coordinator ({holder}) already serves the state directory {}; stop it first (`systemctl stop dunebugger-update-coordinator`, or end that process), or give this one a state.dir of its own",
        state_dir.display()
    )]
    Held { state_dir: PathBuf, holder: Holder },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Who holds the lock, as far as the kernel, the lock file and `/proc` tell.
#[derive(Debug)]
pub struct Holder {
    pub pid: Option<u32>,
    /// Its command line, when `/proc/<pid>/cmdline` is readable.
    pub cmdline: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, &self.cmdline) {
            (Some(pid), Some(cmdline)) => write!(f, "pid {pid}: {cmdline}"),
            (Some(pid), None) => write!(f, "pid {pid}"),
            (None, _) => f.write_str("pid unknown"),
        }
    }
}

/// Takes the state directory's lock (creating the directory and the file if needed), or says
/// who holds it.
pub fn acquire(state_dir: &Path) -> Result<InstanceLock, LockError> {
    let path = state_dir.join(LOCK_FILE);
    let io_error = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(io_error)?;
    // std opens with O_CLOEXEC: children do not even get the descriptor.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(io_error)?;
    // A holder that dies between our attempt and our question leaves nobody to name: try again.
    for _ in 0..3 {
        match fcntl(&file, FcntlArg::F_SETLK(&whole_file(nix::libc::F_WRLCK))) {
            Ok(_) => return own(file).map_err(io_error),
            Err(Errno::EAGAIN | Errno::EACCES) => {}
            Err(errno) => return Err(io_error(errno.into())),
        }
        let mut query = whole_file(nix::libc::F_WRLCK);
        fcntl(&file, FcntlArg::F_GETLK(&mut query)).map_err(|e| io_error(e.into()))?;
        if query.l_type != nix::libc::F_UNLCK as i16 {
            return Err(LockError::Held {
                state_dir: state_dir.to_owned(),
                holder: holder(&mut file, query.l_pid),
            });
        }
    }
    Err(io_error(io::Error::other(
        "it was taken and released again three times in a row",
    )))
}

/// A lock request (or question) for the whole file.
fn whole_file(kind: i32) -> nix::libc::flock {
    nix::libc::flock {
        l_type: kind as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

/// Ours now: replace whatever pid an earlier holder left.
fn own(mut file: File) -> io::Result<InstanceLock> {
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
    Ok(InstanceLock { _file: file })
}

/// Who holds the lock: the kernel's answer (`l_pid`; 0 when the holder is in another pid
/// namespace), else the pid the holder wrote into the file.
fn holder(file: &mut File, l_pid: i32) -> Holder {
    let pid = u32::try_from(l_pid)
        .ok()
        .filter(|&pid| pid > 0)
        .or_else(|| {
            let mut text = String::new();
            file.rewind().ok()?;
            file.read_to_string(&mut text).ok()?;
            text.trim().parse().ok()
        });
    Holder {
        pid,
        cmdline: pid.and_then(cmdline),
    }
}

/// A process's command line, arguments separated by spaces.
fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Refusal needs a second process (a record lock is the process's own): the real binary's
    // test, tests/integration/service.rs `a_second_coordinator_...`, shows it.

    #[test]
    fn the_holder_creates_the_state_directory_and_writes_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let _lock = acquire(&state).unwrap();
        let written = std::fs::read_to_string(state.join(LOCK_FILE)).unwrap();
        assert_eq!(written, format!("{}\n", std::process::id()));
    }

    #[test]
    fn a_pid_left_by_a_dead_holder_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "999999999\nstale text\n").unwrap();
        let _lock = acquire(dir.path()).unwrap();
        let written = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(written, format!("{}\n", std::process::id()));
    }

    #[test]
    fn the_refusal_names_the_holder_and_the_state_directory() {
        let err = LockError::Held {
            state_dir: "/var/lib/update-coordinator".into(),
            holder: Holder {
                pid: Some(42),
                cmdline: Some("/usr/bin/update-coordinator run".into()),
            },
        };
        let text = err.to_string();
        assert!(
            text.starts_with("another coordinator (pid 42: /usr/bin/update-coordinator run) already serves the state directory /var/lib/update-coordinator; "),
            "{text}"
        );
        let unknown = Holder {
            pid: None,
            cmdline: None,
        }
        .to_string();
        assert_eq!(unknown, "pid unknown");
    }
}
