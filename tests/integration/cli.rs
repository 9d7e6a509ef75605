//! The operator's commands: `check` and `submit`, run as the real binary.

use std::fs;
use std::process::Command;

use crate::support::{Service, Spool, assert_contains_all, bin, new_id, path_str, words};

/// `update-coordinator check` on the spool's config: its exit code and everything it printed.
pub(crate) fn check(spool: &Spool) -> (i32, String) {
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
    // Without systemd, cgroups or a spool group, this setup has warnings: shown, exit 0.
    assert!(text.contains("\nno problems; "), "{text}");
    assert!(!text.contains("PROBLEM"), "{text}");
}

#[test]
fn check_warns_once_about_a_missing_spool_directory_and_says_how_to_create_it() {
    let mut spool = Spool::new();
    // An installed spool names the containers' group (one that exists here).
    spool.set_key("spool", "root", "\"spool\"");
    spool.set_key("spool", "group", "\"root\"");
    let (code, text) = check(&spool);
    assert_eq!(code, 0, "warnings do not fail the check:\n{text}");
    let requests = path_str(&spool.requests());
    let about: Vec<&str> = text.lines().filter(|l| l.contains(&requests)).collect();
    assert_eq!(about.len(), 1, "said once:\n{text}");
    assert!(
        about[0].starts_with("  warn    ") && about[0].contains("systemd-tmpfiles --create"),
        "{text}"
    );
    assert!(
        !text.contains("PROBLEM") && !text.contains("permissions:"),
        "{text}"
    );
    for warned in [
        "warn    dunebugger-update-coordinator.service: systemd is not running here; not checked",
        "warn    enforcement: limits not enforced",
    ] {
        assert!(text.contains(warned), "{warned:?} missing from:\n{text}");
    }
    let warnings = text.lines().filter(|l| l.starts_with("  warn ")).count();
    assert!(
        text.ends_with(&format!("\nno problems; {warnings} warning(s)\n")),
        "{text}"
    );

    // Once it exists, its permissions are looked at: the service's own 0755 is a problem.
    spool.create_dirs();
    let (code, text) = check(&spool);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "PROBLEM spool main: {requests}: mode 0755, expected 1730"
        )),
        "{text}"
    );
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
    assert_contains_all(
        "the check's output",
        &text,
        &["PROBLEM remote update", "does not exist; install"],
    );
    assert!(text.contains("is not executable; chmod 755 it"), "{text}");
    assert!(text.contains("2 problem(s) found; "), "{text}");
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
        &words("--component remote --action update --version 1.2.3 --wait"),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_contains_all(
        "stderr",
        &stderr,
        &["phase: downloading", "phase: installing"],
    );
    // A short answer: the outcome and message, each script with its time, the total.
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("submitted request "), "{stdout}");
    assert_eq!(
        lines[1], "update remote 1.2.3: succeeded: Update completed successfully",
        "{stdout}"
    );
    assert!(
        lines[2].trim_start().starts_with("update") && lines[2].contains("exit 0"),
        "{stdout}"
    );
    assert!(lines[3].trim_start().starts_with("total "), "{stdout}");
    assert_eq!(lines.len(), 4, "no JSON dump without --json: {stdout}");

    let (code, stdout, _) = submit(
        &spool,
        &["--component", "core", "--action", "health", "--wait"],
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("health core: FAILED (script_failed): health-check.sh exited with code 4"),
        "{stdout}"
    );
    assert!(stdout.contains("exit 4"), "{stdout}");
    // Like the container client, submit removes the status it read (the inventory stays).
    let left: Vec<_> = fs::read_dir(spool.status_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["inventory.json"]);
}

