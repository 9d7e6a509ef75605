//! One script process and its process group: spawn, wait without racing the kill, signal the
//! whole group.
//!
//! The script is the leader of a new process group, so a signal to the group reaches its
//! children and grandchildren too (those that did not `setsid` away; cgroups catch those).
//! The group id is the leader's pid, and a pid is only reused once it is reaped. A waiter thread
//! therefore first observes the exit *without* reaping (`waitid(WNOWAIT)`), sweeps the group,
//! and only then reaps, all under the same lock the killer takes: a signal can never reach a
//! recycled process group.

use std::io;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// A spawned script. Dropping it does not kill anything; call [`Group::signal`].
pub struct Spawned {
    pub group: Group,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
    /// Resolves once the leader has exited and been reaped.
    pub exited: oneshot::Receiver<io::Result<ExitStatus>>,
}

/// Handle to signal the script's process group for as long as it is safe to.
#[derive(Clone)]
pub struct Group {
    pgid: Pid,
    /// `true` once the leader is reaped: from then on the id may belong to someone else.
    reaped: Arc<Mutex<bool>>,
}

impl Group {
    /// Sends `signal` to every process in the group, unless the leader is already reaped.
    pub fn signal(&self, signal: Signal) {
        let reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if !*reaped {
            // ESRCH (nobody left) is the normal race with a script that just exited.
            let _ = killpg(self.pgid, signal);
        }
    }
}

/// Spawns `command` (already configured with its argv, cwd, env, stdio pipes) as the leader of
/// a new process group and starts the waiter thread.
pub fn spawn(mut command: Command) -> io::Result<Spawned> {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    let mut child: Child = command.spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let pgid = Pid::from_raw(child.id() as i32);
    let group = Group {
        pgid,
        reaped: Arc::new(Mutex::new(false)),
    };
    let (tx, exited) = oneshot::channel();
    let waiter_group = group.clone();
    std::thread::Builder::new()
        .name(format!("wait-{pgid}"))
        .spawn(move || {
            let _ = tx.send(wait_then_sweep(child, &waiter_group));
        })?;
    Ok(Spawned {
        group,
        stdout,
        stderr,
        exited,
    })
}

fn wait_then_sweep(mut child: Child, group: &Group) -> io::Result<ExitStatus> {
    loop {
        match waitid(
            Id::Pid(group.pgid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let mut reaped = group.reaped.lock().unwrap_or_else(|e| e.into_inner());
    // The script is done; whatever it left running in its group goes with it (as systemd's
    // KillMode=control-group does), which also closes the output pipes those processes hold.
    let _ = killpg(group.pgid, Signal::SIGKILL);
    let status = child.wait();
    *reaped = true;
    status
}

/// Marks every descriptor this process inherited (3 and up) close-on-exec, so scripts start
/// with stdin, stdout and stderr only. Descriptors Rust opens are close-on-exec already; these
/// are the ones a parent leaked to us. Call once at start-up, before any thread exists.
pub fn seal_inherited_fds() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; it closes
    // nothing, so no live Rust object can be invalidated.
    let sealed =
        unsafe { nix::libc::close_range(3, u32::MAX, nix::libc::CLOSE_RANGE_CLOEXEC as i32) };
    if sealed == 0 {
        return;
    }
    // Kernels before 5.11: walk the descriptor table instead.
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: as above, F_SETFD only sets the close-on-exec flag (the read_dir handle may
        // already be closed, which makes this a harmless EBADF).
        unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFD, nix::libc::FD_CLOEXEC) };
    }
}

/// Restores the default SIGPIPE action, so a command piped into `head` ends quietly instead of
/// failing on its next write. Only for the short-lived operator commands; the service keeps
/// Rust's default (ignored), where a closed pipe must be an error, not death.
pub fn default_sigpipe() {
    // SAFETY: sets a signal disposition to its default; no handler runs Rust code.
    unsafe {
        nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_DFL);
    }
}

/// Makes this process the reaper of its orphaned descendants (a script's `setsid` daemons
/// whose parent exited are reparented here instead of to init), so [`kill_orphans`] can find
/// them. For the monitor, before it starts the script.
pub fn become_subreaper() {
    let _ = nix::sys::prctl::set_child_subreaper(true);
}

/// Kills every remaining child of this process (orphans reparented to us as subreaper, and
/// their process groups) and reaps them, until none is left. Returns how many were killed.
pub fn kill_orphans() -> usize {
    let me = std::process::id().to_string();
    let mut killed = 0;
    for _ in 0..50 {
        // The common case, nothing left behind, without reading every process's stat (a scan
        // of /proc is most of a no-op run's cost on a busy host): no child at all, live or
        // exited, is ECHILD.
        let none_left = nix::sys::wait::waitid(
            nix::sys::wait::Id::All,
            nix::sys::wait::WaitPidFlag::WEXITED
                | nix::sys::wait::WaitPidFlag::WNOHANG
                | nix::sys::wait::WaitPidFlag::WNOWAIT,
        ) == Err(nix::errno::Errno::ECHILD);
        if none_left {
            break;
        }
        let children: Vec<i32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|stat| {
                        stat.rsplit_once(')')
                            .map(|(_, rest)| rest.split_whitespace().nth(1) == Some(me.as_str()))
                    })
                    .unwrap_or(false)
            })
            .collect();
        if children.is_empty() {
            break;
        }
        for pid in children {
            let pid = Pid::from_raw(pid);
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            killed += 1;
        }
    }
    killed
}
