//! The example clients in `examples/client/` against the real service: the Python module
//! (`dunebugger_updates.py`, run with `python3 -I -S`, so only the standard library is
//! importable) and the POSIX shell client (`submit.sh`, run with `/bin/sh`). Scripts that
//! report phases wait until the client has acknowledged each one (it creates `ack-<phase>` in
//! the evidence directory when it sees it), so every phase is seen however the polling falls.
//! Needs `python3`; without it the Python tests fail, they do not skip.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::{Service, Spool};
use serde_json::Value;

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/client")
}

/// Installs `component`'s update.sh as a script that reports downloading then installing and
/// waits (at most 60 s) for the client to acknowledge each (`ack-PHASE` in the evidence
/// directory), then prints `last`.
fn acknowledged_update(spool: &Spool, component: &str, last: &str) {
    let evidence = spool.evidence();
    let mut body = String::new();
    for phase in ["downloading", "installing"] {
        let ack = evidence.join(format!("ack-{phase}"));
        body.push_str(&format!(
            "echo PHASE:{phase}\ni=0\nwhile [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\n",
            ack.display()
        ));
    }
    body.push_str(&format!("echo \"{last}\"\n"));
    spool.script(component, "update.sh", &body);
}

/// `python3 -I -S -B -c CODE ARGS...` with the client module importable; returns stdout and
/// fails the test (with stderr) when it fails.
fn python(code: &str, args: &[&str]) -> String {
    let out = python_command(code, args).output().unwrap_or_else(|e| {
        panic!("python3 is not installed or not on PATH ({e}); these tests need it")
    });
    assert!(
        out.status.success(),
        "python3 failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn python_command(code: &str, args: &[&str]) -> Command {
    let mut command = Command::new("python3");
    command
        .args(["-I", "-S", "-B", "-c"])
        .arg(format!(
            "import sys\nsys.path.insert(0, {:?})\nimport dunebugger_updates as u\n{code}",
            client_dir().display().to_string()
        ))
        .args(args)
        .stdin(Stdio::null());
    command
}

fn json_line(out: &str) -> Value {
    serde_json::from_str(out.lines().last().expect("a JSON line")).expect("JSON")
}

/// Status files (not the coordinator's dot-file temporaries) nobody has collected.
fn uncollected_statuses(spool: &Spool) -> Vec<String> {
    fs::read_dir(spool.status_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != "inventory.json")
        .collect()
}

fn status_file(spool: &Spool, id: &str) -> PathBuf {
    spool.status_dir().join(format!("{id}.json"))
}

/// Runs `submit.sh ARGS` against the spool; creates `ack-<phase>` for each phase it prints.
/// Returns (exit code, stdout lines).
fn shell_client(spool: &Spool, args: &[&str]) -> (Option<i32>, Vec<String>) {
    let mut child = Command::new("/bin/sh")
        .arg(client_dir().join("submit.sh"))
        .arg("-s")
        .arg(spool.root())
        .args(args)
        .env_remove("DUNEBUGGER_UPDATES_SPOOL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let evidence = spool.evidence();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(phase) = line.strip_prefix("phase: ") {
            fs::write(evidence.join(format!("ack-{phase}")), "").unwrap();
        }
        lines.push(line);
    }
    (child.wait().unwrap().code(), lines)
}

