//! The component scripts in `component-scripts/` run for real (bash, awk, tar, ...) against
//! fake `docker`, `systemctl`, `curl` and `yq` programs (tests/fixtures/fake-tools/) that
//! record every call and keep their state in files, so each path can be driven without a Docker engine or systemd: success,
//! pull failure, an unhealthy or never-healthy container, a restore that fails too, SIGTERM
//! mid-update, a bad release or checksum. The fakes are configured the way an operator
//! configures the real tools, through each component's `component.conf` (the coordinator
//! gives scripts a clean environment), and the scripts are installed with
//! `component-scripts/install-components.sh`, so the installed layout is what runs. The last
//! tests run the scripts under the real coordinator.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Service, Spool, assert_contains_all};
use sha2::{Digest, Sha256};

/// The PATH the coordinator gives scripts.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A compose file with traps for a careless edit: the same image in another service, `image`
/// keys and text deeper inside a service, a quoted value, a block scalar, comments.
const COMPOSE: &str = r#"# DuneBugger test stack
services:
  remote:
    image: ghcr.io/dunebugger/remote:1.0.0   # pinned by update.sh
    restart: unless-stopped
    environment:
      - image=not-this
    labels:
      image: "not-this-either"
  scheduler:
    image: "ghcr.io/dunebugger/scheduler:2.0.0"
    command: |
      sh -c 'echo image: nope'
    restart: unless-stopped
  # remote: a comment that looks like a key
  other:
    image: ghcr.io/dunebugger/remote:1.0.0
"#;

const REMOTE_OLD: &str = "ghcr.io/dunebugger/remote:1.0.0";
const SCHEDULER_OLD: &str = "ghcr.io/dunebugger/scheduler:2.0.0";

fn write_exe(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What a script did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn phases(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix("PHASE:"))
            .collect()
    }

    /// Asserts the script said `text` on stderr (where the scripts explain a failure).
    #[track_caller]
    fn says(&self, text: &str) -> &Self {
        assert_contains_all("stderr", &self.stderr, &[text]);
        self
    }

    /// Asserts the script printed `text` on stdout (its progress and results).
    #[track_caller]
    fn prints(&self, text: &str) -> &Self {
        assert_contains_all("stdout", &self.stdout, &[text]);
        self
    }

    #[track_caller]
    fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "exit code\n--- stdout\n{}--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// A fake host: `opt/` with the compose file and the installed components, `bin/` with the
