//! The operator's commands: `check` and `submit`, run as the real binary.

mod support;

use std::fs;
use std::process::Command;

use support::{Service, Spool, bin};

fn check(spool: &Spool) -> (i32, String) {
    let out = Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(spool.config_path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

#[test]
fn check_passes_on_a_complete_setup_and_lists_every_script() {
    let spool = Spool::new();
    spool.create_dirs();
    let (code, text) = check(&spool);
    assert_eq!(code, 0, "{text}");
    for script in [
        "remote/update.sh",
        "core/rollback.sh",
        "scheduler/health-check.sh",
    ] {
        assert!(text.contains(script), "{script} missing from:\n{text}");
    }
    assert!(text.contains("all checks passed"));
}

#[test]
fn check_fails_and_says_why_on_a_missing_or_non_executable_script() {
    let spool = Spool::new();
    fs::remove_file(spool.dir.path().join("components/remote/update.sh")).unwrap();
    let health = spool.dir.path().join("components/core/health-check.sh");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&health, fs::Permissions::from_mode(0o644)).unwrap();
    let (code, text) = check(&spool);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("PROBLEM remote update") && text.contains("does not exist; install"),
        "{text}"
    );
    assert!(text.contains("is not executable; chmod 755 it"), "{text}");
    assert!(text.contains("2 problem(s) found"), "{text}");
}

#[test]
fn a_bad_config_is_named_by_file_line_and_key_and_the_service_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    fs::write(
        &config,
        "[spool]\nroot = \"/tmp/x\"\n\n[components.remote.timeouts]\nupdate = \"soon\"\n",
    )
    .unwrap();
    for command in ["check", "run"] {
        let out = Command::new(bin())
            .arg(command)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{command}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains(&config.display().to_string()),
            "{command}: {text}"
        );
        assert!(text.contains("line 5"), "{command}: {text}");
        assert!(
            text.contains("components.remote.timeouts.update"),
            "{command}: {text}"
        );
    }
}

