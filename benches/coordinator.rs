//! Benchmark: speed and footprint of the real `update-coordinator` binary, side by side with
//! the bash `inotifywait` loop a user would otherwise write (`benches/baseline/inotify-loop.sh`).
//!
//!     cargo bench --bench coordinator              # full run (about 15 minutes, 12 of them
//!                                                  # the baseline's 10,000-request backlog)
//!     cargo bench --bench coordinator -- --quick   # short run for CI (about 4 minutes)
//!
//! `--no-baseline` measures ours only; `--only=a,b` runs some measurements (`flushes`: flush
//! calls per request, counted by strace); `UPDATE_COORDINATOR_BENCH_BIN=PATH` measures another
//! build of the service. `benches/slowdisk.sh` runs it in the lab guest on a slow-flush disk.
//! By default the harness builds the shipped binary itself (`cargo build --release` into
//! `target/coordinator-bench/`): the one cargo builds for a bench has the dev-dependencies'
//! features unified in.
//!
//! Every figure is measured on a fresh temp spool with a generated config and `/bin/sh`
//! component scripts (`noop`: `exit 0`; `slow`: an update that sleeps; `chatty`: a health check
//! that prints a lot). Final statuses are detected through the harness's own inotify watch on
//! `status/` (the `notify` crate), with a direct read of the file as a fallback if no event
//! arrives within 50 ms; every fallback is counted and printed. Nothing is subtracted from a
//! figure without saying so in its row. The table (markdown) goes to stdout, progress to
//! stderr. Absolute times never fail the run; a lost or failed request, or a service that does
//! not start, does (exit status 1). BENCHMARKS.md explains each figure.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use serde_json::Value;
use support::new_id;

/// The integration suite's harness: requests and their ids are written exactly as the tests
/// (and the Python client) write them. The benchmark keeps its own spool and service, which
/// also drive the baseline script and report errors instead of panicking, so most of the
/// harness goes unused here.
#[allow(dead_code)]
#[path = "../tests/integration/support/mod.rs"]
mod support;

const BUILT_BIN: &str = env!("CARGO_BIN_EXE_update-coordinator");
/// Set to benchmark another build of the service (a profile or a patch under test).
const BIN_OVERRIDE: &str = "UPDATE_COORDINATOR_BENCH_BIN";
const BASELINE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/baseline/inotify-loop.sh"
);
/// Set to run the baseline script from elsewhere (the bench binary copied into the lab guest
/// by benches/slowdisk.sh, where the checkout's path does not exist).
const BASELINE_OVERRIDE: &str = "UPDATE_COORDINATOR_BENCH_BASELINE";

fn baseline_script() -> PathBuf {
    std::env::var_os(BASELINE_OVERRIDE).map_or_else(|| PathBuf::from(BASELINE), PathBuf::from)
}
/// If no inotify event arrives for this long, the harness reads the status file directly.
const POLL_FALLBACK: Duration = Duration::from_millis(50);
/// The tail of each output stream a status carries (the service's default; the baseline's too).
const TAIL_BYTES: u64 = 65536;
const CHATTY_LINE: &str = "log line: the quick brown fox jumps over the lazy dog 0123456789";

// ---------------------------------------------------------------------------------------------
// Settings

struct Settings {
    quick: bool,
    no_baseline: bool,
    /// `--only a,b`: run just these measurements (see [`PHASES`]).
    only: Option<Vec<String>>,
    latency: usize,
    burst: usize,
    backlog: usize,
    idle: Duration,
    output_bytes: u64,
    slow_reps: usize,
    slow_secs: u64,
    warmup: usize,
}

/// The measurements, by the names `--only` takes.
const PHASES: [&str; 8] = [
    "latency",
    "beside-slow",
    "burst",
    "backlog",
    "idle",
    "big-output",
    "flushes",
    "size",
];

impl Settings {
    /// Whether the measurement `name` runs (every one, unless `--only` names others).
    fn selected(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|n| n == name))
    }

    fn from_args() -> Settings {
        let mut quick = false;
        let mut no_baseline = false;
        let mut only = None;
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--quick" => quick = true,
                "--no-baseline" => no_baseline = true,
                "--bench" => {} // cargo bench passes it to every bench binary
                other if other.starts_with("--only=") => {
                    let names: Vec<String> = other["--only=".len()..]
                        .split(',')
                        .map(str::to_owned)
                        .collect();
                    for n in &names {
                        if !PHASES.contains(&n.as_str()) {
                            eprintln!("unknown measurement {n:?} in --only (known: {PHASES:?})");
                        }
                    }
                    only = Some(names);
                }
                other => eprintln!(
                    "ignoring unknown argument {other:?} (known: --quick, --no-baseline, --only=a,b)"
                ),
            }
        }
        if quick {
            Settings {
                quick,
                no_baseline,
                only,
                latency: 100,
                burst: 200,
                backlog: 1000,
                idle: Duration::from_secs(5),
                output_bytes: 20_000_000,
                slow_reps: 2,
                slow_secs: 2,
                warmup: 5,
            }
        } else {
            Settings {
                quick,
                no_baseline,
                only,
                latency: 500,
                burst: 1000,
                backlog: 10_000,
                idle: Duration::from_secs(30),
                output_bytes: 100_000_000,
                slow_reps: 5,
                slow_secs: 2,
                warmup: 20,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The two subjects

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Subject {
    Ours,
    Baseline,
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::Ours => "update-coordinator",
            Subject::Baseline => "inotifywait loop",
        }
    }
}

/// Optional config keys the binary under test understands (the config format grows; unknown
/// keys are errors, so each is probed once with `update-coordinator check`).
#[derive(Clone, Debug, Default)]
struct Dialect {
    unsupported: HashSet<String>,
}

impl Dialect {
    fn probe() -> Result<Dialect, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let mut dialect = Dialect::default();
        for _ in 0..8 {
            let path = dir.path().join("probe.toml");
            fs::write(&path, config_text(&dialect, 1)).map_err(|e| e.to_string())?;
            let out = Command::new(bin())
                .args(["check", "--config"])
                .arg(&path)
                .output()
                .map_err(|e| format!("cannot run {}: {e}", bin().display()))?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            let Some(rest) = text.split("unknown field `").nth(1) else {
                return Ok(dialect);
            };
            let key = rest.split('`').next().unwrap_or_default().to_owned();
            if !dialect.unsupported.insert(key.clone()) {
                return Err(format!("config probe: `{key}` refused twice:\n{text}"));
            }
        }
        Err("config probe: too many unknown keys".into())
    }

    fn knows(&self, name: &str) -> bool {
        !self.unsupported.contains(name)
    }
}

/// The generated config, relative to the spool's temp dir (like tests/integration/support/mod.rs). Only
/// `spool.root` and the components' `dir` are required; every other key is dropped when the
/// binary under test does not know it: fast kill and shutdown, no `dunebugger-updates` group
/// check (`group = ""`), a queue bound above the burst and backlog sizes, no update rate
/// limit, and service state kept inside the temp dir.
fn config_text(dialect: &Dialect, max_queued: usize) -> String {
    let max_queued = max_queued.max(1).to_string();
    let mut tables: Vec<(String, Vec<(&str, String)>)> = vec![
        (
            "spool".into(),
            vec![
                ("root", "\"spool\"".into()),
                ("group", "\"\"".into()),
                ("max_queued", max_queued),
            ],
        ),
        (
            "execution".into(),
            vec![("kill_grace", "1".into()), ("shutdown_grace", "5".into())],
        ),
        ("state".into(), vec![("dir", "\"state\"".into())]),
    ];
    for c in COMPONENTS {
        tables.push((
            format!("components.{c}"),
            vec![
                ("dir", format!("\"components/{c}\"")),
                ("max_updates_per_hour", "0".into()),
            ],
        ));
    }
    let mut text = String::new();
    for (table, keys) in tables {
        if !dialect.knows(table.split('.').next().unwrap_or_default()) {
            continue;
        }
        let _ = writeln!(text, "[{table}]");
        for (key, value) in keys {
            if dialect.knows(key) || ((key == "root" || key == "dir") && table != "state") {
                let _ = writeln!(text, "{key} = {value}");
            }
        }
        text.push('\n');
    }
    text
}

const COMPONENTS: [&str; 3] = ["noop", "slow", "chatty"];

/// A temp dir with `config.toml`, `spool/{requests,status}`, `components/*` and a staging dir
/// on the same filesystem (for bursts dropped by rename).
struct Spool {
    dir: tempfile::TempDir,
}

impl Spool {
    fn new(settings: &Settings, dialect: &Dialect) -> Result<Spool, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        cleanup().1.push(dir.path().to_owned());
        let spool = Spool { dir };
        for c in COMPONENTS {
            for s in ["update.sh", "rollback.sh", "health-check.sh"] {
                spool.script(c, s, "exit 0")?;
            }
        }
        spool.script(
            "slow",
            "update.sh",
            &format!("sleep {}", settings.slow_secs),
        )?;
        spool.script(
            "chatty",
            "health-check.sh",
            &format!("yes '{CHATTY_LINE}' | head -c {}", settings.output_bytes),
        )?;
        let max_queued = settings.backlog.max(settings.burst) * 2;
        fs::write(spool.config(), config_text(dialect, max_queued)).map_err(|e| e.to_string())?;
        for d in [spool.requests(), spool.status(), spool.staging()] {
            fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        Ok(spool)
    }

