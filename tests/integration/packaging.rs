//! The files under `packaging/`: the commented default config (it parses, means exactly the
//! built-in defaults, and shows every key `config::accepted_keys` lists with its true default), the
//! sysusers and tmpfiles rules (the layout the service checks; applied with the real tools when
//! they are here), and the `cargo deb` metadata with its maintainer scripts.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use update_coordinator::config::{self, Config};

use crate::support::{assert_contains_all, stdout_of};

const BIN: &str = env!("CARGO_BIN_EXE_update-coordinator");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

const CONFIG: &str = "packaging/update-coordinator.toml";

/// The packaged config with every setting uncommented: lines `#key = value` and `#[table]`
/// (a `#` directly followed by the setting) are settings; `# text` is explanation.
fn uncommented_config() -> String {
    read(CONFIG)
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest)
                if rest.starts_with('[')
                    || rest
                        .split_once(" = ")
                        .is_some_and(|(key, _)| is_bare_key(key)) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[test]
fn the_packaged_config_as_shipped_means_exactly_the_built_in_defaults() {
    let loaded = Config::load(&repo().join(CONFIG)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        format!("{loaded:#?}"),
        format!("{:#?}", Config::defaults()),
        "{CONFIG} must change nothing until a setting is uncommented"
    );
}

#[test]
fn every_setting_of_the_packaged_config_shows_its_true_default() {
    let text = uncommented_config();
    let uncommented = Config::from_toml(&text, Path::new("/etc/dunebugger"))
        .unwrap_or_else(|e| panic!("{CONFIG} with its settings uncommented: {e}\n{text}"));
    assert_eq!(
        format!("{uncommented:#?}"),
        format!("{:#?}", Config::defaults()),
        "a value shown in {CONFIG} is not the built-in default"
    );
}

/// Every key the config accepts (from the library's own raw config types), as dotted paths
/// with `*` for a component name: `spool.root`, `components.*.timeouts.update`, ...
fn keys_accepted_by_the_config() -> BTreeSet<String> {
    let mut keys = config::accepted_keys();
    // Drop boxes exist only when configured: the packaged config shows an indented example
    // (see `the_packaged_config_shows_a_drop_box_example`).
    keys.retain(|key| !key.starts_with("spools."));
    // So does fleet coordination (see `the_packaged_config_shows_a_fleet_example`).
    keys.retain(|key| !key.starts_with("fleet."));
    keys
}

#[test]
fn the_packaged_config_shows_a_fleet_example() {
    let text = read(CONFIG);
    let example: String = text
        .lines()
        .skip_while(|l| *l != "#   [fleet]")
        .map_while(|l| l.strip_prefix("#   "))
        .collect::<Vec<_>>()
        .join("\n");
    for key in config::accepted_keys()
        .iter()
        .filter_map(|k| k.strip_prefix("fleet."))
    {
        assert!(
            example.lines().any(|l| l.starts_with(&format!("{key} = "))),
            "{CONFIG}: the [fleet] example does not show {key}"
        );
    }
    // The example is valid as it stands.
    let config =
        Config::from_toml(&example, Path::new("/")).unwrap_or_else(|e| panic!("{example}: {e}"));
    assert!(config.fleet.is_some(), "{example}");
}

#[test]
fn the_packaged_config_shows_a_drop_box_example() {
    let accepted = config::accepted_keys();
    let text = read(CONFIG);
    for key in accepted.iter().filter_map(|k| k.strip_prefix("spools.*.")) {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("#   {key} = "))),
            "{CONFIG}: the [spools.NAME] example does not show {key}"
        );
    }
    // The example is valid as it stands.
    let example: String = text
        .lines()
        .skip_while(|l| !l.starts_with("#   [spools."))
        .map_while(|l| l.strip_prefix("#   "))
        .collect::<Vec<_>>()
        .join("\n");
    Config::from_toml(&example, Path::new("/")).unwrap_or_else(|e| panic!("{example}: {e}"));
}