#[test]
fn an_explicit_config_that_does_not_exist_is_an_error_not_the_defaults() {
    let out = Command::new(bin())
        .args(["check", "--config", "/nonexistent/coordinator.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("PROBLEM config: cannot read config file /nonexistent/coordinator.toml")
    );
}

fn submit(spool: &Spool, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("submit")
        .arg("--spool")
        .arg(spool.root())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn submit_wait_follows_phases_and_exits_with_the_result() {
    let spool = Spool::new();
    spool.script(
        "remote",
        "update.sh",
        "echo PHASE:downloading; sleep 0.5; echo PHASE:installing; sleep 0.5",
    );
    spool.script("core", "health-check.sh", "exit 4");
    let _service = Service::start(&spool);

    let (code, stdout, stderr) = submit(
        &spool,
        &[
            "--component",
            "remote",
            "--action",
            "update",
            "--version",
            "1.2.3",
            "--wait",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("phase: downloading") && stderr.contains("phase: installing"),
        "{stderr}"
    );
    assert!(stdout.contains("\"success\": true"), "{stdout}");

    let (code, stdout, _) = submit(
        &spool,
        &["--component", "core", "--action", "health", "--wait"],
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("\"exit_code\": 4"), "{stdout}");
    // Like the container client, submit removes the status it read (the inventory stays).
    let left: Vec<_> = fs::read_dir(spool.status_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["inventory.json"]);
}

#[test]
fn submit_refuses_an_update_without_a_version_before_writing_anything() {
    let spool = Spool::new();
    spool.create_dirs();
    let (code, _, stderr) = submit(&spool, &["--component", "remote", "--action", "update"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--version"), "{stderr}");
    assert!(spool.request_files().is_empty());
}

/// Compares `actual` (normalized: temp paths, times, durations) with tests/snapshots/<name>;
/// `UPDATE_SNAPSHOTS=1 cargo test` rewrites the snapshot after a deliberate change.
fn assert_snapshot(name: &str, actual: &str, tmp: &std::path::Path) {
    let normalized = normalize(actual, tmp);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        fs::write(&path, &normalized).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing snapshot {}; create it with UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert_eq!(
        normalized,
        expected,
        "output differs from {} (UPDATE_SNAPSHOTS=1 to accept)",
        path.display()
    );
}

fn normalize(text: &str, tmp: &std::path::Path) -> String {
    let text = text.replace(&tmp.display().to_string(), "<tmp>");
    let time = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z").unwrap();
    let duration = regex::Regex::new(r"\b\d+\.\d ?s\b").unwrap();
    let ms = regex::Regex::new(r#""duration_ms": \d+"#).unwrap();
    let text = time.replace_all(&text, "<time>");
    let text = duration.replace_all(&text, "<dur>");
    ms.replace_all(&text, "\"duration_ms\": <ms>").into_owned()
}

fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_snapshot() {
    let (code, stdout, _) = run_cli(&["--help"]);
    assert_eq!(code, 0);
    assert_snapshot("help.txt", &stdout, std::path::Path::new("/nonexistent"));
}

#[test]
fn check_snapshot_and_json() {
    let spool = Spool::new();
    spool.create_dirs();
    fs::remove_file(spool.dir.path().join("components/scheduler/rollback.sh")).unwrap();
    let config = spool.config_path();
    let config = config.to_str().unwrap();
    let (code, stdout, _) = run_cli(&["check", "--config", config]);
    assert_eq!(code, 1);
    assert_snapshot("check.txt", &stdout, spool.dir.path());
    let (code, stdout, _) = run_cli(&["check", "--config", config, "--json"]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["problems"], 1);
    let problem = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["ok"] == false)
        .unwrap();
    assert_eq!(problem["area"], "script");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );
}

#[test]
fn status_lists_recent_requests_and_shows_one_in_detail() {
    let spool = Spool::new();
    spool.script("core", "health-check.sh", "echo all good");
    spool.script(
        "remote",
        "update.sh",
        "echo PHASE:pulling; echo 'pull failed' >&2; exit 4",
    );
    let _service = Service::start(&spool);
    spool.drop_renamed(
        "snap-ok",
        &Spool::request_json("snap-ok", "core", "health", None),
    );
    spool.wait_final("snap-ok");
    spool.drop_renamed(
        "snap-failed",
        &Spool::request_json("snap-failed", "remote", "update", Some("2.0.0")),
    );
    spool.wait_final("snap-failed");
    let config = spool.config_path();
    let config = config.to_str().unwrap();

    let (code, stdout, stderr) = run_cli(&["status", "--config", config]);
    assert_eq!(code, 0, "{stderr}");
    assert_snapshot("status.txt", &stdout, spool.dir.path());
    let (_, stdout, _) = run_cli(&["status", "--config", config, "snap-failed"]);
    assert_snapshot("status-detail.txt", &stdout, spool.dir.path());
    let (_, stdout, _) = run_cli(&["status", "--config", config, "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert_eq!(rows[1]["state"], "failed");
    assert_eq!(rows[1]["code"], "script_failed");
    let (code, _, stderr) = run_cli(&["status", "--config", config, "no-such-id"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("no record of request no-such-id"),
        "{stderr}"
    );
}

#[test]
fn follow_prints_phases_and_new_output_lines_then_exits_with_the_result() {
    let spool = Spool::new();
    let gate = spool.evidence().join("gate");
    spool.script(
        "remote",
        "update.sh",
        &format!(
            "echo PHASE:downloading; echo PROGRESS:40; echo 'fetched layer 1'; while [ ! -e {} ]; do sleep 0.05; done; echo PHASE:installing; echo 'installed'; sleep 1.2; echo done",
            gate.display()
        ),
    );
    let _service = Service::start(&spool);
    spool.drop_renamed(
        "follow-1",
        &Spool::request_json("follow-1", "remote", "update", Some("1.0.0")),
    );
    let follower = Command::new(bin())
        .args(["follow", "follow-1", "--spool"])
        .arg(spool.root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    fs::write(&gate, "").unwrap();
    let out = follower.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("phase: downloading  40%"), "{stderr}");
    assert!(stderr.contains("phase: installing"), "{stderr}");
    assert!(stderr.contains("  | fetched layer 1"), "{stderr}");
    assert_eq!(
        stderr.matches("fetched layer 1").count(),
        1,
        "each line once: {stderr}"
    );
    assert!(
        spool.status("follow-1").is_some(),
        "follow leaves the status for the client"
    );
}

#[test]
fn completions_and_man_page_are_generated_from_the_command_line_definition() {
    let (code, stdout, _) = run_cli(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("update-coordinator") && stdout.contains("submit"));
    let (code, stdout, _) = run_cli(&["man"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains(".TH update-coordinator"),
        "{}",
        &stdout[..200.min(stdout.len())]
    );
}
