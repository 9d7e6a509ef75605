//! Nothing lost, nothing run twice: the coordinator is killed, restarted, its monitors die,
//! the machine "reboots", and every accepted request still gets exactly one final status with
//! the script's real result.

use std::fs;
use std::time::{Duration, Instant};

use crate::support::{Service, Spool, assert_message_says, new_id, path_str, wait_until};

/// An update of `remote` that records its run, reaches `installing`, then waits for the
/// returned gate and exits with `exit_code`.
fn gated_update(spool: &Spool, exit_code: i32) -> std::path::PathBuf {
    let before = format!(
        "{}; echo PHASE:installing; echo working",
        spool.record_run()
    );
    let after = format!("echo done; exit {exit_code}");
    spool.gated_script("remote", "update.sh", &before, &after)
}

#[test]
fn a_coordinator_killed_mid_script_is_restarted_and_reports_the_real_exit_code() {
    let spool = Spool::new();
    let (gate, id) = coordinator_crashed_mid_update(&spool, 7);
    fs::write(&gate, "").unwrap(); // the script finishes while no coordinator runs
    let _restarted = Service::start(&spool);
    let status = spool.wait_final(&id);
    assert_eq!(status["exit_code"], 7, "{status}");
    assert_eq!(status["code"], "script_failed");
    assert_eq!(
        status["output"], "PHASE:installing\nworking\ndone\n",
        "output recorded across the crash"
    );
    assert_eq!(
        status["message"],
        "update.sh exited with code 7 (last phase: installing)"
    );
    assert_eq!(spool.runs().len(), 1, "ran once");
    wait_until("request file removed", || spool.request_files().is_empty());
}

/// After a power cut, ext4 often brings back unsynced files empty: in-progress statuses among
/// them. A client must never read an empty file as an answer, so the service writes the
/// in-progress status of every request it picks up again before it says it is ready.
#[test]
fn in_progress_statuses_emptied_by_a_power_cut_are_written_again_at_start() {
    progress_emptied_by_a_power_cut_is_written_again(false);
}

#[test]
fn with_progress_in_status_emptied_status_files_are_written_again_at_start() {
    progress_emptied_by_a_power_cut_is_written_again(true);
}

fn progress_emptied_by_a_power_cut_is_written_again(progress_in_status: bool) {
    let mut spool = Spool::new();
    if progress_in_status {
        spool.set("spool", "progress_in_status = true");
    }
    let gate = gated_update(&spool, 0);
    let mut service = Service::start(&spool);
    let running = update_now_installing(&spool);
    let queued = spool.submit("remote", "update", Some("1.2.4"));
    spool.wait_phase(&queued, "queued");
    service.crash();
    for id in [&running, &queued] {
        let record = if progress_in_status {
            spool.status_dir().join(format!("{id}.json"))
        } else {
            spool.progress_path(id)
        };
        fs::write(record, "").unwrap();
    }

    // Service::start returns once the service said READY=1.
    let _restarted = Service::start(&spool);
    let phase = |id: &str| {
        spool
            .status(id)
            .map(|s| (s["message"].clone(), s["phase"].clone()))
    };
    assert_eq!(
        phase(&queued),
        Some(("in_progress".into(), "queued".into()))
    );
    assert_eq!(
        phase(&running),
        Some(("in_progress".into(), "running".into()))
    );
    fs::write(&gate, "").unwrap();
    assert_eq!(spool.wait_final(&running)["success"], true);
    assert_eq!(spool.wait_final(&queued)["success"], true);
}

#[test]
fn a_coordinator_restarted_while_the_script_still_runs_re_attaches() {
    let spool = Spool::new();
    let (gate, id) = coordinator_crashed_mid_update(&spool, 0);
    let restarted = Service::start(&spool);
    spool.wait_sentinel();
    let status = spool.status(&id);
    assert!(
        status
            .as_ref()
            .is_some_and(|s| s["message"] == "in_progress"),
        "still running, but: {status:?}\n{}",
        restarted.log()
    );
    fs::write(&gate, "").unwrap();
    assert_eq!(spool.wait_final(&id)["success"], true);
    assert!(restarted.log().contains("re-attached to a running script"));
}

#[test]
fn the_timeout_still_applies_across_a_restart() {
    let mut spool = Spool::new();
    spool.add_config("[components.remote.timeouts]\nupdate = 2");
    spool.script("remote", "update.sh", "echo PHASE:stuck; sleep 300");
    let mut service = Service::start(&spool);
    let id = new_id();
    let started = Instant::now();
    spool.drop_in_place(
        &id,
        &Spool::request_json(&id, "remote", "update", Some("1.2.3")),
    );
    wait_until("stuck", || {
        spool.status(&id).is_some_and(|s| s["phase"] == "stuck")
    });
    service.crash();
    let _restarted = Service::start(&spool);
    let status = spool.wait_final(&id);
    assert_eq!(status["code"], "timeout", "{status}");
    assert_eq!(status["timed_out"], true);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "not the script's own 300 s"
    );
}

