//! The signing key: an empty or short key stops the service and fails `check`, which also
//! refuses a key others can read (issue 15).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::support::{PATIENCE, Spool, bin};

/// A spool requiring signed requests with `key` (written with `mode`) as the key file.
fn signed_spool(key: &[u8], mode: u32) -> Spool {
    let mut spool = Spool::new();
    let path = spool.dir.path().join("key");
    fs::write(&path, key).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    spool.add_config("[signature]\nrequired = true\nkey_file = \"key\"\nmax_age = 300");
    spool.create_dirs();
    spool
}

/// Runs `update-coordinator <command>` on the spool's config; kills it if it does not exit.
fn run(spool: &Spool, command: &str) -> (Option<i32>, String) {
    let mut child = Command::new(bin())
        .arg(command)
        .arg("--config")
        .arg(spool.config_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > PATIENCE {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn the_service_refuses_to_start_with_an_empty_or_short_key_and_says_how_to_make_one() {
    for key in [&b"\n"[..], b"", b"short key\n"] {
        let spool = signed_spool(key, 0o600);
        let (code, text) = run(&spool, "run");
        assert_eq!(code, Some(1), "{key:?} did not stop the service: {text}");
        assert!(
            text.contains("fewer than the 16 required")
                && text.contains("head -c 32 /dev/urandom | base64"),
            "{key:?}: {text}"
        );
        assert!(
            !text.contains("update coordinator ready"),
            "{key:?}: {text}"
        );
    }
}

#[test]
fn check_reports_an_empty_key() {
    let spool = signed_spool(b"\n", 0o600);
    let (code, text) = run(&spool, "check");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("PROBLEM") && text.contains("holds 0 byte(s)"),
        "{text}"
    );
    assert!(text.contains("head -c 32 /dev/urandom | base64"), "{text}");
}

#[test]
fn check_reports_a_world_readable_key_and_passes_a_private_one() {
    let good = b"4iK8mJ0zq7Yv3lQb0e9JcWf1pXrS2dTu6hNaGkEo5B8=\n";
    let spool = signed_spool(good, 0o644);
    let (code, text) = run(&spool, "check");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("mode 0644"), "{text}");
    assert!(text.contains("chmod 0640"), "{text}");

    let spool = signed_spool(good, 0o600);
    let (code, text) = run(&spool, "check");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("key present and long enough"), "{text}");
}

#[test]
fn submit_refuses_to_sign_with_a_short_key() {
    let spool = signed_spool(b"guessable\n", 0o600);
    let out = Command::new(bin())
        .arg("submit")
        .arg("--config")
        .arg(spool.config_path())
        .args(["--component", "core", "--action", "health"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("fewer than the 16 required"), "{stderr}");
    assert!(spool.request_files().is_empty());
}
