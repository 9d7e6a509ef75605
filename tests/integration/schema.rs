//! The JSON Schemas in `docs/schema/` against the code: example request documents (checked by
//! the schema *and* by `Request::parse`, which must agree), statuses built by `report` for
//! every failure code, and real status files written by the real binary. Known-bad documents
//! must be rejected, so a schema that accepts everything fails here.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, SystemTime};

use crate::support::{Service, Spool, new_id, path_str, wait_until};
use jsonschema::Validator;
use serde_json::{Value, json};
use update_coordinator::report::{self, Refusal, RunContext};
use update_coordinator::request::{Action, InvalidRequest, Request, RequestError, RequestId};
use update_coordinator::runner::{Captured, Exit, Outcome, Stopped};
use update_coordinator::signature::{SignatureError, Verifier};
use update_coordinator::spool::ReadError;
use update_coordinator::status::{Code, Phase, Status};
use update_coordinator::trust::Untrusted;

const COMPONENTS: [&str; 3] = ["core", "remote", "scheduler"];

fn schema_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schema")
        .join(name)
}

fn load_schema(name: &str) -> Value {
    let path = schema_path(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn compile(name: &str) -> Validator {
    let schema = load_schema(name);
    assert_eq!(
        schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "{name} declares draft 2020-12"
    );
    if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
        panic!(
            "{name} is not a valid draft 2020-12 schema: {e} at {}",
            e.instance_path()
        );
    }
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{name} does not compile: {e}"))
}

fn request_schema() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| compile("request.schema.json"))
}

fn status_schema() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| compile("status.schema.json"))
}

fn schema_errors(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} (at {:?})", e, e.instance_path().as_str()))
        .collect()
}

/// Validates a status against the schema, and checks that every field it carries is
/// documented there (the schema tolerates unknown fields for readers' sake; the writer must
/// not produce undocumented ones).
fn assert_valid_status(label: &str, status: &Value) {
    let errors = schema_errors(status_schema(), status);
    assert!(
        errors.is_empty(),
        "{label}: status does not match docs/schema/status.schema.json:\n  {}\n{}",
        errors.join("\n  "),
        serde_json::to_string_pretty(status).unwrap()
    );
    let schema = load_schema("status.schema.json");
    let documented = schema["properties"].as_object().unwrap();
    for key in status.as_object().expect("a status is an object").keys() {
        assert!(
            documented.contains_key(key),
            "{label}: field {key:?} is not documented in status.schema.json"
        );
    }
}

fn assert_invalid_status(label: &str, status: &Value) {
    assert!(
        !status_schema().is_valid(status),
        "{label}: the status schema must reject:\n{}",
        serde_json::to_string_pretty(status).unwrap()
    );
}