/// fakes, `state/` with theirs.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        Self::with_compose(COMPOSE)
    }

    fn with_compose(compose: &str) -> Host {
        let host = Host {
            dir: tempfile::tempdir().unwrap(),
        };
        let state = host.path("state");
        fs::create_dir_all(state.join("containers")).unwrap();
        // The fakes find state/ (and opt/) beside the bin/ they are copied into.
        for tool in ["docker", "yq", "systemctl", "curl"] {
            let fake = repo().join(format!("tests/fixtures/fake-tools/{tool}.sh"));
            write_exe(
                &host.path(&format!("bin/{tool}")),
                &fs::read_to_string(fake).unwrap(),
            );
        }
        std::os::unix::fs::symlink("docker", host.path("bin/docker-compose")).unwrap();
        fs::create_dir_all(host.path("opt")).unwrap();
        fs::write(host.compose_file(), compose).unwrap();
        fs::write(state.join("calls"), "").unwrap();

        let out = Command::new(repo().join("component-scripts/install-components.sh"))
            .arg("--prefix")
            .arg(host.path("opt"))
            .args(["remote", "scheduler", "core"])
            .output()
            .unwrap();
        assert!(out.status.success(), "install-components.sh: {out:?}");
        for service in ["remote", "scheduler"] {
            host.conf(service, "");
        }
        host.conf("core", "");
        host.set_container("remote", REMOTE_OLD);
        host.set_container("scheduler", SCHEDULER_OLD);
        host
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn compose_file(&self) -> PathBuf {
        self.path("opt/docker-compose.yml")
    }

    /// Writes `opt/COMPONENT/component.conf`: the fakes and short timeouts, then `extra`
    /// (later assignments win, as in any sourced file).
    fn conf(&self, component: &str, extra: &str) {
        let d = self.dir.path().display();
        let base = if component == "core" {
            format!(
                "UNIT=dunebugger-core\nINSTALL_DIR={d}/opt/core-app\nRELEASES_DIR={d}/releases\n\
                 SYSTEMCTL={d}/bin/systemctl\nCURL={d}/bin/curl\nWGET={d}/bin/no-wget\n\
                 LOCK_FILE={d}/core.lock\nLOCK_TIMEOUT=5\nARCH=arm64\n\
                 HEALTH_TIMEOUT=5\nHEALTH_INTERVAL=0.05\nSTABLE_SECONDS=0\n"
            )
        } else {
            format!(
                "COMPOSE_FILE={d}/opt/docker-compose.yml\nSERVICE={component}\nDOCKER={d}/bin/docker\n\
                 DOCKER_COMPOSE={d}/bin/docker-compose\nYQ=\nBACKUP_DIR={d}/backups/{component}\nLOCK_FILE={d}/compose.lock\nLOCK_TIMEOUT=5\n\
                 HEALTH_TIMEOUT=5\nHEALTH_INTERVAL=0.05\nSTABLE_SECONDS=0\n"
            )
        };
        let path = self.path(&format!("opt/{component}/component.conf"));
        fs::write(&path, format!("{base}{extra}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// The script as the coordinator runs it for a request of its own: clean environment, cwd
    /// = its directory, stdin /dev/null, its own process group.
    fn command(&self, component: &str, script: &str, args: &[&str]) -> Command {
        self.command_for(&crate::support::new_id(), component, script, args)
    }

    /// The same, for request `request_id` (the coordinator's health-gated update runs
    /// `rollback.sh` with the id of the update it follows).
    fn command_for(
        &self,
        request_id: &str,
        component: &str,
        script: &str,
        args: &[&str],
    ) -> Command {
        let dir = self.path(&format!("opt/{component}"));
        let mut command = Command::new(dir.join(script));
        command
            .args(args)
            .current_dir(&dir)
            .env_clear()
            .env("PATH", PATH)
            .env("LANG", "C.UTF-8")
            .env("HOME", self.dir.path())
            .env("REQUEST_ID", request_id)
            .env("COMPONENT", component)
            .env("ACTION", script.trim_end_matches(".sh"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(v) = args.first() {
            command.env("VERSION", v);
        }
        command
    }

    fn run(&self, component: &str, script: &str, args: &[&str]) -> Run {
        self.run_for(&crate::support::new_id(), component, script, args)
    }

    /// update.sh of remote to `version`, with the fakes' `policies` (pull-fails, unhealthy, ...)
    /// applied to that version's image.
    fn update_remote_under(&self, policies: &[&str], version: &str) -> Run {
        for policy in policies {
            self.policy(policy, &format!("ghcr.io/dunebugger/remote:{version}"));
        }
        self.run("remote", "update.sh", &[version])
    }

    fn run_for(&self, request_id: &str, component: &str, script: &str, args: &[&str]) -> Run {
        let start = Instant::now();
        let child = self
            .command_for(request_id, component, script, args)
            .spawn()
            .unwrap();
        finish(child, start)
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.path("state/calls"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// How many recorded calls end with `suffix` (e.g. " pull remote").
    fn count(&self, suffix: &str) -> usize {
        self.calls().iter().filter(|c| c.ends_with(suffix)).count()
    }

    fn clear_calls(&self) {
        fs::write(self.path("state/calls"), "").unwrap();
    }

    fn compose(&self) -> String {
        fs::read_to_string(self.compose_file()).unwrap()
    }

    fn container(&self, service: &str) -> String {
        fs::read_to_string(self.path(&format!("state/containers/{service}")))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn set_container(&self, service: &str, image: &str) {
        fs::write(
            self.path(&format!("state/containers/{service}")),
            format!("{image}\n"),
        )
        .unwrap();
    }

    /// Adds `line` to the fake's policy file `state/NAME`.
    fn policy(&self, name: &str, line: &str) {
        let path = self.path(&format!("state/{name}"));
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        text.push_str(line);
        text.push('\n');
        fs::write(path, text).unwrap();
    }

    /// The compose file backups of `service` (not the dot-files beside them), oldest first.
    fn backups(&self, service: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(self.path(&format!("backups/{service}")))
            .map(|d| {
                d.map(|e| e.unwrap().path())
                    .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    /// Takes the Compose v2 plugin away: `docker compose` fails as it does on Debian 12's
    /// docker.io, and the scripts must fall back to `docker-compose` (v1).
    fn without_plugin(&self) {
        fs::write(self.path("state/no-plugin"), "").unwrap();
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .trim()
            .to_owned()
    }
}

fn finish(child: Child, start: Instant) -> Run {
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// The lines that differ between two texts of the same length in lines: (index, old, new).
fn changed_lines<'a>(old: &'a str, new: &'a str) -> Vec<(usize, &'a str, &'a str)> {
    let (old, new): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    assert_eq!(old.len(), new.len(), "the number of lines changed");
    old.iter()
        .zip(&new)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i, *a, *b))
        .collect()
}

const UPDATE_PHASES: [&str; 6] = [
    "checking",
    "backing-up",
    "configuring",
    "downloading",
    "restarting",
    "verifying",
];

// ---------------------------------------------------------------------------------------------
// Docker Compose components: remote and scheduler

#[test]
fn update_changes_only_that_services_image_line_and_reports_its_phases() {
    let host = Host::new();
    let run = host.run("remote", "update.sh", &["1.2.3"]);
    run.expect(0);
    assert_eq!(run.phases(), UPDATE_PHASES);

    // One line changed: remote's image, with its indentation and comment kept. `other` runs
    // the same image and keeps it.
    let after = host.compose();
    assert_eq!(
        changed_lines(COMPOSE, &after),
        [(
            3,
            "    image: ghcr.io/dunebugger/remote:1.0.0   # pinned by update.sh",
            "    image: ghcr.io/dunebugger/remote:1.2.3   # pinned by update.sh"
        )]
    );
    assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.2.3");
    assert_eq!(host.container("scheduler"), SCHEDULER_OLD);
    assert_eq!(host.count(" pull remote"), 1);
    assert_eq!(host.count(" up -d --no-deps remote"), 1);
    assert!(
        host.calls().iter().all(|c| !c.contains("scheduler")),
        "{:?}",
        host.calls()
    );

    // The backup is the file as it was.
    let backups = host.backups("remote");
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(fs::read_to_string(&backups[0]).unwrap(), COMPOSE);

    // The scheduler's value is quoted: the quotes stay.
    host.run("scheduler", "update.sh", &["2.1.0-rc.1"])
        .expect(0);
    assert_eq!(
        changed_lines(&after, &host.compose()),
        [(
            10,
            "    image: \"ghcr.io/dunebugger/scheduler:2.0.0\"",
            "    image: \"ghcr.io/dunebugger/scheduler:2.1.0-rc.1\""
        )]
    );
    assert_eq!(
        host.container("scheduler"),
        "ghcr.io/dunebugger/scheduler:2.1.0-rc.1"
    );
}

#[test]
fn image_and_tag_prefix_settings_name_the_new_image() {
    let host = Host::new();
    host.conf(
        "remote",
        "IMAGE=registry.local:5000/dune/remote\nTAG_PREFIX=v",
    );
    host.run("remote", "update.sh", &["3.0.0"]).expect(0);
    assert!(
        host.compose()
            .contains("    image: registry.local:5000/dune/remote:v3.0.0   # pinned"),
        "{}",
        host.compose()
    );
    assert_eq!(
        host.container("remote"),
        "registry.local:5000/dune/remote:v3.0.0"
    );
}

#[test]
fn a_failed_pull_restores_the_compose_file_and_leaves_the_container_alone() {
    let host = Host::new();
    let run = host.update_remote_under(&["pull-fails"], "1.2.3");
    run.expect(4);
    assert_eq!(
        run.phases(),
        [
            "checking",
            "backing-up",
            "configuring",
            "downloading",
            "restoring"
        ]
    );
    run.says("pull access denied");
    run.says("is not present locally");
    assert_eq!(
        host.compose(),
        COMPOSE,
        "the compose file is restored byte for byte"
    );
    assert_eq!(host.container("remote"), REMOTE_OLD);
    assert_eq!(
        host.count(" up -d --no-deps remote"),
        0,
        "the container was not touched"
    );
    assert!(
        host.backups("remote").is_empty(),
        "the failed attempt's backup is dropped (it equals the restored file)"
    );
}

/// Images built or loaded on the host, and hosts without a network, have nothing to pull: the
/// image present locally is used. `PULL=missing` does not even try.
#[test]
fn a_failed_pull_is_not_fatal_when_the_image_is_present_locally() {
    let host = Host::new();
    let run = host.update_remote_under(&["pull-fails", "local-images"], "1.2.3");
    run.expect(0);
    assert_eq!(run.phases(), UPDATE_PHASES);
    assert!(
        run.stderr
            .contains("using ghcr.io/dunebugger/remote:1.2.3 as present locally (sha256:"),
        "{}",
        run.stderr
    );
    assert_eq!(host.count(" pull remote"), 1);
    assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.2.3");

    host.conf("remote", "PULL=missing");
    host.clear_calls();
    let run = host.update_remote_under(&["local-images"], "1.3.0");
    run.expect(0);
    run.prints("not pulling (PULL=missing)");
    assert_eq!(host.count(" pull remote"), 0, "{:?}", host.calls());
    assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.3.0");
    // Not present locally: pulled.
    host.run("remote", "update.sh", &["1.4.0"]).expect(0);
    assert_eq!(host.count(" pull remote"), 1, "{:?}", host.calls());
    assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.4.0");

    host.conf("remote", "PULL=sometimes");
    let run = host.run("remote", "update.sh", &["1.5.0"]);
    run.expect(2);
    run.says("PULL='sometimes'");
}

#[test]
fn an_unhealthy_new_container_is_replaced_by_the_old_one() {
    let host = Host::new();
    let run = host.update_remote_under(&["unhealthy"], "1.2.3");
    run.expect(4);
    let mut expected = UPDATE_PHASES.to_vec();
    expected.push("restoring");
    assert_eq!(run.phases(), expected);
    run.says("health unhealthy");
    assert!(
        run.stderr
            .contains("is back on ghcr.io/dunebugger/remote:1.0.0")
    );
    assert_eq!(host.compose(), COMPOSE);
    assert_eq!(
        host.container("remote"),
        REMOTE_OLD,
        "the old image runs again"
    );
    assert_eq!(host.count(" up -d --no-deps remote"), 2);
    assert!(host.backups("remote").is_empty());

    // A container that exits is given up on at once, too: one look, then the restore.
    host.clear_calls();
    host.update_remote_under(&["exited"], "1.3.0").expect(4);
    let calls = host.calls();
    let ups: Vec<usize> = (0..calls.len())
        .filter(|&i| calls[i].ends_with(" up -d --no-deps remote"))
        .collect();
    assert_eq!(ups.len(), 2, "{calls:?}");
    let looks = calls[ups[0]..ups[1]]
        .iter()
        .filter(|c| c.starts_with("inspect"))
        .count();
    assert_eq!(looks, 1, "{calls:?}");
    assert_eq!(host.container("remote"), REMOTE_OLD);
}

#[test]
fn a_container_that_never_gets_healthy_is_given_up_after_health_timeout() {
    let host = Host::new();
    host.conf("remote", "HEALTH_TIMEOUT=1\nHEALTH_INTERVAL=0.1");
    let run = host.update_remote_under(&["starting"], "1.2.3");
    run.expect(4);
    run.says("not healthy within 1s");
    assert!(
        run.elapsed < Duration::from_secs(20),
        "bounded wait: {:?}",
        run.elapsed
    );
    assert!(
        host.count("cid-remote") >= 2,
        "it looked more than once: {:?}",
        host.calls()
    );
    assert_eq!(host.compose(), COMPOSE);
    assert_eq!(host.container("remote"), REMOTE_OLD);
}

#[test]
fn without_a_healthcheck_the_container_must_stay_up_for_stable_seconds() {
    let host = Host::new();
    host.conf("remote", "STABLE_SECONDS=1\nHEALTH_INTERVAL=0.1");
    let run = host.update_remote_under(&["no-healthcheck"], "1.2.3");
    run.expect(0);
    run.prints("no health check defined");
    assert!(
        host.count("cid-remote") >= 2,
        "running once is not enough: {:?}",
        host.calls()
    );
}

#[test]
fn when_restoring_fails_too_the_exit_code_says_the_state_is_unknown() {
    let host = Host::new();
    host.policy("up-fails", REMOTE_OLD);
    let run = host.update_remote_under(&["unhealthy"], "1.2.3");
    run.expect(5);
    run.says("state is unknown");
    assert_eq!(host.compose(), COMPOSE, "the file is restored all the same");
    assert_eq!(
        host.backups("remote").len(),
        1,
        "the backup is kept for the operator"
    );
}

#[test]
fn an_edit_that_docker_compose_config_rejects_is_undone_before_anything_is_pulled() {
    let host = Host::new();
    host.policy("config-rejects", "remote:6.6.6");
    let run = host.run("remote", "update.sh", &["6.6.6"]);
    run.expect(4);
    assert_eq!(
        run.phases(),
        ["checking", "backing-up", "configuring", "restoring"]
    );
    run.says("invalid compose file");
    assert_eq!(host.compose(), COMPOSE);
    assert_eq!(host.count(" pull remote"), 0);
}

#[test]
fn refusals_change_nothing_and_say_why() {
    let host = Host::new();
    let unchanged = |run: &Run, code: i32, says: &str| {
        run.expect(code).says(says);
        assert_eq!(host.compose(), COMPOSE);
        assert!(host.backups("remote").is_empty());
        assert_eq!(
            host.count(" pull remote") + host.count(" up -d --no-deps remote"),
            0
        );
    };
    // Bad arguments.
    for (script, args, says) in [
        ("update.sh", &[][..], "usage: update.sh VERSION"),
        ("update.sh", &["v1.2.3"], "invalid version"),
        ("update.sh", &["1.2.3+build.5"], "contains '+'"),
        ("update.sh", &["1.0;reboot"], "invalid version"),
        ("rollback.sh", &["x"], "usage: rollback.sh"),
    ] {
        unchanged(&host.run("remote", script, args), 2, says);
    }

    // A compose file that is already invalid is not edited.
    host.policy("config-rejects", "remote:1.0.0");
    unchanged(&host.run("remote", "update.sh", &["1.2.3"]), 2, "rejects");
    fs::remove_file(host.path("state/config-rejects")).unwrap();

    // A service that is not in the file, or whose image is a variable.
    host.conf("remote", "SERVICE=nope");
    unchanged(
        &host.run("remote", "update.sh", &["1.2.3"]),
        2,
        "no service 'nope'",
    );
    host.conf("remote", "");
    fs::write(
        host.compose_file(),
        COMPOSE.replace("remote:1.0.0   #", "remote:${REMOTE_TAG}   #"),
    )
    .unwrap();
    let run = host.run("remote", "update.sh", &["1.2.3"]);
    run.expect(2);
    run.says("not a plain image reference");
    fs::write(host.compose_file(), COMPOSE).unwrap();

    // Missing tools are named.
    host.conf("remote", "DOCKER=/nonexistent/docker");
    unchanged(
        &host.run("remote", "update.sh", &["1.2.3"]),
        3,
        "required tool '/nonexistent/docker' not found",
    );
    host.conf("remote", "");

    // Bad numbers in settings.
    host.conf("remote", "HEALTH_TIMEOUT=soon");
    unchanged(
        &host.run("remote", "update.sh", &["1.2.3"]),
        2,
        "HEALTH_TIMEOUT='soon'",
    );
    host.conf("remote", "");

    // Another update holds the lock.
    host.conf("remote", "LOCK_TIMEOUT=0");
    let lock = fs::File::create(host.path("compose.lock")).unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();
    unchanged(&host.run("remote", "update.sh", &["1.2.3"]), 6, "holds");
    drop(held);
    host.run("remote", "update.sh", &["1.2.3"]).expect(0);
}

#[test]
fn rollback_restores_only_its_own_services_image_and_is_idempotent() {
    let host = Host::new();
    let run = host.run("remote", "rollback.sh", &[]);
    run.expect(7);
    run.says("nothing to roll back to");

    host.run("remote", "update.sh", &["1.2.3"]).expect(0);
    // The scheduler is updated after remote: rolling remote back must not undo it.
    host.run("scheduler", "update.sh", &["2.1.0"]).expect(0);
    let before = host.compose();

    let run = host.run("remote", "rollback.sh", &[]);
    run.expect(0);
    assert_eq!(
        run.phases(),
        [
            "checking",
            "backing-up",
            "configuring",
            "restarting",
            "verifying"
        ]
    );
    assert_eq!(
        changed_lines(&before, &host.compose()),
        [(
            3,
            "    image: ghcr.io/dunebugger/remote:1.2.3   # pinned by update.sh",
            "    image: ghcr.io/dunebugger/remote:1.0.0   # pinned by update.sh"
        )]
    );
    assert_eq!(host.container("remote"), REMOTE_OLD);
    assert_eq!(
        host.container("scheduler"),
        "ghcr.io/dunebugger/scheduler:2.1.0"
    );

    // Again: same backup, same image, nothing else changes.
    let after = host.compose();
    host.run("remote", "rollback.sh", &[]).expect(0);
    assert_eq!(host.compose(), after);
    assert_eq!(host.container("remote"), REMOTE_OLD);
    assert_eq!(
        host.backups("remote").len(),
        1,
        "no safety copies left behind"
    );

    // A rollback whose image does not come up is undone.
    host.run("remote", "update.sh", &["1.4.0"]).expect(0);
    let before = host.compose();
    // The newest backup (taken by that update) names 1.0.0: make it fail.
    host.policy("unhealthy", REMOTE_OLD);
    let run = host.run("remote", "rollback.sh", &[]);
    run.expect(4);
    assert_eq!(run.phases().last(), Some(&"restoring"));
    assert_eq!(host.compose(), before);
    assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.4.0");
}

#[test]
fn backups_are_pruned_to_keep_backups() {
    let host = Host::new();
    host.conf("remote", "KEEP_BACKUPS=2");
    for v in ["1.1.0", "1.2.0", "1.3.0", "1.4.0"] {
        host.run("remote", "update.sh", &[v]).expect(0);
    }
    let backups = host.backups("remote");
    assert_eq!(backups.len(), 2, "{backups:?}");
    // The newest backup is the file before the last update.
    assert!(
        fs::read_to_string(&backups[1])
            .unwrap()
            .contains("remote:1.3.0   #")
    );
}

/// The coordinator's health-gated update runs `rollback.sh` for the same request after
/// `update.sh` fails, or after it succeeds and the health check then fails. Only the second
/// leaves something to undo.
#[test]
fn rollback_for_the_same_request_undoes_only_what_that_update_left_in_place() {
    let host = Host::new();
    host.run("remote", "update.sh", &["1.2.3"]).expect(0);
    let at_123 = host.compose();

    // update.sh failed and restored 1.2.3 itself: nothing more to roll back (not to 1.0.0).
    host.policy("unhealthy", "ghcr.io/dunebugger/remote:1.3.0");
    host.run_for("req-a", "remote", "update.sh", &["1.3.0"])
        .expect(4);
    host.clear_calls();
    let run = host.run_for("req-a", "remote", "rollback.sh", &[]);
    run.expect(0);
    run.prints("nothing to roll back");
    assert_eq!(host.compose(), at_123);
    assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.2.3");
    assert_eq!(
        host.count(" up -d --no-deps remote"),
        0,
        "{:?}",
        host.calls()
    );

    // update.sh refused its argument: nothing changed, nothing to roll back.
    host.run_for("req-b", "remote", "update.sh", &["1.3.0+x"])
        .expect(2);
    host.run_for("req-b", "remote", "rollback.sh", &[])
        .expect(0);
    assert_eq!(host.compose(), at_123);

    // update.sh succeeded, then the health check failed: its rollback undoes exactly it.
    host.run_for("req-c", "remote", "update.sh", &["1.4.0"])
        .expect(0);
    assert_eq!(host.backups("remote").len(), 2);
    host.run_for("req-c", "remote", "rollback.sh", &[])
        .expect(0);
    assert_eq!(host.compose(), at_123);
    assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.2.3");
    // The undone update is as if it had failed: its backup is gone, and the same request's
    // rollback again changes nothing.
    assert_eq!(
        host.backups("remote").len(),
        1,
        "{:?}",
        host.backups("remote")
    );
    host.clear_calls();
    let run = host.run_for("req-c", "remote", "rollback.sh", &[]);
    run.expect(0);
    run.prints("nothing to roll back");
    assert_eq!(host.count(" up -d --no-deps remote"), 0);
    assert_eq!(host.compose(), at_123);

    // So a rollback request of its own goes back one update from what runs: the update that
    // brought 1.2.3, not the one just undone (which would "roll back" to 1.2.3 itself).
    host.run("remote", "rollback.sh", &[]).expect(0);
    assert_eq!(host.container("remote"), REMOTE_OLD);
    assert_eq!(host.compose(), COMPOSE);

    // And, as ever, after a successful update a rollback request goes back over it.
    host.run("remote", "update.sh", &["1.4.0"]).expect(0);
    host.run("remote", "rollback.sh", &[]).expect(0);
    assert_eq!(host.container("remote"), REMOTE_OLD);
}

#[test]
fn sigterm_mid_update_restores_the_compose_file() {
    let host = Host::new();
    fs::write(host.path("state/pull-blocks"), "").unwrap();
    let start = Instant::now();
    let child = host
        .command("remote", "update.sh", &["1.2.3"])
        .spawn()
        .unwrap();
    crate::support::wait_until("the pull to start", || host.path("state/pulling").exists());
    // As the coordinator does on a timeout: the whole process group.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let run = finish(child, start);
    run.expect(4);
    run.says("stopped by SIGTERM");
    assert_eq!(run.phases().last(), Some(&"restoring"));
    assert_eq!(host.compose(), COMPOSE);
    assert_eq!(host.container("remote"), REMOTE_OLD);
    assert!(run.elapsed < Duration::from_secs(30), "{:?}", run.elapsed);
}

#[test]
fn yq_when_present_must_read_the_file_as_the_line_edit_does() {
    let host = Host::new();
    let yq = host.path("bin/yq").display().to_string();
    host.conf("remote", &format!("YQ={yq}"));
    host.run("remote", "update.sh", &["1.2.3"]).expect(0);
    assert!(
        host.calls().iter().any(|c| c.starts_with("yq -r")),
        "{:?}",
        host.calls()
    );

    let before = host.compose();
    fs::write(host.path("state/yq-lies"), "").unwrap();
    let run = host.run("remote", "update.sh", &["1.3.0"]);
    run.expect(2);
    run.says("refusing to edit");
    assert_eq!(host.compose(), before);
}

/// Debian 12 and Raspberry Pi OS Bookworm ship Docker 20.10 (`docker.io`) without the Compose v2
/// plugin, and `docker-compose` 1.29 (v1) as a package of its own. The scripts then use that,
/// for everything: the edit checked by v1's `config` (keys sorted, quotes and comments gone,
/// `version:` added), pull, `up -d --no-deps`, `ps -a -q` read without the warnings v1 prints
/// on stderr, and a restore.
#[test]
fn without_the_v2_plugin_the_scripts_use_docker_compose_v1() {
    let host = Host::new();
    host.without_plugin();
    let v1 = host.path("bin/docker-compose").display().to_string();
    // As on a host without a network: the image is local, the pull fails.
    let run = host.update_remote_under(&["pull-fails", "local-images"], "1.2.3");
    run.expect(0);
    assert_eq!(run.phases(), UPDATE_PHASES);
    assert!(
        run.stdout.contains(&format!("(with {v1})")),
        "{}",
        run.stdout
    );
    assert_eq!(
        changed_lines(COMPOSE, &host.compose()),
        [(
            3,
            "    image: ghcr.io/dunebugger/remote:1.0.0   # pinned by update.sh",
            "    image: ghcr.io/dunebugger/remote:1.2.3   # pinned by update.sh"
        )]
    );
    assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.2.3");
    assert_eq!(host.container("scheduler"), SCHEDULER_OLD);

    // Chosen once: one look for the plugin, then every compose command went to v1.
    let calls = host.calls();
    let plugin: Vec<&String> = calls.iter().filter(|c| c.starts_with("compose ")).collect();
    assert_eq!(plugin, ["compose version"], "{calls:?}");
    for suffix in [
        " config",
        " pull remote",
        " up -d --no-deps remote",
        " ps -a -q remote",
    ] {
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("docker-compose -f ") && c.ends_with(suffix)),
            "no docker-compose ...{suffix}: {calls:?}"
        );
    }

    // A quoted image line: v1's config prints it unquoted, the file keeps its quotes.
    host.run("scheduler", "update.sh", &["2.1.0"]).expect(0);
    assert!(
        host.compose()
            .contains("    image: \"ghcr.io/dunebugger/scheduler:2.1.0\"\n"),
        "{}",
        host.compose()
    );

    // The health check, a failed update put right, and a rollback, all through v1.
    let run = host.run("remote", "health-check.sh", &[]);
    run.expect(0);
    run.prints("running, health healthy");
    let run = host.update_remote_under(&["unhealthy"], "1.3.0");
    run.expect(4);
    run.says("health unhealthy");
    assert!(
        run.stderr
            .contains("is back on ghcr.io/dunebugger/remote:1.2.3"),
        "{}",
        run.stderr
    );
    assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.2.3");
    assert!(host.compose().contains("remote:1.2.3   # pinned"));
    let run = host.run("remote", "rollback.sh", &[]);
    run.expect(0);
    assert_eq!(host.container("remote"), REMOTE_OLD);
    assert!(host.compose().contains("remote:1.0.0   # pinned"));
    assert!(
        host.calls().iter().all(|c| !c.starts_with("compose -f")),
        "the plugin was never used: {:?}",
        host.calls()
    );
}

#[test]
fn compose_cli_forces_the_plugin_or_the_standalone_command() {
    let host = Host::new();
    let unchanged = |run: &Run, code: i32, says: &str| {
        run.expect(code).says(says);
        assert!(host.compose().contains("remote:1.2.3   # pinned"));
        assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.2.3");
    };

    // The plugin is there, but standalone is asked for: `docker compose` is never run.
    host.conf("remote", "COMPOSE_CLI=standalone");
    host.run("remote", "update.sh", &["1.2.3"]).expect(0);
    host.run("remote", "health-check.sh", &[]).expect(0);
    assert!(
        host.calls().iter().all(|c| !c.starts_with("compose ")),
        "{:?}",
        host.calls()
    );
    assert!(host.count(" up -d --no-deps remote") == 1);

    // plugin, when it is missing: a tool error naming the package, nothing changed.
    host.without_plugin();
    host.conf("remote", "COMPOSE_CLI=plugin");
    unchanged(
        &host.run("remote", "update.sh", &["1.3.0"]),
        3,
        "install docker-compose-plugin",
    );
    host.run("remote", "health-check.sh", &[]).expect(3);

    // auto with neither: both ways out are named.
    host.conf("remote", "DOCKER_COMPOSE=/nonexistent/docker-compose");
    unchanged(&host.run("remote", "update.sh", &["1.3.0"]), 3, "neither");
    let run = host.run("remote", "rollback.sh", &[]);
    unchanged(&run, 3, "apt install docker-compose");

    // standalone, when it is missing; and a value that is not one of the three.
    host.conf(
        "remote",
        "COMPOSE_CLI=standalone\nDOCKER_COMPOSE=/nonexistent/docker-compose",
    );
    unchanged(
        &host.run("remote", "update.sh", &["1.3.0"]),
        3,
        "required tool '/nonexistent/docker-compose' not found",
    );
    host.conf("remote", "COMPOSE_CLI=v1");
    unchanged(
        &host.run("remote", "update.sh", &["1.3.0"]),
        2,
        "COMPOSE_CLI='v1' must be auto, plugin or standalone",
    );
}

#[test]
fn health_check_reports_running_healthy_and_unhealthy_containers() {
    let host = Host::new();
    let run = host.run("remote", "health-check.sh", &[]);
    run.expect(0);
    assert_eq!(run.phases(), ["checking"]);
    run.prints("running, health healthy");

    host.policy("no-healthcheck", REMOTE_OLD);
    host.run("remote", "health-check.sh", &[]).expect(0);

    fs::remove_file(host.path("state/no-healthcheck")).unwrap();
    host.policy("starting", REMOTE_OLD);
    host.run("remote", "health-check.sh", &[]).expect(1);

    host.policy("unhealthy", SCHEDULER_OLD);
    let run = host.run("scheduler", "health-check.sh", &[]);
    run.expect(1);
    run.says("health unhealthy");

    fs::remove_file(host.path("state/containers/remote")).unwrap();
    let run = host.run("remote", "health-check.sh", &[]);
    run.expect(1);
    run.says("no container");

    assert!(
        !host
            .calls()
            .iter()
            .any(|c| c.contains(" up ") || c.contains(" pull ")),
        "a health check changes nothing"
    );
}

#[test]
fn the_example_compose_file_is_edited_one_line_at_a_time() {
    let example = fs::read_to_string(repo().join("examples/docker-compose.yml")).unwrap();
    let host = Host::with_compose(&example);
    host.set_container("remote", "ghcr.io/marco-svitol/dunebugger-remote:1.0.0");
    host.set_container(
        "scheduler",
        "ghcr.io/marco-svitol/dunebugger-scheduler:1.0.0",
    );
    host.run("remote", "update.sh", &["1.0.1"]).expect(0);
    let after = host.compose();
    let changed = changed_lines(&example, &after);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(
        changed[0].2.contains("dunebugger-remote:1.0.1   # set by"),
        "{changed:?}"
    );
    host.run("scheduler", "update.sh", &["1.1.0"]).expect(0);
    let last = host.compose();
    let changed = changed_lines(&after, &last);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].2.contains("dunebugger-scheduler:1.1.0"));
}

#[test]
fn scripts_refuse_libraries_and_settings_others_could_have_changed() {
    let host = Host::new();
    let lib = host.path("opt/remote/compose.sh");
    fs::set_permissions(&lib, fs::Permissions::from_mode(0o664)).unwrap();
    let run = host.run("remote", "health-check.sh", &[]);
    run.expect(2);
    run.says("writable by group or others");
    fs::set_permissions(&lib, fs::Permissions::from_mode(0o644)).unwrap();

    let conf = host.path("opt/remote/component.conf");
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o666)).unwrap();
    let run = host.run("remote", "health-check.sh", &[]);
    run.expect(2);
    run.says("refusing");
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();
    host.run("remote", "health-check.sh", &[]).expect(0);
}

#[test]
fn scripts_also_run_from_the_source_tree() {
    let src = repo().join("component-scripts");
    for script in ["update.sh", "rollback.sh", "health-check.sh"] {
        for dir in ["core", "compose-service"] {
            let text = fs::read_to_string(src.join(dir).join(script)).unwrap();
            assert_contains_all(
                &format!("{dir}/{script}"),
                &text,
                &[
                    "#!/bin/bash\n",
                    "set -euo pipefail",
                    "# Exit codes:",
                    "# Arguments:",
                ],
            );
        }
    }

    // The layout of this repository (the library in ../lib), with compose-service's scripts in
    // a directory named after the service, as installed.
    let host = Host::new();
    let tree = host.path("src");
    for (from, to) in [("compose-service", "remote"), ("lib", "lib")] {
        fs::create_dir_all(tree.join(to)).unwrap();
        for entry in fs::read_dir(repo().join("component-scripts").join(from)).unwrap() {
            let entry = entry.unwrap();
            let target = tree.join(to).join(entry.file_name());
            fs::copy(entry.path(), &target).unwrap();
            let mode = if target.extension().is_some_and(|e| e == "sh") && to != "lib" {
                0o755
            } else {
                0o644
            };
            fs::set_permissions(&target, fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    fs::copy(
        host.path("opt/remote/component.conf"),
        tree.join("remote/component.conf"),
    )
    .unwrap();
    let out = Command::new(tree.join("remote/health-check.sh"))
        .current_dir(tree.join("remote"))
        .env_clear()
        .env("PATH", PATH)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// core: a systemd service from a release tarball

impl Host {
    /// Builds `releases/dunebugger-core-VERSION.tar.gz` with a top directory holding VERSION,
    /// app.sh and `markers` (empty files the fake systemctl reacts to), and its `.sha256`.
    fn release(&self, version: &str, markers: &[&str], checksum: bool) -> PathBuf {
        let stage = self.path(&format!("build/core-{version}"));
        fs::create_dir_all(&stage).unwrap();
        fs::write(stage.join("VERSION"), format!("{version}\n")).unwrap();
        write_exe(&stage.join("app.sh"), "#!/bin/sh\necho app\n");
        for m in markers {
            fs::write(stage.join(m), "").unwrap();
        }
        let releases = self.path("releases");
        fs::create_dir_all(&releases).unwrap();
        let name = format!("dunebugger-core-{version}.tar.gz");
        let tarball = releases.join(&name);
        let status = Command::new("tar")
            .arg("-C")
            .arg(self.path("build"))
            .arg("-czf")
            .arg(&tarball)
            .arg(format!("core-{version}"))
            .status()
            .unwrap();
        assert!(status.success());
        if checksum {
            let sum = hex::encode(Sha256::digest(fs::read(&tarball).unwrap()));
            fs::write(
                releases.join(format!("{name}.sha256")),
                format!("{sum}  {name}\n"),
            )
            .unwrap();
        }
        tarball
    }

    fn installed(&self, suffix: &str) -> String {
        self.read(&format!("opt/core-app{suffix}/VERSION"))
    }
}

const CORE_PHASES: [&str; 8] = [
    "checking",
    "downloading",
    "unpacking",
    "stopping",
    "backing-up",
    "installing",
    "starting",
    "verifying",
];

#[test]
fn core_update_installs_the_release_keeps_the_previous_and_carries_preserved_files() {
    let host = Host::new();
    host.conf("core", "PRESERVE=\"config.ini data\"");
    host.release("1.0.0", &[], true);
    let run = host.run("core", "update.sh", &["1.0.0"]);
    run.expect(0);
    assert_eq!(run.phases(), CORE_PHASES);
    run.prints("sha256 verified");
    assert_eq!(host.installed(""), "1.0.0");
    assert_eq!(host.read("opt/core-app/.dunebugger-version"), "1.0.0");
    assert_eq!(host.read("state/unit"), "active");

    fs::write(host.path("opt/core-app/config.ini"), "site=42\n").unwrap();
    fs::create_dir_all(host.path("opt/core-app/data")).unwrap();
    fs::write(host.path("opt/core-app/data/db"), "rows\n").unwrap();
    host.release("1.1.0", &[], true);
    host.clear_calls();
    host.run("core", "update.sh", &["1.1.0"]).expect(0);
    assert_eq!(host.installed(""), "1.1.0");
    assert_eq!(host.installed(".previous"), "1.0.0");
    assert_eq!(host.read("opt/core-app/config.ini"), "site=42");
    assert_eq!(host.read("opt/core-app/data/db"), "rows");
    assert_eq!(host.read("state/running"), "1.1.0");
    let calls = host.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("systemctl st"))
            .collect::<Vec<_>>(),
        [
            "systemctl stop dunebugger-core",
            "systemctl start dunebugger-core"
        ]
    );
    // Nothing left behind next to the install.
    let mut names: Vec<String> = fs::read_dir(host.path("opt"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("core-app"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["core-app", "core-app.last-update", "core-app.previous"]
    );
}

#[test]
fn core_failed_update_puts_the_old_release_back_and_keeps_the_rollback_target() {
    let host = Host::new();
    host.conf("core", "HEALTH_CMD='test -e HEALTHY'\nHEALTH_TIMEOUT=1");
    host.release("1.0.0", &["HEALTHY"], false);
    host.release("1.1.0", &["HEALTHY"], false);
    host.release("1.2.0", &["HEALTHY", "CRASHES"], false);
    host.release("1.3.0", &["HEALTHY", "START_FAILS"], false);
    host.release("1.4.0", &[], false); // HEALTH_CMD fails
    host.run("core", "update.sh", &["1.0.0"]).expect(0);
    host.run("core", "update.sh", &["1.1.0"]).expect(0);

    for (version, says) in [
        ("1.2.0", "is failed"),
        ("1.3.0", "systemctl start dunebugger-core failed"),
        ("1.4.0", "HEALTH_CMD fails"),
    ] {
        let run = host.run("core", "update.sh", &[version]);
        run.expect(4);
        assert!(run.stderr.contains(says), "{version}: {}", run.stderr);
        assert_eq!(run.phases().last(), Some(&"restoring"), "{version}");
        assert_eq!(host.installed(""), "1.1.0", "{version}");
        assert_eq!(
            host.installed(".previous"),
            "1.0.0",
            "{version}: the rollback target survives"
        );
        assert_eq!(host.installed(".failed"), version);
        assert_eq!(host.read("state/unit"), "active", "{version}");
        assert_eq!(host.read("state/running"), "1.1.0", "{version}");
    }

    // rollback.sh goes back to 1.0.0 once.
    let run = host.run("core", "rollback.sh", &[]);
    run.expect(0);
    assert_eq!(
        run.phases(),
        [
            "checking",
            "stopping",
            "installing",
            "starting",
            "verifying"
        ]
    );
    assert_eq!(host.installed(""), "1.0.0");
    assert_eq!(host.installed(".rolledback"), "1.1.0");
    assert_eq!(host.read("state/running"), "1.0.0");
    let run = host.run("core", "rollback.sh", &[]);
    run.expect(7);
    assert!(run.stderr.contains("nothing to roll back to"));
    assert_eq!(host.installed(""), "1.0.0");
}

#[test]
fn core_rollback_for_a_failed_update_of_the_same_request_changes_nothing() {
    let host = Host::new();
    host.release("1.0.0", &[], false);
    host.release("1.1.0", &[], false);
    host.release("1.2.0", &["CRASHES"], false);
    host.run("core", "update.sh", &["1.0.0"]).expect(0);
    host.run("core", "update.sh", &["1.1.0"]).expect(0);

    host.run_for("req-x", "core", "update.sh", &["1.2.0"])
        .expect(4);
    host.clear_calls();
    let run = host.run_for("req-x", "core", "rollback.sh", &[]);
    run.expect(0);
    run.prints("nothing to roll back");
    assert_eq!(host.installed(""), "1.1.0");
    assert_eq!(host.installed(".previous"), "1.0.0");
    assert!(host.calls().is_empty(), "{:?}", host.calls());

    // Missing release: nothing changed either.
    host.run_for("req-y", "core", "update.sh", &["9.9.9"])
        .expect(4);
    host.run_for("req-y", "core", "rollback.sh", &[]).expect(0);
    assert_eq!(host.installed(""), "1.1.0");

    // Succeeded, then found unhealthy by the coordinator: the rollback undoes it.
    host.release("1.3.0", &[], false);
    host.run_for("req-z", "core", "update.sh", &["1.3.0"])
        .expect(0);
    host.run_for("req-z", "core", "rollback.sh", &[]).expect(0);
    assert_eq!(host.installed(""), "1.1.0");
    assert_eq!(host.read("state/running"), "1.1.0");
}

#[test]
fn core_rollback_that_fails_restores_what_ran_before() {
    let host = Host::new();
    host.release("1.0.0", &["START_FAILS"], false);
    host.release("1.1.0", &[], false);
    // 1.0.0 cannot start, so install it as the "previous" one by hand.
    host.run("core", "update.sh", &["1.1.0"]).expect(0);
    let stage = host.path("unpack");
    fs::create_dir_all(&stage).unwrap();
    Command::new("tar")
        .arg("-xzf")
        .arg(host.path("releases/dunebugger-core-1.0.0.tar.gz"))
        .arg("-C")
        .arg(&stage)
        .status()
        .unwrap();
    fs::rename(stage.join("core-1.0.0"), host.path("opt/core-app.previous")).unwrap();

    let run = host.run("core", "rollback.sh", &[]);
    run.expect(4);
    assert_eq!(host.installed(""), "1.1.0");
    assert_eq!(host.installed(".previous"), "1.0.0");
    assert_eq!(host.read("state/unit"), "active");
    assert_eq!(host.read("state/running"), "1.1.0");
}

#[test]
fn core_changes_nothing_when_the_release_is_missing_bad_or_unsafe() {
    let host = Host::new();
    host.release("1.0.0", &[], true);
    host.run("core", "update.sh", &["1.0.0"]).expect(0);
    let untouched = |run: Run, says: &str| {
        run.expect(4).says(says).says("before anything was changed");
        assert_eq!(host.installed(""), "1.0.0");
        assert!(!host.path("opt/core-app.previous").exists());
        assert_eq!(host.read("state/unit"), "active");
        assert!(
            !host.calls().iter().any(|c| c.starts_with("systemctl stop")),
            "{:?}",
            host.calls()
        );
        let leftovers: Vec<_> = fs::read_dir(host.path("opt"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".core-app"))
            .collect();
        assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    };
    host.clear_calls();

    untouched(
        host.run("core", "update.sh", &["9.9.9"]),
        "no release dunebugger-core-9.9.9.tar.gz",
    );

    host.release("1.1.0", &[], false);
    fs::write(
        host.path("releases/dunebugger-core-1.1.0.tar.gz.sha256"),
        format!("{}  dunebugger-core-1.1.0.tar.gz\n", "0".repeat(64)),
    )
    .unwrap();
    untouched(host.run("core", "update.sh", &["1.1.0"]), "sha256 mismatch");

    host.conf("core", "REQUIRE_CHECKSUM=yes");
    host.release("1.2.0", &[], false);
    untouched(
        host.run("core", "update.sh", &["1.2.0"]),
        "REQUIRE_CHECKSUM=yes",
    );
    host.conf("core", "");

    // A member with an absolute path.
    let evil = host.path("evil");
    fs::create_dir_all(&evil).unwrap();
    fs::write(evil.join("VERSION"), "6.6.6\n").unwrap();
    let status = Command::new("tar")
        .arg("-czPf")
        .arg(host.path("releases/dunebugger-core-6.6.6.tar.gz"))
        .arg(evil.join("VERSION"))
        .status()
        .unwrap();
    assert!(status.success());
    untouched(
        host.run("core", "update.sh", &["6.6.6"]),
        "absolute paths or '..'",
    );

    // Not a tarball at all.
    fs::write(
        host.path("releases/dunebugger-core-7.0.0.tar.gz"),
        "<html>404</html>",
    )
    .unwrap();
    untouched(
        host.run("core", "update.sh", &["7.0.0"]),
        "not a readable tar archive",
    );
}

#[test]
fn core_downloads_from_the_url_templates_with_curl() {
    let host = Host::new();
    let d = host.dir.path().display().to_string();
    host.conf(
        "core",
        &format!(
            "RELEASES_DIR=\"\"\nTARBALL='core-{{VERSION}}-{{ARCH}}.tar.gz'\n\
             RELEASE_URL='file://{d}/mirror/v{{VERSION}}/{{TARBALL}}'\n\
             CHECKSUM_URL='file://{d}/mirror/v{{VERSION}}/SHA256SUMS'\nREQUIRE_CHECKSUM=yes"
        ),
    );
    let tarball = host.release("2.0.0", &[], false);
    let mirror = host.path("mirror/v2.0.0");
    fs::create_dir_all(&mirror).unwrap();
    fs::copy(&tarball, mirror.join("core-2.0.0-arm64.tar.gz")).unwrap();
    let sum = hex::encode(Sha256::digest(fs::read(&tarball).unwrap()));
    fs::write(
        mirror.join("SHA256SUMS"),
        format!(
            "{}  core-2.0.0-armhf.tar.gz\n{sum}  core-2.0.0-arm64.tar.gz\n",
            "1".repeat(64)
        ),
    )
    .unwrap();

    host.run("core", "update.sh", &["2.0.0"]).expect(0);
    assert_eq!(host.installed(""), "2.0.0");
    let curls: Vec<String> = host
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("curl "))
        .collect();
    assert_eq!(
        curls,
        [
            format!("curl file://{d}/mirror/v2.0.0/core-2.0.0-arm64.tar.gz"),
            format!("curl file://{d}/mirror/v2.0.0/SHA256SUMS"),
        ]
    );

    // A failed download changes nothing; without curl and wget the script says what to do.
    host.run("core", "update.sh", &["2.1.0"]).expect(4);
    assert_eq!(host.installed(""), "2.0.0");
    let mut conf = fs::read_to_string(host.path("opt/core/component.conf")).unwrap();
    conf.push_str(&format!("CURL={d}/bin/no-curl\n"));
    fs::write(host.path("opt/core/component.conf"), conf).unwrap();
    let run = host.run("core", "update.sh", &["2.1.0"]);
    run.expect(3);
    run.says("neither curl nor wget");
}

#[test]
fn core_health_check_and_settings_checks() {
    let host = Host::new();
    host.release("1.0.0", &[], false);
    host.run("core", "update.sh", &["1.0.0"]).expect(0);
    let run = host.run("core", "health-check.sh", &[]);
    run.expect(0);
    run.prints("version 1.0.0");
    fs::write(host.path("state/unit"), "failed\n").unwrap();
    let run = host.run("core", "health-check.sh", &[]);
    run.expect(1);
    run.says("dunebugger-core is failed");

    // An install directory that holds the scripts would be replaced with them.
    host.conf(
        "core",
        &format!("INSTALL_DIR={}", host.path("opt").display()),
    );
    let run = host.run("core", "update.sh", &["1.0.0"]);
    run.expect(2);
    run.says("holds these scripts");
    host.conf("core", "SYSTEMCTL=/nonexistent/systemctl");
    host.run("core", "health-check.sh", &[]).expect(3);
}

// ---------------------------------------------------------------------------------------------
// Under the real coordinator

/// A spool whose `remote` component runs the real compose scripts on `host`, with
/// `[components.remote] auto_rollback` as given.
fn coordinator_spool(host: &Host, auto_rollback: bool) -> Spool {
    let mut spool = Spool::new();
    spool.create_dirs();
    spool.set_key(
        "components.remote",
        "auto_rollback",
        &auto_rollback.to_string(),
    );
    spool.set_key("components.remote", "health_retries", "2");
    spool.set_key("components.remote", "health_interval", "0");
    // Replace the harness's placeholder scripts with the real ones, set up for the fake host.
    let components = spool.dir.path().join("components");
    let out = Command::new(repo().join("component-scripts/install-components.sh"))
        .arg("--prefix")
        .arg(&components)
        .arg("remote")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    fs::copy(
        host.path("opt/remote/component.conf"),
        components.join("remote/component.conf"),
    )
    .unwrap();
    spool
}

fn request(spool: &Spool, action: &str, version: Option<&str>) -> serde_json::Value {
    let id = crate::support::new_id();
    spool.drop_renamed(&id, &Spool::request_json(&id, "remote", action, version));
    spool.wait_final(&id)
}

#[test]
fn the_coordinator_runs_the_compose_scripts_with_its_clean_environment() {
    let host = Host::new();
    let spool = coordinator_spool(&host, false);
    let _service = Service::start(&spool);

    let status = request(&spool, "update", Some("1.2.3"));
    assert_eq!(status["success"], true, "{status:#}");
    assert_eq!(status["exit_code"], 0);
    let output = status["output"].as_str().unwrap();
    for phase in UPDATE_PHASES {
        assert!(output.contains(&format!("PHASE:{phase}\n")), "{output}");
    }
    assert!(host.compose().contains("remote:1.2.3   # pinned"));
    assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.2.3");

    host.policy("unhealthy", "ghcr.io/dunebugger/remote:1.3.0");
    let status = request(&spool, "update", Some("1.3.0"));
    assert_eq!(status["success"], false, "{status:#}");
    assert_eq!(status["code"], "script_failed", "{status:#}");
    assert_eq!(status["exit_code"], 4, "{status:#}");
    assert!(
        status["error"].as_str().unwrap().contains("is back on"),
        "{status:#}"
    );
    assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.2.3");

    let status = request(&spool, "rollback", None);
    assert_eq!(status["success"], true, "{status:#}");
    assert_eq!(host.container("remote"), REMOTE_OLD);
    assert_eq!(request(&spool, "health", None)["success"], true);
}

/// With the health-gated update, the coordinator runs `rollback.sh` for the same request after
/// a failed `update.sh` (which has already put the old image back: nothing more to undo) and
/// after a successful one whose health check then fails (undo exactly that update).
#[test]
fn the_coordinators_health_gated_update_never_rolls_back_one_version_too_far() {
    let host = Host::new();
    let spool = coordinator_spool(&host, true);
    let _service = Service::start(&spool);

    let status = request(&spool, "update", Some("1.2.3"));
    assert_eq!(status["success"], true, "{status:#}");
    assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.2.3");

    // update.sh fails and restores 1.2.3 itself; rollback.sh then finds nothing to undo.
    host.policy("unhealthy", "ghcr.io/dunebugger/remote:1.3.0");
    let status = request(&spool, "update", Some("1.3.0"));
    assert_eq!(status["success"], false, "{status:#}");
    assert_eq!(status["code"], "rolled_back", "{status:#}");
    assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.2.3");
    assert!(host.compose().contains("remote:1.2.3   # pinned"));

    // update.sh succeeds, then health-check.sh keeps failing: rollback.sh undoes that update.
    host.policy(
        "unhealthy-on-health-check",
        "ghcr.io/dunebugger/remote:1.4.0",
    );
    let status = request(&spool, "update", Some("1.4.0"));
    assert_eq!(status["success"], false, "{status:#}");
    assert_eq!(status["code"], "rolled_back", "{status:#}");
    assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.2.3");
    assert!(host.compose().contains("remote:1.2.3   # pinned"));
    assert_eq!(
        changed_lines(COMPOSE, &host.compose()).len(),
        1,
        "only remote's line differs from the start"
    );
}

/// The same health-gated update on a host with only `docker-compose` (v1): updated, then an
/// unhealthy image rolled back, then a health request.
#[test]
fn the_coordinators_health_gated_update_with_docker_compose_v1() {
    let host = Host::new();
    host.without_plugin();
    let spool = coordinator_spool(&host, true);
    let _service = Service::start(&spool);

    let status = request(&spool, "update", Some("1.2.3"));
    assert_eq!(status["success"], true, "{status:#}");
    assert_eq!(status["outcome"], "updated", "{status:#}");
    assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.2.3");

    host.policy("unhealthy", "ghcr.io/dunebugger/remote:1.3.0");
    let status = request(&spool, "update", Some("1.3.0"));
    assert_eq!(status["success"], false, "{status:#}");
    assert_eq!(status["outcome"], "rolled_back", "{status:#}");
    assert_eq!(host.container("remote"), "ghcr.io/dunebugger/remote:1.2.3");
    assert!(host.compose().contains("remote:1.2.3   # pinned"));

    assert_eq!(request(&spool, "health", None)["success"], true);
    assert!(
        host.calls()
            .iter()
            .any(|c| c.starts_with("docker-compose -f ")),
        "{:?}",
        host.calls()
    );
    assert!(
        host.calls().iter().all(|c| !c.starts_with("compose -f")),
        "{:?}",
        host.calls()
    );
}
