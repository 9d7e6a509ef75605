//! Test harness: a temporary spool + config + component scripts, the real binary started on
//! it with a real `NOTIFY_SOCKET`, and a client that behaves like the DuneBugger container.
//! A failing test prints the service's log.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod etcd;

/// The binary under test: this build, or the one `UPDATE_COORDINATOR_BIN` names (CI runs the
/// suite against the packaged ARM builds under qemu-user: tests/packages.sh).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("UPDATE_COORDINATOR_BIN")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_update-coordinator").to_owned())
    })
}

/// Generous, so a loaded CI machine never makes a correct run fail.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Spool {
    pub dir: tempfile::TempDir,
    /// Settings per TOML table, written out by [`Spool::config_path`].
    tables: std::collections::BTreeMap<String, Vec<String>>,
    /// Extra TOML appended to the generated config.
    extra_config: String,
}

impl Spool {
    /// A spool with components `remote`, `core` and `scheduler` whose scripts succeed silently
    /// until a test replaces them.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool {
            dir,
            tables: Default::default(),
            extra_config: String::new(),
        };
        // No permission check: the test spool is not installed with the dunebugger group.
        spool.set("spool", "root = \"spool\"\ngroup = \"\"");
        spool.set("execution", "kill_grace = 1");
        spool.set("state", "dir = \"state\"");
        for c in ["remote", "core", "scheduler"] {
            spool.set(
                &format!("components.{c}"),
                &format!("dir = \"components/{c}\""),
            );
            // Most tests watch one script run; the health-gated update is tested on its own.
            spool.set_key(&format!("components.{c}"), "auto_rollback", "false");
            for script in ["update.sh", "rollback.sh", "health-check.sh"] {
                spool.script(c, script, "exit 0");
            }
        }
        spool
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    pub fn requests(&self) -> PathBuf {
        self.root().join("requests")
    }

    pub fn status_dir(&self) -> PathBuf {
        self.root().join("status")
    }

    /// A scratch directory scripts can write evidence into (`$EVIDENCE` is not passed: the
    /// environment is clean, so scripts get the path literally).
    pub fn evidence(&self) -> PathBuf {
        let p = self.dir.path().join("evidence");
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// Writes `components/<component>/<name>` as a `/bin/sh` script with `body`.
    pub fn script(&self, component: &str, name: &str, body: &str) {
        let dir = self.dir.path().join("components").join(component);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A shell command that appends the request's id to the spool's record of runs: scripts
    /// that prove how often they ran begin with it (see [`Spool::runs`]).
    pub fn record_run(&self) -> String {
        format!(
            "echo \"$REQUEST_ID\" >> {}",
            self.evidence().join("ran").display()
        )
    }

    /// The request ids recorded by [`Spool::record_run`], one per run, in order.
    pub fn runs(&self) -> Vec<String> {
        fs::read_to_string(self.evidence().join("ran"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Writes a script that runs `before`, waits until the test creates the returned gate file,
    /// then runs `after`: how a test holds a run at a known point (one gate per spool, so
    /// every gated script of a spool goes on at once).
    pub fn gated_script(&self, component: &str, name: &str, before: &str, after: &str) -> PathBuf {
        let gate = self.evidence().join("gate");
        let wait = format!("while [ ! -e {} ]; do sleep 0.05; done", gate.display());
        self.script(component, name, &format!("{before}\n{wait}\n{after}"));
        gate
    }

    /// Adds `lines` to the config table `table` (e.g. `set("spool", "max_queued = 5")`).
    pub fn set(&mut self, table: &str, lines: &str) {
        self.tables
            .entry(table.to_owned())
            .or_default()
            .push(lines.to_owned());
    }

    /// Sets `key = value` in `table`, replacing an earlier setting of that key.
    pub fn set_key(&mut self, table: &str, key: &str, value: &str) {
        let lines = self.tables.entry(table.to_owned()).or_default();
        lines.retain(|l| !l.starts_with(&format!("{key} =")));
        lines.push(format!("{key} = {value}"));
    }

    /// Appends raw TOML (tables the harness does not generate itself).
    pub fn add_config(&mut self, toml: &str) {
        self.extra_config.push_str(toml);
        self.extra_config.push('\n');
    }

    pub fn config_path(&self) -> PathBuf {
        let path = self.dir.path().join("config.toml");
        let mut text = String::new();
        for (table, lines) in &self.tables {
            text.push_str(&format!("[{table}]\n{}\n\n", lines.join("\n")));
        }
        text.push_str(&self.extra_config);
        fs::write(&path, text).unwrap();
        path
    }

    /// Creates `requests/` and `status/` as the installer would, before the service starts.
    pub fn create_dirs(&self) {
        fs::create_dir_all(self.requests()).unwrap();
        fs::create_dir_all(self.status_dir()).unwrap();
    }

    pub fn request_json(id: &str, component: &str, action: &str, version: Option<&str>) -> String {
        // Pretty-printed with a naive timestamp, exactly like the Python client.
        let mut v = serde_json::json!({
            "component": component,
            "action": action,
            "request_id": id,
            "timestamp": "2026-02-14T00:51:03.123456",
        });
        if let Some(version) = version {
            v["version"] = version.into();
        }
        serde_json::to_string_pretty(&v).unwrap()
    }

    /// Drops a request for `component` the way the existing client does (new uuid4 id,
    /// written in place) and returns its id.
    pub fn submit(&self, component: &str, action: &str, version: Option<&str>) -> String {
        let id = new_id();
        self.drop_in_place(&id, &Self::request_json(&id, component, action, version));
        id
    }

    /// The existing client's way: open `<id>.json`, write, close (no rename).
    pub fn drop_in_place(&self, id: &str, content: &str) {
        let mut f = fs::File::create(self.requests().join(format!("{id}.json"))).unwrap();
        f.write_all(content.as_bytes()).unwrap();
    }

    /// The careful writer's way: a dot-file, then rename into place.
    pub fn drop_renamed(&self, id: &str, content: &str) {
        let tmp = self.requests().join(format!(".{id}.tmp"));
        fs::write(&tmp, content).unwrap();
        fs::rename(&tmp, self.requests().join(format!("{id}.json"))).unwrap();
    }

    /// What the project's own clients see: the status file, else the progress record beside
    /// it (`<id>.progress.json`).
    pub fn status(&self, id: &str) -> Option<Value> {
        self.status_file(id).or_else(|| self.progress(id))
    }

    /// `status/<id>.json` alone: what a client that only knows final statuses reads.
    pub fn status_file(&self, id: &str) -> Option<Value> {
        read_json(&self.status_dir().join(format!("{id}.json")))
    }

    /// The progress record beside the status file.
    pub fn progress(&self, id: &str) -> Option<Value> {
        read_json(&self.progress_path(id))
    }

    pub fn progress_path(&self, id: &str) -> PathBuf {
        self.status_dir().join(format!("{id}.progress.json"))
    }

    /// Names in `status/`, sorted, without the published inventory.
    pub fn status_names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.status_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "inventory.json")
            .collect();
        names.sort();
        names
    }

    /// Submits a health check of `core` and waits for its answer. The service handles what it
    /// is given in order, from one loop: once this later request is answered, every earlier
    /// event (a temp file seen, a restart's recovery, a run's end) has been handled, so a test
    /// can then check that something did NOT happen without guessing how long to wait.
    pub fn wait_sentinel(&self) {
        let id = self.submit("core", "health", None);
        assert_eq!(
            self.wait_final(&id)["success"],
            true,
            "the sentinel request"
        );
    }

    /// Polls like the client (but faster) until the status is final.
    pub fn wait_final(&self, id: &str) -> Value {
        self.wait_final_within(id, PATIENCE)
    }

    /// Waits until the request's progress record (or status) shows `phase`.
    pub fn wait_phase(&self, id: &str, phase: &str) {
        wait_until(&format!("phase {phase} of {id}"), || {
            self.status(id).is_some_and(|s| s["phase"] == phase)
        });
    }

    /// [`Spool::wait_final`], then until the request is concluded: its record finished and
    /// its file removed (the answer is shown a moment before that).
    pub fn wait_concluded(&self, id: &str) -> Value {
        let status = self.wait_final(id);
        let file = self.requests().join(format!("{id}.json"));
        wait_until("the request concluded (its file removed)", || {
            !file.exists()
        });
        status
    }

    pub fn wait_final_within(&self, id: &str, patience: Duration) -> Value {
        let deadline = Instant::now() + patience;
        let progress_in_status = self.progress_in_status();
        loop {
            if let Some(s) = self.status_file(id) {
                // The promise to clients that only know final statuses (seed 001, beta.8).
                assert!(
                    progress_in_status || s["message"] != "in_progress",
                    "status/{id}.json holds an in-progress record: {s:#}"
                );
                if s["message"] != "in_progress" {
                    return s;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no final status for {id} within {patience:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether this spool's config says `progress_in_status = true`.
    pub fn progress_in_status(&self) -> bool {
        self.tables.get("spool").is_some_and(|lines| {
            lines
                .iter()
                .any(|l| l.replace(' ', "") == "progress_in_status=true")
        })
    }

    pub fn request_files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.requests())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// The service under test. Stopped (SIGTERM, then SIGKILL) when dropped; its log is printed
/// if the test is failing.
pub struct Service {
    child: Option<Child>,
    log: PathBuf,
    /// Every sd_notify message, collected by a thread that always reads (as systemd does: a
    /// full datagram queue would block the service's sends).
    notifications: Arc<Mutex<Vec<String>>>,
    /// How many notifications `wait_for_notification` has already looked at.
    seen: usize,
}

impl Service {
    /// Starts `update-coordinator run` and waits for READY=1.
    pub fn start(spool: &Spool) -> Service {
        Self::start_with_env(spool, &[])
    }

    /// Like [`Service::start`], with extra environment variables for the service.
    pub fn start_with_env(spool: &Spool, env: &[(&str, &str)]) -> Service {
        Self::start_binary(spool, Path::new(bin()), env)
    }

    /// Starts a given build of the coordinator (for self-update tests).
    pub fn start_binary(spool: &Spool, binary: &Path, env: &[(&str, &str)]) -> Service {
        let socket_path = spool.dir.path().join(format!("notify-{}.sock", new_id()));
        let notify = UnixDatagram::bind(&socket_path).unwrap();
        let notifications = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&notifications);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = notify.recv(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        let log = spool.dir.path().join(format!("service-{}.log", new_id()));
        let child = Command::new(binary)
            .args(["run", "--config"])
            .arg(spool.config_path())
            .env("NOTIFY_SOCKET", &socket_path)
            .env("RUST_LOG", "debug")
            .env_remove("JOURNAL_STREAM")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the service");
        let mut service = Service {
            child: Some(child),
            log,
            notifications,
            seen: 0,
        };
        service.wait_for_notification("READY=1");
        service
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn notifications(&self) -> Vec<String> {
        self.notifications.lock().unwrap().clone()
    }

    /// Waits for a notification containing `needle`, later than the last one this returned.
    pub fn wait_for_notification(&mut self, needle: &str) -> String {
        let mut deadline = Instant::now() + PATIENCE;
        let mut exited = None;
        while Instant::now() < deadline {
            let all = self.notifications();
            if let Some(pos) = all[self.seen..].iter().position(|m| m.contains(needle)) {
                self.seen += pos + 1;
                return all[self.seen - 1].clone();
            }
            std::thread::sleep(Duration::from_millis(10));
            if exited.is_none()
                && let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait)
            {
                // Its last datagrams may still be on their way to the collector thread.
                exited = Some(status);
                deadline = Instant::now() + Duration::from_secs(1);
            }
        }
        if let Some(status) = exited {
            panic!(
                "service exited ({status}) without sending {needle}:\n{}",
                self.log()
            );
        }
        panic!(
            "no {needle} from the service; got {:?}\n{}",
            self.notifications(),
            self.log()
        );
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident memory of the service so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    /// SIGTERM and wait for the exit; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit()
    }

    /// Waits for the service to exit by itself; returns whether it exited successfully.
    pub fn wait_exit(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("service did not stop after SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- service log -----\n{}\n-----------------------",
                self.log()
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `cmd` to its end and returns its stdout; fails the test, with both outputs, when the
/// command fails.
pub fn stdout_of(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that `text` contains every one of `needles`; the failure names `what` the text is,
/// the needles missing, and shows the text.
#[track_caller]
pub fn assert_contains_all(what: &str, text: &str, needles: &[&str]) {
    let missing: Vec<&str> = needles
        .iter()
        .copied()
        .filter(|needle| !text.contains(needle))
        .collect();
    assert!(missing.is_empty(), "{what} lacks {missing:?}:\n{text}");
}

/// A fresh uuid4-shaped request id, as the client makes.
fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Asserts that a status's message says `text` (the whole status is shown if not).
#[track_caller]
pub fn assert_message_says(status: &Value, text: &str) {
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(text),
        "{text:?} not in the message: {status:#}"
    );
}

/// Whether a process is gone (or a zombie nobody reaped yet, which runs nothing).
pub fn process_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A command line written as one string, split into its arguments (none of the arguments
/// written this way holds a space).
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Every file outside the spool's own directories (and the harness's logs and sockets):
/// path → (size, modification time). Compare before/after to prove nothing was written there.
pub fn files_outside_spool(
    spool: &Spool,
) -> std::collections::BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    fn walk(
        dir: &Path,
        skip: &[PathBuf],
        out: &mut std::collections::BTreeMap<PathBuf, (u64, std::time::SystemTime)>,
    ) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if skip.iter().any(|s| path.starts_with(s)) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("service-") || name.starts_with("notify-") {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                walk(&path, skip, out);
            } else {
                out.insert(path, (meta.len(), meta.modified().unwrap()));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(
        spool.dir.path(),
        &[
            spool.root(),
            spool.dir.path().join("state"),
            spool.dir.path().join("evidence"),
        ],
        &mut out,
    );
    out
}

/// Processes (pid, command line) whose command line mentions `path`: scripts and monitors of
/// a test's temp directory.
pub fn processes_mentioning(path: &Path) -> Vec<(i32, String)> {
    let needle = path.display().to_string();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) && !process_gone(pid) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// What docs/schema/status.schema.json says is wrong with `status` (empty: it conforms).
pub fn status_schema_errors(status: &Value) -> Vec<String> {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let validator = SCHEMA.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema/status.schema.json");
        let schema: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap()
    });
    validator
        .iter_errors(status)
        .map(|e| format!("{e} (at {})", e.instance_path().as_str()))
        .collect()
}
