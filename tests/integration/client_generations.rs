//! Issue 14: both generations of the dunebugger-remote client get the true answer. Their
//! behaviour is replayed by small Python replicas in `tests/clients/` (run with
//! `python3 -I -S -B`: standard library only), at their real 1 s poll:
//!
//! - `beta8.py` (v1.0.0-beta.8, and any client of seed 001's protocol): takes the first status
//!   file that parses as the answer;
//! - `client_52d3692.py` (branch 23-remote-update): follows in-progress records; for its own
//!   container (`remote`) it leaves the id in `.pending_remote_request`, and its new container
//!   reads `status/<id>.json` once, as soon as it exists, whatever it says.
//!
//! Each update passes, fails, or is rolled back by the health gate; the three run side by side,
//! each on its own spool and service. Whatever a client reports must be what the service
//! recorded (`update-coordinator status ID --json`), and nothing may be left behind in
//! `status/`, `requests/` or the hand-off file. Needs `python3`; without it these tests fail.

use std::fmt::Debug;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{PATIENCE, Service, Spool, new_id, path_str};
use serde_json::{Value, json};

/// How an update ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// `update.sh` succeeds and the health check passes.
    Passes,
    /// `update.sh` fails (no health gate).
    Fails,
    /// `update.sh` succeeds, the health check fails until `rollback.sh` has run.
    RollsBack,
}

const OUTCOMES: [Outcome; 3] = [Outcome::Passes, Outcome::Fails, Outcome::RollsBack];

/// Where progress records go.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// `status/<id>.progress.json`; `status/<id>.json` only ever holds the answer.
    Default,
    /// `[spool] progress_in_status = true`: in `status/<id>.json` itself.
    ProgressInStatus,
}

const MODES: [Mode; 2] = [Mode::Default, Mode::ProgressInStatus];

/// Every outcome in both modes: the scenarios a client must get the true answer in.
fn every_mode_and_outcome() -> Vec<(Mode, Outcome)> {
    MODES
        .iter()
        .flat_map(|&mode| OUTCOMES.map(|outcome| (mode, outcome)))
        .collect()
}

/// The hand-off file the 52d3692 client writes for its own update.
const PENDING_FILE: &str = ".pending_remote_request";

/// A retention period of 1.7 s: whatever a restart finds older than that is swept away.
const SHORT_RETENTION_DAYS: &str = "0.00002";