fn keys_in(value: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let toml::Value::Table(table) = value {
        for (key, value) in table {
            let path = if prefix == "components." {
                format!("{prefix}*")
            } else {
                format!("{prefix}{key}")
            };
            match value {
                toml::Value::Table(_) => keys_in(value, &format!("{path}."), out),
                _ => {
                    out.insert(path);
                }
            }
        }
    }
}

#[test]
fn the_packaged_config_lists_every_key_the_config_accepts() {
    let accepted = keys_accepted_by_the_config();
    assert!(
        accepted.contains("spool.root") && accepted.contains("components.*.timeouts.health"),
        "config::accepted_keys went wrong: {accepted:?}"
    );
    let value: toml::Value = toml::from_str(&uncommented_config())
        .unwrap_or_else(|e| panic!("{CONFIG} with its settings uncommented: {}", e.message()));
    let mut shown = BTreeSet::new();
    keys_in(&value, "", &mut shown);
    let missing: Vec<_> = accepted.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "{CONFIG} does not show these settings the config accepts; add each, commented out, with its default: {missing:?}"
    );
    let unknown: Vec<_> = shown.difference(&accepted).collect();
    assert!(
        unknown.is_empty(),
        "{CONFIG} shows unknown keys: {unknown:?}"
    );
    // Each component the defaults have is shown, so uncommenting one table keeps them all.
    for name in config::DEFAULT_COMPONENTS {
        assert!(
            read(CONFIG).contains(&format!("#[components.{name}]\n")),
            "{CONFIG} does not show [components.{name}]"
        );
    }
}

#[test]
fn check_with_the_packaged_config_finds_only_what_this_machine_lacks() {
    let out = Command::new(BIN)
        .args(["check", "--json", "--config"])
        .arg(repo().join(CONFIG))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "check --json printed no JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}: {report:#}",
        out.status
    );
    let findings = report["findings"].as_array().expect("findings");
    let config_finding = findings
        .iter()
        .find(|f| f["area"] == "config")
        .expect("a config finding");
    assert_eq!(config_finding["ok"], true, "{report:#}");
    // Anything else may be missing here (group, spool, scripts, systemd): never the config.
    for finding in findings.iter().filter(|f| f["ok"] == false) {
        let area = finding["area"].as_str().unwrap_or_default();
        assert!(
            ["spool", "permissions", "script", "service", "limits"].contains(&area),
            "a problem that is not about this machine: {finding:#}"
        );
    }
}

