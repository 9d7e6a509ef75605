//! The health-gated update: after update.sh, health-check.sh must pass (with retries); if it
//! never does, or the update fails, rollback.sh runs and the health check runs again.

use std::fs;

use crate::support::{Service, Spool, assert_message_says, new_id, path_str, stdout_of};

/// A spool whose `remote` component has the health gate on, with no wait between attempts.
fn gated() -> Spool {
    let mut spool = Spool::new();
    spool.set_key("components.remote", "auto_rollback", "true");
    spool.set_key("components.remote", "health_interval", "0");
    spool
}

fn update(spool: &Spool) -> serde_json::Value {
    let id = spool.submit("remote", "update", Some("1.4.2"));
    conforming(spool.wait_final(&id))
}

fn step_names(status: &serde_json::Value) -> Vec<String> {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{}:{}", s["step"].as_str().unwrap(), s["exit_code"]))
        .collect()
}

#[test]
fn a_healthy_update_is_updated() {
    let spool = gated();
    spool.script("remote", "update.sh", "echo installing $1");
    spool.script("remote", "health-check.sh", "echo healthy");
    let _service = Service::start(&spool);
    let status = update(&spool);
    assert_eq!(status["success"], true, "{status}");
    assert_eq!(status["outcome"], "updated");
    assert_eq!(step_names(&status), ["update:0", "health:0"]);
    assert_eq!(
        status["output"], "installing 1.4.2\n",
        "output is still the update's"
    );
    assert_eq!(
        status["message"],
        "Updated to 1.4.2; the health check passed"
    );
}

#[test]
fn a_flaky_health_check_that_passes_on_the_third_try_is_updated() {
    let spool = gated();
    let tries = spool.evidence().join("tries");
    let script = format!(
        "echo x >> {t}; [ $(wc -l < {t}) -ge 3 ]",
        t = path_str(&tries)
    );
    spool.script("remote", "health-check.sh", &script);
    let _service = Service::start(&spool);
    let status = update(&spool);
    assert_eq!(status["outcome"], "updated", "{status}");
    assert_eq!(
        step_names(&status),
        ["update:0", "health:1", "health:1", "health:0"]
    );
    assert_message_says(&status, "attempt 3");
}

#[test]
fn a_health_check_that_never_passes_triggers_a_rollback() {
    let spool = gated();
    let state = spool.evidence().join("version");
    let script = format!("echo new > {}", path_str(&state));
    spool.script("remote", "update.sh", &script);
    let script = format!("echo old > {}; echo restored", path_str(&state));
    spool.script("remote", "rollback.sh", &script);
    let script = format!(
        "[ \"$(cat {})\" = old ] || {{ echo 'container restarting' >&2; exit 1; }}",
        path_str(&state)
    );
    spool.script("remote", "health-check.sh", &script);
    let _service = Service::start(&spool);
    let status = update(&spool);
    assert_eq!(status["success"], false, "{status}");
    assert_eq!(status["outcome"], "rolled_back");
    assert_eq!(status["code"], "rolled_back");
    assert_eq!(
        step_names(&status),
        [
            "update:0",
            "health:1",
            "health:1",
            "health:1",
            "rollback:0",
            "health:0"
        ]
    );
    assert_eq!(
        status["steps"][1]["error_tail"], "container restarting\n",
        "each step keeps its output"
    );
    assert_eq!(fs::read_to_string(&state).unwrap(), "old\n");
}

#[test]
fn a_failed_update_is_rolled_back_and_a_failed_rollback_says_so() {
    let spool = gated();
    spool.script("remote", "update.sh", "echo 'pull failed' >&2; exit 3");
    let _service = Service::start(&spool);
    let status = update(&spool);
    assert_eq!(status["outcome"], "rolled_back", "{status}");
    assert_eq!(status["exit_code"], 3, "the update's own exit code is kept");
    assert_eq!(step_names(&status), ["update:3", "rollback:0", "health:0"]);

    spool.script("remote", "rollback.sh", "echo 'no backup' >&2; exit 2");
    let status = update(&spool);
    assert_eq!(status["outcome"], "rollback_failed", "{status}");
    assert_eq!(status["code"], "rollback_failed");
    assert_message_says(&status, "needs attention");
    assert_eq!(step_names(&status), ["update:3", "rollback:2"]);
}