/// What an update does between `PHASE:installing` and its end.
#[derive(Debug, Clone, Copy)]
enum Meanwhile {
    /// Runs one second more.
    Runs,
    /// Waits until the test creates this evidence file (at most a minute), so that the test,
    /// not the clock, decides what happens while the update runs.
    WaitsFor(&'static str),
}

/// Evidence files by which the test lets a waiting update go on.
const NEW_CONTAINER_STARTED: &str = "new-container-started";
const NEW_CONTAINER_GAVE_UP: &str = "new-container-gave-up";

/// A shell loop that waits (at most a minute) for `path` to exist.
fn until_exists(path: &Path) -> String {
    format!(
        "i=0; while [ ! -e '{}' ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done",
        path_str(path)
    )
}

/// A spool whose `component` update reports `downloading`, then `installing` (and marks that
/// moment with the evidence file `installing`), does `meanwhile`, and ends as `outcome`.
fn spool_for(component: &str, outcome: Outcome, mode: Mode, meanwhile: Meanwhile) -> Spool {
    let mut spool = Spool::new();
    spool.create_dirs();
    if mode == Mode::ProgressInStatus {
        spool.set("spool", "progress_in_status = true");
    }
    let evidence = spool.evidence();
    let end = match outcome {
        Outcome::Fails => "echo 'pull failed' >&2; exit 3",
        Outcome::Passes | Outcome::RollsBack => "echo \"updated to $1\"",
    };
    let script = format!(
        "echo PHASE:downloading\nsleep 1\necho PHASE:installing\ntouch '{}'\n{}\n{end}",
        path_str(&evidence.join("installing")),
        match meanwhile {
            Meanwhile::Runs => "sleep 1".to_owned(),
            Meanwhile::WaitsFor(name) => until_exists(&evidence.join(name)),
        }
    );
    spool.script(component, "update.sh", &script);
    if outcome != Outcome::Fails {
        let table = format!("components.{component}");
        spool.set_key(&table, "auto_rollback", "true");
        spool.set_key(&table, "health_interval", "0");
        spool.set_key(&table, "health_retries", "2");
    }
    if outcome == Outcome::RollsBack {
        let rolled_back = path_str(&evidence.join("rolled-back"));
        spool.script(component, "rollback.sh", &format!("touch '{rolled_back}'"));
        let script = format!("[ -e '{rolled_back}' ] || {{ echo 'not healthy' >&2; exit 1; }}");
        spool.script(component, "health-check.sh", &script);
    }
    spool
}

/// Runs `scenario` for each case at once (each in its own thread, so the 1 s polls overlap)
/// and fails naming the cases that failed.
fn in_parallel<T: Debug + Copy + Send>(cases: &[T], scenario: impl Fn(T) + Sync) {
    let scenario = &scenario;
    let failed: Vec<T> = std::thread::scope(|s| {
        let running: Vec<_> = cases
            .iter()
            .map(|&case| {
                let thread = std::thread::Builder::new()
                    .name(format!("{case:?}"))
                    .spawn_scoped(s, move || scenario(case))
                    .unwrap();
                (case, thread)
            })
            .collect();
        running
            .into_iter()
            .filter_map(|(case, thread)| thread.join().is_err().then_some(case))
            .collect()
    });
    assert!(failed.is_empty(), "failed: {failed:?} (see above)");
}

/// A running client replica; its JSON lines go to a file, read whenever the test likes.
struct Client {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Client {
    fn start(spool: &Spool, script: &str, args: &[&str]) -> Client {
        let base = spool.dir.path().join(format!("client-{}", new_id()));
        let (out, err) = (base.with_extension("out"), base.with_extension("err"));
        let child = Command::new("python3")
            .args(["-I", "-S", "-B"])
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/clients")
                    .join(script),
            )
            .arg(spool.root())
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("python3 is not installed or not on PATH ({e}); these tests need it")
            });
        Client {
            child: Some(child),
            out,
            err,
        }
    }

    /// beta.8 asks for `component`'s update to `version`.
    fn beta8(spool: &Spool, component: &str, version: &str) -> Client {
        Self::start(spool, "beta8.py", &[component, version])
    }

    /// 52d3692 asks for `component`'s update to `version`.
    fn update_52d3692(spool: &Spool, component: &str, version: &str) -> Client {
        Self::start(spool, "client_52d3692.py", &["update", component, version])
    }

    /// A new 52d3692 container starts: it looks for the result of its own update.
    fn start_52d3692(spool: &Spool) -> Client {
        Self::start(spool, "client_52d3692.py", &["start"])
    }

    /// Every complete line it has printed so far.
    fn events(&self) -> Vec<Value> {
        fs::read_to_string(&self.out)
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// Waits for the client to report `event`; returns it.
    fn wait_for(&self, event: &str) -> Value {
        let mut found = None;
        crate::support::wait_until(&format!("the client's {event}"), || {
            found = self.events().into_iter().find(|e| e["event"] == event);
            found.is_some()
        });
        found.unwrap()
    }

    /// The id of the request it wrote, once it has written it.
    fn request_id(&self) -> String {
        self.wait_for("submitted")["request_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Waits for the client to exit by itself and returns what it reported.
    fn finish(mut self) -> Vec<Value> {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the client did not finish: {:?}", self.events());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "the client failed ({status}): {}",
            fs::read_to_string(&self.err).unwrap_or_default()
        );
        self.events()
    }

    /// SIGKILL, as when its container is removed; returns what it had reported.
    fn kill(mut self) -> Vec<Value> {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        self.events()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `result` event, which the client's user is shown.
fn result(events: &[Value]) -> &Value {
    events
        .iter()
        .find(|e| e["event"] == "result")
        .unwrap_or_else(|| panic!("the client reported no result: {events:#?}"))
}

fn phases(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e["event"] == "progress")
        .map(|e| e["phase"].as_str().unwrap())
        .collect()
}

/// The final status the service recorded for `id` (`update-coordinator status ID --json`).
/// Asked only once the request is concluded (its request file removed): for now `status`
/// must not run while the service writes records (see
/// [`status_cli_while_the_service_works_loses_no_request`]).
fn recorded_answer(spool: &Spool, id: &str) -> Value {
    let request_file = format!("{id}.json");
    crate::support::wait_until("the request concluded", || {
        !spool.request_files().contains(&request_file)
    });
    let out = Command::new(crate::support::bin())
        .args(["status", "--json", "--config"])
        .arg(spool.config_path())
        .arg(id)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let row: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        row["state"] == "succeeded" || row["state"] == "failed",
        "{row:#}"
    );
    row["status"].clone()
}

/// The service recorded `outcome` for `id`, and the client reported exactly that.
fn assert_true_answer(spool: &Spool, id: &str, outcome: Outcome, reported: &Value) {
    let recorded = recorded_answer(spool, id);
    let expected = match outcome {
        Outcome::Passes => (true, "outcome", "updated"),
        Outcome::Fails => (false, "code", "script_failed"),
        Outcome::RollsBack => (false, "outcome", "rolled_back"),
    };
    assert_eq!(
        (recorded["success"].as_bool(), recorded[expected.1].as_str()),
        (Some(expected.0), Some(expected.2)),
        "recorded: {recorded:#}"
    );
    assert_eq!(reported["request_id"], id);
    assert_eq!(
        (&reported["success"], &reported["message"]),
        (&recorded["success"], &recorded["message"]),
        "what the client reported ({reported}), what the service recorded"
    );
}

/// Nothing stays: no status, progress or temp file, no request file, no hand-off file.
fn assert_nothing_left(spool: &Spool) {
    let pending = spool.root().join(PENDING_FILE);
    let left = || {
        let mut left = spool.status_names();
        left.extend(
            spool
                .request_files()
                .iter()
                .map(|n| format!("requests/{n}")),
        );
        if pending.exists() {
            left.push(PENDING_FILE.to_owned());
        }
        left
    };
    // The service removes the request file just after writing the answer a client may
    // already have read.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !left().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(left(), Vec::<String>::new(), "left behind");
}

fn wait_for_file(path: &Path) {
    crate::support::wait_until(&format!("{} to exist", path.display()), || path.exists());
}

/// Ages everything written so far past [`SHORT_RETENTION_DAYS`] and restarts the service,
/// whose start runs the retention sweep.
fn restart_after_the_retention(spool: &Spool, mut service: Service) -> Service {
    std::thread::sleep(Duration::from_secs(2));
    assert!(service.stop());
    Service::start(spool)
}

/// beta.8 takes the first status file it finds for the answer: by default that is the answer.
#[test]
fn beta8_client_reports_the_true_outcome() {
    in_parallel(&OUTCOMES, |outcome| {
        let spool = spool_for("scheduler", outcome, Mode::Default, Meanwhile::Runs);
        let _service = Service::start(&spool);
        let events = Client::beta8(&spool, "scheduler", "2.0.1").finish();
        let id = result(&events)["request_id"].as_str().unwrap();
        assert_true_answer(&spool, id, outcome, result(&events));
        assert_nothing_left(&spool);
    });
}

/// 52d3692 updating another component follows the request to its answer; by default it sees
/// nothing but the answer, with `progress_in_status` it also reports the phases.
#[test]
fn client_52d3692_reports_the_true_outcome_and_phases_with_progress_in_status() {
    in_parallel(&every_mode_and_outcome(), |(mode, outcome)| {
        let spool = spool_for("scheduler", outcome, mode, Meanwhile::Runs);
        let _service = Service::start(&spool);
        let events = Client::update_52d3692(&spool, "scheduler", "2.0.1").finish();
        let id = result(&events)["request_id"].as_str().unwrap();
        assert_true_answer(&spool, id, outcome, result(&events));
        match mode {
            Mode::Default => assert_eq!(phases(&events), Vec::<&str>::new()),
            Mode::ProgressInStatus => assert!(!phases(&events).is_empty(), "{events:#?}"),
        }
        assert_nothing_left(&spool);
    });
}

/// 52d3692 updating its own container: the old container is killed right after
/// `PHASE:installing`, the new one starts 1-3 s later while the update still runs (it goes on
/// only then), and reads the status file once, as soon as it exists. It must be the answer.
#[test]
fn self_update_hand_off_reports_the_true_outcome() {
    in_parallel(&every_mode_and_outcome(), |(mode, outcome)| {
        let spool = spool_for(
            "remote",
            outcome,
            mode,
            Meanwhile::WaitsFor(NEW_CONTAINER_STARTED),
        );
        let _service = Service::start(&spool);
        let old = Client::update_52d3692(&spool, "remote", "1.4.2");
        let id = old.request_id();
        assert_eq!(
            fs::read_to_string(spool.root().join(PENDING_FILE)).unwrap(),
            id
        );
        wait_for_file(&spool.evidence().join("installing"));
        let before_the_kill = old.kill();
        assert!(
            before_the_kill.iter().all(|e| e["event"] != "result"),
            "the update outlives the old container: {before_the_kill:#?}"
        );

        let delay = match outcome {
            Outcome::Passes => 1,
            Outcome::Fails => 2,
            Outcome::RollsBack => 3,
        };
        std::thread::sleep(Duration::from_secs(delay));
        let new = Client::start_52d3692(&spool);
        new.wait_for("found_pending");
        fs::write(spool.evidence().join(NEW_CONTAINER_STARTED), "").unwrap();
        let events = new.finish();
        assert_true_answer(&spool, &id, outcome, result(&events));
        assert_nothing_left(&spool);
    });
}

/// When the coordinator is away during a self-update.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Away {
    /// Stopped when the old container writes its request and hand-off file: it takes them at
    /// its start.
    DownAtSubmit,
    /// Restarted while the update runs (its monitor carries on).
    RestartedMidUpdate,
}