    fn script(&self, component: &str, name: &str, body: &str) -> Result<(), String> {
        let dir = self.components().join(component);
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).map_err(|e| e.to_string())?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("spool")
    }
    fn requests(&self) -> PathBuf {
        self.root().join("requests")
    }
    fn status(&self) -> PathBuf {
        self.root().join("status")
    }
    fn staging(&self) -> PathBuf {
        self.dir.path().join("staging")
    }
    fn components(&self) -> PathBuf {
        self.dir.path().join("components")
    }

    /// The existing client's way: open `<id>.json`, write, close.
    fn drop_in_place(&self, id: &str, content: &str) -> Result<(), String> {
        let mut f = fs::File::create(self.requests().join(format!("{id}.json")))
            .map_err(|e| e.to_string())?;
        f.write_all(content.as_bytes()).map_err(|e| e.to_string())
    }

    /// The careful writer's way: a dot-file in `requests/`, then rename.
    fn drop_renamed(&self, id: &str, content: &str) -> Result<(), String> {
        let tmp = self.requests().join(format!(".{id}.tmp"));
        fs::write(&tmp, content).map_err(|e| e.to_string())?;
        fs::rename(&tmp, self.requests().join(format!("{id}.json"))).map_err(|e| e.to_string())
    }

    fn request_file_count(&self) -> usize {
        fs::read_dir(self.requests())
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        n.ends_with(".json") && !n.starts_with('.')
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Waits until `requests/` holds no request file (both subjects delete a request once it
    /// is answered; ours does so just after the final status is durable).
    fn wait_requests_empty(&self, patience: Duration) -> Result<(), String> {
        let deadline = Instant::now() + patience;
        loop {
            let n = self.request_file_count();
            if n == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{n} request file(s) still in requests/ after {patience:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Process groups of the subjects running now and the temp dirs made so far: removed if the
/// harness is interrupted (the subjects run in their own process groups, so a Ctrl-C at the
/// terminal does not reach them).
static CLEANUP: Mutex<(Vec<i32>, Vec<PathBuf>)> = Mutex::new((Vec::new(), Vec::new()));

fn cleanup() -> std::sync::MutexGuard<'static, (Vec<i32>, Vec<PathBuf>)> {
    CLEANUP.lock().unwrap_or_else(|e| e.into_inner())
}

static INTERRUPTED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_signal(sig: nix::libc::c_int) {
    INTERRUPTED.store(sig, Ordering::SeqCst);
}

/// On SIGINT, SIGTERM or SIGHUP: kill the subjects' process groups, remove the temp dirs and
/// exit. A handler (reset to the default in every child at exec, unlike a blocked mask) only
/// sets a flag; a thread looks at it ten times a second.
fn stop_subjects_on_signals() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        #[allow(unsafe_code)]
        let _ = unsafe { sigaction(sig, &action) };
    }
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let sig = INTERRUPTED.load(Ordering::SeqCst);
            if sig == 0 {
                continue;
            }
            let (groups, dirs) = std::mem::take(&mut *cleanup());
            for pgid in groups {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            for dir in dirs {
                let _ = fs::remove_dir_all(dir);
            }
            eprintln!(
                "\ninterrupted (signal {sig}): the services under test are stopped, temp dirs removed"
            );
            std::process::exit(130);
        }
    });
}

/// The service binary under test (set once by [`shipped_binary`] or the override).
static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn bin() -> PathBuf {
    BIN.get()
        .cloned()
        .unwrap_or_else(|| PathBuf::from(BUILT_BIN))
}

/// The binary users ship is `cargo build --release`. The one cargo builds for a bench
/// (`CARGO_BIN_EXE_…`) has the dev-dependencies' features unified in (a larger regex engine,
/// for one), so it is bigger and touches more pages. Build the real one, in its own target
/// dir beside the bench's so the two builds never overwrite each other.
fn shipped_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(BIN_OVERRIDE) {
        return Ok(PathBuf::from(path));
    }
    let built = Path::new(BUILT_BIN);
    let target = built
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot find the target dir")?
        .join("coordinator-bench");
    eprintln!(
        "[harness] cargo build --release --bin update-coordinator --target-dir {} ...",
        target.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "--bin",
            "update-coordinator",
        ])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --release failed: {status}"));
    }
    Ok(target.join("release/update-coordinator"))
}

/// A running subject: the service, or the baseline script (in its own process group).
struct Service {
    subject: Subject,
    /// The process spawned: the subject, or strace running it (see [`Service::spawn_traced`]).
    child: Option<Child>,
    /// The subject's own process (the service, or the baseline's bash).
    pid: i32,
    /// Its process group (the spawned process's pid).
    pgid: i32,
    log: PathBuf,
    ready: Arc<AtomicBool>,
    stop_notify: Arc<AtomicBool>,
}

impl Service {
    /// Starts the subject on `spool` without waiting for it to be ready.
    fn spawn(subject: Subject, spool: &Spool) -> Result<Service, String> {
        Self::spawn_traced(subject, spool, None)
    }

