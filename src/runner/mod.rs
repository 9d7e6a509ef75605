//! Runs one script: argv (never a shell string), clean environment, own process group,
//! timeout with SIGTERM → grace → SIGKILL to the whole group, bounded output capture and
//! `PHASE:` progress.

mod output;
// The crate's only unsafe code (`unsafe_code` is denied elsewhere, see Cargo.toml): libc calls
// that nix does not wrap, each with its SAFETY comment.
#[allow(unsafe_code)]
mod process;

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::{oneshot, watch};

pub use output::{Captured, MAX_LINE, MAX_PHASE_LEN, OutputScanner, Tail};
pub(crate) use process::{become_subreaper, default_sigpipe, kill_orphans, seal_inherited_fds};

/// `PATH` scripts get; nothing is inherited from the service's environment.
pub(crate) const SCRIPT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// After the script exits, how long to wait for its output pipes to close (a process that
/// escaped the group may hold them open).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything needed to run one script.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Invocation {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// The complete environment (besides `PATH`).
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub kill_grace: Duration,
    pub tail_bytes: usize,
}

/// How the script ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl From<ExitStatus> for Exit {
    fn from(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Code(-1),
        }
    }
}

/// Why the runner stopped the script before it finished on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    TimedOut,
    /// Told to stop (the run's monitor got SIGTERM).
    Shutdown,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub exit: Exit,
    pub stopped: Option<Stopped>,
    pub duration: Duration,
    pub stdout: Captured,
    pub stderr: Captured,
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What a running script reports as it happens. Called from the output reader threads.
pub trait RunEvents: Send + Sync + 'static {
    /// A `PHASE:<name>` line on stdout.
    fn phase(&self, _name: String) {}
    /// A `PROGRESS:<n>` line on stdout, 0–100.
    fn progress(&self, _percent: u8) {}
    /// Any complete output line (cut at [`MAX_LINE`] bytes).
    fn line(&self, _stream: Stream, _line: &str) {}
}

/// Runs the script to completion (or until timeout / `stop` turns true), telling `events`
/// about its output as it comes. Fails only if the script could not be started.
pub async fn run(
    inv: Invocation,
    events: Arc<dyn RunEvents>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<Outcome> {
    let mut command = Command::new(&inv.program);
    command
        .args(&inv.args)
        .current_dir(&inv.cwd)
        .env_clear()
        .env("PATH", SCRIPT_PATH)
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let spawned = process::spawn(command)?;
    let group = spawned.group;
    let stdout = capture(
        spawned.stdout,
        Stream::Stdout,
        inv.tail_bytes,
        Arc::clone(&events),
    );
    let stderr = capture(spawned.stderr, Stream::Stderr, inv.tail_bytes, events);
    let mut exited = spawned.exited;

    let deadline = tokio::time::sleep(inv.timeout);
    tokio::pin!(deadline);
    let mut stopped = None;
    let status = loop {
        tokio::select! {
            status = &mut exited => break status,
            () = &mut deadline, if stopped.is_none() => stopped = Some(Stopped::TimedOut),
            changed = stop.changed(), if stopped.is_none() => {
                if changed.is_err() || *stop.borrow() {
                    stopped = Some(Stopped::Shutdown);
                } else {
                    continue;
                }
            }
        }
        // Stopping: SIGTERM to the group, then SIGKILL after the grace period.
        group.signal(Signal::SIGTERM);
        match tokio::time::timeout(inv.kill_grace, &mut exited).await {
            Ok(status) => break status,
            Err(_) => {
                group.signal(Signal::SIGKILL);
                break (&mut exited).await;
            }
        }
    };
    let exit = match status {
        Ok(Ok(status)) => Exit::from(status),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(io::Error::other("the process waiter thread vanished")),
    };
    let duration = started.elapsed();
    Ok(Outcome {
        exit,
        stopped,
        duration,
        stdout: stdout.finish().await,
        stderr: stderr.finish().await,
    })
}

/// A stream being read on its own thread into a bounded tail.
struct Capture {
    tail: Arc<Mutex<Tail>>,
    done: oneshot::Receiver<()>,
}

impl Capture {
    /// Waits (briefly) for the stream to close, then returns what was captured.
    async fn finish(self) -> Captured {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, self.done).await;
        self.tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot()
    }
}

fn capture(
    mut stream: impl Read + Send + 'static,
    which: Stream,
    tail_bytes: usize,
    events: Arc<dyn RunEvents>,
) -> Capture {
    let tail = Arc::new(Mutex::new(Tail::new(tail_bytes)));
    let (done_tx, done) = oneshot::channel();
    let thread_tail = Arc::clone(&tail);
    let reader = move || {
        let mut scanner = OutputScanner::new(which);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            thread_tail
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&buf[..n]);
            scanner.feed(&buf[..n], &*events);
        }
        let _ = done_tx.send(());
    };
    if let Err(e) = std::thread::Builder::new()
        .name("output".into())
        .spawn(reader)
    {
        tracing::error!(error = %e, "cannot start an output reader thread; output is lost");
    }
    Capture { tail, done }
}