/// The non-comment lines of a sysusers.d/tmpfiles.d file, split into fields.
fn rules(rel: &str) -> Vec<Vec<String>> {
    read(rel)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn the_sysusers_and_tmpfiles_rules_are_the_layout_the_service_checks() {
    let defaults = Config::defaults();
    let group = defaults.spool_group.as_deref().unwrap();
    assert_eq!(group, config::DEFAULT_GROUP);
    assert_eq!(
        rules("packaging/sysusers.d/update-coordinator.conf"),
        [["g", group, "-"]]
    );
    let path = |p: PathBuf| p.display().to_string();
    assert_eq!(
        rules("packaging/tmpfiles.d/update-coordinator.conf"),
        [
            [
                "d",
                &path(defaults.spool_root.clone()),
                "0755",
                "root",
                "root",
                "-"
            ],
            [
                "d",
                &path(defaults.requests_dir()),
                "1730",
                "root",
                group,
                "-"
            ],
            [
                "d",
                &path(defaults.status_dir()),
                "1730",
                "root",
                group,
                "-"
            ],
        ]
    );
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_real_systemd_tools_create_that_layout_from_the_rules() {
    if !nix::unistd::geteuid().is_root() || !have("systemd-sysusers") || !have("systemd-tmpfiles") {
        eprintln!("skipped: needs root, systemd-sysusers and systemd-tmpfiles");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("etc")).unwrap();
    for (tool, file, extra) in [
        (
            "systemd-sysusers",
            "packaging/sysusers.d/update-coordinator.conf",
            None,
        ),
        (
            "systemd-tmpfiles",
            "packaging/tmpfiles.d/update-coordinator.conf",
            Some("--create"),
        ),
    ] {
        // Twice: applying the rules again changes nothing and fails on nothing.
        for _ in 0..2 {
            stdout_of(
                Command::new(tool)
                    .arg(format!("--root={}", root.path().display()))
                    .args(extra)
                    .arg(repo().join(file)),
            );
        }
    }
    let groups = fs::read_to_string(root.path().join("etc/group")).unwrap();
    let gid: u32 = groups
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{}:x:", config::DEFAULT_GROUP)))
        .and_then(|rest| rest.split(':').next())
        .and_then(|gid| gid.parse().ok())
        .unwrap_or_else(|| panic!("no group in:\n{groups}"));
    let defaults = Config::defaults();
    let inside = |p: &Path| root.path().join(p.strip_prefix("/").unwrap());
    for (dir, mode, group) in [
        (defaults.spool_root.clone(), 0o755, 0),
        (defaults.requests_dir(), 0o1730, gid),
        (defaults.status_dir(), 0o1730, gid),
    ] {
        let meta = fs::metadata(inside(&dir)).unwrap();
        assert_eq!(
            (meta.permissions().mode() & 0o7777, meta.uid(), meta.gid()),
            (mode, 0, group),
            "{}",
            dir.display()
        );
    }
    // A spool left with a wrong layout is put right by the next run (as at every boot).
    let requests = inside(&defaults.requests_dir());
    fs::set_permissions(&requests, fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", root.path().display()))
        .arg("--create")
        .arg(repo().join("packaging/tmpfiles.d/update-coordinator.conf"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        fs::metadata(&requests).unwrap().permissions().mode() & 0o7777,
        0o1730
    );
}

// ---------------------------------------------------------------------------------------------
// packaging/files, packaging/release.sh and the .deb

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The lines of packaging/files: [role, mode, source, destination].
fn manifest() -> Vec<[String; 4]> {
    read("packaging/files")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(
                f.len(),
                4,
                "packaging/files: not ROLE MODE SOURCE DESTINATION: {l}"
            );
            [0, 1, 2, 3].map(|i| f[i].to_owned())
        })
        .collect()
}

/// The destination of each line of `role`, for the .deb's layout.
fn package_dests(role: &str) -> Vec<String> {
    manifest()
        .into_iter()
        .filter(|[r, ..]| r == role)
        .map(|[_, _, _, d]| {
            d.replace("{bindir}", "/usr/bin")
                .replace("{datadir}", "/usr/share")
                .replace("{unitdir}", "/usr/lib/systemd/system")
                .replace("{libdir}", "/usr/lib")
        })
        .collect()
}

/// packaging/release.sh for amd64 with this build (no compression: a debug build is large),
/// run once per test run; returns its dist directory.
fn release_amd64() -> &'static Path {
    static DIST: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIST.get_or_init(|| {
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaging-release");
        let _ = fs::remove_dir_all(&target_dir);
        stdout_of(
            Command::new("bash")
                .arg(repo().join("packaging/release.sh"))
                .args(["--arch", "amd64", "--no-setup", "--compress", "none"])
                .arg("--binary")
                .arg(format!("amd64={BIN}"))
                .env("CARGO_TARGET_DIR", &target_dir),
        );
        target_dir.join("dist")
    })
}

/// The .deb of release_amd64.
fn amd64_deb() -> PathBuf {
    release_amd64().join(format!("update-coordinator_{VERSION}_amd64.deb"))
}

/// Every file (not directory) under `root`, as absolute paths inside it.
fn files_under(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.insert(format!("/{}", path.strip_prefix(root).unwrap().display()));
            }
        }
    }
    let mut out = BTreeSet::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}

fn lay_out_with_install_sh(root: &Path, args: &[&str]) {
    stdout_of(
        Command::new("bash")
            .arg(repo().join("install.sh"))
            .args(["--binary", BIN])
            .args(args)
            .env("DESTDIR", root)
            .env("PREFIX", "/usr")
            .env_remove("CARGO_TARGET_DIR"),
    );
}

