//! The real binary on temporary spools with real `/bin/sh` scripts, driven the way the
//! DuneBugger container client drives it.

use std::collections::HashMap;
use std::fs;
use std::time::{Duration, Instant};

use crate::support::{Service, Spool, new_id, path_str, process_gone, wait_until};

#[test]
fn an_update_succeeds_with_output_exit_code_and_timing() {
    let spool = Spool::new();
    spool.script(
        "remote",
        "update.sh",
        r#"echo "updating $COMPONENT to $1"; echo "note" >&2"#,
    );
    let _service = Service::start(&spool);
    let id = spool.submit("remote", "update", Some("1.0.0-beta.8"));

    let status = spool.wait_final(&id);
    assert_eq!(status["success"], true);
    assert_eq!(status["request_id"], id.as_str());
    assert_eq!(status["component"], "remote");
    assert_eq!(status["action"], "update");
    assert_eq!(status["output"], "updating remote to 1.0.0-beta.8\n");
    assert_eq!(status["error"], "note\n");
    assert_eq!(status["exit_code"], 0);
    assert!(status["duration_ms"].is_u64());
    assert!(
        status["timestamp"].as_str().unwrap().ends_with('Z'),
        "RFC 3339 with zone"
    );
    assert!(status.get("code").is_none());
    // The request file goes once the answer is durable.
    wait_until("request file removed", || spool.request_files().is_empty());
}

#[test]
fn a_failing_script_reports_its_exit_code_and_stderr() {
    let spool = Spool::new();
    spool.script(
        "core",
        "health-check.sh",
        "echo 'core container is down' >&2; exit 3",
    );
    let _service = Service::start(&spool);
    let id = spool.submit("core", "health", None);

    let status = spool.wait_final(&id);
    assert_eq!(status["success"], false);
    assert_eq!(status["exit_code"], 3);
    assert_eq!(status["code"], "script_failed");
    assert_eq!(status["error"], "core container is down\n");
    assert_eq!(status["message"], "health-check.sh exited with code 3");
}

#[test]
fn a_timeout_kills_the_whole_tree_including_a_grandchild_that_ignores_sigterm() {
    let mut spool = Spool::new();
    spool.add_config("[components.remote.timeouts]\nupdate = 1");
    let pidfile = spool.evidence().join("grandchild.pid");
    let script = format!(
        r#"sh -c 'trap "" TERM; echo $$ > {pid}; while :; do sleep 1; done' &
trap "" TERM
sleep 300"#,
        pid = path_str(&pidfile)
    );
    spool.script("remote", "update.sh", &script);
    let _service = Service::start(&spool);
    let id = spool.submit("remote", "update", Some("1.2.3"));

    let status = spool.wait_final(&id);
    assert_eq!(status["success"], false);
    assert_eq!(status["code"], "timeout");
    assert_eq!(status["timed_out"], true);
    assert_eq!(
        status["signal"], 9,
        "ignored SIGTERM, so SIGKILL after the grace period"
    );
    let grandchild: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until("the grandchild is gone", || process_gone(grandchild));
}

#[test]
fn phases_are_seen_by_a_polling_client_then_the_final_status() {
    let spool = Spool::new();
    let gate = spool.evidence().join("go");
    let script = format!(
        "echo PHASE:downloading\nwhile [ ! -e {g}.1 ]; do sleep 0.05; done\necho PHASE:installing\nwhile [ ! -e {g}.2 ]; do sleep 0.05; done",
        g = path_str(&gate)
    );
    spool.script("remote", "update.sh", &script);
    let _service = Service::start(&spool);
    let id = spool.submit("remote", "update", Some("2.0.0"));

    let in_phase = |phase: &str| {
        wait_until(phase, || {
            spool
                .status(&id)
                .is_some_and(|s| s["phase"] == phase && s["message"] == "in_progress")
        });
        let s = spool.status(&id).unwrap();
        assert_eq!(s["success"], serde_json::Value::Null);
    };
    in_phase("downloading");
    fs::write(gate.with_extension("1"), "").unwrap();
    in_phase("installing");
    fs::write(gate.with_extension("2"), "").unwrap();
    let status = spool.wait_final(&id);
    assert_eq!(status["success"], true);
    assert_eq!(status["phase"], "done");
}