/// The hand-off while the coordinator is away: the new container still reads nothing but the
/// answer.
#[test]
fn self_update_hand_off_survives_a_coordinator_that_is_away() {
    let cases =
        [Away::DownAtSubmit, Away::RestartedMidUpdate].map(|away| MODES.map(|mode| (away, mode)));
    in_parallel(cases.as_flattened(), |(away, mode)| {
        let spool = spool_for(
            "remote",
            Outcome::Passes,
            mode,
            Meanwhile::WaitsFor(NEW_CONTAINER_STARTED),
        );
        let mut service = (away != Away::DownAtSubmit).then(|| Service::start(&spool));
        let old = Client::update_52d3692(&spool, "remote", "1.4.2");
        let id = old.request_id();
        if away == Away::DownAtSubmit {
            service = Some(Service::start(&spool));
        }
        wait_for_file(&spool.evidence().join("installing"));
        old.kill();
        if away == Away::RestartedMidUpdate {
            assert!(service.take().unwrap().stop());
            service = Some(Service::start(&spool));
        }

        let new = Client::start_52d3692(&spool);
        new.wait_for("found_pending");
        fs::write(spool.evidence().join(NEW_CONTAINER_STARTED), "").unwrap();
        let events = new.finish();
        assert_true_answer(&spool, &id, Outcome::Passes, result(&events));
        assert_nothing_left(&spool);
        drop(service);
    });
}

