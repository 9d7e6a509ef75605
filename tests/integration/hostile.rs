//! A hostile spool: everything a compromised container could drop into `requests/` (or plant
//! in `status/`), one test per case. Each checks the status `code`, that nothing outside the
//! spool was written, and that the service still answers.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::{
    Service, Spool, assert_message_says, files_outside_spool, new_id, path_str, wait_until,
};

/// A valid request is still answered: the service is up and not stuck.
fn assert_still_answering(spool: &Spool) {
    let id = spool.submit("core", "health", None);
    assert_eq!(
        spool.wait_final(&id)["success"],
        true,
        "the service must keep answering"
    );
}

/// Installs `component/name` as a script that only touches `evidence/ran`: whether it ran is
/// whether that file exists.
fn script_that_marks_it_ran(spool: &Spool, component: &str, name: &str) {
    let ran = spool.evidence().join("ran");
    spool.script(component, name, &format!("touch {}", path_str(&ran)));
}

/// Runs `attack` against a fresh service and checks the common invariants; returns the spool.
fn under_attack(setup: impl FnOnce(&mut Spool), attack: impl FnOnce(&Spool)) -> (Spool, Service) {
    let mut spool = Spool::new();
    setup(&mut spool);
    spool.create_dirs();
    let secret = spool.dir.path().join("secret");
    fs::write(&secret, "root:$6$hash:19000:0:99999:7:::\n").unwrap();
    let service = Service::start(&spool);
    let before = files_outside_spool(&spool);
    attack(&spool);
    assert_still_answering(&spool);
    assert_eq!(
        files_outside_spool(&spool),
        before,
        "nothing outside the spool may change"
    );
    let service_pid = service.pid() as i32;
    wait_until("no script or monitor left running", || {
        crate::support::processes_mentioning(spool.dir.path())
            .iter()
            .all(|(pid, _)| *pid == service_pid)
    });
    (spool, service)
}