#[test]
fn a_script_printing_100_mb_does_not_grow_the_service() {
    let spool = Spool::new();
    // 100 MiB on stdout, 1 MiB on stderr, then a last line that must be in the tail.
    spool.script(
        "remote",
        "health-check.sh",
        "head -c 104857600 /dev/zero | tr '\\0' 'x'\nhead -c 1048576 /dev/zero | tr '\\0' 'e' >&2\necho\necho last-line",
    );
    let service = Service::start(&spool);
    let id = spool.submit("remote", "health", None);

    let status = spool.wait_final(&id);
    assert_eq!(status["success"], true);
    assert_eq!(status["output_truncated"], true);
    assert_eq!(status["error_truncated"], true);
    let output = status["output"].as_str().unwrap();
    assert!(output.ends_with("\nlast-line\n"));
    assert!(
        output.len() <= 64 * 1024,
        "the status carries a bounded tail, got {}",
        output.len()
    );
    let peak = service.peak_rss_kib();
    assert!(
        peak < 40 * 1024,
        "service peak RSS {peak} KiB after 100 MB of script output"
    );
}

#[test]
fn requests_present_before_start_are_all_answered() {
    let mut spool = Spool::new();
    // One writer (this test's uid) may fill the whole queue here.
    spool.set("spool", "max_queued = 1000\nmax_queued_per_writer = 1000");
    spool.create_dirs();
    spool.script("core", "health-check.sh", &spool.record_run());
    let ids: Vec<String> = (0..500).map(|_| new_id()).collect();
    for id in &ids {
        spool.drop_in_place(id, &Spool::request_json(id, "core", "health", None));
    }
    // Backdate them: they were written while the service was down, not mid-write.
    for id in &ids {
        let f = fs::File::options()
            .write(true)
            .open(spool.requests().join(format!("{id}.json")))
            .unwrap();
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(60))
            .unwrap();
    }
    let _service = Service::start(&spool);
    for id in &ids {
        assert_eq!(spool.wait_final(id)["success"], true, "{id}");
    }
    assert_ran_exactly_once(&spool, &ids);
    wait_until("all request files removed", || {
        spool.request_files().is_empty()
    });
}

#[test]
fn a_burst_of_1000_requests_is_answered_exactly_once_each() {
    let mut spool = Spool::new();
    // One writer (this test's uid) may fill the whole queue here.
    spool.set("spool", "max_queued = 1000\nmax_queued_per_writer = 1000");
    spool.script("core", "health-check.sh", &spool.record_run());
    let _service = Service::start(&spool);
    let ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
    for (i, id) in ids.iter().enumerate() {
        let json = Spool::request_json(id, "core", "health", None);
        if i % 2 == 0 {
            spool.drop_in_place(id, &json)
        } else {
            spool.drop_renamed(id, &json)
        }
    }
    for id in &ids {
        assert_eq!(spool.wait_final(id)["success"], true, "{id}");
    }
    assert_ran_exactly_once(&spool, &ids);
}

fn assert_ran_exactly_once(spool: &Spool, ids: &[String]) {
    let runs = spool.runs();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in &runs {
        *counts.entry(line.as_str()).or_default() += 1;
    }
    for id in ids {
        assert_eq!(
            counts.get(id.as_str()),
            Some(&1),
            "{id} must run exactly once"
        );
    }
    assert_eq!(counts.len(), ids.len());
}

#[test]
fn temp_files_and_non_json_names_are_ignored_until_renamed() {
    let spool = Spool::new();
    let service = Service::start(&spool);
    let id = new_id();
    let json = Spool::request_json(&id, "core", "health", None);
    fs::write(spool.requests().join(format!(".{id}.json")), &json).unwrap();
    fs::write(spool.requests().join(format!("{id}.json.tmp")), &json).unwrap();
    fs::write(spool.requests().join("notes.txt"), "hello").unwrap();
    spool.wait_sentinel();
    assert!(
        spool.status(&id).is_none(),
        "nothing answered for temp files"
    );
    fs::rename(
        spool.requests().join(format!("{id}.json.tmp")),
        spool.requests().join(format!("{id}.json")),
    )
    .unwrap();
    assert_eq!(spool.wait_final(&id)["success"], true);
    assert!(
        spool.requests().join("notes.txt").exists(),
        "unrelated files are left alone"
    );
    drop(service);
}