#[test]
fn a_dry_run_checks_everything_runs_nothing_and_says_what_would_run() {
    let spool = gated();
    let ledger = spool.evidence().join("ledger");
    for script in ["update.sh", "health-check.sh", "rollback.sh"] {
        let body = format!("echo ran >> {}", path_str(&ledger));
        spool.script("remote", script, &body);
    }
    let _service = Service::start(&spool);
    let id = new_id();
    let mut request: serde_json::Value =
        serde_json::from_str(&Spool::request_json(&id, "remote", "update", Some("1.4.2"))).unwrap();
    request["dry_run"] = true.into();
    spool.drop_in_place(&id, &request.to_string());
    let status = spool.wait_final(&id);
    assert_eq!(
        (&status["success"], &status["dry_run"]),
        (&true.into(), &true.into()),
        "{status}"
    );
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("update.sh 1.4.2") && message.contains("health-check.sh"),
        "{message}"
    );
    assert!(message.contains("Nothing was run"), "{message}");
    assert!(!ledger.exists(), "the ledger stays empty");

    // A dry run finds what a real run would fail on.
    let update = spool.dir.path().join("components/remote/update.sh");
    fs::set_permissions(&update, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let id = new_id();
    request["request_id"] = id.clone().into();
    spool.drop_in_place(&id, &request.to_string());
    let status = spool.wait_final(&id);
    assert_eq!(
        (&status["success"], &status["code"]),
        (&false.into(), &"script_untrusted".into()),
        "{status}"
    );
    assert!(!ledger.exists());
}

#[test]
fn an_update_without_enough_free_disk_is_refused_with_the_numbers() {
    let mut spool = gated();
    spool.set_key("components.remote", "min_free_disk_mb", "1000000000");
    let ledger = spool.evidence().join("ledger");
    let script = format!("echo ran >> {}", path_str(&ledger));
    spool.script("remote", "update.sh", &script);
    let _service = Service::start(&spool);
    let status = update(&spool);
    assert_eq!(status["code"], "insufficient_disk", "{status}");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("MB free on") && message.contains("1000000000 MB required"),
        "{message}"
    );
    assert!(!ledger.exists(), "nothing ran");
}

#[test]
fn the_inventory_follows_updates_and_rollbacks_and_is_published_for_containers() {
    let spool = gated();
    fs::write(
        spool.dir.path().join("components/remote/VERSION"),
        "1.0.0\n",
    )
    .unwrap();
    let _service = Service::start(&spool);
    let inventory = || -> serde_json::Value {
        serde_json::from_slice(&fs::read(spool.status_dir().join("inventory.json")).unwrap())
            .unwrap()
    };
    assert_eq!(inventory()["components"]["remote"]["version"], "1.0.0");
    assert_eq!(
        inventory()["components"]["remote"]["version_source"],
        "VERSION"
    );

    let updated = update(&spool);
    assert_eq!(updated["outcome"], "updated");
    // The inventory is rewritten just after the answer. The state directory's copy names the
    // request; the copy every container can read does not.
    let state_copy = || -> serde_json::Value {
        serde_json::from_slice(&fs::read(spool.dir.path().join("state/inventory.json")).unwrap())
            .unwrap()
    };
    let recorded =
        |id: &serde_json::Value| state_copy()["components"]["remote"]["last_request_id"] == *id;
    crate::support::wait_until("inventory updated", || recorded(&updated["request_id"]));
    let published = fs::read_to_string(spool.status_dir().join("inventory.json")).unwrap();
    assert!(
        !published.contains(updated["request_id"].as_str().unwrap())
            && !published.contains("request_id"),
        "the published inventory names a request: {published}"
    );
    let remote = &inventory()["components"]["remote"];
    assert_eq!(
        (&remote["version"], &remote["previous_version"]),
        (&"1.4.2".into(), &"1.0.0".into())
    );
    assert_eq!(remote["last_outcome"], "succeeded");

    let id = spool.submit("remote", "rollback", None);
    assert_eq!(spool.wait_final(&id)["success"], true);
    crate::support::wait_until("inventory updated", || recorded(&id.clone().into()));
    let remote = &inventory()["components"]["remote"];
    assert_eq!(
        (&remote["version"], &remote["version_source"]),
        (&"1.0.0".into(), &"rollback".into())
    );
    assert_eq!(remote["recent"].as_array().unwrap().len(), 2);

    let out = std::process::Command::new(crate::support::bin())
        .args(["inventory", "--config"])
        .arg(spool.config_path())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("remote") && l.contains("1.0.0") && l.contains("rollback")),
        "{table}"
    );
}