#[test]
fn python_client_submits_follows_phases_and_collects_the_final_status() {
    let spool = Spool::new();
    spool.create_dirs();
    acknowledged_update(&spool, "remote", "updated to $1");
    let evidence = spool.evidence();
    let _service = Service::start(&spool);

    let out = python(
        "import json, os\n\
         spool, evidence = sys.argv[1], sys.argv[2]\n\
         seen = []\n\
         def progress(phase, status):\n\
         \x20   assert status['message'] == 'in_progress' and status['success'] is None\n\
         \x20   seen.append(phase)\n\
         \x20   open(os.path.join(evidence, 'ack-' + phase), 'w').close()\n\
         rid = u.submit('remote', 'update', '1.2.3', spool=spool)\n\
         status = u.wait(rid, timeout=60, poll=0.02, on_progress=progress, spool=spool)\n\
         print(json.dumps({'id': rid, 'seen': seen, 'status': status,\n\
         \x20   'left': os.path.exists(os.path.join(spool, 'status', rid + '.json'))}))",
        &[
            &spool.root().display().to_string(),
            &evidence.display().to_string(),
        ],
    );
    let result = json_line(&out);
    let status = &result["status"];
    assert_eq!(status["success"], true, "{status:#}");
    assert_eq!(status["request_id"], result["id"]);
    assert!(
        status["output"]
            .as_str()
            .unwrap()
            .contains("updated to 1.2.3")
    );
    assert_eq!(result["left"], false, "wait deletes the final status");
    let seen: Vec<&str> = result["seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = seen
        .iter()
        .copied()
        .filter(|p| *p != "queued" && *p != "running")
        .collect();
    assert_eq!(ours, ["downloading", "installing"], "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "each change once: {seen:?}"
    );
    crate::support::wait_until("request file removed", || spool.request_files().is_empty());
}

/// A running service whose core health check fails (exit 3, "core is down" on stderr), with
/// its spool and the spool's root as the clients take it.
fn service_whose_core_is_down() -> (Spool, Service, String) {
    let spool = Spool::new();
    spool.create_dirs();
    spool.script("core", "health-check.sh", "echo 'core is down' >&2\nexit 3");
    let service = Service::start(&spool);
    let root = spool.root().display().to_string();
    (spool, service, root)
}

#[test]
fn python_client_reports_failures_refusals_and_bad_input() {
    let (spool, _service, root) = service_whose_core_is_down();

    let out = python(
        "import json\n\
         spool = sys.argv[1]\n\
         failed = u.wait(u.submit('core', 'health', spool=spool), timeout=60, poll=0.02, spool=spool)\n\
         in_place = u.wait(u.submit('remote', 'health', spool=spool, in_place=True), timeout=60, poll=0.02, spool=spool)\n\
         refused = u.wait(u.submit('nas', 'health', spool=spool), timeout=60, poll=0.02, spool=spool)\n\
         print(json.dumps([failed, in_place, refused]))",
        &[&root],
    );
    let result = json_line(&out);
    assert_eq!(result[0]["success"], false);
    assert_eq!(result[0]["code"], "script_failed");
    assert_eq!(result[0]["exit_code"], 3);
    assert_eq!(result[0]["error"], "core is down\n");
    assert_eq!(result[1]["success"], true, "{:#}", result[1]);
    assert_eq!(result[2]["code"], "unknown_component");

    // Requests the coordinator would refuse are refused before anything is written.
    let out = python(
        "spool = sys.argv[1]\n\
         for args in [('remote', 'update'), ('remote', 'update', 'v1.2.3'), ('remote', 'health', '1.0'),\n\
         \x20            ('remote', 'reboot'), ('../x', 'health')]:\n\
         \x20   try:\n\
         \x20       u.submit(*args, spool=spool)\n\
         \x20       print('accepted', args)\n\
         \x20   except ValueError as e:\n\
         \x20       print('ValueError')\n\
         try:\n\
         \x20   u.submit('remote', 'health', spool=sys.argv[1] + '/nowhere')\n\
         except FileNotFoundError as e:\n\
         \x20   print('FileNotFoundError', 'bind-mounted' in str(e))\n\
         try:\n\
         \x20   u.wait('no-such-request', timeout=0.1, poll=0.02, spool=spool)\n\
         except TimeoutError:\n\
         \x20   print('TimeoutError')",
        &[&root],
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "ValueError",
            "ValueError",
            "ValueError",
            "ValueError",
            "ValueError",
            "FileNotFoundError True",
            "TimeoutError"
        ]
    );
    // Had any of them been written, it would have an uncollected status by the time a later
    // request is answered.
    python(
        "u.wait(u.submit('remote', 'health', spool=sys.argv[1]), timeout=60, poll=0.02, spool=sys.argv[1])",
        &[&root],
    );
    assert_eq!(uncollected_statuses(&spool), Vec::<String>::new());
}

