//! `install.sh`, run for real wherever that is safe on a build machine: laying the files out
//! under `DESTDIR` (every path, mode and content; re-runs that keep the config and customized
//! scripts; upgrades of untouched scripts; uninstall and purge), `--dry-run` on the host
//! (changes nothing), and the checks that stop a real install (not root, no systemd, wrong OS,
//! a binary for another CPU), called as the functions install.sh itself runs: `source
//! install.sh` defines them and runs nothing. Stand-ins for systemctl, systemd-sysusers,
//! systemd-tmpfiles, journalctl and cargo come first on PATH and record any call, so a test
//! also proves which system tools were (not) used. The full flow with a real systemd
//! (install, re-install, upgrade, uninstall, purge) is `tests/system/install_flow.sh`, run
//! in the VM lab.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::assert_contains_all;

const BIN: &str = env!("CARGO_BIN_EXE_update-coordinator");
const UNIT: &str = "dunebugger-update-coordinator.service";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch area with stand-ins for the system tools install.sh may call.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let sandbox = Sandbox {
            dir: tempfile::tempdir().unwrap(),
        };
        let bin = sandbox.path("fake-bin");
        fs::create_dir(&bin).unwrap();
        for tool in [
            "systemctl",
            "systemd-sysusers",
            "systemd-tmpfiles",
            "journalctl",
            "cargo",
            "groupadd",
            "useradd",
        ] {
            let script = bin.join(tool);
            fs::write(
                &script,
                format!(
                    "#!/bin/sh\necho \"{tool} $*\" >>'{}'\nexit 1\n",
                    sandbox.calls_log().display()
                ),
            )
            .unwrap();
            fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        }
        sandbox
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn calls_log(&self) -> PathBuf {
        self.path("calls.log")
    }

    /// What the stand-ins were called with, one line per call.
    fn calls(&self) -> String {
        fs::read_to_string(self.calls_log()).unwrap_or_default()
    }

    /// install.sh (from `src`, a checkout) with these arguments and environment.
    fn command(&self, src: &Path, args: &[&str], env: &[(&str, &Path)]) -> Command {
        let mut cmd = Command::new(src.join("install.sh"));
        cmd.args(args)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.path("fake-bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env_remove("DESTDIR")
            .env_remove("PREFIX")
            .env_remove("CARGO_TARGET_DIR");
        for (key, value) in env {
            cmd.env(key, value);
        }
        cmd
    }

    fn run(&self, src: &Path, args: &[&str], env: &[(&str, &Path)]) -> Run {
        Run::from(self.command(src, args, env).output().unwrap())
    }

    /// `DESTDIR=<sandbox>/root install.sh --binary BIN ARGS...` from `src`.
    fn lay_out(&self, src: &Path, args: &[&str]) -> Run {
        let mut all = vec!["--binary", BIN];
        all.extend_from_slice(args);
        self.run(src, &all, &[("DESTDIR", &self.root())])
    }

    fn root(&self) -> PathBuf {
        self.path("root")
    }

    fn at(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }
}

struct Run {
    code: i32,
    text: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            text: format!(
                "--- stdout\n{}--- stderr\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "install.sh failed:\n{}", self.text);
        self
    }