fn codes_in_status_schema() -> BTreeSet<String> {
    load_schema("status.schema.json")["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Requests

/// What `Request::parse` must say about a document (with components core, remote, scheduler).
#[derive(Debug, Clone, Copy)]
enum Verdict {
    Accepted,
    /// Refused with this code, and the schema refuses it too.
    Refused(&'static str),
    /// Refused by the allow-list only: well-formed, so the schema accepts it.
    NotAllowListed,
}

/// The existing Python client's update request, byte for byte in shape: pretty-printed,
/// naive timestamp, no `v` prefix.
const CLIENT_UPDATE: &str = r#"{
  "component": "remote",
  "action": "update",
  "version": "1.0.0-beta.8",
  "request_id": "0b6f1c2e-6a57-4d8e-9a53-2f0c8d7e9b11",
  "timestamp": "2026-02-14T00:51:03.123456"
}"#;

fn request_cases() -> Vec<(String, String, Verdict)> {
    use Verdict::*;
    let long_id = "x".repeat(128);
    let too_long_id = "x".repeat(129);
    let long_version = format!("1{}", ".0".repeat(31) + "9"); // 64 characters
    let too_long_version = "1".repeat(65);
    let health = |id: &str| {
        json!({"component": "core", "action": "health", "request_id": id,
               "timestamp": "2026-02-14T00:51:03.123456"})
        .to_string()
    };
    let update = |version: Value| {
        json!({"component": "remote", "action": "update", "version": version,
               "request_id": "r1", "timestamp": "2026-02-14T00:51:03.123456"})
        .to_string()
    };
    let cases: Vec<(&str, String, Verdict)> =
        vec![
        // Accepted.
        ("the client's pretty-printed update", CLIENT_UPDATE.into(), Accepted),
        (
            "the client's update, compact, via the test harness",
            Spool::request_json("r2", "scheduler", "update", Some("2026.01.5")),
            Accepted,
        ),
        (
            "the client's health request without version",
            Spool::request_json(&new_id(), "core", "health", None),
            Accepted,
        ),
        (
            "rollback with version null",
            r#"{"component": "remote", "action": "rollback", "version": null, "request_id": "r3",
                "timestamp": "2026-02-14T00:51:03"}"#
                .into(),
            Accepted,
        ),
        (
            "no timestamp",
            r#"{"component": "core", "action": "health", "request_id": "r4"}"#.into(),
            Accepted,
        ),
        (
            "timestamp null",
            r#"{"component": "core", "action": "health", "request_id": "r4", "timestamp": null}"#
                .into(),
            Accepted,
        ),
        (
            "unknown extra fields",
            r#"{"component": "core", "action": "health", "request_id": "r5", "dry_run": true,
                "meta": {"by": "ui"}}"#
                .into(),
            Accepted,
        ),
        (
            "a signature (checked only by coordinators that require one)",
            r#"{"component": "core", "action": "health", "request_id": "r5",
                "timestamp": "2026-02-14T00:51:03", "signature": "00ff"}"#
                .into(),
            Accepted,
        ),
        ("id with dots and underscores", health("a.b_c-D9"), Accepted),
        ("id ending in a dot", health("a."), Accepted),
        ("one-character id", health("a"), Accepted),
        ("128-character id", health(&long_id), Accepted),
        ("version with build metadata", update(json!("2+build.7")), Accepted),
        ("64-character version", update(json!(long_version)), Accepted),
        (
            "well-formed but not configured component",
            Spool::request_json("r6", "nas", "health", None),
            NotAllowListed,
        ),
        // Refused.
        ("not JSON", "{\"component\": \"remote\", \"act".into(), Refused("invalid_json")),
        ("empty file", String::new(), Refused("invalid_json")),
        ("an array", "[1, 2]".into(), Refused("invalid_request")),
        ("a string", "\"update\"".into(), Refused("invalid_request")),
        ("null", "null".into(), Refused("invalid_request")),
        (
            "no request_id",
            r#"{"component": "core", "action": "health"}"#.into(),
            Refused("missing_field"),
        ),
        (
            "request_id null",
            r#"{"component": "core", "action": "health", "request_id": null}"#.into(),
            Refused("missing_field"),
        ),
        (
            "numeric request_id",
            r#"{"component": "core", "action": "health", "request_id": 7}"#.into(),
            Refused("wrong_type"),
        ),
        ("empty id", health(""), Refused("invalid_request_id")),
        ("path traversal id", health("../etc/passwd"), Refused("invalid_request_id")),
        ("id with a slash", health("a/b"), Refused("invalid_request_id")),
        ("hidden id", health(".hidden"), Refused("invalid_request_id")),
        ("option-like id", health("-rf"), Refused("invalid_request_id")),
        ("id with ..", health("a..b"), Refused("invalid_request_id")),
        ("id with a newline", health("a\nb"), Refused("invalid_request_id")),
        ("id with a trailing newline", health("ab\n"), Refused("invalid_request_id")),
        ("non-ASCII id", health("é"), Refused("invalid_request_id")),
        ("129-character id", health(&too_long_id), Refused("invalid_request_id")),
        (
            "no component",
            r#"{"action": "health", "request_id": "r7"}"#.into(),
            Refused("missing_field"),
        ),
        (
            "numeric component",
            r#"{"component": 1, "action": "health", "request_id": "r7"}"#.into(),
            Refused("wrong_type"),
        ),
        (
            "component that no config can name",
            Spool::request_json("r7", "Remote", "health", None),
            Refused("unknown_component"),
        ),
        (
            "no action",
            r#"{"component": "core", "request_id": "r8"}"#.into(),
            Refused("missing_field"),
        ),
        (
            "unknown action",
            Spool::request_json("r8", "core", "reboot", None),
            Refused("unknown_action"),
        ),
        (
            "action in capitals",
            Spool::request_json("r8", "core", "UPDATE", Some("1.2.3")),
            Refused("unknown_action"),
        ),
        (
            "update without version",
            Spool::request_json("r1", "remote", "update", None),
            Refused("missing_field"),
        ),
        ("update with version null", update(Value::Null), Refused("missing_field")),
        ("numeric version", update(json!(1.2)), Refused("wrong_type")),
        ("empty version", update(json!("")), Refused("invalid_version")),
        ("v-prefixed version", update(json!("v1.2.3")), Refused("invalid_version")),
        ("option-like version", update(json!("--help")), Refused("invalid_version")),
        ("version with a space", update(json!("1 2")), Refused("invalid_version")),
        ("shell in the version", update(json!("1.2.3;rm -rf /")), Refused("invalid_version")),
        ("version with a trailing newline", update(json!("1.2.3\n")), Refused("invalid_version")),
        ("word version", update(json!("latest")), Refused("invalid_version")),
        ("65-character version", update(json!(too_long_version)), Refused("invalid_version")),
        (
            "health with a version",
            Spool::request_json("r9", "core", "health", Some("1.0")),
            Refused("unexpected_version"),
        ),
        (
            "rollback with a version",
            Spool::request_json("r9", "remote", "rollback", Some("1.0")),
            Refused("unexpected_version"),
        ),
        (
            "numeric timestamp",
            r#"{"component": "core", "action": "health", "request_id": "r9", "timestamp": 5}"#
                .into(),
            Refused("wrong_type"),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, doc, verdict)| (name.to_owned(), doc, verdict))
        .collect()
}

#[test]
fn the_schemas_are_valid_draft_2020_12() {
    request_schema();
    status_schema();
}