fn cancel(spool: &Spool, target: &str) -> serde_json::Value {
    let id = new_id();
    let request = serde_json::json!({"action": "cancel", "target": target, "request_id": id});
    spool.drop_in_place(&id, &request.to_string());
    conforming(spool.wait_final(&id))
}

#[test]
fn cancel_removes_a_queued_request_and_stops_a_running_one() {
    let spool = Spool::new();
    let started = spool.evidence().join("started");
    let ledger = spool.evidence().join("ledger");
    let script = format!(
        "echo \"$1\" >> {l}; touch {s}; trap 'echo stopping safely; exit 143' TERM; while :; do sleep 0.1; done",
        l = path_str(&ledger),
        s = path_str(&started)
    );
    spool.script("remote", "update.sh", &script);
    let _service = Service::start(&spool);
    let running = spool.submit("remote", "update", Some("1.0.0"));
    crate::support::wait_until("running", || started.exists());
    let queued = spool.submit("remote", "update", Some("2.0.0"));
    spool.wait_phase(&queued, "queued");

    let answer = cancel(&spool, &queued);
    assert_eq!(answer["success"], true, "{answer}");
    let status = spool.wait_final(&queued);
    assert_eq!(
        (&status["code"], &status["success"]),
        (&"cancelled".into(), &false.into()),
        "{status}"
    );

    let answer = cancel(&spool, &running);
    assert_eq!(answer["success"], true, "{answer}");
    let status = conforming(spool.wait_final(&running));
    assert_eq!(status["code"], "cancelled", "{status}");
    assert_eq!(
        status["output"], "stopping safely\n",
        "the script trapped SIGTERM"
    );
    assert_eq!(
        fs::read_to_string(&ledger).unwrap(),
        "1.0.0\n",
        "the queued one never ran"
    );

    let answer = cancel(&spool, &running);
    assert_eq!(answer["code"], "already_finished", "{answer}");
    let answer = cancel(&spool, "no-such-request");
    assert_eq!(answer["code"], "unknown_target", "{answer}");
}

/// The status, after checking it against docs/schema/status.schema.json.
fn conforming(status: serde_json::Value) -> serde_json::Value {
    let errors = crate::support::status_schema_errors(&status);
    assert!(
        errors.is_empty(),
        "{status}\ndoes not match the schema: {errors:?}"
    );
    status
}

/// A spool where remote and scheduler are health-gated and every script appends
/// "<component> <script> <version>" to a ledger; `fail_health` names a component whose health
/// check fails until it is rolled back.
fn batch_spool(fail_health: Option<&str>) -> (Spool, std::path::PathBuf) {
    let mut spool = Spool::new();
    let ledger = spool.evidence().join("ledger");
    for component in ["remote", "scheduler"] {
        spool.set_key(&format!("components.{component}"), "auto_rollback", "true");
        spool.set_key(&format!("components.{component}"), "health_interval", "0");
        spool.set_key(&format!("components.{component}"), "health_retries", "2");
        let state = spool.evidence().join(format!("{component}.version"));
        let script = format!(
            "echo {component} update $1 >> {l}; echo $1 > {s}",
            l = path_str(&ledger),
            s = path_str(&state)
        );
        spool.script(component, "update.sh", &script);
        let script = format!(
            "echo {component} rollback >> {l}; echo old > {s}",
            l = path_str(&ledger),
            s = path_str(&state)
        );
        spool.script(component, "rollback.sh", &script);
        let health = if fail_health == Some(component) {
            format!(
                "[ ! -e {s} ] || [ \"$(cat {s})\" = old ]",
                s = path_str(&state)
            )
        } else {
            "exit 0".to_owned()
        };
        spool.script(component, "health-check.sh", &health);
    }
    (spool, ledger)
}

