//! One coordinator per state directory: `run` holds an exclusive `flock` on
//! `<state>/coordinator.lock` for its whole life, so a second one refuses to start instead of
//! scanning the same spool and writing the same records. The kernel releases the lock when the
//! holder dies, however it dies: a lock file left behind by a crash holds nobody up.
//!
//! The file also says who holds it (the pid, written after locking), so the refusal can name
//! the process. Monitors neither inherit nor need this lock: the file is opened close-on-exec,
//! and they have their own per-run locks (see [`crate::record`]), so a restarted coordinator
//! gets it while the old monitors still run.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "coordinator.lock";

/// Held for as long as the coordinator runs; dropping it (or dying) releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    _file: Flock<File>,
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

/// Who holds the lock, as far as its file and `/proc` tell.
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
            (None, _) => f.write_str("pid unknown: the lock file names none yet"),
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
    // std opens with O_CLOEXEC: no child (monitor, systemd-run, script) ever holds it.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(io_error)?;
    let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((file, Errno::EWOULDBLOCK)) => {
            return Err(LockError::Held {
                state_dir: state_dir.to_owned(),
                holder: holder(file),
            });
        }
        Err((_, errno)) => return Err(io_error(errno.into())),
    };
    // Ours now: replace whatever pid an earlier holder left.
    let pid = format!("{}\n", std::process::id());
    locked
        .set_len(0)
        .and_then(|()| locked.rewind())
        .and_then(|()| locked.write_all(pid.as_bytes()))
        .map_err(io_error)?;
    Ok(InstanceLock { _file: locked })
}

/// Reads the holder's pid from the lock file. The holder writes it just after locking, so an
/// empty file (or the pid of an earlier, dead holder) is given a moment to be replaced.
fn holder(mut file: File) -> Holder {
    let mut pid = None;
    for _ in 0..10 {
        let mut text = String::new();
        let read = file.rewind().and_then(|()| file.read_to_string(&mut text));
        pid = read.ok().and_then(|_| text.trim().parse::<u32>().ok());
        if pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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

    #[test]
    fn a_second_lock_on_the_same_state_directory_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = acquire(&state).unwrap();
        let written = std::fs::read_to_string(state.join(LOCK_FILE)).unwrap();
        assert_eq!(written, format!("{}\n", std::process::id()));

        // flock locks belong to the open file, so a second open in this process conflicts too.
        let err = acquire(&state).unwrap_err();
        let LockError::Held { holder, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(holder.pid, Some(std::process::id()));
        assert!(holder.cmdline.is_some());
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains(&state.display().to_string()), "{text}");

        drop(first);
        acquire(&state).expect("free again once the holder is gone");
    }

    #[test]
    fn a_pid_left_by_a_dead_holder_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "999999999\nstale text\n").unwrap();
        let _lock = acquire(dir.path()).unwrap();
        let written = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(written, format!("{}\n", std::process::id()));
    }
}