    /// [`Service::spawn`], under `strace -f` writing the subject's flush calls (and those of
    /// every process it starts) to `trace` when given: see [`flushes`].
    fn spawn_traced(
        subject: Subject,
        spool: &Spool,
        trace: Option<&Path>,
    ) -> Result<Service, String> {
        let log = spool.dir.path().join(format!("{subject:?}.log"));
        let out = fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let ready = Arc::new(AtomicBool::new(false));
        let stop_notify = Arc::new(AtomicBool::new(false));
        let mut command;
        match subject {
            Subject::Ours => {
                // A real NOTIFY_SOCKET, read by a thread as systemd would: READY=1 is the
                // service's own "watch armed, start-up scan queued".
                let socket = spool.dir.path().join("notify.sock");
                let notify = UnixDatagram::bind(&socket).map_err(|e| e.to_string())?;
                notify
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .map_err(|e| e.to_string())?;
                let (ready, stop) = (Arc::clone(&ready), Arc::clone(&stop_notify));
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(n) = notify.recv(&mut buf)
                            && String::from_utf8_lossy(&buf[..n])
                                .lines()
                                .any(|l| l == "READY=1")
                        {
                            ready.store(true, Ordering::Relaxed);
                        }
                    }
                });
                command = Command::new(bin());
                command
                    .args(["run", "--config"])
                    .arg(spool.config())
                    .env("NOTIFY_SOCKET", &socket)
                    .env_remove("RUST_LOG")
                    .env_remove("JOURNAL_STREAM")
                    .env_remove("WATCHDOG_USEC")
                    .env_remove("WATCHDOG_PID");
            }
            Subject::Baseline => {
                command = Command::new("bash");
                command
                    .arg(baseline_script())
                    .arg(spool.root())
                    .arg(spool.components())
                    .env("KILL_GRACE", "1")
                    .env("TAIL_BYTES", TAIL_BYTES.to_string())
                    .env("TMPDIR", spool.dir.path());
            }
        }
        if let Some(trace) = trace {
            command = strace_command(trace, &command);
        }
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", subject.name()))?;
        let pgid = child.id() as i32;
        cleanup().0.push(pgid);
        let mut service = Service {
            subject,
            child: Some(child),
            pid: pgid,
            pgid,
            log,
            ready,
            stop_notify,
        };
        if trace.is_some() {
            service.pid = service.traced_subject()?;
        }
        Ok(service)
    }

    /// Under strace: the subject's pid, once strace's child has exec'd it.
    fn traced_subject(&mut self) -> Result<i32, String> {
        let exe = |pid: i32| fs::read_link(format!("/proc/{pid}/exe")).ok();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(&pid) = children(self.pgid).first()
                && exe(pid).is_some_and(|e| Some(e) != exe(self.pgid))
            {
                return Ok(pid);
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!("strace did not start {}", self.subject.name()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn start(subject: Subject, spool: &Spool) -> Result<Service, String> {
        let mut service = Self::spawn(subject, spool)?;
        service.wait_ready(Duration::from_secs(30))?;
        Ok(service)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self, patience: Duration) -> Result<(), String> {
        let deadline = Instant::now() + patience;
        loop {
            let ready = match self.subject {
                Subject::Ours => self.ready.load(Ordering::Relaxed),
                Subject::Baseline => self.log().lines().any(|l| l == "ready"),
            };
            if ready {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not ready after {patience:?}; log:\n{}",
                    self.subject.name(),
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn check_alive(&mut self) -> Result<(), String> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(format!(
                "{} exited ({status}); log:\n{}",
                self.subject.name(),
                self.log()
            ));
        }
        Ok(())
    }

    /// The subject's processes (see [`tree`]).
    fn processes(&self, scripts_under: Option<&Path>) -> Vec<i32> {
        tree(self.pid, scripts_under)
    }

    fn usage(&self) -> Usage {
        Usage::of(&self.processes(None))
    }

    /// SIGTERM (the whole group for the baseline), then SIGKILL after 10 s.
    fn stop(&mut self) -> Result<(), String> {
        use nix::sys::signal::{Signal, kill, killpg};
        use nix::unistd::Pid;
        self.stop_notify.store(true, Ordering::Relaxed);
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        cleanup().0.retain(|&p| p != self.pgid);
        let (pid, pgid) = (Pid::from_raw(self.pid), Pid::from_raw(self.pgid));
        let _ = match self.subject {
            Subject::Ours => kill(pid, Signal::SIGTERM),
            Subject::Baseline => killpg(pgid, Signal::SIGTERM),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if self.subject == Subject::Baseline {
                        let _ = killpg(pgid, Signal::SIGKILL);
                    }
                    return match (self.subject, status.success()) {
                        (Subject::Ours, false) => Err(format!(
                            "{} exited with {status} on SIGTERM; log:\n{}",
                            self.subject.name(),
                            self.log()
                        )),
                        _ => Ok(()),
                    };
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    let _ = killpg(pgid, Signal::SIGKILL);
                    let _ = child.wait();
                    return Err(format!("{} did not stop on SIGTERM", self.subject.name()));
                }
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop_notify.store(true, Ordering::Relaxed);
        if let Some(mut child) = self.child.take() {
            cleanup().0.retain(|&p| p != self.pgid);
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

/// `root` and its descendants: the service (its threads included), or the baseline's bash,
/// its loop subshell, inotifywait and whatever helper runs at that moment. Component scripts
/// (and their children) are left out when `scripts_under` is given.
fn tree(root: i32, scripts_under: Option<&Path>) -> Vec<i32> {
    tree_split(root, scripts_under).0
}

/// [`tree`], plus the script processes that were left out.
fn tree_split(root: i32, scripts_under: Option<&Path>) -> (Vec<i32>, Vec<i32>) {
    let mut out = Vec::new();
    let mut scripts = Vec::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        if let Some(dir) = scripts_under
            && is_script(pid, dir)
        {
            scripts.push(pid);
            continue;
        }
        out.push(pid);
        todo.extend(children(pid));
    }
    (out, scripts)
}

fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = fs::read_to_string(task.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    out
}

/// A component script: `/bin/sh <dir>/...` (how the kernel runs a `#!/bin/sh` script).
fn is_script(pid: i32, components: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|&b| b == 0);
    let (Some(argv0), Some(argv1)) = (args.next(), args.next()) else {
        return false;
    };
    argv0.ends_with(b"sh") && argv1.starts_with(components.as_os_str().as_encoded_bytes())
}

/// utime, stime, cutime, cstime in clock ticks.
fn cpu_ticks(pid: i32) -> Option<[u64; 4]> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14.
    let n = |i: usize| f.get(i - 3).and_then(|v| v.parse::<i64>().ok());
    Some([
        n(14)? as u64,
        n(15)? as u64,
        n(16)?.max(0) as u64,
        n(17)?.max(0) as u64,
    ])
}

fn status_kib(pid: i32, key: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Voluntary + involuntary context switches, summed over the process's threads.
fn ctx_switches(pid: i32) -> u64 {
    let mut sum = 0;
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = fs::read_to_string(task.path().join("status")) {
                for l in text.lines() {
                    if let Some(v) = l
                        .strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                    {
                        sum += v.trim().parse::<u64>().unwrap_or(0);
                    }
                }
            }
        }
    }
    sum
}

fn thread_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let t = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// One snapshot of a set of processes.
#[derive(Clone, Copy, Default, Debug)]
struct Usage {
    /// utime + stime of the processes themselves (threads included, exited ones too).
    own_ticks: u64,
    /// cutime + cstime: children they reaped (scripts, helpers).
    child_ticks: u64,
    rss_kib: u64,
    anon_kib: u64,
    hwm_kib: u64,
    ctx: u64,
    threads: usize,
    procs: usize,
}

impl Usage {
    fn of(pids: &[i32]) -> Usage {
        let mut u = Usage::default();
        for &pid in pids {
            if let Some([ut, st, cut, cst]) = cpu_ticks(pid) {
                u.own_ticks += ut + st;
                u.child_ticks += cut + cst;
                u.rss_kib += status_kib(pid, "VmRSS").unwrap_or(0);
                u.anon_kib += status_kib(pid, "RssAnon").unwrap_or(0);
                u.hwm_kib += status_kib(pid, "VmHWM").unwrap_or(0);
                u.ctx += ctx_switches(pid);
                u.threads += thread_count(pid);
                u.procs += 1;
            }
        }
        u
    }
}

/// The harness's own reaped children (for the script-alone figures).
fn self_child_ticks() -> u64 {
    cpu_ticks(std::process::id() as i32).map_or(0, |t| t[2] + t[3])
}

// ---------------------------------------------------------------------------------------------
// Watching status/

enum Note {
    Name(String),
    Rescan,
}

struct StatusWatch {
    dir: PathBuf,
    rx: mpsc::Receiver<Note>,
    _watcher: notify::RecommendedWatcher,
    fallbacks: usize,
}

impl StatusWatch {
    fn new(dir: &Path) -> Result<StatusWatch, String> {
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let note = match res {
                Ok(event) if event.need_rescan() => Some(Note::Rescan),
                Ok(event) => {
                    let path = match event.kind {
                        // Both subjects write temp + rename: the new name arrives as "moved to".
                        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => event.paths.first(),
                        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                            event.paths.first()
                        }
                        _ => None,
                    };
                    path.and_then(|p| p.file_name())
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_suffix(".json"))
                        .filter(|n| !n.starts_with('.'))
                        .map(|n| Note::Name(n.to_owned()))
                }
                Err(_) => Some(Note::Rescan),
            };
            if let Some(note) = note {
                let _ = tx.send(note);
            }
        })
        .map_err(|e| format!("inotify: {e}"))?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("inotify watch on {}: {e}", dir.display()))?;
        Ok(StatusWatch {
            dir: dir.to_owned(),
            rx,
            _watcher: watcher,
            fallbacks: 0,
        })
    }

    /// The status of `id` if it is final (`message` other than `in_progress`).
    fn final_status(&self, id: &str) -> Option<Value> {
        let bytes = fs::read(self.dir.join(format!("{id}.json"))).ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        (v["message"] != "in_progress").then_some(v)
    }

    /// Waits for the final status of `id`; returns it and when it was seen.
    fn wait_final(&mut self, id: &str, patience: Duration) -> Result<(Instant, Value), String> {
        let deadline = Instant::now() + patience;
        loop {
            match self.rx.recv_timeout(POLL_FALLBACK) {
                Ok(Note::Name(name)) if name != id => continue,
                Ok(_) => {
                    if let Some(v) = self.final_status(id) {
                        return Ok((Instant::now(), v));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(v) = self.final_status(id) {
                        self.fallbacks += 1;
                        return Ok((Instant::now(), v));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err("the status watch stopped".into());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no final status for {id} within {patience:?}"));
            }
        }
    }

    /// Waits until every id in `pending` has a final status. Returns when the last one was
    /// seen, and the statuses that did not report success. On timeout: the ids still missing.
    fn wait_all(
        &mut self,
        mut pending: HashSet<String>,
        patience: Duration,
    ) -> Result<(Instant, Vec<Value>), HashSet<String>> {
        let deadline = Instant::now() + patience;
        let mut last = Instant::now();
        let mut failed = Vec::new();
        let mut last_sweep = Instant::now();
        while !pending.is_empty() {
            let sweep = match self.rx.recv_timeout(POLL_FALLBACK) {
                Ok(Note::Name(name)) => {
                    if pending.contains(&name)
                        && let Some(v) = self.final_status(&name)
                    {
                        last = Instant::now();
                        pending.remove(&name);
                        if v["success"] != true {
                            failed.push(v);
                        }
                    }
                    false
                }
                Ok(Note::Rescan) | Err(mpsc::RecvTimeoutError::Disconnected) => true,
                Err(mpsc::RecvTimeoutError::Timeout) => last_sweep.elapsed() > POLL_FALLBACK,
            };
            if sweep {
                last_sweep = Instant::now();
                let done: Vec<(String, Value)> = pending
                    .iter()
                    .filter_map(|id| self.final_status(id).map(|v| (id.clone(), v)))
                    .collect();
                for (id, v) in done {
                    self.fallbacks += 1;
                    last = Instant::now();
                    pending.remove(&id);
                    if v["success"] != true {
                        failed.push(v);
                    }
                }
            }
            if Instant::now() > deadline && !pending.is_empty() {
                return Err(pending);
            }
        }
        Ok((last, failed))
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

#[derive(Clone, Debug)]
struct Dist {
    sorted: Vec<f64>,
}

impl Dist {
    fn new(mut v: Vec<f64>) -> Dist {
        v.sort_by(f64::total_cmp);
        Dist { sorted: v }
    }
    /// Nearest-rank percentile.
    fn p(&self, q: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let rank = (q / 100.0 * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }
    fn max(&self) -> f64 {
        self.sorted.last().copied().unwrap_or(f64::NAN)
    }
}

#[derive(Clone, Copy, Debug)]
enum Unit {
    Ms,
    Secs,
    Kib,
    Bytes,
    PerSec,
    Percent,
    Count,
    /// A ratio per request, two decimals (flushes per request).
    PerRequest,
}

fn fmt_value(v: f64, unit: Unit) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    match unit {
        Unit::Ms if v < 10.0 => format!("{v:.2} ms"),
        Unit::Ms if v < 1000.0 => format!("{v:.1} ms"),
        Unit::Ms => format!("{:.2} s", v / 1000.0),
        Unit::Secs => format!("{v:.2} s"),
        Unit::Kib => format!("{:.2} MiB", v / 1024.0),
        Unit::Bytes if v >= 1024.0 * 1024.0 => format!("{:.2} MiB", v / 1024.0 / 1024.0),
        Unit::Bytes => format!("{:.1} KiB", v / 1024.0),
        Unit::PerSec => format!("{v:.2}/s"),
        Unit::Percent => format!("{v:.3} %"),
        Unit::Count => format!("{v:.0}"),
        Unit::PerRequest => format!("{v:.2}"),
    }
}

/// A cell: a number, or why there is none.
#[derive(Clone, Debug)]
enum Cell {
    Value(f64, Unit),
    Text(String),
}

impl Cell {
    fn show(&self) -> String {
        match self {
            Cell::Value(v, u) => fmt_value(*v, *u),
            Cell::Text(t) => t.clone(),
        }
    }
    fn value(&self) -> Option<f64> {
        match self {
            Cell::Value(v, _) if v.is_finite() => Some(*v),
            _ => None,
        }
    }
}

struct Row {
    figure: String,
    ours: Cell,
    baseline: Cell,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    problems: Vec<String>,
    notes: Vec<String>,
}

impl Report {
    fn row(&mut self, figure: impl Into<String>, ours: Cell, baseline: Cell) {
        self.rows.push(Row {
            figure: figure.into(),
            ours,
            baseline,
        });
    }

    /// A note per subject that measured `results`, "<subject>: <note>".
    fn note_per_subject<T>(&mut self, ctx: &Ctx, results: &Both<T>, note: impl Fn(&T) -> String) {
        for (subject, result) in ctx.subjects().iter().zip(results) {
            if let Ok(r) = result {
                self.notes.push(format!("{}: {}", subject.name(), note(r)));
            }
        }
    }

    fn get(&self, figure_prefix: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.figure.starts_with(figure_prefix))
    }

    fn table(&self) -> String {
        let mut t = String::from(
            "| figure | update-coordinator | inotifywait loop (baseline) | ours / baseline |\n\
             | --- | ---: | ---: | ---: |\n",
        );
        for r in &self.rows {
            let ratio = match (r.ours.value(), r.baseline.value()) {
                (Some(a), Some(b)) if b != 0.0 => ratio(a / b),
                _ => "–".into(),
            };
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} |",
                r.figure,
                r.ours.show(),
                r.baseline.show(),
                ratio
            );
        }
        t
    }
}

fn ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else if r >= 0.01 {
        format!("{r:.2}×")
    } else {
        format!("{r:.4}×")
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Per-subject results, kept as numbers for the table and the target checks.
type Both<T> = [Result<T, String>; 2];

fn cell<T>(r: &Result<T, String>, f: impl Fn(&T) -> Cell) -> Cell {
    match r {
        Ok(v) => f(v),
        Err(e) if e == SKIPPED => Cell::Text("skipped".into()),
        Err(_) => Cell::Text("**error**".into()),
    }
}

const SKIPPED: &str = "skipped";

// ---------------------------------------------------------------------------------------------
// Measurements

struct Ctx {
    settings: Settings,
    dialect: Dialect,
    baseline: Result<(), String>,
    ticks: f64,
}

impl Ctx {
    fn subjects(&self) -> [Subject; 2] {
        [Subject::Ours, Subject::Baseline]
    }

    /// A fresh spool, the harness's watch on its `status/`, and `subject` started on it: how
    /// each measurement begins (the backlog's fills its spool before the start).
    fn start(&self, subject: Subject) -> Result<(Spool, StatusWatch, Service), String> {
        let spool = Spool::new(&self.settings, &self.dialect)?;
        let watch = StatusWatch::new(&spool.status())?;
        let service = Service::start(subject, &spool)?;
        Ok((spool, watch, service))
    }

    /// Runs `f` for both subjects (the baseline only if its tools are there).
    fn both<T>(
        &self,
        what: &str,
        report: &mut Report,
        mut f: impl FnMut(Subject) -> Result<T, String>,
    ) -> Both<T> {
        self.subjects().map(|s| {
            if s == Subject::Baseline && self.baseline.is_err() {
                return Err(SKIPPED.to_owned());
            }
            if !self.settings.selected(what) {
                return Err(SKIPPED.to_owned());
            }
            // Start every measurement with no dirty pages in flight (the build, the previous
            // phase's thousands of files): writeback would otherwise slow every fsync.
            nix::unistd::sync();
            eprintln!("[{}] {what} ...", s.name());
            let started = Instant::now();
            let r = f(s);
            match &r {
                Ok(_) => eprintln!(
                    "[{}] {what}: done in {:.1} s",
                    s.name(),
                    started.elapsed().as_secs_f64()
                ),
                Err(e) => {
                    eprintln!("[{}] {what}: FAILED: {e}", s.name());
                    report
                        .problems
                        .push(format!("{} / {what}: {}", s.name(), first_line(e)));
                }
            }
            r
        })
    }
}

fn first_line(s: &str) -> String {
    let mut lines = s.lines();
    let first = lines.next().unwrap_or_default().to_owned();
    let rest = lines.count();
    if rest > 0 {
        format!("{first} (+{rest} lines of log on stderr)")
    } else {
        first
    }
}

/// The no-op script run the way the service runs it (argv, clean env, own process group,
/// stdout/stderr piped and read to the end), `n` times, by the harness itself.
struct ScriptAlone {
    latency: Dist,
    cpu_ms: f64,
}

fn script_alone(ctx: &Ctx, n: usize) -> Result<ScriptAlone, String> {
    let spool = Spool::new(&ctx.settings, &ctx.dialect)?;
    let dir = spool.components().join("noop");
    let script = dir.join("health-check.sh");
    let before = self_child_ticks();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let out = Command::new(&script)
            .current_dir(&dir)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("REQUEST_ID", "x")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        times.push(ms(t0.elapsed()));
        if !out.status.success() {
            return Err(format!("{} failed: {}", script.display(), out.status));
        }
    }
    let cpu = (self_child_ticks() - before) as f64 / ctx.ticks * 1000.0 / n as f64;
    Ok(ScriptAlone {
        latency: Dist::new(times),
        cpu_ms: cpu,
    })
}

struct Latency {
    in_place: Dist,
    renamed: Dist,
    /// CPU per request (ms) of the long-lived processes themselves (utime+stime; the
    /// coordinator, or the baseline's bash, loop subshell and inotifywait), reaped children
    /// (monitors, helpers, scripts) not included.
    own_cpu_ms: f64,
    /// Everything: the service, its helpers and the scripts (reaped children included).
    total_cpu_ms: f64,
    fallbacks: usize,
}

/// One `noop` health check, in place or by rename, waited for until it is completely done
/// (final status seen, request file gone; the harness then deletes the status as the client
/// does). Returns the pickup latency in ms: from the drop to the final status seen.
fn one_request(
    spool: &Spool,
    watch: &mut StatusWatch,
    service: &mut Service,
    renamed: bool,
) -> Result<f64, String> {
    let id = new_id();
    let json = support::Spool::request_json(&id, "noop", "health", None);
    if renamed {
        spool.drop_renamed(&id, &json)?;
    } else {
        spool.drop_in_place(&id, &json)?;
    }
    let t0 = Instant::now();
    let (seen, status) = watch
        .wait_final(&id, Duration::from_secs(30))
        .map_err(|e| format!("{e}; log:\n{}", service.log()))?;
    if status["success"] != true {
        return Err(format!("request {id} failed: {status}"));
    }
    // Sequential: the next request goes in once this one is completely done.
    spool.wait_requests_empty(Duration::from_secs(30))?;
    let _ = fs::remove_file(spool.status().join(format!("{id}.json")));
    service.check_alive()?;
    Ok(ms(seen - t0))
}

fn latency(ctx: &Ctx, subject: Subject) -> Result<Latency, String> {
    let s = &ctx.settings;
    let (spool, mut watch, mut service) = ctx.start(subject)?;
    for _ in 0..s.warmup {
        one_request(&spool, &mut watch, &mut service, true)?;
    }
    let fallbacks_before = watch.fallbacks;
    let before = service.usage();
    let mut in_place = Vec::with_capacity(s.latency);
    let mut renamed = Vec::with_capacity(s.latency);
    for _ in 0..s.latency {
        in_place.push(one_request(&spool, &mut watch, &mut service, false)?);
    }
    for _ in 0..s.latency {
        renamed.push(one_request(&spool, &mut watch, &mut service, true)?);
    }
    // Let the last helper processes be reaped, so their time is in their parent's cutime.
    std::thread::sleep(Duration::from_millis(100));
    let after = service.usage();
    service.stop()?;
    let n = (2 * s.latency) as f64;
    let per = |ticks: u64| ticks as f64 / ctx.ticks * 1000.0 / n;
    // The baseline's loop forks helpers for every request; a process that was alive at the
    // first snapshot but is gone at the second would make the delta negative: clamp.
    let own = after.own_ticks.saturating_sub(before.own_ticks);
    let total =
        (after.own_ticks + after.child_ticks).saturating_sub(before.own_ticks + before.child_ticks);
    Ok(Latency {
        in_place: Dist::new(in_place),
        renamed: Dist::new(renamed),
        own_cpu_ms: per(own),
        total_cpu_ms: per(total),
        fallbacks: watch.fallbacks - fallbacks_before,
    })
}

/// A health check on `noop` submitted while an update of `slow` runs.
fn beside_slow(ctx: &Ctx, subject: Subject) -> Result<Dist, String> {
    let s = &ctx.settings;
    let (spool, mut watch, mut service) = ctx.start(subject)?;
    let mut times = Vec::new();
    for rep in 0..s.slow_reps {
        let update = new_id();
        let version = format!("1.0.{rep}");
        spool.drop_renamed(
            &update,
            &support::Spool::request_json(&update, "slow", "update", Some(&version)),
        )?;
        std::thread::sleep(Duration::from_millis(100)); // the update is running by now
        let health = new_id();
        spool.drop_renamed(
            &health,
            &support::Spool::request_json(&health, "noop", "health", None),
        )?;
        let t0 = Instant::now();
        let patience = Duration::from_secs(s.slow_secs * 3 + 30);
        let (seen, status) = watch.wait_final(&health, patience)?;
        if status["success"] != true {
            return Err(format!("health check failed: {status}"));
        }
        times.push(ms(seen - t0));
        let (_, status) = watch.wait_final(&update, patience)?;
        if status["success"] != true {
            return Err(format!("slow update failed: {status}"));
        }
        spool.wait_requests_empty(Duration::from_secs(30))?;
    }
    service.check_alive()?;
    service.stop()?;
    Ok(Dist::new(times))
}

struct Drain {
    /// From the first request dropped (burst) or the service started (backlog) to the last
    /// final status seen.
    time: Duration,
    /// Burst only: how long dropping all requests took.
    drop_time: Duration,
    n: usize,
    total_cpu_ms: f64,
    /// Service processes' summed VmHWM at the end.
    hwm_kib: u64,
}

fn check_drain(
    spool: &Spool,
    service: &mut Service,
    result: Result<(Instant, Vec<Value>), HashSet<String>>,
    ids: &[String],
) -> Result<Instant, String> {
    let n = ids.len();
    match result {
        Ok((last, failed)) => {
            if let Some(first) = failed.first() {
                return Err(format!(
                    "{} of {n} requests failed; first: {first}",
                    failed.len()
                ));
            }
            spool.wait_requests_empty(Duration::from_secs(60))?;
            // Every answer is still there and final (other files the service publishes in
            // status/, such as an inventory, are not ours to count).
            let still_final = ids
                .iter()
                .filter(|id| {
                    fs::read(spool.status().join(format!("{id}.json")))
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                        .is_some_and(|v| v["message"] != "in_progress")
                })
                .count();
            if still_final != n {
                return Err(format!(
                    "{} of {n} final statuses went missing or back to in_progress",
                    n - still_final
                ));
            }
            service.check_alive()?;
            Ok(last)
        }
        Err(missing) => Err(format!(
            "LOST: {} of {n} requests have no final status (e.g. {}); log tail:\n{}",
            missing.len(),
            missing.iter().next().cloned().unwrap_or_default(),
            tail_lines(&service.log(), 20)
        )),
    }
}

fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `n` `noop` health checks written into the staging dir (same filesystem as `requests/`).
fn stage_burst(spool: &Spool, n: usize) -> Result<Vec<String>, String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let id = new_id();
        fs::write(
            spool.staging().join(format!("{id}.json")),
            support::Spool::request_json(&id, "noop", "health", None),
        )
        .map_err(|e| e.to_string())?;
        ids.push(id);
    }
    Ok(ids)
}