#[test]
fn the_deb_ships_every_file_install_sh_installs_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let deb = amd64_deb();
    let unpacked = tmp.path().join("deb");
    stdout_of(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
    let in_deb = files_under(&unpacked);

    // What install.sh installs on a host, laid out with the package's prefix.
    let host = tmp.path().join("host");
    lay_out_with_install_sh(&host, &[]);
    let installed = files_under(&host);
    let kit = "/usr/share/update-coordinator/component-scripts";
    let mut checked = 0;
    for path in &installed {
        if let Some(rel) = path.strip_prefix("/opt/dunebugger/") {
            // The component scripts: the .deb carries them in its kit, and its postinst (the
            // same install.sh) copies them to /opt/dunebugger. Skipped: install.sh's record of
            // what it installed (written on the host), and the self-update component, which a
            // package does not install (the package manager owns the binary).
            let (component, file) = rel.split_once('/').unwrap();
            if file == ".install.sha256" || component == "coordinator" {
                continue;
            }
            // A Docker Compose service's scripts are those they all share, and its
            // component.conf is compose-service/NAME.conf.
            let shipped = [
                format!("{kit}/{component}/{file}"),
                format!("{kit}/lib/{file}"),
                match file {
                    "component.conf" => format!("{kit}/compose-service/{component}.conf"),
                    _ => format!("{kit}/compose-service/{file}"),
                },
            ];
            assert!(
                shipped.iter().any(|s| in_deb.contains(s)),
                "{path} (installed by install.sh) is not in the .deb's kit: {shipped:?}"
            );
            continue;
        }
        assert!(
            in_deb.contains(path),
            "{path} (installed by install.sh) is not in the .deb"
        );
        let (a, b) = (
            fs::read(host.join(&path[1..])).unwrap(),
            fs::read(unpacked.join(&path[1..])).unwrap(),
        );
        assert!(a == b, "{path} differs between install.sh and the .deb");
        assert_eq!(
            fs::metadata(host.join(&path[1..]))
                .unwrap()
                .permissions()
                .mode(),
            fs::metadata(unpacked.join(&path[1..]))
                .unwrap()
                .permissions()
                .mode(),
            "{path}: mode"
        );
        checked += 1;
    }
    assert!(checked >= 9, "too few files compared: {installed:?}");
    // And the .deb holds nothing else but its kit and docs (packaging/files says so).
    let mut extra_allowed: Vec<String> = package_dests("kit");
    extra_allowed.extend(package_dests("doc"));
    for path in &in_deb {
        assert!(
            installed.contains(path) || extra_allowed.iter().any(|k| path.starts_with(k.as_str())),
            "{path} is in the .deb, but neither install.sh installs it nor packaging/files names it"
        );
    }
    // The unit runs the package's binary.
    let unit = fs::read_to_string(
        unpacked.join("usr/lib/systemd/system/dunebugger-update-coordinator.service"),
    )
    .unwrap();
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/bin/update-coordinator run"),
        "{unit}"
    );
}

/// A member of the .deb's control archive.
fn control_member(deb: &Path, name: &str) -> String {
    stdout_of(Command::new("dpkg-deb").arg("--info").arg(deb).arg(name))
}

#[test]
fn the_debs_control_files_follow_packaging_files() {
    let dist = release_amd64();
    let deb = amd64_deb();
    // The config is a conffile: dpkg keeps local changes.
    assert_eq!(
        control_member(&deb, "conffiles")
            .lines()
            .collect::<Vec<_>>(),
        package_dests("config")
    );
    // Purge removes exactly what `install.sh --purge` removes.
    let postrm = control_member(&deb, "postrm");
    let rm = postrm
        .lines()
        .find_map(|l| l.trim().strip_prefix("rm -rf -- "))
        .unwrap_or_else(|| panic!("no rm -rf line in postrm:\n{postrm}"));
    assert_eq!(rm.split(' ').collect::<Vec<_>>(), package_dests("purge"));
    // The postinst finishes the install with the packaged install.sh.
    let install_sh = package_dests("kit")
        .into_iter()
        .find(|d| d.ends_with("/install.sh"))
        .unwrap();
    assert!(
        control_member(&deb, "postinst")
            .contains(&format!("bash {install_sh} --configure-package")),
        "the postinst does not run {install_sh}"
    );
    let control = control_member(&deb, "control");
    assert_contains_all(
        "the control file",
        &control,
        &[
            "Package: update-coordinator",
            "Architecture: amd64",
            &format!("Version: {VERSION}\n"),
            "Depends: libc6 (>= 2.",
            "systemd (>= 252)",
        ],
    );
    // SHA256SUMS covers the .deb and the tarball, and is right.
    let sums = fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    assert!(
        sums.contains("_amd64.deb") && sums.contains("-amd64.tar.gz"),
        "{sums}"
    );
    stdout_of(
        Command::new("sha256sum")
            .arg("-c")
            .arg("SHA256SUMS")
            .current_dir(dist),
    );
}

