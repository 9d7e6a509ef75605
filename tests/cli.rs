//! The operator's commands: `check` and `submit`, run as the real binary.

mod support;

use std::fs;
use std::process::Command;

use support::{BIN, Service, Spool};

fn check(spool: &Spool) -> (i32, String) {
    let out = Command::new(BIN)
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
        text.contains("PROBLEM: ") && text.contains("does not exist; install"),
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
        let out = Command::new(BIN)
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
    let out = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/coordinator.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/coordinator.toml"));
}

fn submit(spool: &Spool, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
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
    // Like the container client, submit removes the status it read.
    assert_eq!(fs::read_dir(spool.status_dir()).unwrap().count(), 0);
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