#[test]
fn the_client_deleting_its_status_file_is_fine_and_nothing_reappears() {
    let spool = Spool::new();
    let mut service = Service::start(&spool);
    let id = spool.submit("core", "health", None);
    spool.wait_final(&id);
    fs::remove_file(spool.status_dir().join(format!("{id}.json"))).unwrap();
    // The service keeps working and does not recreate the answered status.
    let next = spool.submit("core", "health", None);
    assert_eq!(spool.wait_final(&next)["success"], true);
    assert!(spool.status(&id).is_none());
    assert!(service.stop(), "clean exit");
    let restarted = Service::start(&spool);
    spool.wait_sentinel();
    assert!(
        spool.status(&id).is_none(),
        "a restart does not re-answer or re-run it"
    );
    drop(restarted);
}

#[test]
fn invalid_requests_get_a_final_status_with_a_stable_code() {
    let spool = Spool::new();
    let _service = Service::start(&spool);
    let cases = [
        (
            "not-json",
            "{\"component\": \"remote\", \"act".to_string(),
            "invalid_json",
        ),
        (
            "unknown-component",
            Spool::request_json("unknown-component", "nas", "health", None),
            "unknown_component",
        ),
        (
            "unknown-action",
            Spool::request_json("unknown-action", "remote", "reboot", None),
            "unknown_action",
        ),
        (
            "no-version",
            Spool::request_json("no-version", "remote", "update", None),
            "missing_field",
        ),
        (
            "bad-version",
            Spool::request_json("bad-version", "remote", "update", Some("--force")),
            "invalid_version",
        ),
        (
            "wrong-type",
            r#"{"component": 1, "action": "health", "request_id": "wrong-type"}"#.to_string(),
            "wrong_type",
        ),
    ];
    for (id, content, _) in &cases {
        spool.drop_in_place(id, content);
    }
    for (id, _, code) in &cases {
        let status = spool.wait_final(id);
        assert_eq!(status["success"], false, "{id}");
        assert_eq!(status["code"], *code, "{id}: {status}");
        assert!(!status["message"].as_str().unwrap().is_empty());
    }
    wait_until("refused files removed", || spool.request_files().is_empty());
}

#[test]
fn a_request_id_that_was_already_answered_is_not_run_again() {
    let spool = Spool::new();
    spool.script("core", "health-check.sh", &spool.record_run());
    let _service = Service::start(&spool);
    let id = new_id();
    let json = Spool::request_json(&id, "core", "health", None);
    spool.drop_in_place(&id, &json);
    let first = spool.wait_final(&id);
    spool.drop_in_place(&id, &json);
    wait_until("duplicate removed", || spool.request_files().is_empty());
    assert_eq!(
        spool.status(&id).unwrap(),
        first,
        "the answer is not overwritten"
    );
    assert_eq!(spool.runs(), [id]);
}

#[test]
fn a_missing_script_is_answered_not_fatal() {
    let spool = Spool::new();
    fs::remove_file(spool.dir.path().join("components/remote/rollback.sh")).unwrap();
    let _service = Service::start(&spool);
    let id = spool.submit("remote", "rollback", None);
    let status = spool.wait_final(&id);
    assert_eq!(status["code"], "script_missing");
    let next = spool.submit("remote", "health", None);
    assert_eq!(
        spool.wait_final(&next)["success"],
        true,
        "the service carries on"
    );
}

#[test]
fn scripts_get_a_clean_documented_environment_and_their_own_directory() {
    let spool = Spool::new();
    spool.script(
        "remote",
        "update.sh",
        "env | sort; echo \"cwd=$(pwd)\"; echo \"args=$#:$1\"; ls /proc/self/fd | wc -l",
    );
    let _service = Service::start(&spool);
    let id = spool.submit("remote", "update", Some("1.2.3"));
    let status = spool.wait_final(&id);
    let output = status["output"].as_str().unwrap();
    for expected in [
        format!("REQUEST_ID={id}"),
        "COMPONENT=remote".into(),
        "ACTION=update".into(),
        "VERSION=1.2.3".into(),
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "args=1:1.2.3".into(),
        format!(
            "cwd={}",
            path_str(&spool.dir.path().join("components/remote"))
        ),
    ] {
        assert!(
            output.lines().any(|l| l == expected),
            "missing {expected:?} in:\n{output}"
        );
    }
    for leaked in ["NOTIFY_SOCKET", "RUST_LOG", "WATCHDOG_"] {
        assert!(
            !output.contains(leaked),
            "{leaked} leaked into the script's environment:\n{output}"
        );
    }
}