/// A self-update that outlasts the new container's 10 s wait (see [`OUTLASTING`]): the old
/// container is killed at `PHASE:installing`, the new one starts a second later, finds no
/// status within its 10 s, reports nothing and keeps the hand-off file for its next start.
/// Then the update ends. Returns the request id.
fn self_update_outlasting_the_new_containers_wait(spool: &Spool) -> String {
    let old = Client::update_52d3692(spool, "remote", "1.4.2");
    let id = old.request_id();
    wait_for_file(&spool.evidence().join("installing"));
    old.kill();

    std::thread::sleep(Duration::from_secs(1));
    let events = Client::start_52d3692(spool).finish();
    assert_eq!(
        events,
        [
            json!({"event": "found_pending", "request_id": id}),
            json!({"event": "no_status", "request_id": id})
        ]
    );
    assert!(spool.root().join(PENDING_FILE).exists());
    fs::write(spool.evidence().join(NEW_CONTAINER_GAVE_UP), "").unwrap();
    id
}

/// The update runs on until the new container has given up waiting for it.
const OUTLASTING: Meanwhile = Meanwhile::WaitsFor(NEW_CONTAINER_GAVE_UP);

#[test]
fn a_new_container_that_gave_up_on_its_update_reads_the_answer_at_its_next_start() {
    in_parallel(&MODES, |mode| {
        let spool = spool_for("remote", Outcome::Passes, mode, OUTLASTING);
        let _service = Service::start(&spool);
        let id = self_update_outlasting_the_new_containers_wait(&spool);
        spool.wait_final(&id);

        let events = Client::start_52d3692(&spool).finish();
        assert_true_answer(&spool, &id, Outcome::Passes, result(&events));
        assert_nothing_left(&spool);
    });
}