/// Renames the staged requests into `requests/`, one after another as fast as possible.
fn drop_staged(spool: &Spool, ids: &[String]) -> Result<(), String> {
    for id in ids {
        let name = format!("{id}.json");
        fs::rename(spool.staging().join(&name), spool.requests().join(&name))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn burst(ctx: &Ctx, subject: Subject) -> Result<Drain, String> {
    let s = &ctx.settings;
    let n = s.burst;
    let (spool, mut watch, mut service) = ctx.start(subject)?;
    let ids = stage_burst(&spool, n)?;
    let before = service.usage();
    let t0 = Instant::now();
    drop_staged(&spool, &ids)?;
    let drop_time = t0.elapsed();
    let result = watch.wait_all(ids.iter().cloned().collect(), Duration::from_secs(1800));
    let last = check_drain(&spool, &mut service, result, &ids)?;
    std::thread::sleep(Duration::from_millis(100));
    let after = service.usage();
    service.stop()?;
    let per = |ticks: u64| ticks as f64 / ctx.ticks * 1000.0 / n as f64;
    Ok(Drain {
        time: last - t0,
        drop_time,
        n,
        total_cpu_ms: per((after.own_ticks + after.child_ticks)
            .saturating_sub(before.own_ticks + before.child_ticks)),
        hwm_kib: after.hwm_kib,
    })
}

fn backlog(ctx: &Ctx, subject: Subject) -> Result<Drain, String> {
    let s = &ctx.settings;
    let n = s.backlog;
    let spool = Spool::new(s, &ctx.dialect)?;
    let mut watch = StatusWatch::new(&spool.status())?;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let id = new_id();
        spool.drop_in_place(
            &id,
            &support::Spool::request_json(&id, "noop", "health", None),
        )?;
        ids.push(id);
    }
    let t0 = Instant::now();
    let mut service = Service::spawn(subject, &spool)?;
    let result = watch.wait_all(ids.iter().cloned().collect(), Duration::from_secs(3600));
    let last = check_drain(&spool, &mut service, result, &ids)?;
    std::thread::sleep(Duration::from_millis(100));
    let after = service.usage();
    service.stop()?;
    let per = |ticks: u64| ticks as f64 / ctx.ticks * 1000.0 / n as f64;
    Ok(Drain {
        time: last - t0,
        drop_time: Duration::ZERO,
        n,
        total_cpu_ms: per(after.own_ticks + after.child_ticks),
        hwm_kib: after.hwm_kib,
    })
}

struct Idle {
    rss_kib: u64,
    anon_kib: u64,
    cpu_percent: f64,
    ctx_per_sec: f64,
    ctx_total: u64,
    threads: usize,
    procs: usize,
}

fn idle(ctx: &Ctx, subject: Subject) -> Result<Idle, String> {
    let s = &ctx.settings;
    let (spool, mut watch, mut service) = ctx.start(subject)?;
    // Warm up: a few requests, so the figure is "idle after work", not "idle after start".
    for _ in 0..s.warmup {
        let id = new_id();
        spool.drop_renamed(
            &id,
            &support::Spool::request_json(&id, "noop", "health", None),
        )?;
        watch.wait_final(&id, Duration::from_secs(30))?;
    }
    spool.wait_requests_empty(Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(1));
    let pids = service.processes(None);
    let before = Usage::of(&pids);
    let t0 = Instant::now();
    std::thread::sleep(s.idle);
    let secs = t0.elapsed().as_secs_f64();
    let after = Usage::of(&pids);
    service.check_alive()?;
    if after.procs != before.procs {
        return Err("processes came or went during the idle period".into());
    }
    service.stop()?;
    let cpu_secs = (after.own_ticks + after.child_ticks)
        .saturating_sub(before.own_ticks + before.child_ticks) as f64
        / ctx.ticks;
    let ctx_total = after.ctx - before.ctx;
    Ok(Idle {
        rss_kib: after.rss_kib.max(before.rss_kib),
        anon_kib: after.anon_kib,
        cpu_percent: cpu_secs / secs * 100.0,
        ctx_per_sec: ctx_total as f64 / secs,
        ctx_total,
        threads: after.threads,
        procs: after.procs,
    })
}

struct BigOutput {
    /// Max over samples of the summed RSS of the subject's processes, scripts excluded.
    sampled_peak_kib: u64,
    /// VmHWM (the kernel's own peak) of every service process seen while it ran, summed: an
    /// upper bound (processes that ran one after another are added up too).
    hwm_kib: u64,
    /// How many distinct service processes were seen.
    procs: usize,
    time: Duration,
    samples: usize,
}

fn big_output(ctx: &Ctx, subject: Subject) -> Result<BigOutput, String> {
    let (spool, mut watch, mut service) = ctx.start(subject)?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        let root = service.pid;
        let scripts = spool.components();
        std::thread::spawn(move || {
            // Per sample: (pid, VmRSS) of every service process. A pid that is seen as a
            // script later was, in the earlier samples, that script between fork and exec (a
            // copy of its parent): it is left out of every sample at the end.
            let mut seen: Vec<Vec<(i32, u64)>> = Vec::new();
            let mut hwm = std::collections::HashMap::new();
            let mut script_pids = HashSet::new();
            // One more sample after the stop, so the last state is seen too.
            let mut last = false;
            while !last {
                last = stop.load(Ordering::Relaxed);
                let (pids, scripts) = tree_split(root, Some(&scripts));
                script_pids.extend(scripts);
                let mut sample = Vec::with_capacity(pids.len());
                for pid in pids {
                    sample.push((pid, status_kib(pid, "VmRSS").unwrap_or(0)));
                    let h = status_kib(pid, "VmHWM").unwrap_or(0);
                    let e = hwm.entry(pid).or_insert(0);
                    *e = h.max(*e);
                }
                seen.push(sample);
                std::thread::sleep(Duration::from_millis(2));
            }
            let peak = seen
                .iter()
                .map(|sample| {
                    sample
                        .iter()
                        .filter(|(pid, _)| !script_pids.contains(pid))
                        .map(|(_, rss)| rss)
                        .sum::<u64>()
                })
                .max()
                .unwrap_or(0);
            hwm.retain(|pid, _| !script_pids.contains(pid));
            (peak, seen.len(), hwm.values().sum::<u64>(), hwm.len())
        })
    };
    let id = new_id();
    spool.drop_renamed(
        &id,
        &support::Spool::request_json(&id, "chatty", "health", None),
    )?;
    let t0 = Instant::now();
    let result = watch.wait_final(&id, Duration::from_secs(600));
    stop.store(true, Ordering::Relaxed);
    let (peak, samples, hwm, procs) = sampler.join().map_err(|_| "sampler panicked")?;
    let (seen, status) = result?;
    if status["success"] != true {
        return Err(format!("the chatty script failed: {status}"));
    }
    let output = status["output"].as_str().unwrap_or_default();
    if output.is_empty() || output.len() as u64 > TAIL_BYTES {
        return Err(format!("unexpected output tail of {} bytes", output.len()));
    }
    spool.wait_requests_empty(Duration::from_secs(30))?;
    service.check_alive()?;
    service.stop()?;
    Ok(BigOutput {
        sampled_peak_kib: peak,
        hwm_kib: hwm,
        procs,
        time: seen - t0,
        samples,
    })
}