#[test]
fn a_killed_monitor_is_answered_interrupted_and_never_re_run() {
    let spool = Spool::new();
    let gate = gated_update(&spool, 0);
    let _service = Service::start(&spool);
    let id = update_now_installing(&spool);

    // Kill the monitor and the script's whole group, as an OOM killer or an operator might.
    kill_the_run(&spool, &id);

    let status = spool.wait_final(&id);
    assert_eq!(status["code"], "interrupted", "{status}");
    assert_message_says(&status, "update.sh 1.2.3");
    assert_message_says(&status, "not run again");
    // A later update of the same component queues behind any re-run (updates never overlap),
    // so once it is answered, a re-run would have written its line first.
    fs::write(&gate, "").unwrap();
    let later = spool.submit("remote", "update", Some("1.2.4"));
    assert_eq!(spool.wait_final(&later)["success"], true);
    assert_eq!(spool.runs(), [id, later], "never re-run");
}

#[test]
fn after_a_reboot_a_run_whose_script_is_gone_is_answered_interrupted() {
    let spool = Spool::new();
    // Power cut: everything dies at once; the record says it started in another boot.
    let (_, id) = coordinator_crashed_mid_update(&spool, 0);
    kill_the_run(&spool, &id);
    let journal = spool.dir.path().join("state/journal.jsonl");
    let this_boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let text = fs::read_to_string(&journal).unwrap().replace(
        &format!("\"boot_id\":\"{}\"", this_boot.trim()),
        "\"boot_id\":\"an-earlier-boot\"",
    );
    fs::write(&journal, text).unwrap();

    let _restarted = Service::start(&spool);
    let status = spool.wait_final(&id);
    assert_eq!(status["code"], "interrupted");
    assert_message_says(&status, "machine restarted");
    assert_eq!(spool.runs().len(), 1, "never re-run");
    wait_until("request file removed", || spool.request_files().is_empty());
}

#[test]
fn a_finished_request_sent_again_is_answered_from_its_record_not_re_run() {
    let spool = Spool::new();
    let script = format!("{}; echo healthy; exit 0", spool.record_run());
    spool.script("core", "health-check.sh", &script);
    let mut service = Service::start(&spool);
    let id = new_id();
    let json = Spool::request_json(&id, "core", "health", None);
    spool.drop_in_place(&id, &json);
    // Concluded (a crash before that would conclude again, with a new timestamp).
    let first = spool.wait_concluded(&id);
    // The client collects its status, then (after its own restart, say) sends the same request.
    fs::remove_file(spool.status_dir().join(format!("{id}.json"))).unwrap();
    service.crash();
    let _restarted = Service::start(&spool);
    spool.drop_in_place(&id, &json);
    let again = spool.wait_final(&id);
    assert_eq!(again, first, "the recorded result, unchanged");
    assert_eq!(spool.runs().len(), 1, "not re-run");
}

#[test]
fn records_and_uncollected_statuses_expire_after_the_retention_period() {
    let mut spool = Spool::new();
    spool.set("state", "retention_days = 0.00001"); // under a second
    let mut service = Service::start(&spool);
    let id = spool.submit("core", "health", None);
    spool.wait_final(&id);
    let journal = spool.dir.path().join("state/journal.jsonl");
    let recorded = || fs::read_to_string(&journal).unwrap().contains(id.as_str());
    assert!(recorded());
    std::thread::sleep(Duration::from_millis(1500));
    service.crash();
    let _restarted = Service::start(&spool); // sweeps at start, then hourly
    wait_until("record and status expired", || {
        !recorded() && spool.status(&id).is_none()
    });
}

/// What a power cut does to a status file written without a flush (ext4 brings a new file
/// back empty) and to a request file removal that never reached the disk: the next start
/// writes the same answer again from the journal, never another, and never runs it again.
#[test]
fn an_answer_a_power_cut_emptied_or_whose_request_file_came_back_is_written_again() {
    let spool = Spool::new();
    let script = format!("{}; echo healthy; exit 0", spool.record_run());
    spool.script("core", "health-check.sh", &script);
    let mut service = Service::start(&spool);
    let emptied = spool.submit("core", "health", None);
    let came_back = new_id();
    let json = Spool::request_json(&came_back, "core", "health", None);
    spool.drop_in_place(&came_back, &json);
    let first = [
        spool.wait_concluded(&emptied),
        spool.wait_concluded(&came_back),
    ];
    service.crash();
    // The cut: one status back empty, one request file back (its status collected).
    fs::write(spool.status_dir().join(format!("{emptied}.json")), "").unwrap();
    fs::remove_file(spool.status_dir().join(format!("{came_back}.json"))).unwrap();
    spool.drop_in_place(&came_back, &json);

    let _restarted = Service::start(&spool);
    wait_until("request file removed", || spool.request_files().is_empty());
    let again = [spool.wait_final(&emptied), spool.wait_final(&came_back)];
    assert_eq!(again, first, "the same answers, from the journal");
    assert_eq!(spool.runs().len(), 2, "neither run again");
}