    fn says(&self, what: &str) -> &Self {
        assert_contains_all("the output of install.sh", &self.text, &[what]);
        self
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn assert_file(path: &Path, expected_mode: u32, content: &[u8]) {
    assert!(path.is_file(), "{} is missing", path.display());
    assert_eq!(
        mode(path),
        expected_mode,
        "mode of {}: {:o}",
        path.display(),
        mode(path)
    );
    assert!(
        fs::read(path).unwrap() == content,
        "{} does not have the expected content",
        path.display()
    );
}

/// The components `src/component-scripts` holds and what each should hold once installed, as
/// (shipped file, installed name, mode): a directory's own files, plus every lib/ file they
/// mention (lib/ is shared code, not a component). A directory of shared scripts with one
/// `NAME.conf` per component (compose-service/) makes each NAME: its scripts, and `NAME.conf`
/// as `component.conf`.
fn expected_components(src: &Path) -> BTreeMap<String, Vec<(PathBuf, String, u32)>> {
    let root = src.join("component-scripts");
    let libs: Vec<PathBuf> = match fs::read_dir(root.join("lib")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    let name_of = |path: &Path| path.file_name().unwrap().to_string_lossy().into_owned();
    let mode_of = |path: &Path| {
        if mode(path) & 0o111 != 0 {
            0o755
        } else {
            0o644
        }
    };
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() || name_of(&dir) == "lib" {
            continue;
        }
        let mut own = Vec::new();
        let mut settings = Vec::new();
        for file in fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            let base = name_of(&file);
            if !file.is_file() {
                continue;
            }
            if base.ends_with(".conf") && base != "component.conf" {
                settings.push((base.trim_end_matches(".conf").to_owned(), file));
                continue;
            }
            let executable = mode(&file) & 0o111 != 0
                || ["update.sh", "rollback.sh", "health-check.sh"].contains(&base.as_str());
            own.push((file, base, if executable { 0o755 } else { 0o644 }));
        }
        if settings.is_empty() {
            settings.push((name_of(&dir), PathBuf::new()));
        }
        for (component, conf) in settings {
            let mut files = own.clone();
            if conf.is_file() {
                files.push((conf.clone(), "component.conf".to_owned(), mode_of(&conf)));
            }
            let text: String = files
                .iter()
                .map(|(f, _, _)| String::from_utf8_lossy(&fs::read(f).unwrap()).into_owned())
                .collect();
            for lib in &libs {
                let base = name_of(lib);
                let is_own = files.iter().any(|(_, name, _)| *name == base);
                if lib.is_file() && !is_own && text.contains(&base) {
                    files.push((lib.clone(), base, mode_of(lib)));
                }
            }
            if !files.is_empty() {
                out.insert(component, files);
            }
        }
    }
    out
}

fn installed_script_of(sandbox: &Sandbox, component: &str, name: &str) -> PathBuf {
    sandbox.at("/opt/dunebugger").join(component).join(name)
}

/// A copy of the parts of the repository install.sh reads, to change shipped files freely.
fn copy_of_repo(into: &Path) -> PathBuf {
    fn copy_tree(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_tree(&entry.path(), &target);
            } else if entry.file_type().unwrap().is_file() {
                fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let src = into.join("src");
    fs::create_dir_all(src.join("systemd")).unwrap();
    fs::copy(repo().join("install.sh"), src.join("install.sh")).unwrap();
    fs::copy(
        repo().join("systemd").join(UNIT),
        src.join("systemd").join(UNIT),
    )
    .unwrap();
    copy_tree(&repo().join("packaging"), &src.join("packaging"));
    copy_tree(
        &repo().join("component-scripts"),
        &src.join("component-scripts"),
    );
    src
}

/// Runs `FUNCTION ARGS...` of install.sh in a shell that sourced it (and set `preset`).
fn call(preset: &str, function: &str, args: &[&str]) -> Run {
    let script = format!("source \"$1\"; shift; {preset} \"$@\"");
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("install.sh")
        .arg(repo().join("install.sh"))
        .arg(function)
        .args(args)
        .output()
        .unwrap()
        .into()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

// ---------------------------------------------------------------------------------------------
// DESTDIR: the tree a package gets.

#[test]
fn destdir_lays_out_every_file_with_its_mode_and_calls_no_system_tool() {
    let sandbox = Sandbox::new();
    sandbox
        .lay_out(&repo(), &[])
        .ok()
        .says("Done: files laid out under");

    let binary = fs::read(BIN).unwrap();
    assert_file(
        &sandbox.at("/usr/local/bin/update-coordinator"),
        0o755,
        &binary,
    );
    assert_file(
        &sandbox.at(&format!("/usr/lib/systemd/system/{UNIT}")),
        0o644,
        &fs::read(repo().join("systemd").join(UNIT)).unwrap(),
    );
    for (shipped, installed) in [
        (
            "packaging/sysusers.d/update-coordinator.conf",
            "/usr/lib/sysusers.d/update-coordinator.conf",
        ),
        (
            "packaging/tmpfiles.d/update-coordinator.conf",
            "/usr/lib/tmpfiles.d/update-coordinator.conf",
        ),
        (
            "packaging/update-coordinator.toml",
            "/etc/dunebugger/update-coordinator.toml",
        ),
    ] {
        assert_file(
            &sandbox.at(installed),
            0o644,
            &fs::read(repo().join(shipped)).unwrap(),
        );
    }
    let components = expected_components(&repo());
    assert!(
        components.contains_key("coordinator"),
        "component-scripts/coordinator is shipped"
    );
    for (component, files) in &components {
        let dir = sandbox.at("/opt/dunebugger").join(component);
        assert_eq!(mode(&dir), 0o755, "{}", dir.display());
        for (shipped, name, file_mode) in files {
            assert_file(
                &installed_script_of(&sandbox, component, name),
                *file_mode,
                &fs::read(shipped).unwrap(),
            );
        }
        assert!(dir.join(".install.sha256").is_file());
    }
    for generated in [
        "/usr/local/share/bash-completion/completions/update-coordinator",
        "/usr/local/share/zsh/site-functions/_update-coordinator",
        "/usr/local/share/fish/vendor_completions.d/update-coordinator.fish",
        "/usr/local/share/man/man1/update-coordinator.1",
    ] {
        let path = sandbox.at(generated);
        assert!(
            fs::metadata(&path).map(|m| m.len() > 0).unwrap_or(false),
            "{} is missing or empty",
            path.display()
        );
        assert_eq!(mode(&path), 0o644);
    }
    // Nothing for the target's systemd to create (spool, state) and nothing in /etc/systemd:
    // the package's postinst and the unit do that on the target.
    for absent in ["/var", "/etc/systemd", "/usr/local/lib", "/run"] {
        assert!(!sandbox.at(absent).exists(), "{absent} was created");
    }
    assert_eq!(sandbox.calls(), "", "DESTDIR must not call system tools");
}

#[test]
fn a_second_run_keeps_the_config_and_a_customized_script_and_rewrites_nothing() {
    let sandbox = Sandbox::new();
    sandbox.lay_out(&repo(), &[]).ok();
    let config = sandbox.at("/etc/dunebugger/update-coordinator.toml");
    let my_config = "[spool]\nmax_queued = 7\n";
    fs::write(&config, my_config).unwrap();
    let (component, files) = expected_components(&repo()).into_iter().next().unwrap();
    let script = installed_script_of(&sandbox, &component, &files[0].1);
    let mut customized = fs::read(&script).unwrap();
    customized.extend_from_slice(b"\n# changed on this host\n");
    fs::write(&script, &customized).unwrap();
    let binary = sandbox.at("/usr/local/bin/update-coordinator");
    let unit = sandbox.at(&format!("/usr/lib/systemd/system/{UNIT}"));
    let before = [fs::metadata(&binary).unwrap(), fs::metadata(&unit).unwrap()];

    let second = sandbox.lay_out(&repo(), &[]).ok();
    second
        .says("exists: kept as it is")
        .says("changed locally, kept")
        .says("--overwrite-scripts");
    assert_eq!(fs::read_to_string(&config).unwrap(), my_config);
    assert_eq!(fs::read(&script).unwrap(), customized);
    for (path, old) in [&binary, &unit].into_iter().zip(before) {
        let new = fs::metadata(path).unwrap();
        assert_eq!(
            (new.ino(), new.mtime(), new.mtime_nsec()),
            (old.ino(), old.mtime(), old.mtime_nsec()),
            "{} was rewritten although unchanged",
            path.display()
        );
        second.says(&format!("= {} (unchanged)", path.display()));
    }

    // --overwrite-scripts replaces it and keeps the customized one beside it.
    sandbox
        .lay_out(&repo(), &["--overwrite-scripts"])
        .ok()
        .says("--overwrite-scripts: replacing it");
    assert_eq!(fs::read(&script).unwrap(), fs::read(&files[0].0).unwrap());
    let backups: Vec<_> = fs::read_dir(script.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!(
                    "{}.bak-",
                    script.file_name().unwrap().to_string_lossy()
                ))
        })
        .collect();
    assert_eq!(backups.len(), 1, "one backup: {backups:?}");
    assert_eq!(fs::read(&backups[0]).unwrap(), customized);
    assert_eq!(fs::read_to_string(&config).unwrap(), my_config);
}

#[test]
fn an_upgrade_updates_scripts_nobody_changed_and_keeps_the_ones_someone_did() {
    let sandbox = Sandbox::new();
    let src = copy_of_repo(sandbox.dir.path());
    sandbox.lay_out(&src, &[]).ok();
    let shipped = src.join("component-scripts/coordinator/update.sh");
    let untouched = sandbox.at("/opt/dunebugger/coordinator/update.sh");
    let customized = sandbox.at("/opt/dunebugger/coordinator/rollback.sh");
    fs::write(&customized, "#!/bin/sh\necho my own rollback\n").unwrap();
    // The new release changes both scripts.
    let mut new_update = fs::read(&shipped).unwrap();
    new_update.extend_from_slice(b"# release 2\n");
    fs::write(&shipped, &new_update).unwrap();
    let rollback = src.join("component-scripts/coordinator/rollback.sh");
    let mut new_rollback = fs::read(&rollback).unwrap();
    new_rollback.extend_from_slice(b"# release 2\n");
    fs::write(&rollback, &new_rollback).unwrap();

    sandbox
        .lay_out(&src, &[])
        .ok()
        .says("as install.sh left it, so it is updated");
    assert_file(&untouched, 0o755, &new_update);
    assert_eq!(
        fs::read_to_string(&customized).unwrap(),
        "#!/bin/sh\necho my own rollback\n"
    );
}

#[test]
fn prefix_moves_the_binary_and_points_the_units_exec_start_at_it() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(
        &repo(),
        &["--binary", BIN],
        &[("DESTDIR", &sandbox.root()), ("PREFIX", Path::new("/usr"))],
    );
    run.ok()
        .says("ExecStart rewritten to /usr/bin/update-coordinator");
    assert!(sandbox.at("/usr/bin/update-coordinator").is_file());
    assert!(!sandbox.at("/usr/local").exists());
    let shipped = fs::read_to_string(repo().join("systemd").join(UNIT)).unwrap();
    let installed =
        fs::read_to_string(sandbox.at(&format!("/usr/lib/systemd/system/{UNIT}"))).unwrap();
    let differing: Vec<(&str, &str)> = shipped
        .lines()
        .zip(installed.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(shipped.lines().count(), installed.lines().count());
    assert_eq!(
        differing,
        [(
            "ExecStart=/usr/local/bin/update-coordinator run",
            "ExecStart=/usr/bin/update-coordinator run"
        )]
    );
    // The self-update scripts are told where the binary is.
    assert_eq!(
        fs::read_to_string(sandbox.at("/opt/dunebugger/coordinator/coordinator.conf"))
            .unwrap()
            .lines()
            .find(|l| !l.starts_with('#')),
        Some("INSTALL_PATH=/usr/bin/update-coordinator")
    );
    assert!(
        sandbox
            .at("/usr/share/man/man1/update-coordinator.1")
            .is_file()
    );
}

#[test]
fn a_config_the_new_build_rejects_stops_the_install_before_anything_changes() {
    let sandbox = Sandbox::new();
    let config = sandbox.at("/etc/dunebugger/update-coordinator.toml");
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    fs::write(&config, "[spool]\nrot = \"/x\"\n").unwrap();
    let run = sandbox.lay_out(&repo(), &[]);
    assert_eq!(run.code, 1, "{}", run.text);
    run.says("rejects the config")
        .says("spool.rot")
        .says("nothing has been changed");
    assert!(!sandbox.at("/usr").exists(), "files were laid out anyway");
    assert!(!sandbox.at("/opt").exists(), "files were laid out anyway");
}

#[test]
fn uninstall_removes_the_program_and_keeps_the_config_and_scripts_unless_purged() {
    let sandbox = Sandbox::new();
    sandbox.lay_out(&repo(), &[]).ok();
    let destdir = [("DESTDIR", sandbox.root())];
    let env: Vec<(&str, &Path)> = destdir.iter().map(|(k, v)| (*k, v.as_path())).collect();
    sandbox
        .run(&repo(), &["--uninstall"], &env)
        .ok()
        .says("--purge removes them");
    for gone in [
        "/usr/local/bin/update-coordinator".to_string(),
        format!("/usr/lib/systemd/system/{UNIT}"),
        "/usr/lib/sysusers.d/update-coordinator.conf".into(),
        "/usr/lib/tmpfiles.d/update-coordinator.conf".into(),
        "/usr/local/share/man/man1/update-coordinator.1".into(),
        "/usr/local/share/bash-completion/completions/update-coordinator".into(),
    ] {
        assert!(!sandbox.at(&gone).exists(), "{gone} is still there");
    }
    let config = sandbox.at("/etc/dunebugger/update-coordinator.toml");
    let script = sandbox.at("/opt/dunebugger/coordinator/update.sh");
    assert!(config.is_file() && script.is_file());

    sandbox.run(&repo(), &["--purge"], &env).ok();
    assert!(!config.exists(), "--purge keeps the config");
    assert!(!sandbox.at("/etc/dunebugger").exists());
    assert!(script.is_file(), "--purge removes operators' scripts");
    assert_eq!(sandbox.calls(), "");
}

// ---------------------------------------------------------------------------------------------
// On the host: --dry-run, and the checks that stop a real install.

/// Size and modification time of each path, or None when absent.
fn snapshot(paths: &[PathBuf]) -> Vec<Option<(u64, i64, i64)>> {
    paths
        .iter()
        .map(|p| {
            fs::symlink_metadata(p)
                .ok()
                .map(|m| (m.len(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

#[test]
fn dry_run_lists_every_action_on_the_host_and_changes_nothing() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.command(&repo(), &["--dry-run", "--binary", BIN], &[]);
    let host_paths: Vec<PathBuf> = [
        "/usr/local/bin/update-coordinator".to_string(),
        format!("/etc/systemd/system/{UNIT}"),
        "/usr/local/lib/sysusers.d/update-coordinator.conf".into(),
        "/usr/local/lib/tmpfiles.d/update-coordinator.conf".into(),
        "/etc/dunebugger/update-coordinator.toml".into(),
        "/opt/dunebugger".into(),
        "/var/dunebugger/updates".into(),
        "/var/lib/update-coordinator".into(),
        "/usr/local/share/man/man1/update-coordinator.1".into(),
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    let before = snapshot(&host_paths);
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(
        snapshot(&host_paths),
        before,
        "a dry run changed the host:\n{}",
        run.text
    );
    run.says("DRY RUN: nothing is changed")
        .says("/usr/local/bin/update-coordinator")
        .says(&format!("/etc/systemd/system/{UNIT}"))
        .says("/usr/local/lib/sysusers.d/update-coordinator.conf")
        .says("/usr/local/lib/tmpfiles.d/update-coordinator.conf")
        .says("$ systemd-sysusers /usr/local/lib/sysusers.d/update-coordinator.conf")
        .says("$ systemd-tmpfiles --create /usr/local/lib/tmpfiles.d/update-coordinator.conf")
        .says(&format!("$ systemctl enable {UNIT}"))
        .says("/etc/dunebugger/update-coordinator.toml")
        .says("/opt/dunebugger/coordinator/update.sh")
        .says("update-coordinator check")
        .says("group_add:")
        .says("submit --component remote --action health --wait");
    // Queries (is-active) may reach systemctl; nothing that changes anything may.
    for call in sandbox.calls().lines() {
        assert!(
            call.starts_with("systemctl is-active"),
            "a dry run called {call:?}"
        );
    }
    // Exit 0 only where a real install would pass its checks.
    let can_install = is_root() && Path::new("/run/systemd/system").is_dir();
    if run.code == 0 {
        assert!(can_install, "{}", run.text);
        run.says("nothing was changed");
    } else {
        assert_eq!(run.code, 1, "{}", run.text);
        run.says("DRY RUN: the real run would stop at");
    }
}

#[test]
fn as_a_normal_user_a_real_install_stops_at_once_and_says_to_use_sudo() {
    let sandbox = Sandbox::new();
    // The check comes first, before install.sh reads anything else: a copy of the script
    // alone, where any user can run it (the checkout may sit below a private directory).
    let src = sandbox.path("src");
    fs::create_dir(&src).unwrap();
    fs::copy(repo().join("install.sh"), src.join("install.sh")).unwrap();
    fs::set_permissions(sandbox.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = sandbox.command(&src, &["--binary", BIN], &[]);
    cmd.current_dir(&src);
    if is_root() {
        // nobody, as a user running ./install.sh without sudo.
        cmd.uid(65534).gid(65534);
    }
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, 1, "{}", run.text);
    run.says("must run as root").says("sudo").says("--dry-run");
    assert_eq!(sandbox.calls(), "");
}

#[test]
fn without_systemd_a_real_install_stops_before_changing_anything() {
    if !is_root() || Path::new("/run/systemd/system").is_dir() {
        eprintln!(
            "skipped: needs root on a machine without systemd (elsewhere it would really install)"
        );
        return;
    }
    let sandbox = Sandbox::new();
    let probe = PathBuf::from("/usr/local/lib/sysusers.d/update-coordinator.conf");
    let before = snapshot(std::slice::from_ref(&probe));
    let run = sandbox.run(&repo(), &["--binary", BIN], &[]);
    assert_eq!(run.code, 1, "{}", run.text);
    run.says("systemd is not running as PID 1")
        .says("/run/systemd/system does not exist")
        .says("DESTDIR=");
    assert_eq!(snapshot(std::slice::from_ref(&probe)), before);
    assert_eq!(sandbox.calls(), "");
}

#[test]
fn the_root_and_systemd_checks_explain_themselves() {
    let run = call("", "check_root", &["1000"]);
    assert_eq!(run.code, 1);
    run.says("must run as root").says("Run: sudo ");
    assert_eq!(call("", "check_root", &["0"]).code, 0);

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("run/systemd/system");
    let run = call("", "check_systemd", &[missing.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    run.says("systemd is not running as PID 1")
        .says("not a container, chroot or WSL")
        .says("DESTDIR=");
    assert_eq!(
        call("", "check_systemd", &[dir.path().to_str().unwrap()]).code,
        0
    );
}

#[test]
fn only_debian_12_and_raspberry_pi_os_bookworm_pass_the_os_check() {
    let dir = tempfile::tempdir().unwrap();
    let os = |name: &str, text: &str| {
        let path = dir.path().join(name);
        fs::write(&path, text).unwrap();
        path
    };
    let accepted = [
        os(
            "debian12",
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n",
        ),
        // Raspberry Pi OS Bookworm, 32-bit.
        os(
            "raspbian12",
            "PRETTY_NAME=\"Raspbian GNU/Linux 12 (bookworm)\"\nNAME=\"Raspbian GNU/Linux\"\nVERSION_ID=\"12\"\nID=raspbian\nID_LIKE=debian\n",
        ),
        os(
            "derivative12",
            "PRETTY_NAME='Some Pi distro'\nID=somepi\nID_LIKE=\"ubuntu debian\"\nVERSION_ID=12\n",
        ),
    ];
    for file in &accepted {
        let run = call("", "check_os", &[file.to_str().unwrap()]);
        assert_eq!(run.code, 0, "{}: {}", file.display(), run.text);
    }
    let refused = [
        (
            os(
                "debian11",
                "PRETTY_NAME=\"Debian GNU/Linux 11 (bullseye)\"\nVERSION_ID=\"11\"\nID=debian\n",
            ),
            "Debian GNU/Linux 11 (bullseye)",
        ),
        (
            os(
                "debian13",
                "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nVERSION_ID=\"13\"\nID=debian\n",
            ),
            "VERSION_ID=13",
        ),
        (
            os(
                "ubuntu",
                "PRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"22.04\"\n",
            ),
            "Ubuntu 22.04.4 LTS",
        ),
        (
            dir.path().join("no-such-os-release"),
            "cannot tell which OS",
        ),
    ];
    for (file, named) in &refused {
        let run = call("", "check_os", &[file.to_str().unwrap()]);
        assert_eq!(run.code, 1, "{}: {}", file.display(), run.text);
        run.says(named).says("--force");
        if file.exists() {
            run.says("unsupported OS")
                .says("Debian 12 (bookworm) and Raspberry Pi OS Bookworm");
        }
    }
    // --force installs anyway, with a warning.
    let run = call("FORCE=1;", "check_os", &[refused[2].0.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.text);
    run.says("WARNING: unsupported OS")
        .says("--force: going on");
}

// ---------------------------------------------------------------------------------------------
// The binary's architecture, read from its ELF header (and ARM build attributes) with od.

fn u16le(v: u16) -> [u8; 2] {
    v.to_le_bytes()
}

fn u32le(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

/// A 32-bit little-endian ARM ELF file; with `cpu_arch`, a `.ARM.attributes` section saying
/// Tag_CPU_arch = cpu_arch (6 = ARMv6, 7 = ARMv6KZ as on a Pi Zero, 10 = ARMv7), laid out as
/// GCC and LLVM write it: a CPU name first, then the architecture, then other tags.
fn arm_elf(cpu_arch: Option<u8>) -> Vec<u8> {
    let mut attrs = Vec::new();
    if let Some(arch) = cpu_arch {
        let mut tags = vec![5];
        tags.extend_from_slice(b"7-A\0");
        tags.extend_from_slice(&[6, arch, 7, b'A', 8, 1, 9, 2, 10, 5]);
        let file_len = 1 + 4 + tags.len() as u32;
        let sub_len = 4 + 6 + file_len;
        attrs.push(b'A');
        attrs.extend_from_slice(&u32le(sub_len));
        attrs.extend_from_slice(b"aeabi\0");
        attrs.push(1);
        attrs.extend_from_slice(&u32le(file_len));
        attrs.extend_from_slice(&tags);
    }
    let sections = if cpu_arch.is_some() { 2 } else { 0 };
    let mut elf = vec![0x7f, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    elf.extend_from_slice(&u16le(2)); // ET_EXEC
    elf.extend_from_slice(&u16le(40)); // EM_ARM
    elf.extend_from_slice(&u32le(1));
    elf.extend_from_slice(&u32le(0)); // entry
    elf.extend_from_slice(&u32le(0)); // phoff
    elf.extend_from_slice(&u32le(if sections > 0 {
        52 + attrs.len() as u32
    } else {
        0
    }));
    elf.extend_from_slice(&u32le(0x0500_0400)); // EABI5, hard float
    elf.extend_from_slice(&u16le(52));
    elf.extend_from_slice(&u16le(32));
    elf.extend_from_slice(&u16le(0));
    elf.extend_from_slice(&u16le(40));
    elf.extend_from_slice(&u16le(sections));
    elf.extend_from_slice(&u16le(0));
    assert_eq!(elf.len(), 52);
    elf.extend_from_slice(&attrs);
    if sections > 0 {
        elf.extend_from_slice(&[0; 40]);
        for field in [0, 0x7000_0003, 0, 0, 52, attrs.len() as u32, 0, 0, 1, 0] {
            elf.extend_from_slice(&u32le(field));
        }
    }
    elf
}

/// A 64-bit little-endian ELF header for `machine` (183 = aarch64, 62 = x86_64).
fn elf64(machine: u16) -> Vec<u8> {
    let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    elf.extend_from_slice(&u16le(2));
    elf.extend_from_slice(&u16le(machine));
    elf.resize(64, 0);
    elf
}

/// Writes `bytes` as `name` in `dir`, for the shell functions that take a binary's path.
fn binary_file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> String {
    let path = dir.path().join(name);
    fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn the_binarys_architecture_is_read_from_its_elf_header() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| binary_file(&dir, name, bytes);
    for (name, bytes, arch) in [
        ("armv6", arm_elf(Some(6)), "armv6"),
        ("armv6kz", arm_elf(Some(7)), "armv6"),
        ("armv6t2", arm_elf(Some(8)), "armv6t2"),
        ("armv7", arm_elf(Some(10)), "armv7"),
        ("armv8", arm_elf(Some(14)), "armv8-32"),
        ("arm-unknown", arm_elf(None), "arm"),
        ("aarch64", elf64(183), "aarch64"),
        ("x86_64", elf64(62), "x86_64"),
    ] {
        let run = call("", "elf_arch", &[&file(name, &bytes)]);
        assert_eq!(run.code, 0, "{name}: {}", run.text);
        run.says(&format!("--- stdout\n{arch}--- stderr"));
    }
    assert_eq!(
        call(
            "",
            "elf_arch",
            &[&file("text", b"#!/bin/sh\necho not elf\n")]
        )
        .code,
        1
    );
    // The real build is for this machine.
    let machine = String::from_utf8(Command::new("uname").arg("-m").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    if machine == "x86_64" || machine == "aarch64" {
        call("", "elf_arch", &[BIN]).says(&format!("--- stdout\n{machine}--- stderr"));
    }
}

#[test]
fn a_binary_for_another_cpu_is_refused_with_what_to_build_instead() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| binary_file(&dir, name, bytes);
    let v6 = file("v6", &arm_elf(Some(7)));
    let v7 = file("v7", &arm_elf(Some(10)));
    let unknown_arm = file("arm", &arm_elf(None));
    let aarch64 = file("aarch64", &elf64(183));
    let x86 = file("x86_64", &elf64(62));
    let not_elf = file("script", b"#!/bin/sh\n");

    // Fits: (binary, uname -m, dpkg --print-architecture).
    for (binary, machine, userland) in [
        (&v6, "armv6l", "armhf"),
        (&v6, "armv7l", "armhf"),
        (&v7, "armv7l", "armhf"),
        (&v7, "aarch64", "armhf"), // 32-bit Pi OS on a 64-bit kernel (Pi 3/4/5)
        (&aarch64, "aarch64", "arm64"),
        (&x86, "x86_64", "amd64"),
    ] {
        let run = call("", "check_binary_arch", &[binary, machine, userland]);
        assert_eq!(run.code, 0, "{binary} on {machine}: {}", run.text);
    }

    // A Pi Zero (ARMv6) runs no ARMv7 code: it dies with "Illegal instruction".
    let run = call("", "check_binary_arch", &[&v7, "armv6l", "armhf"]);
    assert_eq!(run.code, 1, "{}", run.text);
    run.says("built for armv7")
        .says("ARMv6 machine")
        .says("Raspberry Pi Zero")
        .says("Illegal instruction")
        .says("arm-unknown-linux-gnueabihf");
    let run = call("", "check_binary_arch", &[&unknown_arm, "armv6l", "armhf"]);
    assert_eq!(run.code, 1, "{}", run.text);
    run.says("cannot be read").says("--force");
    assert_eq!(
        call(
            "FORCE=1;",
            "check_binary_arch",
            &[&unknown_arm, "armv6l", "armhf"]
        )
        .code,
        0
    );

    for (binary, machine, userland, says) in [
        (&aarch64, "armv7l", "armhf", "armv7-unknown-linux-gnueabihf"),
        (
            &aarch64,
            "aarch64",
            "armhf",
            "32-bit (armhf) Raspberry Pi OS",
        ),
        (&v7, "aarch64", "arm64", "aarch64-unknown-linux-gnu"),
        (&aarch64, "x86_64", "amd64", "x86_64-unknown-linux-gnu"),
        (&x86, "aarch64", "arm64", "built for x86_64"),
        (&not_elf, "x86_64", "amd64", "not a Linux executable"),
        (&x86, "riscv64", "riscv64", "not supported"),
    ] {
        let run = call("", "check_binary_arch", &[binary, machine, userland]);
        assert_eq!(run.code, 1, "{binary} on {machine}: {}", run.text);
        run.says(says);
    }

    // And the real build refused on a Pi Zero, end to end through install.sh's own check.
    let run = call("", "check_binary_arch", &[BIN, "armv6l", "armhf"]);
    assert_eq!(run.code, 1, "{}", run.text);
    run.says("ARMv6 machine");
}