#[test]
fn submit_sends_every_kind_of_request_and_checks_it_before_writing() {
    let spool = Spool::new();
    let gate = spool.gated_script("core", "update.sh", "echo PHASE:waiting", "");
    let _service = Service::start(&spool);
    let answer = |args: &[&str]| -> (i32, String) {
        let (code, stdout, stderr) = submit(&spool, args);
        (code, format!("{stdout}{stderr}"))
    };

    // A dry run runs nothing and says what would run.
    let (code, out) = answer(&words(
        "--component core --action update --version 1.2.3 --dry-run --wait",
    ));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("update core 1.2.3: dry run ok"), "{out}");
    // Several components.
    let (code, out) = answer(&words(
        "--components scheduler=2.0.1 --components core=1.0.0 --dry-run --wait",
    ));
    assert_eq!(code, 0, "{out}");
    // not_before: accepted and waiting (phase scheduled), not an error.
    let tomorrow = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24)).to_string();
    let (code, out) = answer(&[
        "--component",
        "scheduler",
        "--action",
        "health",
        "--not-before",
        &tomorrow,
    ]);
    assert_eq!(code, 0, "{out}");
    let scheduled = out.split_whitespace().nth(2).unwrap().to_owned();
    spool.wait_phase(&scheduled, "scheduled");
    // Cancel a running request of ours.
    let (_, out) = answer(&words("--component core --action update --version 1.2.4"));
    let running = out.split_whitespace().nth(2).unwrap().to_owned();
    crate::support::wait_until(
        "started (its monitor may still be starting: the cancel must not be lost)",
        || {
            // Its script says PHASE:waiting at once: "running" may never be seen by a poll.
            spool
                .status(&running)
                .is_some_and(|s| s["phase"] == "running" || s["phase"] == "waiting")
        },
    );
    let (code, out) = answer(&["--cancel", &running, "--wait"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("asked the running request"), "{out}");
    fs::write(&gate, "").unwrap();
    assert_eq!(spool.wait_concluded(&running)["code"], "cancelled");

    // Names and values are checked against the config before anything is written.
    let before = spool.request_files();
    for (args, says) in [
        (
            vec!["--component", "nas", "--action", "health"],
            "unknown component",
        ),
        (vec!["--components", "remote"], "NAME=VERSION"),
        (
            words("--component core --action update --version v1"),
            "not a version",
        ),
        (vec!["--cancel", "../x"], "--cancel"),
        (
            words("--component core --action health --not-before soon"),
            "not_before",
        ),
    ] {
        let (code, out) = answer(&args);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(
            out.contains(says) && out.contains("nothing was written"),
            "{args:?}: {out}"
        );
    }
    assert_eq!(spool.request_files(), before);
}

