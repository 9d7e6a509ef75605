//! The files under `packaging/`: the commented default config (it parses, means exactly the
//! built-in defaults, and shows every key `src/config.rs` accepts with its true default), the
//! sysusers and tmpfiles rules (the layout the service checks; applied with the real tools when
//! they are here), and the `cargo deb` metadata with its maintainer scripts.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use update_coordinator::config::{self, Config};

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

/// Every key the config accepts, read from the `Raw*` structs of `src/config.rs`, as dotted
/// paths with `*` for a component name: `spool.root`, `components.*.timeouts.update`, ...
fn keys_accepted_by_src_config_rs() -> BTreeSet<String> {
    let mut keys = keys_accepted_by_src_config_rs_with_drop_boxes();
    // Drop boxes exist only when configured: the packaged config shows an indented example
    // (see `the_packaged_config_shows_a_drop_box_example`).
    keys.retain(|key| !key.starts_with("spools."));
    keys
}

fn keys_accepted_by_src_config_rs_with_drop_boxes() -> BTreeSet<String> {
    let source = read("src/config.rs");
    let fields_of = |name: &str| -> Vec<(String, String)> {
        let start = source
            .find(&format!("struct {name} {{"))
            .unwrap_or_else(|| panic!("src/config.rs has no struct {name}"));
        let body = &source[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find('}').unwrap()];
        body.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with('#'))
            .map(|l| {
                let (field, ty) = l.trim_end_matches(',').split_once(':').unwrap();
                (field.trim().to_owned(), ty.trim().to_owned())
            })
            .collect()
    };
    fn walk(
        fields_of: &dyn Fn(&str) -> Vec<(String, String)>,
        name: &str,
        prefix: &str,
        out: &mut BTreeSet<String>,
    ) {
        for (field, ty) in fields_of(name) {
            let inner = ty
                .strip_prefix("Option<")
                .and_then(|t| t.strip_suffix('>'))
                .unwrap_or(&ty);
            if let Some(raw) = inner
                .strip_prefix("BTreeMap<String, ")
                .and_then(|t| t.strip_suffix('>'))
            {
                walk(fields_of, raw, &format!("{prefix}{field}.*."), out);
            } else if inner.starts_with("Raw") {
                walk(fields_of, inner, &format!("{prefix}{field}."), out);
            } else {
                out.insert(format!("{prefix}{field}"));
            }
        }
    }
    let mut keys = BTreeSet::new();
    walk(&fields_of, "RawConfig", "", &mut keys);
    keys
}