/// If the new container never starts again, its answer and its hand-off file are removed
/// after the retention period.
#[test]
fn an_answer_the_new_container_gave_up_on_goes_with_its_hand_off_file_after_the_retention() {
    in_parallel(&MODES, |mode| {
        let mut spool = spool_for("remote", Outcome::Passes, mode, OUTLASTING);
        spool.set("state", &format!("retention_days = {SHORT_RETENTION_DAYS}"));
        let service = Service::start(&spool);
        let id = self_update_outlasting_the_new_containers_wait(&spool);
        let answer = spool.wait_final(&id);
        assert_eq!(answer["success"], true, "{answer:#}");

        let _service = restart_after_the_retention(&spool, service);
        assert_nothing_left(&spool);
    });
}

/// Why progress records are not in the status file by default: beta.8 takes the first one
/// for the answer and tells its user the update failed with "in_progress". The record it
/// deleted is never re-created while the update goes on, not even by a coordinator restart;
/// the real answer comes, nobody collects it, and the retention removes it.
#[test]
fn beta8_client_with_progress_in_status_takes_a_progress_record_for_the_answer_which_stays_deleted()
{
    let mut spool = Spool::new();
    spool.create_dirs();
    spool.set("spool", "progress_in_status = true");
    spool.set("state", &format!("retention_days = {SHORT_RETENTION_DAYS}"));
    let reported = spool.evidence().join("client-reported");
    let script = format!(
        "echo PHASE:downloading\n{}\n\
         echo PHASE:installing\nsleep 1.5\necho PROGRESS:50\necho PHASE:verifying\nsleep 1.5\n\
         echo \"updated to $1\"",
        until_exists(&reported)
    );
    spool.script("scheduler", "update.sh", &script);
    let mut service = Service::start(&spool);

    let events = Client::beta8(&spool, "scheduler", "2.0.1").finish();
    let reported_result = result(&events);
    assert_eq!(
        (&reported_result["success"], &reported_result["message"]),
        (&json!(false), &json!("in_progress")),
        "{events:#?}"
    );
    let id = reported_result["request_id"].as_str().unwrap();

    assert!(service.stop());
    let service = Service::start(&spool);
    fs::write(&reported, "").unwrap();
    let deadline = Instant::now() + PATIENCE;
    let answer = loop {
        match spool.status_file(id) {
            Some(s) if s["message"] == "in_progress" => panic!("re-created: {s:#}"),
            Some(answer) => break answer,
            None => assert!(Instant::now() < deadline, "no answer"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(answer["success"], true, "{answer:#}");
    assert_eq!(answer["success"], recorded_answer(&spool, id)["success"]);
    assert_eq!(spool.request_files(), Vec::<String>::new());
    assert_eq!(spool.status_names(), [format!("{id}.json")]);

    let _service = restart_after_the_retention(&spool, service);
    assert_nothing_left(&spool);
}

/// Regression, found by these tests (an operator looking at `update-coordinator status` while
/// a client waits for its answer): `status` used to read the run records through the repairs
/// the service makes at its start (temp files of runs without a live monitor removed, a run
/// directory without `request.json` or `run.json` removed), and so removed what the running
/// service was writing: requests went unanswered ("cannot record the accepted request") or
/// stayed `running` after their answer ("cannot record the final result"). It reads only now
/// (`RunStore::read`).
#[test]
fn status_cli_while_the_service_works_loses_no_request() {
    let spool = Spool::new();
    spool.create_dirs();
    let service = Service::start(&spool);
    let config = spool.config_path();
    let done = std::sync::atomic::AtomicBool::new(false);
    let unanswered: Vec<String> = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Command::new(crate::support::bin())
                    .args(["status", "--json", "--config"])
                    .arg(&config)
                    .output();
            }
        });
        let unanswered = (0..10)
            .map(|_| spool.submit("core", "health", None))
            .filter(|id| {
                let deadline = Instant::now() + Duration::from_secs(5);
                while spool.status_file(id).is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                spool.status_file(id).is_none()
            })
            .collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        unanswered
    });
    let log = service.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(
        (unanswered, errors),
        (Vec::<String>::new(), Vec::<&str>::new())
    );
}