#[test]
fn python_client_signs_requests_when_given_the_key() {
    let mut spool = Spool::new();
    fs::write(spool.dir.path().join("key"), "shared secret, 16+ bytes\n").unwrap();
    spool.add_config("[signature]\nrequired = true\nkey_file = \"key\"\nmax_age = 300");
    spool.create_dirs();
    let _service = Service::start(&spool);
    let out = python(
        "import json\n\
         spool, key_file = sys.argv[1], sys.argv[2]\n\
         key = u.read_key(key_file)\n\
         good = u.wait(u.submit('remote', 'update', '1.2.3', spool=spool, key=key), timeout=60, poll=0.02, spool=spool)\n\
         bad = u.wait(u.submit('remote', 'health', spool=spool, key=b'guess'), timeout=60, poll=0.02, spool=spool)\n\
         unsigned = u.wait(u.submit('remote', 'health', spool=spool), timeout=60, poll=0.02, spool=spool)\n\
         print(json.dumps([good, bad, unsigned]))",
        &[
            &spool.root().display().to_string(),
            &spool.dir.path().join("key").display().to_string(),
        ],
    );
    let result = json_line(&out);
    assert_eq!(result[0]["success"], true, "{:#}", result[0]);
    assert_eq!(result[1]["code"], "bad_signature");
    assert_eq!(result[2]["code"], "unsigned");
}

#[test]
fn python_client_picks_up_the_result_of_its_own_update_after_a_restart() {
    let spool = Spool::new();
    spool.create_dirs();
    let evidence = spool.evidence();
    let release = evidence.join("release");
    // The "self-update": reports a phase, then waits until the test lets it finish, as if the
    // new container were starting up.
    let script = format!(
        "echo PHASE:restarting\ni=0\nwhile [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\necho \"remote is now $1\"",
        release.display()
    );
    spool.script("remote", "update.sh", &script);
    let _service = Service::start(&spool);
    let root = spool.root().display().to_string();
    let pending = evidence.join("pending-update").display().to_string();

    // The old container: saves the id, submits, starts waiting, and is killed mid-wait.
    let mut old = Command::new("python3")
        .args(["-I", "-S", "-B"])
        .arg(client_dir().join("dunebugger_updates.py"))
        .args([
            "--spool",
            &root,
            "--poll",
            "0.02",
            "--pending-file",
            &pending,
        ])
        .args(["remote", "update", "1.2.3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(old.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let id = first
        .trim()
        .strip_prefix("request: ")
        .unwrap_or_else(|| panic!("expected the request id, got {first:?}"))
        .to_owned();
    assert_eq!(
        fs::read_to_string(&pending).unwrap().trim(),
        id,
        "saved before submitting"
    );
    spool.wait_phase(&id, "restarting");
    old.kill().unwrap();
    old.wait().unwrap();

    // While the update runs, a look without waiting finds it pending.
    let out = python(
        "print(u.pending_result(sys.argv[1], spool=sys.argv[2]))",
        &[&id, &root],
    );
    assert_eq!(out.trim(), "None");

    // The new container resumes: follows the rest and reports the final status.
    fs::write(&release, "").unwrap();
    let out = Command::new("python3")
        .args(["-I", "-S", "-B"])
        .arg(client_dir().join("dunebugger_updates.py"))
        .args(["--spool", &root, "--poll", "0.02", "--resume", &pending])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains("success: true"), "{stdout}");
    assert!(!Path::new(&pending).exists(), "the saved id is forgotten");
    assert!(
        !status_file(&spool, &id).exists(),
        "the status is collected"
    );

    // Nothing pending any more: pending_result says so, resume returns None.
    let out = python(
        "try:\n\
         \x20   u.pending_result(sys.argv[1], spool=sys.argv[2])\n\
         except LookupError:\n\
         \x20   print('LookupError')\n\
         print(u.resume(sys.argv[3], spool=sys.argv[2]))",
        &[&id, &root, &pending],
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), ["LookupError", "None"]);
}