#[test]
fn the_packaged_config_shows_a_drop_box_example() {
    let accepted = keys_accepted_by_src_config_rs_with_drop_boxes();
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
fn the_packaged_config_lists_every_key_src_config_rs_accepts() {
    let accepted = keys_accepted_by_src_config_rs();
    assert!(
        accepted.contains("spool.root") && accepted.contains("components.*.timeouts.health"),
        "reading src/config.rs went wrong: {accepted:?}"
    );
    let value: toml::Value = toml::from_str(&uncommented_config())
        .unwrap_or_else(|e| panic!("{CONFIG} with its settings uncommented: {}", e.message()));
    let mut shown = BTreeSet::new();
    keys_in(&value, "", &mut shown);
    let missing: Vec<_> = accepted.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "{CONFIG} does not show these settings of src/config.rs; add each, commented out, with its default: {missing:?}"
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
            let out = Command::new(tool)
                .arg(format!("--root={}", root.path().display()))
                .args(extra)
                .arg(repo().join(file))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{tool}: {}",
                String::from_utf8_lossy(&out.stderr)
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
// cargo deb

fn deb_metadata() -> toml::Value {
    let value: toml::Value = toml::from_str(&read("packaging/cargo-deb.toml"))
        .unwrap_or_else(|e| panic!("packaging/cargo-deb.toml: {e}"));
    value["package"]["metadata"]["deb"].clone()
}

/// Files matching a cargo-deb source pattern (only `*` within one path component).
fn glob(pattern: &str) -> Vec<PathBuf> {
    let mut found = vec![repo()];
    for part in pattern.split('/') {
        let mut next = Vec::new();
        for dir in found {
            if let Some((before, after)) = part.split_once('*') {
                if let Ok(entries) = fs::read_dir(&dir) {
                    for entry in entries {
                        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                        if name.starts_with(before) && name.ends_with(after) {
                            next.push(dir.join(name));
                        }
                    }
                }
            } else {
                next.push(dir.join(part));
            }
        }
        found = next;
    }
    found.into_iter().filter(|p| p.is_file()).collect()
}

#[test]
fn the_cargo_deb_metadata_ships_every_file_install_sh_installs() {
    let deb = deb_metadata();
    assert_eq!(
        deb["maintainer-scripts"].as_str(),
        Some("packaging/debian/")
    );
    assert_eq!(deb["systemd-units"]["enable"].as_bool(), Some(true));
    assert_eq!(deb["systemd-units"]["start"].as_bool(), Some(true));
    let mut destinations = Vec::new();
    for asset in deb["assets"].as_array().expect("assets") {
        let (source, dest) = match asset {
            toml::Value::Array(a) => (a[0].as_str().unwrap(), a[1].as_str().unwrap()),
            toml::Value::Table(t) => (t["source"].as_str().unwrap(), t["dest"].as_str().unwrap()),
            other => panic!("an asset is neither an array nor a table: {other}"),
        };
        destinations.push(dest.to_owned());
        if source.starts_with("target/release/") {
            continue; // built by cargo deb
        }
        if source.contains('*') {
            assert!(!glob(source).is_empty(), "asset {source} matches no file");
        } else {
            assert!(
                repo().join(source).is_file(),
                "asset {source} does not exist"
            );
        }
    }
    for wanted in [
        "usr/bin/",
        "usr/lib/systemd/system/",
        "usr/lib/sysusers.d/",
        "usr/lib/tmpfiles.d/",
        "etc/dunebugger/",
        "usr/share/update-coordinator/component-scripts/",
    ] {
        assert!(
            destinations.iter().any(|d| d == wanted),
            "no asset goes to {wanted}: {destinations:?}"
        );
    }
}

#[test]
fn the_debs_drop_in_points_the_unit_at_usr_bin() {
    let unit = read("systemd/dunebugger-update-coordinator.service");
    let shipped: Vec<&str> = unit
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(
        shipped,
        ["ExecStart=/usr/local/bin/update-coordinator run"],
        "the unit's ExecStart changed: update packaging/debian/10-usr-bin.conf and install.sh"
    );
    let drop_in = read("packaging/debian/10-usr-bin.conf");
    let lines: Vec<&str> = drop_in
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines,
        [
            "[Service]",
            "ExecStart=",
            "ExecStart=/usr/bin/update-coordinator run"
        ]
    );
}

#[test]
fn the_maintainer_scripts_are_valid_sh_with_one_debhelper_token() {
    for script in ["packaging/debian/postinst", "packaging/debian/postrm"] {
        let text = read(script);
        // cargo-deb replaces the token everywhere, comments included.
        assert_eq!(
            text.matches("#DEBHELPER#").count(),
            1,
            "{script}: the token must appear exactly once"
        );
        assert!(text.lines().any(|l| l == "#DEBHELPER#"), "{script}");
        assert_ne!(
            fs::metadata(repo().join(script))
                .unwrap()
                .permissions()
                .mode()
                & 0o111,
            0,
            "{script} must be executable"
        );
        let out = Command::new("sh")
            .arg("-n")
            .arg(repo().join(script))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The postinst with its fixed paths moved into `root`, so it can run here.
fn relocated_postinst(root: &Path) -> PathBuf {
    let text = read("packaging/debian/postinst")
        .replace(
            "/usr/share/update-coordinator/component-scripts",
            &root.join("shipped").display().to_string(),
        )
        .replace(
            "TARGET=/opt/dunebugger",
            &format!("TARGET={}", root.join("opt").display()),
        );
    let path = root.join("postinst");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_debs_postinst_applies_the_rules_and_copies_scripts_only_where_absent() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    // The package's copy of component-scripts/ (as the cargo-deb glob ships it).
    for file in glob("component-scripts/*/*") {
        let rel = file.strip_prefix(repo().join("component-scripts")).unwrap();
        let dest = root.join("shipped").join(rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&file, &dest).unwrap();
    }
    let fake_bin = root.join("bin");
    fs::create_dir(&fake_bin).unwrap();
    let log = root.join("calls.log");
    for tool in ["systemd-sysusers", "systemd-tmpfiles"] {
        let stub = fake_bin.join(tool);
        fs::write(
            &stub,
            format!("#!/bin/sh\necho \"{tool} $*\" >>'{}'\n", log.display()),
        )
        .unwrap();
        fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let postinst = relocated_postinst(root);
    let run = || {
        let out = Command::new("sh")
            .arg(&postinst)
            .arg("configure")
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    fake_bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "postinst failed:\n{text}");
        text
    };
    run();
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "systemd-sysusers update-coordinator.conf\nsystemd-tmpfiles --create update-coordinator.conf\n"
    );
    let opt = root.join("opt");
    let remote = opt.join("remote");
    if repo().join("component-scripts/remote/update.sh").is_file() {
        for (file, mode) in [
            ("update.sh", 0o755),
            ("rollback.sh", 0o755),
            ("health-check.sh", 0o755),
        ] {
            let path = remote.join(file);
            assert_eq!(
                fs::metadata(&path)
                    .map(|m| m.permissions().mode() & 0o7777)
                    .ok(),
                Some(mode),
                "{}",
                path.display()
            );
        }
    }
    // No self-update scripts: the package manager owns the binary.
    assert!(!opt.join("coordinator").exists());
    assert!(!opt.join("lib").exists());

    // An operator's change survives the next configure (an upgrade).
    let changed = remote.join("update.sh");
    if changed.is_file() {
        fs::write(&changed, "#!/bin/sh\necho mine\n").unwrap();
        let text = run();
        assert_eq!(
            fs::read_to_string(&changed).unwrap(),
            "#!/bin/sh\necho mine\n"
        );
        assert!(text.contains("kept"), "{text}");
    }
}