// ---------------------------------------------------------------------------------------------
// Flushes

/// The flush system calls counted (issue 19's `strace -e trace=` list).
const FLUSH_CALLS: [&str; 4] = ["fsync", "fdatasync", "syncfs", "sync_file_range"];
/// Requests in each flush pass, quick run or full: these are counts, not times, and a larger
/// pass would only take longer.
const FLUSH_SEQUENTIAL: usize = 50;
const FLUSH_BURST: usize = 200;
/// How long a subject is left alone, once its last request is completely done and its helper
/// processes are gone, before a counting window closes: the service's writes that follow an
/// answer (a record completed, the request file removed) belong to the request.
const FLUSH_SETTLE: Duration = Duration::from_millis(500);

/// `strace` running `command`, following every process it starts (`-f`), writing each flush
/// call with its wall-clock time (`-ttt`) to `trace`. With `--seccomp-bpf` only those calls
/// stop the tracee, so the subject runs at nearly its normal speed.
fn strace_command(trace: &Path, command: &Command) -> Command {
    let mut strace = Command::new("strace");
    strace
        .args([
            "-f",
            "--seccomp-bpf",
            "-qq",
            "-ttt",
            "-e",
            "signal=none",
            "-e",
        ])
        .arg(format!("trace={}", FLUSH_CALLS.join(",")))
        .arg("-o")
        .arg(trace)
        .arg("--")
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(v) => strace.env(key, v),
            None => strace.env_remove(key),
        };
    }
    strace
}

/// Flush calls in one counting window, by system call.
#[derive(Clone, Debug, Default)]
struct FlushCount {
    requests: usize,
    /// Calls per system call name, failed ones included (as `strace -c` counts them).
    calls: BTreeMap<String, u64>,
    /// How many of those returned an error.
    failed: u64,
}

impl FlushCount {
    fn total(&self) -> u64 {
        self.calls.values().sum()
    }

    fn per_request(&self) -> f64 {
        self.total() as f64 / self.requests as f64
    }

    /// "fsync 700, fdatasync 0, syncfs 0, sync_file_range 0 (0 failed)".
    fn by_call(&self) -> String {
        let calls: Vec<String> = FLUSH_CALLS
            .iter()
            .map(|c| format!("{c} {}", self.calls.get(*c).copied().unwrap_or(0)))
            .collect();
        format!("{} ({} failed)", calls.join(", "), self.failed)
    }
}