#[test]
fn shell_client_prints_phases_and_exits_with_the_result() {
    let spool = Spool::new();
    spool.create_dirs();
    acknowledged_update(&spool, "scheduler", "scheduler is now $1");
    spool.script(
        "core",
        "health-check.sh",
        "echo 'core is \"down\"' >&2\necho 'second line' >&2\nexit 3",
    );
    let _service = Service::start(&spool);

    let (code, lines) = shell_client(&spool, &["scheduler", "update", "1.2.3"]);
    assert_eq!(code, Some(0), "{lines:#?}");
    let id = lines[0]
        .strip_prefix("request: ")
        .expect("request line")
        .to_owned();
    let phases: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("phase: "))
        .filter(|p| *p != "queued" && *p != "running")
        .collect();
    assert_eq!(phases, ["downloading", "installing"], "{lines:#?}");
    assert!(lines.contains(&"success: true".to_owned()), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.starts_with("message: ")),
        "{lines:#?}"
    );
    assert!(
        !status_file(&spool, &id).exists(),
        "the status is collected"
    );
    crate::support::wait_until("no request or temp file left", || {
        spool.request_files().is_empty()
    });

    let (code, lines) = shell_client(&spool, &["core", "health"]);
    assert_eq!(code, Some(1), "{lines:#?}");
    assert!(lines.contains(&"success: false".to_owned()), "{lines:#?}");
    assert!(
        lines.contains(&"code: script_failed".to_owned()),
        "{lines:#?}"
    );
    let error_at = lines
        .iter()
        .position(|l| l == "error:")
        .expect("error: line");
    assert_eq!(
        lines[error_at + 1..error_at + 3],
        ["core is \"down\"", "second line"]
    );

    let (code, lines) = shell_client(&spool, &["nas", "health"]);
    assert_eq!(code, Some(1), "{lines:#?}");
    assert!(
        lines.contains(&"code: unknown_component".to_owned()),
        "{lines:#?}"
    );

    // Bad arguments: exit 2, nothing written.
    for args in [
        &["scheduler", "update"][..],
        &["scheduler", "update", "v1.2.3"],
        &["core", "health", "1.0"],
        &["core", "reboot"],
        &["Core!", "health"],
    ] {
        let (code, lines) = shell_client(&spool, args);
        assert_eq!(code, Some(2), "{args:?}: {lines:#?}");
    }
    // Had any of them been written, it would have an uncollected status by the time a later
    // request is answered.
    let (code, lines) = shell_client(&spool, &["scheduler", "rollback"]);
    assert_eq!(code, Some(0), "{lines:#?}");
    assert_eq!(uncollected_statuses(&spool), Vec::<String>::new());
}

#[test]
fn shell_client_gives_up_after_its_timeout_and_leaves_the_status() {
    let spool = Spool::new();
    spool.create_dirs();
    let release = spool.evidence().join("release");
    let script = format!(
        "echo PHASE:waiting\ni=0\nwhile [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done",
        release.display()
    );
    spool.script("remote", "rollback.sh", &script);
    let _service = Service::start(&spool);
    let (code, lines) = shell_client(&spool, &["-t", "1", "remote", "rollback"]);
    assert_eq!(code, Some(3), "{lines:#?}");
    let id = lines[0].strip_prefix("request: ").unwrap().to_owned();
    fs::write(&release, "").unwrap();
    let status = spool.wait_final(&id);
    assert_eq!(
        status["success"], true,
        "the request itself carries on: {status:#}"
    );
}

/// `python3 dunebugger_updates.py` as a command exits 0 on success and 1 on failure.
#[test]
fn python_client_command_exits_with_the_result() {
    let (_spool, _service, root) = service_whose_core_is_down();
    let run = |args: &[&str]| -> Output {
        Command::new("python3")
            .args(["-I", "-S", "-B"])
            .arg(client_dir().join("dunebugger_updates.py"))
            .args(["--spool", &root, "--poll", "0.02"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let ok = run(&["remote", "update", "1.2.3"]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let failed = run(&["core", "health"]);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    assert!(String::from_utf8_lossy(&failed.stdout).contains("code: script_failed"));
    let bad = run(&["remote", "update"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}

/// A request waiting for its `not_before` (phase `scheduled`) is not a hang: the Python
/// client keeps waiting past its timeout while the status says scheduled.
#[test]
fn python_client_waits_out_a_scheduled_request_beyond_its_timeout() {
    let spool = Spool::new();
    spool.create_dirs();
    let _service = Service::start(&spool);
    let id = crate::support::new_id();
    let not_before = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(3))
        .unwrap();
    let mut request: Value =
        serde_json::from_str(&Spool::request_json(&id, "core", "health", None)).unwrap();
    request["not_before"] = not_before.to_string().into();
    spool.drop_in_place(&id, &request.to_string());

    let out = python(
        "import json\n\
         spool, rid = sys.argv[1], sys.argv[2]\n\
         seen = []\n\
         status = u.wait(rid, timeout=1.5, poll=0.1, spool=spool,\n\
         \x20   on_progress=lambda phase, status: seen.append(phase))\n\
         print(json.dumps({'seen': seen, 'status': status}))",
        &[&spool.root().display().to_string(), &id],
    );
    let result = json_line(&out);
    assert_eq!(result["status"]["success"], true, "{result:#}");
    assert!(
        result["seen"]
            .as_array()
            .unwrap()
            .contains(&"scheduled".into()),
        "{result:#}"
    );
}