fn batch_update(spool: &Spool) -> (String, serde_json::Value) {
    let id = new_id();
    let body = serde_json::json!({
        "action": "update",
        "components": {"remote": "1.4.2", "scheduler": "2.0.1"},
        "request_id": id,
    });
    spool.drop_in_place(&id, &body.to_string());
    let status = conforming(spool.wait_final(&id));
    (id, status)
}

fn outcomes(status: &serde_json::Value) -> Vec<String> {
    status["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {} {}",
                c["component"].as_str().unwrap(),
                c["version"].as_str().unwrap(),
                c["outcome"].as_str().unwrap()
            )
        })
        .collect()
}

/// Runs the remote+scheduler batch to its end, `fail_health` failing its health gate, and
/// asserts how it ended: its outcome, each component's, and the scripts that ran in order.
fn batch_ends(
    fail_health: Option<&str>,
    outcome: &str,
    components: [&str; 2],
    scripts_run: &str,
) -> (Spool, serde_json::Value) {
    let (spool, ledger) = batch_spool(fail_health);
    let _service = Service::start(&spool);
    let (_, status) = batch_update(&spool);
    assert_eq!(status["success"], outcome == "updated", "{status}");
    assert_eq!(status["outcome"], outcome, "{status}");
    assert_eq!(outcomes(&status), components);
    assert_eq!(fs::read_to_string(&ledger).unwrap(), scripts_run);
    (spool, status)
}

#[test]
fn a_multi_component_update_updates_in_order_and_records_every_version() {
    let (spool, status) = batch_ends(
        None,
        "updated",
        ["remote 1.4.2 updated", "scheduler 2.0.1 updated"],
        "remote update 1.4.2\nscheduler update 2.0.1\n",
    );
    assert_eq!(status["component"], "remote+scheduler");
    let steps: Vec<String> = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["component"].as_str().unwrap(),
                s["step"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            "remote:update",
            "remote:health",
            "scheduler:update",
            "scheduler:health"
        ]
    );
    let inventory: serde_json::Value =
        serde_json::from_slice(&fs::read(spool.status_dir().join("inventory.json")).unwrap())
            .unwrap();
    assert_eq!(inventory["components"]["remote"]["version"], "1.4.2");
    assert_eq!(inventory["components"]["scheduler"]["version"], "2.0.1");
}

#[test]
fn a_batch_whose_second_component_fails_its_health_gate_rolls_back_the_first() {
    // The failing one is rolled back by its own gate first, then the earlier ones, newest first.
    let (spool, status) = batch_ends(
        Some("scheduler"),
        "rolled_back",
        ["remote 1.4.2 rolled_back", "scheduler 2.0.1 rolled_back"],
        "remote update 1.4.2\nscheduler update 2.0.1\nscheduler rollback\nremote rollback\n",
    );
    assert_eq!(status["code"], "rolled_back");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with("scheduler: the health check failed 2 time(s)"),
        "{message}"
    );
    assert!(
        message.contains("rolled back (healthy again): remote 1.4.2, scheduler 2.0.1"),
        "{message}"
    );
    let inventory: serde_json::Value =
        serde_json::from_slice(&fs::read(spool.status_dir().join("inventory.json")).unwrap())
            .unwrap();
    assert_eq!(
        inventory["components"]["remote"]["last_outcome"],
        "rolled_back"
    );
    assert_ne!(inventory["components"]["remote"]["version"], "1.4.2");
}