/// The gated update held at its gate when its coordinator is SIGKILLed: the gate and the
/// request's id. The script lives on, as it does when only the coordinator dies.
fn coordinator_crashed_mid_update(spool: &Spool, exit_code: i32) -> (std::path::PathBuf, String) {
    let gate = gated_update(spool, exit_code);
    let mut service = Service::start(spool);
    let id = update_now_installing(spool);
    service.crash();
    (gate, id)
}

/// Submits the gated update (to 1.2.3) and waits until it is installing, held at its gate.
fn update_now_installing(spool: &Spool) -> String {
    let id = spool.submit("remote", "update", Some("1.2.3"));
    spool.wait_phase(&id, "installing");
    id
}

/// SIGKILLs the monitor of run `id` (an update to 1.2.3) and its script's whole process group.
fn kill_the_run(spool: &Spool, id: &str) {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;
    let monitor = find_process(&["__monitor", id]).expect("the run's monitor");
    // Scoped to this test's directory: other tests run update.sh 1.2.3 at the same time.
    let here = path_str(spool.dir.path());
    let script = find_process(&[&here, "update.sh", "1.2.3"]).expect("the script");
    kill(Pid::from_raw(monitor), Signal::SIGKILL).unwrap();
    killpg(Pid::from_raw(script), Signal::SIGKILL).unwrap();
}

/// The pid of the process whose command line contains all `needles`.
fn find_process(needles: &[&str]) -> Option<i32> {
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if needles.iter().all(|n| cmdline.contains(n)) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn without_cgroups_a_timeout_still_kills_a_setsid_daemon_and_the_status_says_no_limit_was_enforced()
{
    let mut spool = Spool::new();
    spool.add_config("[components.remote.timeouts]\nupdate = 1");
    let (daemon, pidfile) = setsid_daemon(&spool, "trap \"\" TERM; while :; do sleep 1; done");
    spool.script("remote", "update.sh", &format!("{daemon} &\nsleep 300"));
    let _service = Service::start(&spool);
    let id = spool.submit("remote", "update", Some("1.0.0"));
    let status = spool.wait_final(&id);
    assert_eq!(status["code"], "timeout", "{status}");
    wait_until_gone(&pidfile);
    if !std::path::Path::new("/run/systemd/system").exists() {
        assert_eq!(status["limits"]["mechanism"], "none", "{status}");
        let notes = status["limits"]["not_enforced"].as_array().unwrap();
        assert!(
            notes[0].as_str().unwrap().contains("limits not enforced"),
            "{status}"
        );
    }
    assert!(
        status["cpu_time_ms"].is_u64() && status["memory_peak_bytes"].is_u64(),
        "{status}"
    );
}

#[test]
fn a_daemon_left_behind_by_a_successful_script_is_swept() {
    let spool = Spool::new();
    let (daemon, pidfile) = setsid_daemon(&spool, "exec sleep 1000");
    let script = format!("{daemon} > /dev/null 2>&1 &\nsleep 0.2\necho started");
    spool.script("core", "update.sh", &script);
    let service = Service::start(&spool);
    let id = spool.submit("core", "update", Some("1.0.0"));
    assert_eq!(spool.wait_final(&id)["success"], true);
    wait_until_gone(&pidfile);
    assert!(
        service
            .log()
            .contains("killed processes the script left running")
    );
}

/// A shell command that runs `body` as a daemon in a session of its own (setsid), out of the
/// script's process group, and the file it writes its pid in.
fn setsid_daemon(spool: &Spool, body: &str) -> (String, std::path::PathBuf) {
    let pidfile = spool.evidence().join("daemon.pid");
    let command = format!("setsid sh -c 'echo $$ > {}; {body}'", path_str(&pidfile));
    (command, pidfile)
}

/// Waits until the daemon whose pid is in `pidfile` is gone.
fn wait_until_gone(pidfile: &std::path::Path) {
    let daemon: i32 = fs::read_to_string(pidfile).unwrap().trim().parse().unwrap();
    wait_until("the setsid daemon is gone", || {
        crate::support::process_gone(daemon)
    });
}
