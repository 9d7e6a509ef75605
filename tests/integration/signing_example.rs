//! The Python signing example (`examples/sign_request.py`) and the service agree: requests it
//! signs are accepted, requests it signs with the wrong key are refused `bad_signature`, and its
//! canonical JSON is byte for byte the coordinator's, also for non-ASCII text, escapes and
//! nested extra fields. Needs `python3` (CI has it); without it these tests fail, they do not
//! skip.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{Service, Spool, words};
use serde_json::Value;
use update_coordinator::signature::{Verifier, canonical_json};

const KEY: &[u8] = b"correct horse battery staple";

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// `python3 -B` (no `__pycache__` in the source tree), or a clear failure when it is missing.
fn python3() -> Command {
    match Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`python3 --version` failed ({}): {}; these tests need python3 to run examples/sign_request.py",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "python3 is not installed or not on PATH ({e}); these tests need it to run examples/sign_request.py (install python3, e.g. apt-get install python3)"
        ),
    }
    let mut command = Command::new("python3");
    command.arg("-B").env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

/// Runs python3 and returns its stdout, failing the test with its stderr if it fails.
fn run(mut command: Command) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run python3");
    let stdout = String::from_utf8(stdout).expect("python3 prints UTF-8");
    assert!(
        status.success(),
        "python3 failed ({status}):\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&stderr)
    );
    stdout
}

/// Runs a Python snippet with the example module importable as `sign_request`.
fn python_snippet(code: &str, args: &[&str]) -> String {
    let mut command = python3();
    command
        .arg("-c")
        .arg(format!(
            "import sys\nsys.path.insert(0, sys.argv[1])\nimport sign_request\n{code}"
        ))
        .arg(examples_dir())
        .args(args);
    run(command)
}

/// A spool whose coordinator requires requests signed with [`KEY`] (written with a trailing
/// newline, as `echo` or an editor leaves it; the coordinator and the example both drop it).
fn signed_spool() -> Spool {
    let mut spool = Spool::new();
    fs::write(spool.dir.path().join("key"), [KEY, b"\n"].concat()).unwrap();
    spool.add_config("[signature]\nrequired = true\nkey_file = \"key\"\nmax_age = 300");
    spool.create_dirs();
    spool
}

fn cli(spool: &Spool, extra: &[&str]) -> String {
    let mut command = python3();
    command
        .arg(examples_dir().join("sign_request.py"))
        .arg("--key-file")
        .arg(spool.dir.path().join("key"))
        .arg("--spool")
        .arg(spool.root())
        .args(extra);
    let id = run(command).trim().to_owned();
    assert!(!id.is_empty(), "the CLI prints the request id");
    id
}

#[test]
fn the_cli_signs_requests_the_service_accepts_renamed_or_written_in_place() {
    let spool = signed_spool();
    let _service = Service::start(&spool);

    let id = cli(
        &spool,
        &words("--component remote --action update --version 1.2.3"),
    );
    let status = spool.wait_final(&id);
    assert_eq!(status["success"], true, "{status}");
    assert_eq!(
        (&status["component"], &status["action"], &status["version"]),
        (&"remote".into(), &"update".into(), &"1.2.3".into())
    );

    // The existing client's way of writing: open the final name, write, close.
    let id = cli(
        &spool,
        &["--component", "core", "--action", "health", "--in-place"],
    );
    let status = spool.wait_final(&id);
    assert_eq!(status["success"], true, "{status}");
    crate::support::wait_until("request files removed", || spool.request_files().is_empty());
}

#[test]
fn a_request_signed_with_the_wrong_key_is_refused_bad_signature() {
    let spool = signed_spool();
    let _service = Service::start(&spool);
    let id = python_snippet(
        "request = sign_request.new_request('core', 'health')\n\
         print(sign_request.write_request(sys.argv[2], request, key=b'not the shared key'))",
        &[&spool.root().display().to_string()],
    );
    let id = id.trim();
    let status = spool.wait_final(id);
    assert_eq!(status["code"], "bad_signature", "{status}");
    assert_eq!(status["success"], false);

    // And without a key at all: unsigned.
    let id = python_snippet(
        "request = sign_request.new_request('core', 'health')\n\
         print(sign_request.write_request(sys.argv[2], request))",
        &[&spool.root().display().to_string()],
    );
    assert_eq!(spool.wait_final(id.trim())["code"], "unsigned");
}

#[test]
fn canonical_json_and_signature_match_the_coordinators_byte_for_byte() {
    // Non-ASCII (2-, 3- and 4-byte UTF-8), every escaped character, keys that sort differently
    // by case, nested objects and arrays, 64-bit integers, booleans and null.
    let request = serde_json::json!({
        "request_id": "canon-1",
        "component": "core",
        "action": "health",
        "timestamp": "2026-02-14T00:51:03.123456",
        "note": "é ü ☃ 𝄞 \"quoted\" back\\slash /slash \n\r\t\u{8}\u{c} \u{1}\u{1f} \u{7f} \u{2028}",
        "Zeta": [1, -5, 18446744073709551615u64, -9223372036854775808i64, true, false, null],
        "meta": {"z": {"b": "x", "a": [{"d": 1, "c": 2}]}, "B": "", "a": {}}
    });
    let rust_canonical = canonical_json(&request);
    let rust_signature = Verifier::new(KEY.to_vec(), Duration::from_secs(300)).sign(&request);

    let out = python_snippet(
        "import json\n\
         request = json.loads(sys.argv[2])\n\
         print(sign_request.canonical_json(request).hex())\n\
         print(sign_request.sign(request, sys.argv[3].encode())['signature'])",
        &[&request.to_string(), std::str::from_utf8(KEY).unwrap()],
    );
    let mut lines = out.lines();
    let python_canonical = hex::decode(lines.next().unwrap()).unwrap();
    assert_eq!(
        String::from_utf8(python_canonical).unwrap(),
        rust_canonical,
        "the canonical JSON differs"
    );
    assert_eq!(lines.next(), Some(rust_signature.as_str()));

    // The Python float guard: floats print differently in the two languages, so they are
    // refused before signing instead of producing a request that fails bad_signature.
    let out = python_snippet(
        "try:\n    sign_request.sign({'x': 1e-05}, b'k')\nexcept ValueError as e:\n    print('refused:', e)",
        &[],
    );
    assert!(out.starts_with("refused:"), "{out}");

    // End to end, with a fresh timestamp: the service verifies what Python signed.
    let spool = signed_spool();
    let _service = Service::start(&spool);
    let mut fresh = request.clone();
    fresh["request_id"] = "canon-2".into();
    fresh.as_object_mut().unwrap().remove("timestamp");
    python_snippet(
        "import json\n\
         request = json.loads(sys.argv[2])\n\
         request['timestamp'] = sign_request.utc_timestamp()\n\
         key = sign_request.read_key(sys.argv[3])\n\
         sign_request.write_request(sys.argv[4], request, key=key)",
        &[
            &fresh.to_string(),
            &spool.dir.path().join("key").display().to_string(),
            &spool.root().display().to_string(),
        ],
    );
    let status: Value = spool.wait_final("canon-2");
    assert_eq!(status["success"], true, "{status}");
}