fn code_of(spool: &Spool, id: &str) -> String {
    spool.wait_final(id)["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_symlink_to_a_secret_is_refused_unread_and_removed() {
    under_attack(
        |_| {},
        |spool| {
            std::os::unix::fs::symlink(
                spool.dir.path().join("secret"),
                spool.requests().join("link-1.json"),
            )
            .unwrap();
            let status = spool.wait_final("link-1");
            assert_eq!(status["code"], "not_a_regular_file");
            assert!(
                !status.to_string().contains("19000"),
                "the secret was not read"
            );
            wait_until("symlink removed", || {
                !spool.requests().join("link-1.json").exists()
            });
            assert!(
                spool.dir.path().join("secret").exists(),
                "the target is untouched"
            );
        },
    );
}

#[test]
fn a_hard_link_to_a_secret_is_refused_and_only_the_link_removed() {
    under_attack(
        |_| {},
        |spool| {
            // Hard links across directories need the same filesystem: both are in the temp dir.
            fs::hard_link(
                spool.dir.path().join("secret"),
                spool.requests().join("hard-1.json"),
            )
            .unwrap();
            assert_eq!(code_of(spool, "hard-1"), "not_a_regular_file");
            wait_until("link removed", || {
                !spool.requests().join("hard-1.json").exists()
            });
            assert_eq!(
                fs::read_to_string(spool.dir.path().join("secret"))
                    .unwrap()
                    .len(),
                32
            );
        },
    );
}

#[test]
fn a_fifo_does_not_hang_the_service() {
    under_attack(
        |_| {},
        |spool| {
            nix::unistd::mkfifo(
                &spool.requests().join("fifo-1.json"),
                nix::sys::stat::Mode::from_bits_truncate(0o666),
            )
            .unwrap();
            // mkfifo sends no close-write; a rename into place does.
            nix::unistd::mkfifo(
                &spool.requests().join(".fifo-2"),
                nix::sys::stat::Mode::from_bits_truncate(0o666),
            )
            .unwrap();
            fs::rename(
                spool.requests().join(".fifo-2"),
                spool.requests().join("fifo-2.json"),
            )
            .unwrap();
            assert_eq!(code_of(spool, "fifo-2"), "not_a_regular_file");
        },
    );
}

#[test]
fn a_socket_and_a_directory_named_like_requests_are_refused_and_cleared() {
    let (spool, _service) = under_attack(
        |_| {},
        |spool| {
            let tmp_sock = spool.requests().join(".sock");
            let _listener = std::os::unix::net::UnixListener::bind(&tmp_sock).unwrap();
            fs::rename(&tmp_sock, spool.requests().join("sock-1.json")).unwrap();
            assert_eq!(code_of(spool, "sock-1"), "not_a_regular_file");
            fs::create_dir_all(spool.requests().join(".d/inner")).unwrap();
            fs::write(spool.requests().join(".d/inner/file"), "x").unwrap();
            fs::rename(
                spool.requests().join(".d"),
                spool.requests().join("dir-1.json"),
            )
            .unwrap();
            assert_eq!(code_of(spool, "dir-1"), "not_a_regular_file");
            wait_until("directory moved away", || {
                !spool.requests().join("dir-1.json").exists()
            });
        },
    );
    let quarantined: Vec<_> = fs::read_dir(spool.root().join("quarantine"))
        .unwrap()
        .collect();
    assert_eq!(
        quarantined.len(),
        1,
        "the directory is kept for an administrator, out of the way"
    );
}

#[test]
fn an_oversized_file_is_refused_without_being_read() {
    under_attack(
        |_| {},
        |spool| {
            let mut big = Spool::request_json("big-1", "core", "health", None);
            big.push_str(&" ".repeat(1024 * 1024));
            spool.drop_in_place("big-1", &big);
            let status = spool.wait_final("big-1");
            assert_eq!(status["code"], "too_large");
            assert_message_says(&status, "65536");
        },
    );
}

#[test]
fn files_from_writers_outside_the_allow_list_are_refused() {
    let me = nix::unistd::geteuid().as_raw();
    let stranger = me + 4242;
    if me != 0 {
        // Without root a test cannot create a file owned by someone else: refuse our own
        // files instead (the service cannot be checked for still answering then).
        let mut spool = Spool::new();
        spool.set("spool", &format!("allowed_uids = [{stranger}]"));
        let _service = Service::start(&spool);
        let id = spool.submit("core", "health", None);
        assert_eq!(code_of(&spool, &id), "writer_not_allowed");
        return;
    }
    under_attack(
        |spool| {
            spool.set(
                "spool",
                &format!("allowed_uids = [{me}]\nallowed_gids = []"),
            )
        },
        |spool| {
            // Written as a stranger would: owned by their uid, then renamed into place.
            let id = new_id();
            let tmp = spool.requests().join(format!(".{id}"));
            fs::write(&tmp, Spool::request_json(&id, "core", "health", None)).unwrap();
            nix::unistd::chown(&tmp, Some(nix::unistd::Uid::from_raw(stranger)), None).unwrap();
            fs::rename(&tmp, spool.requests().join(format!("{id}.json"))).unwrap();
            let status = spool.wait_final(&id);
            assert_eq!(status["code"], "writer_not_allowed");
            assert_message_says(&status, &stranger.to_string());
        },
    );
}

#[test]
fn path_traversal_in_ids_components_and_names_goes_nowhere() {
    under_attack(
        |_| {},
        |spool| {
            spool.drop_in_place(
                "trav-1",
                r#"{"component":"core","action":"health","request_id":"../../secret"}"#,
            );
            assert_eq!(code_of(spool, "trav-1"), "invalid_request_id");
            spool.drop_in_place(
                "trav-2",
                r#"{"component":"../../bin","action":"health","request_id":"trav-2"}"#,
            );
            assert_eq!(code_of(spool, "trav-2"), "unknown_component");
            // A file name that is not a safe id, with a valid id inside.
            fs::write(
                spool.requests().join("we ird;$(x).json"),
                Spool::request_json("trav-3", "core", "health", None),
            )
            .unwrap();
            assert_eq!(code_of(spool, "trav-3"), "invalid_file_name");
            assert!(!spool.dir.path().join("secret.json").exists());
        },
    );
}

#[test]
fn a_version_that_is_really_a_command_or_an_option_is_refused() {
    let ran = std::sync::OnceLock::new();
    under_attack(
        |spool| {
            let evidence = spool.evidence().join("ran");
            let script = format!("echo \"$1\" >> {}", path_str(&evidence));
            spool.script("remote", "update.sh", &script);
            ran.set(evidence).unwrap();
        },
        |spool| {
            for (i, version) in [
                "--help",
                "1.0; touch /tmp/pwned",
                "$(reboot)",
                "1.0\n2.0",
                "../../1",
            ]
            .iter()
            .enumerate()
            {
                let id = format!("ver-{i}");
                spool.drop_in_place(
                    &id,
                    &Spool::request_json(&id, "remote", "update", Some(version)),
                );
                assert_eq!(code_of(spool, &id), "invalid_version", "{version:?}");
            }
        },
    );
    assert!(!ran.get().unwrap().exists(), "the update script never ran");
}

#[test]
fn wrong_types_and_non_utf8_names_are_handled() {
    under_attack(
        |_| {},
        |spool| {
            spool.drop_in_place(
                "types-1",
                r#"{"component":["core"],"action":"health","request_id":"types-1"}"#,
            );
            assert_eq!(code_of(spool, "types-1"), "wrong_type");
            spool.drop_in_place("types-2", "\u{0}\u{1}binary garbage");
            assert_eq!(code_of(spool, "types-2"), "invalid_json");
            use std::os::unix::ffi::OsStrExt;
            let junk = spool
                .requests()
                .join(std::ffi::OsStr::from_bytes(b"\xff\xfe.json"));
            fs::write(&junk, "{}").unwrap();
            wait_until("non-UTF-8 name removed", || !junk.exists());
        },
    );
}

#[test]
fn a_symlink_planted_at_a_status_name_is_replaced_not_written_through() {
    under_attack(
        |_| {},
        |spool| {
            let id = new_id();
            let victim = spool.dir.path().join("secret");
            std::os::unix::fs::symlink(&victim, spool.status_dir().join(format!("{id}.json")))
                .unwrap();
            // Also a planted temp-like name: exclusive create never reuses it.
            std::os::unix::fs::symlink(&victim, spool.status_dir().join(format!(".{id}.json.tmp")))
                .unwrap();
            spool.drop_in_place(&id, &Spool::request_json(&id, "core", "health", None));
            assert_eq!(spool.wait_final(&id)["success"], true);
            let meta = fs::symlink_metadata(spool.status_dir().join(format!("{id}.json"))).unwrap();
            assert!(meta.is_file(), "a real file replaced the symlink");
        },
    );
}

#[test]
fn a_duplicate_id_while_queued_or_running_never_runs_twice() {
    under_attack(
        |spool| {
            let script = format!("{}; sleep 1", spool.record_run());
            spool.script("remote", "update.sh", &script);
        },
        |spool| {
            let id = new_id();
            let json = Spool::request_json(&id, "remote", "update", Some("1.0.0"));
            spool.drop_in_place(&id, &json);
            wait_until("running", || !spool.runs().is_empty());
            // The same id again, under another file name and under the same one.
            spool.drop_renamed("other-name", &json);
            spool.drop_renamed(&id, &json);
            let status = spool.wait_final(&id);
            assert_eq!(status["success"], true);
            wait_until("copies removed", || spool.request_files().is_empty());
            assert_eq!(spool.runs(), [id.as_str()]);
            assert!(
                spool.status("other-name").is_none(),
                "no answer under the copy's file name"
            );
        },
    );
}

#[test]
fn a_script_others_can_modify_is_not_run_and_the_status_says_why() {
    under_attack(
        |spool| {
            script_that_marks_it_ran(spool, "remote", "update.sh");
            let script = spool.dir.path().join("components/remote/update.sh");
            fs::set_permissions(&script, fs::Permissions::from_mode(0o777)).unwrap();
        },
        |spool| {
            let id = spool.submit("remote", "update", Some("1.0.0"));
            let status = spool.wait_final(&id);
            assert_eq!(status["code"], "script_untrusted");
            let message = status["message"].as_str().unwrap();
            assert!(
                message.contains("update.sh") && message.contains("writable by group or others"),
                "{message}"
            );
            assert!(
                !spool.evidence().join("ran").exists(),
                "the script did not run"
            );
        },
    );
}

#[test]
fn a_script_symlinked_out_of_its_component_directory_is_not_run() {
    under_attack(
        |spool| {
            let outside = spool.dir.path().join("outside.sh");
            fs::write(
                &outside,
                format!(
                    "#!/bin/sh\ntouch {}\n",
                    path_str(&spool.evidence().join("ran"))
                ),
            )
            .unwrap();
            fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
            let link = spool.dir.path().join("components/remote/rollback.sh");
            fs::remove_file(&link).unwrap();
            std::os::unix::fs::symlink(&outside, &link).unwrap();
        },
        |spool| {
            let id = spool.submit("remote", "rollback", None);
            let status = spool.wait_final(&id);
            assert_eq!(status["code"], "script_untrusted");
            assert_message_says(&status, "outside the component directory");
            assert!(!spool.evidence().join("ran").exists());
        },
    );
}

#[test]
fn scripts_inherit_no_descriptors_and_run_with_umask_022() {
    under_attack(
        |spool| {
            let script = format!("touch {}", path_str(&spool.evidence().join("made")));
            spool.script("core", "rollback.sh", &script);
            // No shell in between (a shell keeps descriptors of its own): ls lists the
            // descriptors it was started with, plus the one it opens for the listing.
            let ls = spool.dir.path().join("components/remote/health-check.sh");
            fs::write(&ls, "#!/bin/ls /proc/self/fd\n").unwrap();
        },
        |spool| {
            let id = spool.submit("remote", "health", None);
            let status = spool.wait_final(&id);
            let output = status["output"].as_str().unwrap();
            let fds: Vec<&str> = output
                .split_once("/proc/self/fd:\n")
                .unwrap()
                .1
                .lines()
                .collect();
            assert_eq!(
                fds,
                ["0", "1", "2", "3"],
                "only stdio and ls's own handle:\n{output}"
            );

            let id = spool.submit("core", "rollback", None);
            assert_eq!(spool.wait_final(&id)["success"], true);
            let mode = fs::metadata(spool.evidence().join("made"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o644, "umask 022");
        },
    );
}

#[test]
fn a_full_queue_refuses_more_with_queue_full() {
    under_attack(
        |spool| {
            // One writer (this test's uid) may fill the whole queue here.
            spool.set("spool", "max_queued = 2\nmax_queued_per_writer = 2");
            let script = format!(
                "touch {}; sleep 2",
                path_str(&spool.evidence().join("running"))
            );
            spool.script("remote", "update.sh", &script);
        },
        |spool| {
            spool.submit("remote", "update", Some("1.0.0"));
            wait_until("first running", || {
                spool.evidence().join("running").exists()
            });
            let ids: Vec<String> = (0..4).map(|_| new_id()).collect();
            for id in &ids {
                spool.drop_in_place(id, &Spool::request_json(id, "remote", "rollback", None));
            }
            let codes: Vec<String> = ids.iter().map(|id| code_of(spool, id)).collect();
            assert_eq!(
                codes,
                ["", "", "queue_full", "queue_full"],
                "two wait, the rest are refused"
            );
        },
    );
}

#[test]
fn too_many_updates_for_one_component_are_rate_limited() {
    under_attack(
        // One writer (this test's uid) may use the whole cap here.
        |spool| {
            spool.set(
                "components.remote",
                "max_updates_per_hour = 2\nmax_updates_per_hour_per_writer = 2",
            )
        },
        |spool| {
            let ids: Vec<String> = (0..3).map(|_| new_id()).collect();
            for id in &ids {
                spool.drop_renamed(
                    id,
                    &Spool::request_json(id, "remote", "update", Some("1.0.0")),
                );
                spool.wait_final(id);
            }
            assert_eq!(spool.status(&ids[1]).unwrap()["success"], true);
            let status = spool.status(&ids[2]).unwrap();
            assert_eq!(status["code"], "rate_limited");
            assert_message_says(&status, "max_updates_per_hour");
            // Health checks are not rate limited.
            let health = new_id();
            spool.drop_renamed(
                &health,
                &Spool::request_json(&health, "remote", "health", None),
            );
            assert_eq!(spool.wait_final(&health)["success"], true);
        },
    );
}

#[test]
fn ten_thousand_junk_files_are_cleared_with_bounded_memory_and_a_valid_request_still_answered() {
    let (spool, service) = under_attack(
        |_| {},
        |spool| {
            for i in 0..10_000 {
                let content = if i % 2 == 0 {
                    "garbage".to_string()
                } else {
                    format!("{{\"request_id\": \"junk-{i}\"}}")
                };
                fs::write(spool.requests().join(format!("junk-{i}.json")), content).unwrap();
            }
            let id = spool.submit("core", "health", None);
            assert_eq!(
                spool.wait_final_within(&id, Duration::from_secs(60))["success"],
                true
            );
            wait_until("junk cleared", || spool.request_files().is_empty());
            assert_eq!(code_of(spool, "junk-0"), "invalid_json");
            assert_eq!(code_of(spool, "junk-1"), "missing_field");
        },
    );
    let peak = service.peak_rss_kib();
    assert!(
        peak < 40 * 1024,
        "peak RSS {peak} KiB after 10,000 junk files"
    );
    drop(spool);
}

#[test]
fn signed_requests_are_required_when_configured() {
    use update_coordinator::signature::Verifier;
    let key = b"correct horse battery staple".to_vec();
    let (_spool, _service) = {
        let mut spool = Spool::new();
        fs::write(
            spool.dir.path().join("key"),
            [key.as_slice(), b"\n"].concat(),
        )
        .unwrap();
        spool.add_config("[signature]\nrequired = true\nkey_file = \"key\"\nmax_age = 300");
        spool.create_dirs();
        let service = Service::start(&spool);
        let verifier = Verifier::new(key.clone(), Duration::from_secs(300));
        let now = update_coordinator::status::now_rfc3339();
        let request = |id: &str, timestamp: &str| serde_json::json!({"component": "core", "action": "health", "request_id": id, "timestamp": timestamp});

        let good = request("sig-good", &now);
        let mut signed = good.clone();
        signed["signature"] = verifier.sign(&good).into();
        spool.drop_in_place("sig-good", &serde_json::to_string_pretty(&signed).unwrap());
        assert_eq!(spool.wait_final("sig-good")["success"], true);

        spool.drop_in_place("sig-none", &request("sig-none", &now).to_string());
        assert_eq!(code_of(&spool, "sig-none"), "unsigned");

        let mut forged = request("sig-bad", &now);
        forged["signature"] = Verifier::new(b"guess".to_vec(), Duration::from_secs(300))
            .sign(&forged)
            .into();
        spool.drop_in_place("sig-bad", &forged.to_string());
        assert_eq!(code_of(&spool, "sig-bad"), "bad_signature");

        let old = request("sig-old", "2020-01-01T00:00:00");
        let mut replayed = old.clone();
        replayed["signature"] = verifier.sign(&old).into();
        spool.drop_in_place("sig-old", &replayed.to_string());
        assert_eq!(code_of(&spool, "sig-old"), "stale_request");
        (spool, service)
    };
}

#[test]
fn check_reports_spool_permissions_that_deviate_from_the_installed_layout() {
    let mut spool = Spool::new();
    spool.set("spool", "");
    spool.create_dirs();
    // Expect the layout for group root: the test dirs are 0755, so both deviate.
    let config = spool.config_path();
    let text = fs::read_to_string(&config)
        .unwrap()
        .replace("group = \"\"", "group = \"root\"");
    fs::write(&config, text).unwrap();
    let out = std::process::Command::new(crate::support::bin())
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("expected 1730") && stdout.contains("expected 1730"),
        "{stdout}"
    );
}

#[test]
fn submit_signs_requests_when_the_config_requires_it() {
    let mut spool = Spool::new();
    fs::write(spool.dir.path().join("key"), "shared key of 16+ bytes\n").unwrap();
    spool.add_config("[signature]\nrequired = true\nkey_file = \"key\"");
    let _service = Service::start(&spool);
    let out = std::process::Command::new(crate::support::bin())
        .arg("submit")
        .arg("--config")
        .arg(spool.config_path())
        .args(["--component", "core", "--action", "health", "--wait"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_device_node_is_refused_without_being_opened() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root (mknod); CI runs as root");
    }
    under_attack(
        |_| {},
        |spool| {
            // /dev/null's numbers: harmless if it were opened, but it must not even be.
            let tmp = spool.requests().join(".dev");
            nix::sys::stat::mknod(
                &tmp,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(1, 3),
            )
            .unwrap();
            fs::rename(&tmp, spool.requests().join("dev-1.json")).unwrap();
            let status = spool.wait_final("dev-1");
            assert_eq!(status["code"], "not_a_regular_file");
            assert_message_says(&status, "a device");
            wait_until("device node removed", || {
                !spool.requests().join("dev-1.json").exists()
            });
        },
    );
}

#[test]
fn a_final_status_planted_for_another_id_does_not_pre_empt_its_request() {
    under_attack(
        |spool| {
            script_that_marks_it_ran(spool, "core", "rollback.sh");
        },
        |spool| {
            let id = new_id();
            let fake = serde_json::json!({"request_id": id, "component": "core", "action": "health", "success": true,
                "message": "forged", "phase": "done", "output": "", "error": "", "timestamp": "2026-01-01T00:00:00Z"});
            fs::write(
                spool.status_dir().join(format!("{id}.json")),
                fake.to_string(),
            )
            .unwrap();
            let ran = spool.evidence().join("ran");
            spool.drop_in_place(&id, &Spool::request_json(&id, "core", "rollback", None));
            wait_until("the real request ran", || ran.exists());
            // The planted file is final-looking: wait for the real answer to replace it (the
            // progress records go beside it, so nothing else changes it before then).
            wait_until("the forged status is replaced", || {
                spool
                    .status_file(&id)
                    .is_some_and(|s| s["message"] != "forged")
            });
            let status = spool.wait_final(&id);
            assert_eq!(
                status["message"], "Rollback completed successfully",
                "{status}"
            );
        },
    );
}

#[test]
fn status_files_belong_to_the_requests_writer_and_are_private() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root (chown to another uid); CI runs as root");
    }
    use std::os::unix::fs::MetadataExt;
    under_attack(
        |_| {},
        |spool| {
            let writer = 4242;
            for (id, content) in [
                (new_id(), None),
                ("junk-owned".to_string(), Some("not json".to_string())),
            ] {
                let content =
                    content.unwrap_or_else(|| Spool::request_json(&id, "core", "health", None));
                let tmp = spool.requests().join(format!(".{id}"));
                fs::write(&tmp, content).unwrap();
                nix::unistd::chown(&tmp, Some(nix::unistd::Uid::from_raw(writer)), None).unwrap();
                fs::rename(&tmp, spool.requests().join(format!("{id}.json"))).unwrap();
                spool.wait_final(&id);
                let meta = fs::metadata(spool.status_dir().join(format!("{id}.json"))).unwrap();
                assert_eq!((meta.uid(), meta.mode() & 0o777), (writer, 0o600), "{id}");
            }
        },
    );
}