/// Counts the calls that strace's `-ttt -o` output shows entering between `from` and `to`
/// (seconds since the epoch). A call is a line `PID TIME NAME(...`, complete or the first half
/// of an `<unfinished ...>` one; the `<... NAME resumed>` line that ends it carries its result
/// (when it failed) and is attributed to the call's window through its pid.
fn count_flush_calls(trace: &str, from: f64, to: f64, requests: usize) -> FlushCount {
    let mut count = FlushCount {
        requests,
        ..FlushCount::default()
    };
    // Pids whose unfinished call was counted in this window.
    let mut open = HashSet::new();
    for line in trace.lines() {
        // "PID  TIME CALL...": fields separated by one or more spaces.
        let Some((pid, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((time, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(time) = time.parse::<f64>() else {
            continue;
        };
        let rest = rest.trim_start();
        let failed = u64::from(rest.contains(") = -1 "));
        if rest.starts_with("<... ") {
            if open.remove(pid) {
                count.failed += failed;
            }
        } else if let Some(name) = FLUSH_CALLS
            .iter()
            .find(|c| rest.starts_with(&format!("{c}(")))
            && (from..to).contains(&time)
        {
            *count.calls.entry((*name).to_owned()).or_insert(0) += 1;
            count.failed += failed;
            if rest.ends_with("<unfinished ...>") {
                open.insert(pid.to_owned());
            }
        }
    }
    count
}

fn epoch_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

struct Flushes {
    /// Start-up and the warm-up requests, before the first window (not counted per request).
    before: FlushCount,
    sequential: FlushCount,
    burst: FlushCount,
}

/// Flushes per request: the subject runs under strace from its start (the service and every
/// process it starts: monitors, scripts; the baseline's bash, inotifywait, jq, mv...), and the
/// calls are counted in two windows that open and close while it is idle: 50 requests one at
/// a time, then a burst of 200. Start-up and the warm-up requests (directories and files made
/// once) fall before the first window and are not counted. Nothing is timed here.
fn flushes(ctx: &Ctx, subject: Subject) -> Result<Flushes, String> {
    let spool = Spool::new(&ctx.settings, &ctx.dialect)?;
    let mut watch = StatusWatch::new(&spool.status())?;
    let trace = spool.dir.path().join("flushes.strace");
    let mut service = Service::spawn_traced(subject, &spool, Some(&trace))?;
    service.wait_ready(Duration::from_secs(30))?;
    let long_lived = service.processes(None).len();
    // Idle: only the long-lived processes, then nothing for FLUSH_SETTLE.
    let settle = |service: &Service| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while service.processes(None).len() > long_lived {
            if Instant::now() > deadline {
                return Err("the subject's helper processes did not exit within 30 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(FLUSH_SETTLE);
        Ok(epoch_secs())
    };
    for _ in 0..ctx.settings.warmup {
        one_request(&spool, &mut watch, &mut service, true)?;
    }
    let t0 = settle(&service)?;
    for _ in 0..FLUSH_SEQUENTIAL {
        one_request(&spool, &mut watch, &mut service, false)?;
    }
    let t1 = settle(&service)?;
    let ids = stage_burst(&spool, FLUSH_BURST)?;
    drop_staged(&spool, &ids)?;
    let result = watch.wait_all(ids.iter().cloned().collect(), Duration::from_secs(1800));
    check_drain(&spool, &mut service, result, &ids)?;
    let t2 = settle(&service)?;
    // strace exits with the subject and has written everything by then.
    service.stop()?;
    let text = fs::read_to_string(&trace).map_err(|e| format!("{}: {e}", trace.display()))?;
    Ok(Flushes {
        before: count_flush_calls(&text, 0.0, t0, ctx.settings.warmup),
        sequential: count_flush_calls(&text, t0, t1, FLUSH_SEQUENTIAL),
        burst: count_flush_calls(&text, t1, t2, FLUSH_BURST),
    })
}

/// Stripped release binary (ours); the script plus the programs and libraries it needs that
/// ours does not (inotifywait, jq and their shared libraries) for the baseline.
/// Ours: (stripped, unstripped) bytes. Baseline: (bytes, the files counted).
type Sizes = (Result<(u64, u64), String>, Result<(u64, String), String>);

fn sizes(ctx: &Ctx) -> Sizes {
    let ours = (|| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let copy = dir.path().join("update-coordinator");
        fs::copy(bin(), &copy).map_err(|e| e.to_string())?;
        let unstripped = fs::metadata(&copy).map_err(|e| e.to_string())?.len();
        let st = Command::new("strip")
            .arg(&copy)
            .status()
            .map_err(|e| format!("strip: {e}"))?;
        if !st.success() {
            return Err(format!("strip failed: {st}"));
        }
        Ok((
            fs::metadata(&copy).map_err(|e| e.to_string())?.len(),
            unstripped,
        ))
    })();
    let baseline = match &ctx.baseline {
        Err(_) => Err(SKIPPED.to_owned()),
        Ok(()) => (|| {
            let libs_of = |bin: &str| -> Result<Vec<String>, String> {
                let out = Command::new("ldd")
                    .arg(bin)
                    .output()
                    .map_err(|e| format!("ldd: {e}"))?;
                Ok(String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.split("=>").nth(1))
                    .filter_map(|r| r.split_whitespace().next())
                    .filter(|p| p.starts_with('/'))
                    .map(str::to_owned)
                    .collect())
            };
            let ours_libs: HashSet<String> =
                libs_of(&bin().to_string_lossy())?.into_iter().collect();
            let mut files = vec![baseline_script().to_string_lossy().into_owned()];
            for tool in ["inotifywait", "jq"] {
                let path = which(tool).ok_or(format!("{tool} not found"))?;
                let path = path.to_string_lossy().into_owned();
                files.extend(
                    libs_of(&path)?
                        .into_iter()
                        .filter(|l| !ours_libs.contains(l)),
                );
                files.push(path);
            }
            files.sort();
            files.dedup();
            let mut total = 0;
            let mut names = Vec::new();
            for f in &files {
                total += fs::metadata(f).map_err(|e| format!("{f}: {e}"))?.len();
                names.push(
                    Path::new(f)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                );
            }
            Ok((total, names.join(", ")))
        })(),
    };
    (ours, baseline)
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_else(|| "?".into())
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let mem = status_like("/proc/meminfo", "MemTotal").unwrap_or(0);
    let tmp = std::env::temp_dir();
    let fs_type = command_line(
        "findmnt",
        &[
            "-n",
            "-o",
            "FSTYPE,SOURCE,OPTIONS",
            "-T",
            &tmp.to_string_lossy(),
        ],
    );
    format!(
        "- nproc: {}; CPU: {cpu}; memory: {:.1} GiB; kernel: {kernel}\n\
         - temp dir {} on: {fs_type}\n\
         - bash: {}; jq: {}; inotifywait: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem as f64 / 1024.0 / 1024.0,
        tmp.display(),
        command_line("bash", &["--version"]),
        command_line("jq", &["--version"]),
        command_line("inotifywait", &["--help"]),
    )
}

fn status_like(file: &str, key: &str) -> Option<u64> {
    fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One row of a targets table; `met: None` when the figure was not measured in this run.
fn target_row(table: &mut String, what: &str, measured: String, met: Option<bool>) {
    let verdict = match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    };
    let _ = writeln!(table, "| {what} | {measured} | {verdict} |");
}

/// The targets of issue 19 (fewer flushes, faster answers), from the rows of this run.
fn issue19_targets(
    report: &Report,
    s: &Settings,
    idles: &Both<Idle>,
    flush: &Both<Flushes>,
) -> String {
    let mut t = String::from("| target (issue #19) | measured | verdict |\n| --- | --- | --- |\n");
    let val = |prefix: &str| report.get(prefix).and_then(|r| r.ours.value());
    let base = |prefix: &str| report.get(prefix).and_then(|r| r.baseline.value());
    let per_request = |f: &Both<Flushes>, col: usize, pick: fn(&Flushes) -> &FlushCount| {
        f[col].as_ref().ok().map(|f| pick(f).per_request())
    };
    for (what, pick, limit) in [
        (
            "≤ 3 flushes per request, one at a time",
            (|f: &Flushes| &f.sequential) as fn(&Flushes) -> &FlushCount,
            3.0,
        ),
        (
            "≤ 1 flush per request in a burst of 200",
            |f: &Flushes| &f.burst,
            1.0,
        ),
    ] {
        let (ours, loop_) = (per_request(flush, 0, pick), per_request(flush, 1, pick));
        let measured = match (ours, loop_) {
            (Some(o), Some(b)) => format!("{o:.2} (the loop: {b:.2})"),
            (Some(o), None) => format!("{o:.2}"),
            _ => "n/a".into(),
        };
        target_row(&mut t, what, measured, ours.map(|o| o <= limit));
    }
    let (p50, p99) = (
        val("pickup latency, in place, p50"),
        val("pickup latency, in place, p99"),
    );
    target_row(
        &mut t,
        "in-place pickup to final status p50 ≤ 3 ms and p99 ≤ 10 ms",
        match (p50, p99) {
            (Some(a), Some(b)) => format!(
                "p50 {}, p99 {}",
                fmt_value(a, Unit::Ms),
                fmt_value(b, Unit::Ms)
            ),
            _ => "n/a".into(),
        },
        p50.zip(p99).map(|(a, b)| a <= 3.0 && b <= 10.0),
    );
    let faster = |prefix: &str, higher_is_better: bool| {
        val(prefix)
            .zip(base(prefix))
            .map(|(o, b)| if higher_is_better { o / b } else { b / o })
    };
    let lat_x = faster("pickup latency, in place, p50", false);
    let lat99_x = faster("pickup latency, in place, p99", false);
    target_row(
        &mut t,
        "in-place pickup ≥ 15× faster than the inotifywait loop, same run (p50)",
        lat_x.map_or("n/a".into(), |x| {
            format!(
                "p50 {x:.1}× faster (p99 {})",
                lat99_x.map_or("n/a".into(), |y| format!("{y:.1}×"))
            )
        }),
        lat_x.map(|x| x >= 15.0),
    );
    let rate = val("… burst throughput");
    target_row(
        &mut t,
        &format!("burst ≥ 300 requests/s ({} dropped at once)", s.burst),
        rate.map_or("n/a".into(), |r| fmt_value(r, Unit::PerSec)),
        rate.map(|r| r >= 300.0),
    );
    let burst_x = faster("… burst throughput", true);
    target_row(
        &mut t,
        "burst ≥ 15× the loop's throughput",
        burst_x.map_or("n/a".into(), |x| format!("{x:.1}×")),
        burst_x.map(|x| x >= 15.0),
    );
    let idle = idles[0].as_ref().ok();
    target_row(
        &mut t,
        "idle RSS ≤ 5 MiB with 0 wakeups",
        idle.map_or("n/a".into(), |i| {
            format!(
                "{}, {} context switches in {} s",
                fmt_value(i.rss_kib as f64, Unit::Kib),
                i.ctx_total,
                s.idle.as_secs()
            )
        }),
        idle.map(|i| i.rss_kib <= 5 * 1024 && i.ctx_total == 0),
    );
    let peak = val("peak RSS while a script prints");
    let mb = s.output_bytes as f64 / 1e6;
    target_row(
        &mut t,
        "100 MB of output under 16 MiB peak",
        peak.map_or("n/a".into(), |v| {
            let size = if s.output_bytes == 100_000_000 {
                String::new()
            } else {
                format!(" (for {mb:.0} MB in this run)")
            };
            format!("{}{size}", fmt_value(v, Unit::Kib))
        }),
        peak.map(|v| v < 16.0 * 1024.0),
    );
    target_row(
        &mut t,
        "slow-flush disk: the same latency and burst figures on a dm-delay device, ours and the loop",
        "benches/slowdisk.sh (in the lab guest), not this run".into(),
        None,
    );
    t
}

fn main() -> ExitCode {
    stop_subjects_on_signals();
    let settings = Settings::from_args();
    let started = Instant::now();
    let load_at_start = loadavg();
    let baseline = ["bash", "inotifywait", "jq", "timeout", "tail"]
        .iter()
        .find(|t| which(t).is_none())
        .map_or(Ok(()), |missing| {
            Err(format!(
                "`{missing}` is not installed (apt-get install -y inotify-tools jq)"
            ))
        })
        .and_then(|()| {
            if settings.no_baseline {
                Err("--no-baseline was given".to_owned())
            } else {
                Ok(())
            }
        });
    if let Err(e) = &baseline {
        eprintln!("\nWARNING: the baseline column is SKIPPED: {e}\n");
    }
    match shipped_binary() {
        Ok(path) => {
            let _ = BIN.set(path);
        }
        Err(e) => {
            eprintln!("cannot build the release binary: {e}");
            return ExitCode::FAILURE;
        }
    }
    let dialect = match Dialect::probe() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot probe the config format of {}: {e}", bin().display());
            return ExitCode::FAILURE;
        }
    };
    let ctx = Ctx {
        settings,
        dialect,
        baseline,
        ticks: ticks_per_second(),
    };
    let s = &ctx.settings;
    let mut report = Report::default();
    report.notes.push(format!(
        "service binary: {}{}",
        bin().display(),
        if std::env::var_os(BIN_OVERRIDE).is_some() {
            format!(" (from ${BIN_OVERRIDE})")
        } else {
            " (cargo build --release)".to_owned()
        }
    ));
    if !ctx.dialect.unsupported.is_empty() {
        report.notes.push(format!(
            "config keys this build does not know, left out: {:?}",
            ctx.dialect.unsupported
        ));
    }

    nix::unistd::sync();
    eprintln!("[harness] the no-op script alone, {} runs ...", s.latency);
    let alone = script_alone(&ctx, s.latency);
    if let Err(e) = &alone {
        report.problems.push(format!("script alone: {e}"));
    }

    let lat = ctx.both("latency", &mut report, |subj| latency(&ctx, subj));
    let slow = ctx.both("beside-slow", &mut report, |subj| beside_slow(&ctx, subj));
    let bursts = ctx.both("burst", &mut report, |subj| burst(&ctx, subj));
    let backlogs = ctx.both("backlog", &mut report, |subj| backlog(&ctx, subj));
    let idles = ctx.both("idle", &mut report, |subj| idle(&ctx, subj));
    let bigs = ctx.both("big-output", &mut report, |subj| big_output(&ctx, subj));
    let flush = if s.selected("flushes") && which("strace").is_none() {
        let why = "`strace` is not installed (apt-get install -y strace)";
        eprintln!("\nWARNING: the flush counts are SKIPPED: {why}\n");
        report
            .notes
            .push(format!("flushes per request: skipped, {why}"));
        [Err(SKIPPED.to_owned()), Err(SKIPPED.to_owned())]
    } else {
        ctx.both("flushes", &mut report, |subj| flushes(&ctx, subj))
    };
    let (size_ours, size_base) = if s.selected("size") {
        sizes(&ctx)
    } else {
        (Err(SKIPPED.to_owned()), Err(SKIPPED.to_owned()))
    };
    if let Err(e) = &size_ours
        && e != SKIPPED
    {
        report.problems.push(format!("binary size: {e}"));
    }

    // ---- the table
    let n = s.latency;
    for (label, pick) in [
        (
            "in place",
            (|l: &Latency| &l.in_place) as fn(&Latency) -> &Dist,
        ),
        ("temp+rename", |l: &Latency| &l.renamed),
    ] {
        for (q, name) in [(50.0, "p50"), (95.0, "p95"), (99.0, "p99"), (100.0, "max")] {
            let get = |l: &Latency| {
                let d = pick(l);
                Cell::Value(if q >= 100.0 { d.max() } else { d.p(q) }, Unit::Ms)
            };
            report.row(
                format!("pickup latency, {label}, {name} ({n} sequential no-op health checks)"),
                cell(&lat[0], get),
                cell(&lat[1], get),
            );
        }
    }
    if let Ok(a) = &alone {
        for (q, name) in [(50.0, "p50"), (99.0, "p99")] {
            let v = Cell::Value(a.latency.p(q), Unit::Ms);
            report.row(
                format!("… the no-op script alone, {name} (spawned by the harness, {n} runs)"),
                v.clone(),
                v,
            );
        }
        for (label, pick) in [
            (
                "in place",
                (|l: &Latency| &l.in_place) as fn(&Latency) -> &Dist,
            ),
            ("temp+rename", |l: &Latency| &l.renamed),
        ] {
            for (q, name) in [(50.0, "p50"), (99.0, "p99")] {
                let get = |l: &Latency| Cell::Value(pick(l).p(q) - a.latency.p(50.0), Unit::Ms);
                report.row(
                    format!("overhead beyond the script, {label}, {name} (latency {name} − script-alone p50)"),
                    cell(&lat[0], get),
                    cell(&lat[1], get),
                );
            }
        }
    }
    let minus_script = |total: f64| match &alone {
        Ok(a) => Cell::Value(total - a.cpu_ms, Unit::Ms),
        Err(_) => Cell::Text("n/a".into()),
    };
    report.row(
        format!(
            "CPU per request, service (whole process tree − script-alone CPU; {} sequential requests)",
            2 * n
        ),
        cell(&lat[0], |l| minus_script(l.total_cpu_ms)),
        cell(&lat[1], |l| minus_script(l.total_cpu_ms)),
    );
    report.row(
        "… of which the long-lived processes themselves (utime+stime, reaped children not included)",
        cell(&lat[0], |l| Cell::Value(l.own_cpu_ms, Unit::Ms)),
        cell(&lat[1], |l| Cell::Value(l.own_cpu_ms, Unit::Ms)),
    );
    report.row(
        "CPU per request, service + script (whole process tree, reaped children included)",
        cell(&lat[0], |l| Cell::Value(l.total_cpu_ms, Unit::Ms)),
        cell(&lat[1], |l| Cell::Value(l.total_cpu_ms, Unit::Ms)),
    );
    if let Ok(a) = &alone {
        let v = Cell::Value(a.cpu_ms, Unit::Ms);
        report.row(
            "… CPU of the no-op script alone (harness-measured)",
            v.clone(),
            v,
        );
    }
    report.row(
        format!(
            "health check answered while a {} s update runs on another component (median of {})",
            s.slow_secs, s.slow_reps
        ),
        cell(&slow[0], |d| Cell::Value(d.p(50.0), Unit::Ms)),
        cell(&slow[1], |d| Cell::Value(d.p(50.0), Unit::Ms)),
    );
    report.row(
        format!("burst: {} requests dropped at once → all final", s.burst),
        cell(&bursts[0], |d| {
            Cell::Value(d.time.as_secs_f64(), Unit::Secs)
        }),
        cell(&bursts[1], |d| {
            Cell::Value(d.time.as_secs_f64(), Unit::Secs)
        }),
    );
    report.row(
        "… requests lost or failed in the burst",
        cell(&bursts[0], |_| Cell::Value(0.0, Unit::Count)),
        cell(&bursts[1], |_| Cell::Value(0.0, Unit::Count)),
    );
    report.row(
        "… burst throughput",
        cell(&bursts[0], |d| {
            Cell::Value(d.n as f64 / d.time.as_secs_f64(), Unit::PerSec)
        }),
        cell(&bursts[1], |d| {
            Cell::Value(d.n as f64 / d.time.as_secs_f64(), Unit::PerSec)
        }),
    );
    report.row(
        "… CPU per request in the burst, service + script",
        cell(&bursts[0], |d| Cell::Value(d.total_cpu_ms, Unit::Ms)),
        cell(&bursts[1], |d| Cell::Value(d.total_cpu_ms, Unit::Ms)),
    );
    report.row(
        "… CPU per request in the burst, service (whole tree − script-alone CPU)",
        cell(&bursts[0], |d| minus_script(d.total_cpu_ms)),
        cell(&bursts[1], |d| minus_script(d.total_cpu_ms)),
    );
    report.row(
        format!("backlog: {} requests present at start → drained", s.backlog),
        cell(&backlogs[0], |d| {
            Cell::Value(d.time.as_secs_f64(), Unit::Secs)
        }),
        cell(&backlogs[1], |d| {
            Cell::Value(d.time.as_secs_f64(), Unit::Secs)
        }),
    );
    report.row(
        "… CPU per request in the backlog, service (whole tree − script-alone CPU)",
        cell(&backlogs[0], |d| minus_script(d.total_cpu_ms)),
        cell(&backlogs[1], |d| minus_script(d.total_cpu_ms)),
    );
    report.row(
        "… backlog throughput",
        cell(&backlogs[0], |d| {
            Cell::Value(d.n as f64 / d.time.as_secs_f64(), Unit::PerSec)
        }),
        cell(&backlogs[1], |d| {
            Cell::Value(d.n as f64 / d.time.as_secs_f64(), Unit::PerSec)
        }),
    );
    report.row(
        "… peak RSS after the backlog (VmHWM, long-lived processes summed)",
        cell(&backlogs[0], |d| Cell::Value(d.hwm_kib as f64, Unit::Kib)),
        cell(&backlogs[1], |d| Cell::Value(d.hwm_kib as f64, Unit::Kib)),
    );
    let idle_s = s.idle.as_secs();
    report.row(
        format!(
            "idle RSS (VmRSS summed over the processes, after {} requests)",
            s.warmup
        ),
        cell(&idles[0], |i| Cell::Value(i.rss_kib as f64, Unit::Kib)),
        cell(&idles[1], |i| Cell::Value(i.rss_kib as f64, Unit::Kib)),
    );
    report.row(
        "… of which anonymous memory (RssAnon; the rest is file-backed: code of the binary and its libraries)",
        cell(&idles[0], |i| Cell::Value(i.anon_kib as f64, Unit::Kib)),
        cell(&idles[1], |i| Cell::Value(i.anon_kib as f64, Unit::Kib)),
    );
    report.row(
        format!("idle CPU over {idle_s} s (% of one core)"),
        cell(&idles[0], |i| Cell::Value(i.cpu_percent, Unit::Percent)),
        cell(&idles[1], |i| Cell::Value(i.cpu_percent, Unit::Percent)),
    );
    report.row(
        format!("idle wakeups: context switches per second over {idle_s} s (all threads)"),
        cell(&idles[0], |i| Cell::Value(i.ctx_per_sec, Unit::PerSec)),
        cell(&idles[1], |i| Cell::Value(i.ctx_per_sec, Unit::PerSec)),
    );
    report.row(
        "… processes / threads while idle",
        cell(&idles[0], |i| {
            Cell::Text(format!("{} / {}", i.procs, i.threads))
        }),
        cell(&idles[1], |i| {
            Cell::Text(format!("{} / {}", i.procs, i.threads))
        }),
    );
    let mb = s.output_bytes as f64 / 1e6;
    report.row(
        format!(
            "peak RSS while a script prints {mb:.0} MB (VmHWM of every service process seen, summed: an upper bound)"
        ),
        cell(&bigs[0], |b| Cell::Value(b.hwm_kib as f64, Unit::Kib)),
        cell(&bigs[1], |b| Cell::Value(b.hwm_kib as f64, Unit::Kib)),
    );
    report.row(
        "… peak RSS while it prints, sampled every 2 ms (service processes, scripts excluded, summed)",
        cell(&bigs[0], |b| {
            Cell::Value(b.sampled_peak_kib as f64, Unit::Kib)
        }),
        cell(&bigs[1], |b| {
            Cell::Value(b.sampled_peak_kib as f64, Unit::Kib)
        }),
    );
    report.row(
        format!("… time for the {mb:.0} MB request"),
        cell(&bigs[0], |b| Cell::Value(ms(b.time), Unit::Ms)),
        cell(&bigs[1], |b| Cell::Value(ms(b.time), Unit::Ms)),
    );
    report.row(
        format!(
            "flushes per request, one at a time ({FLUSH_SEQUENTIAL} sequential no-op health checks in place; strace, after start-up and warm-up)"
        ),
        cell(&flush[0], |f| {
            Cell::Value(f.sequential.per_request(), Unit::PerRequest)
        }),
        cell(&flush[1], |f| {
            Cell::Value(f.sequential.per_request(), Unit::PerRequest)
        }),
    );
    report.row(
        format!("flushes per request, burst of {FLUSH_BURST} dropped at once (strace)"),
        cell(&flush[0], |f| {
            Cell::Value(f.burst.per_request(), Unit::PerRequest)
        }),
        cell(&flush[1], |f| {
            Cell::Value(f.burst.per_request(), Unit::PerRequest)
        }),
    );
    report.row(
        "binary size (ours: release, stripped; baseline: script + inotifywait + jq + their own libraries)",
        match &size_ours {
            Ok((stripped, _)) => Cell::Value(*stripped as f64, Unit::Bytes),
            Err(e) if e == SKIPPED => Cell::Text("skipped".into()),
            Err(_) => Cell::Text("**error**".into()),
        },
        match &size_base {
            Ok((total, _)) => Cell::Value(*total as f64, Unit::Bytes),
            Err(e) if e == SKIPPED => Cell::Text("skipped".into()),
            Err(_) => Cell::Text("**error**".into()),
        },
    );

    // ---- notes
    if let Ok((_, unstripped)) = &size_ours {
        report.notes.push(format!(
            "ours unstripped: {}",
            fmt_value(*unstripped as f64, Unit::Bytes)
        ));
    }
    if let Ok((_, names)) = &size_base {
        report.notes.push(format!("baseline size counts: {names}"));
    }
    report.note_per_subject(&ctx, &lat, |l| {
        format!(
            "{} latency sample(s) detected by the 50 ms fallback read instead of an inotify event",
            l.fallbacks
        )
    });
    report.note_per_subject(&ctx, &bursts, |b| {
        format!(
            "dropping the {} burst requests (renames) took {:.1} ms",
            b.n,
            ms(b.drop_time)
        )
    });
    report.note_per_subject(&ctx, &flush, |f| {
        format!(
            "flush calls (strace -f over the process tree), {FLUSH_SEQUENTIAL} one at a time: {}; burst of {FLUSH_BURST}: {}; not counted: start-up + {} warm-up requests: {}",
            f.sequential.by_call(),
            f.burst.by_call(),
            f.before.requests,
            f.before.total()
        )
    });
    report.note_per_subject(&ctx, &idles, |i| {
        format!("{} context switches in {idle_s} s idle", i.ctx_total)
    });
    report.note_per_subject(&ctx, &bigs, |b| {
        format!(
            "{} RSS samples, {} distinct service processes during the big output",
            b.samples, b.procs
        )
    });

    // ---- targets (reported, never gating)
    let mut targets =
        String::from("| target (issue #9) | measured | verdict |\n| --- | --- | --- |\n");
    let mut target = |what: &str, measured: String, met: Option<bool>| {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(targets, "| {what} | {measured} | {verdict} |");
    };
    let val = |prefix: &str, col: usize| {
        report.get(prefix).and_then(|r| {
            if col == 0 {
                r.ours.value()
            } else {
                r.baseline.value()
            }
        })
    };
    for (label, q, limit) in [("p50", "p50", 1.0), ("p99", "p99", 5.0)] {
        let a = val(&format!("overhead beyond the script, in place, {q}"), 0);
        let b = val(&format!("overhead beyond the script, temp+rename, {q}"), 0);
        let measured = format!(
            "in place {}, temp+rename {}",
            a.map_or("n/a".into(), |v| fmt_value(v, Unit::Ms)),
            b.map_or("n/a".into(), |v| fmt_value(v, Unit::Ms))
        );
        let met = a.zip(b).map(|(a, b)| a < limit && b < limit);
        target(
            &format!("pickup overhead {label} < {limit} ms beyond the script"),
            measured,
            met,
        );
    }
    let burst_prefix = format!("burst: {} requests", s.burst);
    let (bo, bb) = (val(&burst_prefix, 0), val(&burst_prefix, 1));
    target(
        &format!(
            "{}-request burst ≥ 5× faster than the baseline, nothing lost",
            s.burst
        ),
        match (bo, bb) {
            (Some(o), Some(b)) => format!("{:.2}× faster ({o:.2} s vs {b:.2} s), 0 lost", b / o),
            (Some(o), None) => format!("{o:.2} s; baseline not measured"),
            _ => "n/a".into(),
        },
        bo.zip(bb).map(|(o, b)| b / o >= 5.0),
    );
    let idle_rss = val("idle RSS", 0);
    target(
        "idle RSS < 5 MB",
        idle_rss.map_or("n/a".into(), |v| {
            format!("{} ({:.2} MB)", fmt_value(v, Unit::Kib), v * 1024.0 / 1e6)
        }),
        idle_rss.map(|v| v * 1024.0 < 5e6),
    );
    let wake = idles[0].as_ref().ok();
    target(
        "no periodic wakeups besides the watchdog ping (run without WATCHDOG_USEC)",
        wake.map_or("n/a".into(), |i| {
            format!("{} context switches in {idle_s} s", i.ctx_total)
        }),
        wake.map(|i| i.ctx_total == 0),
    );
    let peak = val("peak RSS while a script prints", 0);
    target(
        &format!("peak RSS < 16 MB while a script prints {mb:.0} MB"),
        peak.map_or("n/a".into(), |v| {
            format!("{} ({:.2} MB)", fmt_value(v, Unit::Kib), v * 1024.0 / 1e6)
        }),
        peak.map(|v| v * 1024.0 < 16e6),
    );

    let targets19 = issue19_targets(&report, s, &idles, &flush);

    // ---- output
    let mode = if s.quick { "quick" } else { "full" };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## update-coordinator benchmark ({mode} run, {:.0} s)\n\n{}\n\
         - load average (1, 5, 15 min) at the start: {load_at_start}; at the end: {}\n",
        started.elapsed().as_secs_f64(),
        machine(),
        loadavg()
    );
    if let Err(e) = &ctx.baseline {
        let _ = writeln!(out, "**Baseline column skipped: {e}**\n");
    }
    out += &report.table();
    out += "\n";
    out += &targets;
    out += "\n";
    out += &targets19;
    if !report.notes.is_empty() {
        out += "\nNotes:\n";
        for n in &report.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    if !report.problems.is_empty() {
        out += "\n**PROBLEMS (the run fails):**\n";
        for p in &report.problems {
            let _ = writeln!(out, "- {p}");
        }
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