#[test]
fn install_sh_installs_from_the_release_tarball() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = release_amd64().join(format!("update-coordinator-{VERSION}-amd64.tar.gz"));
    let root = tmp.path().join("root");
    // The tarball's own install.sh lays out its own binary (DESTDIR passes through).
    let out = stdout_of(
        Command::new("bash")
            .arg(repo().join("install.sh"))
            .arg("--package")
            .arg(&tarball)
            .env("DESTDIR", &root)
            .env_remove("PREFIX"),
    );
    assert!(
        out.contains("the build next to install.sh") || out.contains("its own install.sh"),
        "{out}"
    );
    assert_eq!(
        fs::read(root.join("usr/local/bin/update-coordinator")).unwrap(),
        fs::read(BIN).unwrap()
    );
    for path in [
        "usr/lib/systemd/system/dunebugger-update-coordinator.service",
        "etc/dunebugger/update-coordinator.toml",
        "opt/dunebugger/remote/update.sh",
    ] {
        assert!(
            root.join(path).is_file(),
            "{path} missing after installing the tarball:\n{out}"
        );
    }
}

#[test]
fn release_sh_refuses_a_binary_for_the_wrong_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(repo().join("packaging/release.sh"))
        .args(["--arch", "arm64", "--no-setup", "--compress", "none"])
        .arg("--binary")
        .arg(format!("arm64={BIN}"))
        .env("CARGO_TARGET_DIR", tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("built for x86_64, not aarch64"), "{text}");
    assert!(
        !tmp.path()
            .join(format!("dist/update-coordinator_{VERSION}_arm64.deb"))
            .exists()
    );
}

/// Runs `FUNCTION ARGS...` of install.sh in a shell that sourced it.
fn install_sh_function(function: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg("source \"$1\"; shift; PACKAGE=the.deb; \"$@\"")
        .arg("install.sh")
        .arg(repo().join("install.sh"))
        .arg(function)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn install_sh_refuses_a_deb_for_another_architecture_and_explains_armv6() {
    assert!(install_sh_function("check_package", &["arm64", "arm64", "aarch64"]).0);
    assert!(install_sh_function("check_package", &["armhf", "armhf", "aarch64"]).0);
    let (ok, text) = install_sh_function("check_package", &["arm64", "armhf", "armv7l"]);
    assert!(!ok);
    assert!(
        text.contains("built for arm64, but this system is armhf"),
        "{text}"
    );
    assert!(
        text.contains("update-coordinator_VERSION_armhf.deb"),
        "{text}"
    );
    // A Pi Zero/1 runs armhf Raspberry Pi OS, but the armhf package is ARMv7.
    let (ok, text) = install_sh_function("check_package", &["armhf", "armhf", "armv6l"]);
    assert!(!ok);
    for said in [
        "ARMv6",
        "Illegal instruction",
        "arm-unknown-linux-gnueabihf",
        "cross build",
        "--binary",
    ] {
        assert!(text.contains(said), "{said:?} not in:\n{text}");
    }
}

#[test]
fn the_maintainer_scripts_are_valid_sh() {
    for script in [
        "packaging/debian/postinst",
        "packaging/debian/prerm",
        "packaging/debian/postrm",
    ] {
        assert_ne!(
            fs::metadata(repo().join(script))
                .unwrap()
                .permissions()
                .mode()
                & 0o111,
            0,
            "{script} must be executable"
        );
        stdout_of(Command::new("sh").arg("-n").arg(repo().join(script)));
    }
    assert_eq!(
        read("packaging/debian/postrm")
            .matches("@PURGE_PATHS@")
            .count(),
        1
    );
}