#[test]
fn updates_are_serialized_and_health_waits_for_its_components_update() {
    let spool = Spool::new();
    let log = path_str(&spool.evidence().join("timeline"));
    let body = |name: &str| {
        format!(
            "echo \"start {name} $COMPONENT\" >> {log}; sleep 0.5; echo \"end {name} $COMPONENT\" >> {log}"
        )
    };
    for c in ["remote", "core"] {
        spool.script(c, "update.sh", &body("update"));
        spool.script(c, "health-check.sh", &body("health"));
    }
    let _service = Service::start(&spool);
    let ids: Vec<String> = (0..4).map(|_| new_id()).collect();
    spool.drop_renamed(
        &ids[0],
        &Spool::request_json(&ids[0], "remote", "update", Some("1.0.0")),
    );
    // Two files dropped within one tick of the file system's clock have no order the
    // coordinator could know (a scan sorts by modification time, then name): the update is
    // known to be first only once it runs.
    spool.wait_phase(&ids[0], "running");
    spool.drop_renamed(
        &ids[1],
        &Spool::request_json(&ids[1], "core", "update", Some("1.0.0")),
    );
    spool.drop_renamed(
        &ids[2],
        &Spool::request_json(&ids[2], "remote", "health", None),
    );
    for id in &ids[..3] {
        spool.wait_final(id);
    }
    let timeline = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = timeline.lines().collect();
    let at = |l: &str| {
        lines
            .iter()
            .position(|x| *x == l)
            .unwrap_or_else(|| panic!("{l} missing: {lines:?}"))
    };
    assert!(
        at("end update remote") < at("start update core"),
        "updates never overlap: {lines:?}"
    );
    assert!(
        at("end update remote") < at("start health remote"),
        "health waits for its component's update: {lines:?}"
    );
}

#[test]
fn a_half_written_file_found_at_start_up_is_read_once_complete() {
    let spool = Spool::new();
    spool.create_dirs();
    let id = new_id();
    let json = Spool::request_json(&id, "core", "health", None);
    // A client is mid-write (open, half written) when the service starts.
    let path = spool.requests().join(format!("{id}.json"));
    let mut f = fs::File::create(&path).unwrap();
    use std::io::Write;
    f.write_all(&json.as_bytes()[..json.len() / 2]).unwrap();
    f.flush().unwrap();
    let _service = Service::start(&spool);
    // The service has seen the half-written file (and left it alone) once it answers a later one.
    spool.wait_sentinel();
    f.write_all(&json.as_bytes()[json.len() / 2..]).unwrap();
    drop(f); // close: the event the service was waiting for
    assert_eq!(spool.wait_final(&id)["success"], true);
}

#[test]
fn sigterm_stops_the_service_at_once_and_the_next_start_answers_everything() {
    let spool = Spool::new();
    let gate = spool.gated_script("remote", "update.sh", &spool.record_run(), "exit 3");
    let mut service = Service::start(&spool);
    let running = new_id();
    let queued = new_id();
    spool.drop_renamed(
        &running,
        &Spool::request_json(&running, "remote", "update", Some("1.0.0")),
    );
    wait_until("the first update runs", || !spool.runs().is_empty());
    spool.drop_renamed(
        &queued,
        &Spool::request_json(&queued, "remote", "update", Some("1.0.1")),
    );
    spool.wait_phase(&queued, "queued");

    service.signal(nix::sys::signal::Signal::SIGTERM);
    service.wait_for_notification("STOPPING=1");
    assert!(service.wait_exit(), "clean exit");
    // The script was not killed: it is still waiting for its gate, unanswered.
    assert_eq!(spool.status(&running).unwrap()["phase"], "running");
    assert_eq!(spool.status(&queued).unwrap()["phase"], "queued");

    fs::write(&gate, "").unwrap();
    let _restarted = Service::start(&spool);
    let first = spool.wait_final(&running);
    assert_eq!(
        first["exit_code"], 3,
        "the real exit code, through the restart: {first}"
    );
    assert_eq!(spool.wait_final(&queued)["exit_code"], 3);
    assert_eq!(spool.runs(), [running, queued]);
    wait_until("request files removed", || spool.request_files().is_empty());
}