#[test]
fn a_batch_whose_first_component_fails_never_starts_the_second() {
    batch_ends(
        Some("remote"),
        "rolled_back",
        ["remote 1.4.2 rolled_back", "scheduler 2.0.1 not_started"],
        "remote update 1.4.2\nremote rollback\n",
    );
}

#[test]
fn a_batch_dry_run_checks_every_component() {
    let (spool, ledger) = batch_spool(None);
    let _service = Service::start(&spool);
    let id = new_id();
    let body = serde_json::json!({
        "action": "update",
        "components": {"remote": "1.4.2", "scheduler": "2.0.1"},
        "request_id": id,
        "dry_run": true,
    });
    spool.drop_in_place(&id, &body.to_string());
    let status = conforming(spool.wait_final(&id));
    assert_eq!(status["success"], true, "{status}");
    let message = status["message"].as_str().unwrap();
    let remote = message.find("remote/update.sh 1.4.2").expect(message);
    let scheduler = message.find("scheduler/update.sh 2.0.1").expect(message);
    assert!(remote < scheduler, "{message}");
    assert!(!ledger.exists(), "nothing ran");

    // The second component's script is not trusted: the whole batch would fail.
    let update = spool.dir.path().join("components/scheduler/update.sh");
    fs::set_permissions(&update, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let (_, status) = batch_update(&spool);
    assert_eq!(status["code"], "script_untrusted", "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("scheduler: "),
        "{status}"
    );
    assert!(
        !ledger.exists(),
        "a batch that cannot run entirely does not start"
    );
}

#[test]
fn the_audit_log_tells_each_requests_story_and_history_reads_it() {
    let (spool, _ledger) = batch_spool(Some("scheduler"));
    let _service = Service::start(&spool);
    let health = spool.submit("remote", "health", None);
    spool.wait_final(&health);
    let (batch, _) = batch_update(&spool);
    let bad = spool.submit("nas", "health", None);
    spool.wait_final(&bad);

    let history = |args: &[&str]| -> String {
        stdout_of(
            std::process::Command::new(crate::support::bin())
                .arg("history")
                .arg("--config")
                .arg(spool.config_path())
                .args(args),
        )
    };
    let events = |args: &[&str]| -> Vec<serde_json::Value> {
        history(&[args, &["--json"]].concat())
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let kinds = |events: &[serde_json::Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_owned())
            .collect()
    };

    let story = events(&["--request", &batch]);
    let story_kinds = kinds(&story);
    for expected in [
        "received",
        "queued",
        "started",
        "phase",
        "health_failed",
        "rolled_back",
        "finished",
    ] {
        assert!(
            story_kinds.contains(&expected.to_owned()),
            "no {expected} in {story_kinds:?}"
        );
    }
    assert_eq!(story_kinds.first().unwrap(), "received");
    assert_eq!(story_kinds.last().unwrap(), "finished");
    let finished = story.last().unwrap();
    assert_eq!(finished["outcome"], "rolled_back");
    assert_eq!(finished["component"], "remote+scheduler");
    assert!(finished["time"].as_str().unwrap().ends_with('Z'));

    // --component finds the batch through either of its components, and the health check.
    let remote = events(&["--component", "remote"]);
    assert!(remote.iter().any(|e| e["request_id"] == health.as_str()));
    assert!(remote.iter().any(|e| e["request_id"] == batch.as_str()));
    assert!(!remote.iter().any(|e| e["request_id"] == bad.as_str()));
    let rejected: Vec<_> = events(&["--request", &bad]);
    assert_eq!(kinds(&rejected), ["rejected"]);
    assert_eq!(rejected[0]["code"], "unknown_component");

    // The table: a header and one line per event, the last N with -n.
    let table = history(&["--component", "scheduler", "-n", "3"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("EVENT"),
        "{table}"
    );
    assert!(
        lines[3].contains("finished") && lines[3].contains("rolled_back"),
        "{table}"
    );
}