#[test]
fn the_request_schema_and_the_parser_agree_on_every_example() {
    let mut failures = Vec::new();
    for (name, doc, verdict) in request_cases() {
        let parsed = Request::parse(doc.as_bytes(), COMPONENTS);
        let parser_code = parsed.as_ref().err().map(|r| r.error.code());
        let parser_code = parser_code.as_ref().map(Code::as_str);
        let parser_ok = match verdict {
            Verdict::Accepted => parser_code.is_none(),
            Verdict::Refused(code) => parser_code == Some(code),
            Verdict::NotAllowListed => parser_code == Some(Code::UnknownComponent.as_str()),
        };
        if !parser_ok {
            failures.push(format!(
                "{name}: the parser says {parser_code:?}, the table says {verdict:?}"
            ));
        }
        let schema_ok = !matches!(verdict, Verdict::Refused(_));
        match serde_json::from_str::<Value>(&doc) {
            Ok(value) => {
                let errors = schema_errors(request_schema(), &value);
                if errors.is_empty() != schema_ok {
                    failures.push(format!(
                        "{name}: the schema {} {doc}\n    {}",
                        if schema_ok { "rejects" } else { "accepts" },
                        errors.join("\n    ")
                    ));
                }
            }
            // Not JSON at all: no schema can accept it, and the parser must refuse it.
            Err(_) => assert!(!schema_ok, "{name}: the table calls non-JSON acceptable"),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_request_schema_rejects_what_the_table_says_is_bad() {
    // Guards the test above against a schema that accepts everything.
    let bad: Vec<_> = request_cases()
        .into_iter()
        .filter(|(_, _, v)| matches!(v, Verdict::Refused(_)))
        .filter_map(|(name, doc, _)| serde_json::from_str::<Value>(&doc).ok().map(|v| (name, v)))
        .collect();
    assert!(bad.len() >= 30, "the table keeps its refusals");
    for (name, doc) in &bad {
        assert!(!request_schema().is_valid(doc), "{name}");
    }
    let client: Value = serde_json::from_str(CLIENT_UPDATE).unwrap();
    assert!(request_schema().is_valid(&client));
}

#[test]
fn the_json_examples_in_protocol_md_match_the_schemas() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.md");
    let text = fs::read_to_string(&path).unwrap();
    let mut blocks = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("```json\n") {
        let body = &rest[start + "```json\n".len()..];
        let end = body.find("```").expect("an unterminated ```json block");
        blocks.push(&body[..end]);
        rest = &body[end + 3..];
    }
    let (mut requests, mut statuses) = (0, 0);
    for block in blocks {
        let value: Value = serde_json::from_str(block).unwrap_or_else(|e| {
            panic!("a ```json block in protocol.md is not JSON ({e}):\n{block}")
        });
        if value.get("message").is_some() {
            assert_valid_status("protocol.md example", &value);
            statuses += 1;
        } else {
            let errors = schema_errors(request_schema(), &value);
            assert!(
                errors.is_empty(),
                "protocol.md example request: {errors:?}\n{block}"
            );
            assert!(
                Request::parse(block.as_bytes(), COMPONENTS).is_ok(),
                "the parser refuses the protocol.md example:\n{block}"
            );
            requests += 1;
        }
    }
    assert!(
        requests >= 2 && statuses >= 4,
        "protocol.md keeps its examples"
    );
}

// ---------------------------------------------------------------------------------------------
// Statuses built by `report` for every code the code base produces

fn sample_request(action: &str) -> Request {
    let version = if action == "update" {
        Some("1.2.3")
    } else {
        None
    };
    Request::parse(
        Spool::request_json("r1", "remote", action, version).as_bytes(),
        COMPONENTS,
    )
    .unwrap()
}

fn run_context() -> RunContext<'static> {
    static DOWNLOADING: LazyLock<Phase> = LazyLock::new(|| Phase::from("downloading"));
    RunContext {
        script: "update.sh",
        started_at: SystemTime::now(),
        last_phase: &DOWNLOADING,
        timeout: Duration::from_secs(600),
        kill_grace: Duration::from_secs(10),
    }
}

fn outcome(exit: Exit, stopped: Option<Stopped>) -> io::Result<Outcome> {
    Ok(Outcome {
        exit,
        stopped,
        duration: Duration::from_millis(1234),
        stdout: Captured {
            text: "tail".into(),
            truncated: true,
            total_bytes: 100_000,
        },
        stderr: Captured::default(),
    })
}

// The `every_*` lists below hold every variant of each error type that becomes a status
// `code`. Their `match`es are exhaustive on purpose: a new variant does not compile here until
// it is added to the list, and its code to docs/schema/status.schema.json and
// docs/protocol.md.

fn every_request_error() -> Vec<RequestError> {
    let all = vec![
        RequestError::InvalidJson("EOF".into()),
        RequestError::NotAnObject,
        RequestError::MissingField("version"),
        RequestError::WrongType {
            field: "component",
            expected: "a string",
        },
        RequestError::InvalidRequestId("../x".into()),
        RequestError::UnknownComponent("nas".into(), "core, remote, scheduler".into()),
        RequestError::UnknownAction("reboot".into()),
        RequestError::InvalidVersion("v1".into()),
        RequestError::UnexpectedVersion(Action::Health),
        RequestError::InvalidNotBefore("soon".into()),
        RequestError::InvalidBatch("`components` is empty".into()),
    ];
    for e in &all {
        match e {
            RequestError::InvalidJson(_)
            | RequestError::NotAnObject
            | RequestError::MissingField(_)
            | RequestError::WrongType { .. }
            | RequestError::InvalidRequestId(_)
            | RequestError::UnknownComponent(..)
            | RequestError::UnknownAction(_)
            | RequestError::InvalidVersion(_)
            | RequestError::UnexpectedVersion(_)
            | RequestError::InvalidNotBefore(_)
            | RequestError::InvalidBatch(_) => {}
        }
    }
    all
}

fn every_read_error() -> Vec<ReadError> {
    let all = vec![
        ReadError::Gone,
        ReadError::NotRegular("a FIFO"),
        ReadError::HardLinked(2),
        ReadError::TooLarge {
            size: 70_000,
            limit: 65_536,
        },
        ReadError::WriterNotAllowed {
            uid: 1000,
            gid: 1000,
        },
        ReadError::Io(io::Error::from(io::ErrorKind::PermissionDenied)),
    ];
    for e in &all {
        match e {
            ReadError::Gone
            | ReadError::NotRegular(_)
            | ReadError::HardLinked(_)
            | ReadError::TooLarge { .. }
            | ReadError::WriterNotAllowed { .. }
            | ReadError::Io(_) => {}
        }
    }
    all
}

fn every_signature_error() -> Vec<SignatureError> {
    let all = vec![
        SignatureError::Unsigned,
        SignatureError::BadSignature,
        SignatureError::Stale("2020-01-01T00:00:00".into(), 300),
    ];
    for e in &all {
        match e {
            SignatureError::Unsigned | SignatureError::BadSignature | SignatureError::Stale(..) => {
            }
        }
    }
    all
}

fn every_untrusted() -> Vec<Untrusted> {
    let path = PathBuf::from("/opt/dunebugger/remote/update.sh");
    let all = vec![
        Untrusted::Missing(path.clone()),
        Untrusted::EscapesDir {
            script: path.clone(),
            target: "/tmp/x".into(),
            dir: "/opt/dunebugger/remote".into(),
        },
        Untrusted::NotRegular(path.clone()),
        Untrusted::NotExecutable(path.clone()),
        Untrusted::WrongOwner {
            path: path.clone(),
            uid: 1000,
        },
        Untrusted::Writable {
            path: path.clone(),
            mode: 0o775,
        },
        Untrusted::Unreadable {
            path,
            reason: "Permission denied".into(),
        },
    ];
    for e in &all {
        match e {
            Untrusted::Missing(_)
            | Untrusted::EscapesDir { .. }
            | Untrusted::NotRegular(_)
            | Untrusted::NotExecutable(_)
            | Untrusted::WrongOwner { .. }
            | Untrusted::Writable { .. }
            | Untrusted::Unreadable { .. } => {}
        }
    }
    all
}

#[test]
fn statuses_for_every_code_match_the_schema_and_the_code_list_is_exact() {
    let id = RequestId::parse("r1").unwrap();
    let request = sample_request("update");
    let produced = std::cell::RefCell::new(BTreeSet::new());
    let check = |label: String, status: &Status| {
        let value = serde_json::to_value(status).unwrap();
        assert_valid_status(&label, &value);
        if let Some(code) = &status.code {
            produced.borrow_mut().insert(code.to_string());
        }
    };

    for action in ["update", "rollback", "health"] {
        let request = sample_request(action);
        for phase in ["queued", "running", "downloading"] {
            check(
                format!("{action} in progress ({phase})"),
                &report::in_progress(&request, Phase::from(phase), Some(SystemTime::now())),
            );
        }
        check(
            format!("{action} queued without start time"),
            &report::in_progress(&request, Phase::Queued, None),
        );
        // With [fleet]: before the agent's first answer, with the group full, cut off.
        use update_coordinator::fleet::{SlotWait, WaitReason};
        for reason in [
            None,
            Some(WaitReason::Full),
            Some(WaitReason::Unreachable("no etcd endpoint answered".into())),
        ] {
            let wait = reason.map(|reason| SlotWait {
                holders: 2,
                total_slots: 2,
                reason,
            });
            let status = report::waiting_for_slot(&request, "default", wait.as_ref());
            assert_eq!(status.phase.as_str(), "waiting_for_slot");
            check(format!("{action} waiting for a slot ({wait:?})"), &status);
        }
    }

    // Refusals, addressed as the daemon addresses them.
    for error in every_request_error() {
        for (id_in_file, component, action) in [
            (
                Some(id.clone()),
                Some("nas".to_owned()),
                Some("reboot".to_owned()),
            ),
            (None, None, None),
        ] {
            let rejection = InvalidRequest {
                id: id_in_file,
                component,
                action,
                error: error.clone(),
            };
            check(
                format!("refused {error:?}"),
                &report::refused(&id, &Refusal::from(&rejection)),
            );
        }
    }
    for error in every_read_error() {
        let refusal = Refusal {
            id: Some(id.clone()),
            component: None,
            action: None,
            code: error.code(),
            message: format!("invalid request file: {error}"),
        };
        check(
            format!("unreadable {error:?}"),
            &report::refused(&id, &refusal),
        );
    }
    for error in every_signature_error() {
        let refusal = Refusal::of_request(&request, error.code(), error.to_string());
        check(format!("{error:?}"), &report::refused(&id, &refusal));
    }
    for error in every_untrusted() {
        let refusal = Refusal::of_request(&request, error.code(), error.to_string());
        check(format!("{error:?}"), &report::refused(&id, &refusal));
    }
    // Script runs and failed starts.
    let ctx = run_context();
    let results = [
        ("success", outcome(Exit::Code(0), None)),
        ("failure", outcome(Exit::Code(3), None)),
        ("killed", outcome(Exit::Signal(9), None)),
        (
            "timeout, killed",
            outcome(Exit::Signal(9), Some(Stopped::TimedOut)),
        ),
        (
            "timeout, exited 0 on TERM",
            outcome(Exit::Code(0), Some(Stopped::TimedOut)),
        ),
        (
            "interrupted",
            outcome(Exit::Signal(15), Some(Stopped::Shutdown)),
        ),
        (
            "interrupted, exited",
            outcome(Exit::Code(143), Some(Stopped::Shutdown)),
        ),
        ("missing", Err(io::Error::from(io::ErrorKind::NotFound))),
        (
            "not executable",
            Err(io::Error::from(io::ErrorKind::PermissionDenied)),
        ),
        (
            "other spawn error",
            Err(io::Error::from(io::ErrorKind::NotADirectory)),
        ),
    ];
    for (label, result) in &results {
        check(label.to_string(), &report::finished(&request, &ctx, result));
    }

    // Health-gated updates: every outcome, after a succeeded and after a failed update.
    use update_coordinator::procedure::{Step, UpdateOutcome};
    for (label, update_exit, gate_outcome) in [
        ("updated", 0, UpdateOutcome::Updated),
        (
            "rolled back after a failed update",
            3,
            UpdateOutcome::RolledBack,
        ),
        (
            "rolled back after failed health",
            0,
            UpdateOutcome::RolledBack,
        ),
        ("rollback failed", 0, UpdateOutcome::RollbackFailed),
        ("healthy never, no rollback", 0, UpdateOutcome::Failed),
        ("failed update, no rollback", 3, UpdateOutcome::Failed),
    ] {
        let mut status = report::finished(&request, &ctx, &outcome(Exit::Code(update_exit), None));
        let steps = [
            Step {
                step: "update".into(),
                exit_code: Some(update_exit),
                ..Default::default()
            },
            Step {
                step: "health".into(),
                exit_code: Some(1),
                ..Default::default()
            },
        ];
        report::add_procedure(
            &mut status,
            Some(gate_outcome),
            Some("what happened"),
            &steps,
        );
        check(label.to_string(), &status);
    }

    // Cancel: the cancelled target, and every answer to a cancel request.
    check(
        "cancelled".into(),
        &report::cancelled(
            &request,
            "cancelled by request c-1 before it started".into(),
        ),
    );
    for code in [
        None,
        Some(Code::AlreadyFinished),
        Some(Code::UnknownTarget),
        Some(Code::CancelFailed),
    ] {
        check(
            format!("cancel answer {code:?}"),
            &report::cancel_answer(&id, code, "what the cancel did".into()),
        );
    }

    // The daemon's own refusals (`Refusal::of_request(request, Code::QueueFull, ...)`): every
    // code no path above produced.
    for code in Code::ALL {
        let seen = produced.borrow().contains(code.as_str());
        if !seen {
            let refusal = Refusal::of_request(&request, code.clone(), format!("refused: {code}"));
            check(code.to_string(), &report::refused(&id, &refusal));
        }
    }

    let every_code: BTreeSet<String> = Code::ALL.iter().map(Code::to_string).collect();
    assert_eq!(
        every_code,
        codes_in_status_schema(),
        "the status schema's `code` enum must list exactly the codes of `status::Code`"
    );
    assert_eq!(produced.into_inner(), every_code);
}

#[test]
fn the_status_schema_rejects_statuses_the_coordinator_never_writes() {
    let request = sample_request("update");
    let good = serde_json::to_value(report::finished(
        &request,
        &run_context(),
        &outcome(Exit::Code(0), None),
    ))
    .unwrap();
    let failed = serde_json::to_value(report::finished(
        &request,
        &run_context(),
        &outcome(Exit::Code(3), None),
    ))
    .unwrap();
    let queued = serde_json::to_value(report::in_progress(&request, Phase::Queued, None)).unwrap();
    let refused = {
        let id = RequestId::parse("r1").unwrap();
        let rejection = InvalidRequest {
            id: None,
            component: None,
            action: None,
            error: RequestError::NotAnObject,
        };
        serde_json::to_value(report::refused(&id, &Refusal::from(&rejection))).unwrap()
    };
    assert_valid_status("success", &good);
    assert_valid_status("failure", &failed);
    assert_valid_status("queued", &queued);
    assert_valid_status("refused", &refused);

    // Each case: a status the coordinator does write, with one field set to a value it never
    // writes there, or left out.
    let set = |base: &Value, field: &str, value: Value| {
        let mut status = base.clone();
        status[field] = value;
        status
    };
    let without = |base: &Value, field: &str| {
        let mut status = base.clone();
        status.as_object_mut().unwrap().remove(field);
        status
    };
    let cases: Vec<(&str, Value)> = vec![
        (
            "final with success null",
            set(&good, "success", Value::Null),
        ),
        (
            "in progress with success true",
            set(&queued, "success", json!(true)),
        ),
        (
            "in progress with a code",
            set(&queued, "code", json!("timeout")),
        ),
        ("failure without code", without(&failed, "code")),
        (
            "success with a code",
            set(&good, "code", json!("script_failed")),
        ),
        (
            "success with a non-zero exit code",
            set(&good, "exit_code", json!(1)),
        ),
        ("an unknown code", set(&failed, "code", json!("made_up"))),
        (
            "script_failed with exit code 0",
            set(&failed, "exit_code", json!(0)),
        ),
        ("exit code and signal", set(&failed, "signal", json!(9))),
        (
            "timed_out without code timeout",
            set(&failed, "timed_out", json!(true)),
        ),
        ("no output field", without(&good, "output")),
        ("no phase", without(&good, "phase")),
        (
            "final success in phase failed",
            set(&good, "phase", json!("failed")),
        ),
        (
            "naive timestamp",
            set(&good, "timestamp", json!("2026-02-14T00:51:03.123456")),
        ),
        ("unsafe request id", set(&good, "request_id", json!("../x"))),
        ("empty message", set(&good, "message", json!(""))),
        (
            "refusal in phase done",
            set(&refused, "phase", json!("done")),
        ),
        (
            "refusal with an exit code",
            set(&refused, "exit_code", json!(1)),
        ),
        (
            "refusal with a start time",
            set(&refused, "started_at", json!("2026-02-14T00:51:03.123Z")),
        ),
    ];
    for (label, status) in &cases {
        assert_invalid_status(label, status);
    }
}

// ---------------------------------------------------------------------------------------------
// Real status files from the real binary

/// Reads the status the way a client does and checks it against the schema.
fn checked_status(spool: &Spool, id: &str, label: &str) -> Value {
    let status = spool
        .status(id)
        .unwrap_or_else(|| panic!("{label}: no readable status for {id}"));
    assert_valid_status(label, &status);
    status
}

fn wait_in_phase(spool: &Spool, id: &str, phase: &str) -> Value {
    wait_until(&format!("{id} in phase {phase}"), || {
        spool
            .status(id)
            .is_some_and(|s| s["message"] == "in_progress" && s["phase"] == phase)
    });
    checked_status(spool, id, &format!("in progress ({phase})"))
}

/// Waits for the final status, checks it against the schema and its code.
fn final_status(spool: &Spool, id: &str, code: Option<&str>) -> Value {
    spool.wait_final(id);
    let label = code.unwrap_or("success");
    let status = checked_status(spool, id, label);
    match code {
        None => assert_eq!(status["success"], true, "{label}: {status}"),
        Some(code) => assert_eq!(status["code"], code, "{label}: {status}"),
    }
    status
}

/// A component script with exactly this content (no `#!/bin/sh` added), mode 755.
fn raw_script(spool: &Spool, component: &str, name: &str, content: &str) -> PathBuf {
    let path = spool
        .dir
        .path()
        .join("components")
        .join(component)
        .join(name);
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn real_in_progress_and_final_statuses_match_the_status_schema() {
    let mut spool = Spool::new();
    spool.set("execution", "output_tail_bytes = 1024");
    spool.set("components.scheduler.timeouts", "health = 0.5");
    let gate = spool.evidence().join("gate");
    let script = format!(
        "while [ ! -e {g}.1 ]; do sleep 0.05; done\n\
         echo PHASE:installing\n\
         while [ ! -e {g}.2 ]; do sleep 0.05; done\n\
         echo \"installed $1\"; echo 'a warning' >&2",
        g = path_str(&gate)
    );
    spool.script("remote", "update.sh", &script);
    spool.script(
        "remote",
        "rollback.sh",
        "head -c 5000 /dev/zero | tr '\\0' o; head -c 5000 /dev/zero | tr '\\0' e >&2",
    );
    spool.script("core", "health-check.sh", "echo 'core is down' >&2; exit 3");
    spool.script(
        "scheduler",
        "health-check.sh",
        "echo PHASE:probing; sleep 30",
    );
    spool.script("scheduler", "rollback.sh", "kill -9 $$");
    let _service = Service::start(&spool);

    // An update that waits at a gate: running, then a PHASE of its own.
    let update = spool.submit("remote", "update", Some("1.0.0-beta.8"));
    let running = wait_in_phase(&spool, &update, "running");
    assert!(running["success"].is_null() && running["started_at"].is_string());
    assert_eq!(running["version"], "1.0.0-beta.8");

    // A second update waits behind it (updates are serialized): queued.
    let second = new_id();
    spool.drop_renamed(
        &second,
        &Spool::request_json(&second, "core", "update", Some("2.0.0")),
    );
    let queued = wait_in_phase(&spool, &second, "queued");
    assert!(queued.get("started_at").is_none());

    fs::write(gate.with_extension("1"), "").unwrap();
    wait_in_phase(&spool, &update, "installing");
    fs::write(gate.with_extension("2"), "").unwrap();
    let done = final_status(&spool, &update, None);
    assert_eq!(
        (&done["phase"], &done["exit_code"]),
        (&json!("done"), &json!(0))
    );
    assert_eq!(done["output"], "PHASE:installing\ninstalled 1.0.0-beta.8\n");
    final_status(&spool, &second, None);

    let failing = new_id();
    let timing_out = new_id();
    let killed = new_id();
    let chatty = new_id();
    for (id, component, action) in [
        (&failing, "core", "health"),
        (&timing_out, "scheduler", "health"),
        (&killed, "scheduler", "rollback"),
        (&chatty, "remote", "rollback"),
    ] {
        spool.drop_in_place(id, &Spool::request_json(id, component, action, None));
    }
    let s = final_status(&spool, &failing, Some("script_failed"));
    assert_eq!(s["exit_code"], 3);
    let s = final_status(&spool, &timing_out, Some("timeout"));
    assert_eq!((&s["timed_out"], &s["signal"]), (&json!(true), &json!(15)));
    let s = final_status(&spool, &killed, Some("script_killed"));
    assert_eq!(s["signal"], 9);
    let s = final_status(&spool, &chatty, None);
    assert_eq!(
        (&s["output_truncated"], &s["error_truncated"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(s["output"].as_str().unwrap(), "o".repeat(1024));
}

#[test]
fn real_refusals_match_the_status_schema() {
    let spool = Spool::new();
    let _service = Service::start(&spool);
    let unique = |prefix: &str| format!("{prefix}-{}", new_id());

    // (file stem, content, expected code); the status is looked up under the stem, which is
    // also the request_id wherever the content has a valid one.
    let mut cases: Vec<(String, String, &str)> = Vec::new();
    let mut add = |prefix: &str, content: &dyn Fn(&str) -> String, code: &'static str| {
        let id = unique(prefix);
        let text = content(&id);
        cases.push((id, text, code));
    };
    add(
        "not-json",
        &|_| "{\"component\": \"remote\", \"act".into(),
        "invalid_json",
    );
    add("not-an-object", &|_| "[1, 2]".into(), "invalid_request");
    add(
        "bad-id",
        &|_| Spool::request_json("../etc/passwd", "core", "health", None),
        "invalid_request_id",
    );
    add(
        "unknown-component",
        &|id| Spool::request_json(id, "nas", "health", None),
        "unknown_component",
    );
    add(
        "unknown-action",
        &|id| Spool::request_json(id, "remote", "reboot", None),
        "unknown_action",
    );
    add(
        "no-version",
        &|id| Spool::request_json(id, "remote", "update", None),
        "missing_field",
    );
    add(
        "bad-version",
        &|id| Spool::request_json(id, "remote", "update", Some("v1.2.3")),
        "invalid_version",
    );
    add(
        "extra-version",
        &|id| Spool::request_json(id, "core", "health", Some("1.0")),
        "unexpected_version",
    );
    add(
        "wrong-type",
        &|id| format!(r#"{{"component": 1, "action": "health", "request_id": "{id}"}}"#),
        "wrong_type",
    );
    add(
        "too-large",
        &|id| {
            let mut v: Value =
                serde_json::from_str(&Spool::request_json(id, "core", "health", None)).unwrap();
            v["padding"] = json!("x".repeat(70 * 1024));
            v.to_string()
        },
        "too_large",
    );
    for (id, content, _) in &cases {
        spool.drop_in_place(id, content);
    }
    // A symlink renamed into place: refused without being followed.
    let link = unique("symlink");
    let tmp = spool.requests().join(format!(".{link}.tmp"));
    std::os::unix::fs::symlink("/etc/hostname", &tmp).unwrap();
    fs::rename(&tmp, spool.requests().join(format!("{link}.json"))).unwrap();
    cases.push((link, String::new(), "not_a_regular_file"));
    // A valid request in a file whose name is not `<id>.json`: answered under its id.
    let misnamed = unique("misnamed");
    fs::write(
        spool.requests().join("not a request id!.json"),
        Spool::request_json(&misnamed, "core", "health", None),
    )
    .unwrap();
    cases.push((misnamed, String::new(), "invalid_file_name"));

    for (id, _, code) in &cases {
        let s = final_status(&spool, id, Some(code));
        assert_eq!(s["phase"], "rejected", "{id}");
    }
    wait_until("refused files removed", || spool.request_files().is_empty());
}

#[test]
fn real_admission_refusals_match_the_status_schema() {
    let mut spool = Spool::new();
    spool.set("spool", "max_queued = 1");
    spool.set("components.core", "max_updates_per_hour = 1");
    let gate = spool.gated_script("remote", "update.sh", "", "");
    let _service = Service::start(&spool);
    let request = |id: &str, component: &str| {
        spool.drop_in_place(
            id,
            &Spool::request_json(id, component, "update", Some("1.0.0")),
        );
    };
    let (blocking, waiting, overflow, again) = (new_id(), new_id(), new_id(), new_id());
    request(&blocking, "remote");
    wait_in_phase(&spool, &blocking, "running");
    request(&waiting, "core");
    wait_in_phase(&spool, &waiting, "queued");
    request(&overflow, "scheduler");
    final_status(&spool, &overflow, Some("queue_full"));
    fs::write(&gate, "").unwrap();
    final_status(&spool, &blocking, None);
    final_status(&spool, &waiting, None);
    request(&again, "core");
    final_status(&spool, &again, Some("rate_limited"));
}

#[test]
fn real_signature_refusals_match_the_status_schema() {
    let mut spool = Spool::new();
    fs::write(spool.dir.path().join("key"), "s3cret of 16+ bytes\n").unwrap();
    spool.set(
        "signature",
        "required = true\nkey_file = \"key\"\nmax_age = 300",
    );
    let _service = Service::start(&spool);
    let verifier = Verifier::new(b"s3cret of 16+ bytes".to_vec(), Duration::from_secs(300));
    let now = update_coordinator::status::now_rfc3339();
    let naive_utc_now = now.trim_end_matches('Z');
    let signed = |id: &str, timestamp: &str, good: bool| {
        let mut v: Value =
            serde_json::from_str(&Spool::request_json(id, "core", "health", None)).unwrap();
        v["timestamp"] = json!(timestamp);
        let signature = if good {
            verifier.sign(&v)
        } else {
            "00".repeat(32)
        };
        v["signature"] = json!(signature);
        serde_json::to_string_pretty(&v).unwrap()
    };
    let (ok, unsigned, bad, stale) = (new_id(), new_id(), new_id(), new_id());
    let ok_request = signed(&ok, naive_utc_now, true);
    assert!(
        request_schema().is_valid(&serde_json::from_str(&ok_request).unwrap()),
        "a signed request matches the request schema"
    );
    spool.drop_in_place(&ok, &ok_request);
    spool.drop_in_place(
        &unsigned,
        &Spool::request_json(&unsigned, "core", "health", None),
    );
    spool.drop_in_place(&bad, &signed(&bad, naive_utc_now, false));
    spool.drop_in_place(&stale, &signed(&stale, "2020-01-01T00:00:00", true));
    final_status(&spool, &ok, None);
    final_status(&spool, &unsigned, Some("unsigned"));
    final_status(&spool, &bad, Some("bad_signature"));
    final_status(&spool, &stale, Some("stale_request"));
}

#[test]
fn real_writer_refusals_match_the_status_schema() {
    let mut spool = Spool::new();
    let someone_else = nix::unistd::geteuid().as_raw() + 4242;
    spool.set("spool", &format!("allowed_uids = [{someone_else}]"));
    let _service = Service::start(&spool);
    let id = spool.submit("core", "health", None);
    final_status(&spool, &id, Some("writer_not_allowed"));
}

#[test]
fn real_start_failures_and_interruptions_match_the_status_schema() {
    let spool = Spool::new();
    let components = spool.dir.path().join("components");
    // Found wanting before the start: refused (phase rejected) after being queued.
    fs::remove_file(components.join("remote/rollback.sh")).unwrap();
    fs::set_permissions(
        components.join("core/rollback.sh"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // Trusted scripts whose start fails (phase failed).
    raw_script(
        &spool,
        "scheduler",
        "rollback.sh",
        "#!/nonexistent/interpreter\n",
    );
    raw_script(&spool, "scheduler", "update.sh", "#!/etc\n");
    let own_path = components.join("scheduler/health-check.sh");
    raw_script(
        &spool,
        "scheduler",
        "health-check.sh",
        &format!("#!{}\n", path_str(&own_path)),
    );
    spool.script("remote", "update.sh", "echo PHASE:working; sleep 300");
    let mut service = Service::start(&spool);

    let cases = [
        ("remote", "rollback", None, "script_missing", "rejected"),
        ("core", "rollback", None, "script_untrusted", "rejected"),
        ("scheduler", "rollback", None, "script_missing", "failed"),
        (
            "scheduler",
            "update",
            Some("1.0.0"),
            "script_not_executable",
            "failed",
        ),
        ("scheduler", "health", None, "spawn_failed", "failed"),
    ];
    // One at a time: a request refused when its turn comes does not make the coordinator
    // look at the rest of its queue again until the next event arrives.
    for (component, action, version, code, phase) in cases {
        let id = spool.submit(component, action, version);
        let s = final_status(&spool, &id, Some(code));
        assert_eq!(s["phase"], phase, "{s}");
    }

    // Stopping the service while an update runs and another waits.
    let interrupted = new_id();
    let left_queued = new_id();
    spool.drop_in_place(
        &interrupted,
        &Spool::request_json(&interrupted, "remote", "update", Some("3.0.0")),
    );
    wait_in_phase(&spool, &interrupted, "working");
    spool.drop_in_place(
        &left_queued,
        &Spool::request_json(&left_queued, "core", "update", Some("3.0.0")),
    );
    wait_in_phase(&spool, &left_queued, "queued");
    // Stopping the service touches neither: the update keeps running under its monitor.
    service.signal(nix::sys::signal::Signal::SIGTERM);
    service.wait_for_notification("STOPPING=1");
    assert!(service.wait_exit(), "clean exit");
    let s = checked_status(&spool, &interrupted, "running through a stop");
    assert_eq!(
        (&s["message"], &s["phase"]),
        (&json!("in_progress"), &json!("working"))
    );
    let s = checked_status(&spool, &left_queued, "left queued at shutdown");
    assert_eq!(
        (&s["message"], &s["phase"]),
        (&json!("in_progress"), &json!("queued"))
    );
    // Its monitor and script vanish (as in a reboot): the next start answers `interrupted`.
    for pid in crate::support::processes_mentioning(spool.dir.path()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    crate::support::wait_until("monitor and script gone", || {
        crate::support::processes_mentioning(spool.dir.path()).is_empty()
    });
    let mut restarted = Service::start(&spool);
    let s = spool.wait_final(&interrupted);
    assert_valid_status("interrupted", &s);
    assert_eq!(
        (&s["code"], &s["phase"]),
        (&json!("interrupted"), &json!("failed"))
    );
    // The queued one runs after the restart.
    let s = spool.wait_final(&left_queued);
    assert_valid_status("queued before the stop, answered after it", &s);
    assert!(restarted.stop());
}