#[test]
fn systemd_hears_ready_status_lines_and_stopping() {
    let spool = Spool::new();
    let gate = spool.gated_script("remote", "update.sh", "echo PHASE:downloading", "");
    let mut service = Service::start(&spool);
    assert!(
        service
            .notifications()
            .iter()
            .any(|n| n.contains("READY=1") && n.contains("STATUS=idle"))
    );
    let id = new_id();
    spool.drop_renamed(
        &id,
        &Spool::request_json(&id, "remote", "update", Some("1.2.3")),
    );
    service.wait_for_notification("STATUS=running remote/update 1.2.3 (phase: downloading)");
    fs::write(&gate, "").unwrap();
    service.wait_for_notification("STATUS=idle");
    service.signal(nix::sys::signal::Signal::SIGTERM);
    service.wait_for_notification("STOPPING=1");
}

#[test]
fn the_watchdog_is_pinged_at_half_its_timeout_when_systemd_asks_for_it() {
    let spool = Spool::new();
    let mut service = Service::start_with_env(&spool, &[("WATCHDOG_USEC", "200000")]);
    // Timed from the first ping, so a slow start-up before it cannot shorten the span.
    service.wait_for_notification("WATCHDOG=1");
    let start = Instant::now();
    for _ in 0..4 {
        service.wait_for_notification("WATCHDOG=1");
    }
    // Four more pings at a 100 ms period take at least ~400 ms (the margin allows for noticing
    // the first one late); a loop pinging without the timer, or a timer catching up on missed
    // ticks, would be done at once.
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn no_watchdog_pings_without_a_watchdog() {
    let spool = Spool::new();
    let service = Service::start(&spool);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !service
            .notifications()
            .iter()
            .any(|n| n.contains("WATCHDOG=1"))
    );
}

#[test]
fn a_request_whose_event_was_lost_to_an_inotify_overflow_is_found_by_the_rescan() {
    let spool = Spool::new();
    let service = Service::start(&spool);
    // Freeze the service (its inotify reader too) and flood the kernel's event queue with
    // ignored temp files, so the real request's events are dropped.
    let max_events: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    service.signal(nix::sys::signal::Signal::SIGSTOP);
    for i in 0..max_events + 100 {
        fs::write(spool.requests().join(format!("flood-{i}.tmp")), "").unwrap();
    }
    let id = spool.submit("core", "health", None);
    service.signal(nix::sys::signal::Signal::SIGCONT);

    assert_eq!(spool.wait_final(&id)["success"], true);
    assert!(
        service.log().contains("inotify queue overflow"),
        "answered through the overflow rescan"
    );
}

#[test]
fn a_second_coordinator_on_the_same_state_directory_refuses_to_start_and_names_the_first() {
    let spool = Spool::new();
    let gate = spool.gated_script("remote", "update.sh", "echo PHASE:installing", "");
    let mut first = Service::start(&spool);
    let id = spool.submit("remote", "update", Some("1.2.3"));
    spool.wait_phase(&id, "installing");

    let mut second = std::process::Command::new(crate::support::bin())
        .args(["run", "--config"])
        .arg(spool.config_path())
        .env_remove("JOURNAL_STREAM")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + crate::support::PATIENCE;
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("the second coordinator did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let state_dir = spool.dir.path().join("state");
    for needle in [
        format!("pid {}: ", first.pid()),
        format!("{} run --config", crate::support::bin()),
        format!("state directory {}", path_str(&state_dir)),
    ] {
        assert!(
            stderr.contains(&needle),
            "{needle:?} missing from: {stderr}"
        );
    }
    assert!(!stderr.contains("coordinator ready"), "{stderr}");

    // The run's monitor is a process of its own that never holds the coordinator's lock...
    let monitors: Vec<i32> = crate::support::processes_mentioning(spool.dir.path())
        .into_iter()
        .filter(|(_, cmdline)| cmdline.contains("__monitor"))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(monitors.len(), 1, "one monitor for the running update");
    let lock_file = state_dir.join("coordinator.lock");
    for fd in fs::read_dir(format!("/proc/{}/fd", monitors[0])).unwrap() {
        let target = fs::read_link(fd.unwrap().path()).unwrap_or_default();
        assert_ne!(
            target, lock_file,
            "the monitor inherited the coordinator's lock"
        );
    }

    // ...so once the holder is killed, a new coordinator starts while that monitor still runs.
    first.crash();
    let restarted = Service::start(&spool);
    assert!(
        !process_gone(monitors[0]),
        "the monitor outlives the coordinator"
    );
    assert_eq!(
        fs::read_to_string(&lock_file).unwrap(),
        format!("{}\n", restarted.pid())
    );
    fs::write(&gate, "").unwrap();
    assert_eq!(spool.wait_final(&id)["success"], true);
}