#[test]
fn follow_answers_a_finished_request_and_refuses_an_unknown_id_at_once() {
    let spool = Spool::new();
    let _service = Service::start(&spool);
    let follow = |id: &str| -> (i32, String, String) {
        let out = std::process::Command::new(crate::support::bin())
            .args(["follow", id, "--config"])
            .arg(spool.config_path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let id = spool.submit("core", "health", None);
    spool.wait_final(&id);
    // Still in status/: the answer, as a summary.
    let (code, stdout, _) = follow(&id);
    assert_eq!(
        (code, stdout.lines().next()),
        (0, Some("health core: succeeded: Health check passed"))
    );
    // Collected: the record still has it.
    fs::remove_file(spool.status_dir().join(format!("{id}.json"))).unwrap();
    let (code, stdout, _) = follow(&id);
    assert_eq!(
        (code, stdout.lines().next()),
        (0, Some("health core: succeeded: Health check passed"))
    );
    // A mistyped id: an error at once, not an hour of silence.
    let started = std::time::Instant::now();
    let (code, _, stderr) = follow(&new_id());
    assert_eq!(code, 2, "{stderr}");
    assert_contains_all("stderr", &stderr, &["no request", "mistyped"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn submit_says_soon_when_nobody_picks_the_request_up() {
    let spool = Spool::new();
    spool.create_dirs(); // but no service
    let (code, _, stderr) = submit(
        &spool,
        &words("--component core --action health --wait --timeout 5"),
    );
    assert_eq!(code, 2, "{stderr}");
    assert_contains_all(
        "stderr",
        &stderr,
        &["nobody has picked up", "is the coordinator running"],
    );
}

#[test]
fn submit_without_a_spool_says_how_to_point_it_at_one() {
    let out = std::process::Command::new(crate::support::bin())
        .args(words(
            "submit --component core --action health --spool /nonexistent/spool",
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/spool/requests")
            && stderr.contains("install.sh")
            && stderr.contains("--config"),
        "{stderr}"
    );
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
    let findings = report["findings"].as_array().unwrap();
    let warnings: Vec<_> = findings.iter().filter(|f| f["level"] == "warn").collect();
    assert_eq!(report["warnings"], warnings.len(), "{report:#}");
    assert!(warnings.iter().all(|f| f["ok"] == true), "{report:#}");
    let problem = findings.iter().find(|f| f["ok"] == false).unwrap();
    assert_eq!(problem["level"], "problem");
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
    spool.wait_concluded("snap-ok");
    spool.drop_renamed(
        "snap-failed",
        &Spool::request_json("snap-failed", "remote", "update", Some("2.0.0")),
    );
    spool.wait_concluded("snap-failed");
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
    let gate = spool.gated_script(
        "remote",
        "update.sh",
        "echo PHASE:downloading; echo PROGRESS:40; echo 'fetched layer 1'",
        "echo PHASE:installing; echo 'installed'; sleep 1.2; echo done",
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

#[test]
fn bash_completion_offers_the_action_values_and_paths_for_config_and_spool() {
    let (code, stdout, _) = run_cli(&["completions", "bash"]);
    assert_eq!(code, 0);
    let action = stdout
        .split("--action)")
        .nth(1)
        .and_then(|rest| rest.lines().nth(1))
        .unwrap_or_else(|| panic!("no --action case in:\n{stdout}"));
    for value in ["update", "rollback", "health"] {
        assert!(action.contains(value), "{value} not offered: {action}");
    }
    // zsh says what kind of path each option takes.
    let (_, zsh, _) = run_cli(&["completions", "zsh"]);
    let spec = |option: &str| {
        zsh.lines()
            .find(|l| l.starts_with(&format!("'--{option}=[")))
            .unwrap_or_else(|| panic!("no --{option} in:\n{zsh}"))
            .to_owned()
    };
    assert!(
        spec("config").ends_with(":FILE:_files' \\"),
        "{}",
        spec("config")
    );
    assert!(
        spec("spool").ends_with(":DIR:_files -/' \\"),
        "{}",
        spec("spool")
    );
    // The same list is what submit accepts.
    let (code, _, stderr) = run_cli(&words(
        "submit --spool /nonexistent --component remote --action reboot",
    ));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("[possible values: update, rollback, health]"),
        "{stderr}"
    );
}

/// The roff names of the pages a page refers to: `update\-coordinator\-run(1)` -> `update-coordinator-run`.
fn referenced_pages(roff: &str) -> Vec<String> {
    regex::Regex::new(r"(update\\-coordinator(?:\\-[a-z]+)*)\(1\)")
        .unwrap()
        .captures_iter(roff)
        .map(|c| c[1].replace("\\-", "-"))
        .collect()
}

#[test]
fn man_dir_writes_a_page_for_every_subcommand_the_main_page_lists() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let (code, stdout, stderr) = run_cli(&["man", "--dir", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");

    let main = fs::read_to_string(out.join("update-coordinator.1")).unwrap();
    let (_, printed, _) = run_cli(&["man"]);
    assert_eq!(printed, main, "`man` prints the main page");
    let mut listed = referenced_pages(&main);
    assert!(listed.len() >= 8, "{listed:?}");
    let mut next = 0;
    while next < listed.len() {
        let page = listed[next].clone();
        next += 1;
        let path = out.join(format!("{page}.1"));
        let roff = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{page}(1) is listed but {}: {e}", path.display()));
        assert!(roff.contains(&format!(".TH {page} 1 ")), "{roff}");
        assert!(stdout.contains(&path.display().to_string()), "{stdout}");
        // SEE ALSO the main page; a command with subcommands (fleet) lists their pages too.
        let mut referenced = referenced_pages(&roff);
        assert_eq!(
            referenced.pop().as_deref(),
            Some("update-coordinator"),
            "SEE ALSO"
        );
        for sub in referenced {
            assert!(sub.starts_with(&format!("{page}-")), "{page} lists {sub}");
            listed.push(sub);
        }
    }
    let mut written: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    let mut expected: Vec<String> = listed.iter().map(|p| format!("{p}.1")).collect();
    expected.push("update-coordinator.1".into());
    expected.sort();
    assert_eq!(written, expected, "no page for hidden subcommands or help");
    assert!(
        !listed
            .iter()
            .any(|p| p.contains("monitor") || p.ends_with("-help"))
    );

    // The submit page documents every option `submit --help` lists.
    let submit = fs::read_to_string(out.join("update-coordinator-submit.1")).unwrap();
    let (_, help, _) = run_cli(&["submit", "--help"]);
    let long = regex::Regex::new(r"--([a-z][a-z-]*)").unwrap();
    let options: Vec<&str> = long
        .captures_iter(&help)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    for option in ["component", "action", "version", "wait", "spool", "config"] {
        assert!(options.contains(&option), "{option} not in submit --help");
    }
    for option in options {
        let roff_option = format!("\\-\\-{}", option.replace('-', "\\-"));
        assert!(
            submit.contains(&roff_option),
            "--{option} missing from:\n{submit}"
        );
    }
    assert!(submit.contains("rollback"), "the action values are listed");
}

/// On a terminal (a real pty, through util-linux `script`), `submit --wait` redraws one
/// progress line in place and still ends with the short answer.
#[test]
fn submit_wait_on_a_terminal_redraws_one_progress_line_then_answers() {
    let spool = Spool::new();
    spool.script(
        "remote",
        "update.sh",
        "echo PHASE:downloading; sleep 0.5; echo PHASE:installing; sleep 0.5",
    );
    let _service = Service::start(&spool);
    let command = format!(
        "{} submit --spool {} --component remote --action update --version 1.2.3 --wait",
        bin(),
        crate::support::path_str(&spool.root())
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("script (util-linux) runs the command on a pty");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}");
    // The progress line is rewritten in place (carriage return, erase line), never scrolled.
    assert!(screen.contains("\r\x1b[2Kphase: installing"), "{screen:?}");
    assert!(
        screen.contains("update remote 1.2.3: succeeded: Update completed successfully"),
        "{screen:?}"
    );
}
