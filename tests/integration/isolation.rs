//! Containers against each other (issue 15): two writers with real, different uids share one
//! spool, the way two containers in the spool group do. Writer B tries to read, cancel and
//! block writer A's requests; each attack must fail while A is served as usual. Writers are
//! real processes under `setpriv` (needs root, as CI runs).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};

use crate::support::{Service, Spool, new_id, path_str, wait_until};
use serde_json::Value;

const A: u32 = 2001;
const B: u32 = 2002;

/// A spool the two writers can use as group members would: they may create in `requests/`
/// and open, read and delete their own files in `status/` by name, and list neither (the
/// installed 1730 modes, given to "others" here because the test has no spool group).
fn shared_spool() -> Spool {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root (writers with other uids); CI runs as root"
    );
    let spool = Spool::new();
    spool.create_dirs();
    for dir in [spool.dir.path().to_owned(), spool.root()] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    for dir in [spool.requests(), spool.status_dir()] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1733)).unwrap();
    }
    spool
}

/// Runs `script` with `sh -c` as `uid` (no supplementary groups), feeding it `input`.
fn as_writer(uid: u32, script: &str, input: &str) -> (bool, String) {
    let mut child = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Writes a request file in place as `uid`, the way the container client does.
fn drop_as(spool: &Spool, uid: u32, id: &str, request: &str) {
    let path = spool.requests().join(format!("{id}.json"));
    let (ok, _) = as_writer(uid, &format!("cat > '{}'", path_str(&path)), request);
    assert!(ok, "uid {uid} could not write {}", path.display());
}

/// Reads and deletes a status as `uid`, as the client collects its answer; `None` when that
/// uid cannot read it (or there is none).
fn collect_as(spool: &Spool, uid: u32, id: &str) -> Option<Value> {
    let path = path_str(&spool.status_dir().join(format!("{id}.json")));
    let (ok, text) = as_writer(uid, &format!("cat '{path}' && rm -f '{path}'"), "");
    ok.then(|| serde_json::from_str(&text).expect("a status is JSON"))
}

/// Drops an update of `remote` to `version` as `uid`; returns its id.
fn update_as(spool: &Spool, uid: u32, version: &str) -> String {
    let id = new_id();
    let request = Spool::request_json(&id, "remote", "update", Some(version));
    drop_as(spool, uid, &id, &request);
    id
}

fn health(id: &str) -> String {
    Spool::request_json(id, "core", "health", None)
}

/// Waits until the service has taken (and removed) a request file.
fn wait_taken(spool: &Spool, id: &str) {
    let file = spool.requests().join(format!("{id}.json"));
    wait_until("request file taken", || !file.exists());
}

#[test]
fn a_copy_of_another_writers_id_never_gets_that_writers_answer() {
    let spool = shared_spool();
    spool.script("core", "health-check.sh", "echo secret output of A");
    let _service = Service::start(&spool);

    let id = new_id();
    drop_as(&spool, A, &id, &health(&id));
    spool.wait_final(&id);
    // The request file goes after the answer: until then B could not drop its copy (sticky).
    wait_taken(&spool, &id);
    // Only A can read its answer...
    assert_eq!(collect_as(&spool, B, &id), None, "B read A's status");
    let answer = collect_as(&spool, A, &id).expect("A collects its answer");
    assert_eq!(answer["output"], "secret output of A\n");

    // ...and once A has collected it, B's copy of the id (a health check, a cancel or a dry
    // run alike) gets no answer under that name at all.
    for copy in [
        health(&id),
        serde_json::json!({"action": "cancel", "target": new_id(), "request_id": id}).to_string(),
        serde_json::json!({"component": "core", "action": "health", "dry_run": true, "request_id": id})
            .to_string(),
    ] {
        drop_as(&spool, B, &id, &copy);
        wait_taken(&spool, &id);
        assert!(
            spool.status_file(&id).is_none(),
            "B's copy was answered under A's id: {:?}",
            spool.status_file(&id)
        );
    }

    // A itself, sending its id again after a restart, still gets its recorded answer.
    drop_as(&spool, A, &id, &health(&id));
    wait_taken(&spool, &id);
    let again = collect_as(&spool, A, &id).expect("A's own copy is answered again");
    assert_eq!(again["output"], "secret output of A\n");
}

#[test]
fn a_copy_sent_while_the_original_waits_leaves_its_answer_alone() {
    let spool = shared_spool();
    let _service = Service::start(&spool);
    let id = new_id();
    drop_as(&spool, A, &id, &health(&id));
    let answer = spool.wait_concluded(&id);
    drop_as(&spool, B, &id, &health(&id));
    wait_taken(&spool, &id);
    let meta = fs::metadata(spool.status_dir().join(format!("{id}.json"))).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (A, 0o600));
    assert_eq!(spool.status_file(&id), Some(answer));
}

#[test]
fn only_the_writer_cancels_and_others_cannot_tell_its_request_exists() {
    let spool = shared_spool();
    let gate = spool.gated_script(
        "remote",
        "update.sh",
        "echo PHASE:installing",
        "echo installed",
    );
    let _service = Service::start(&spool);
    let running = update_as(&spool, A, "1.2.3");
    spool.wait_phase(&running, "installing");
    let queued = update_as(&spool, A, "1.2.4");
    spool.wait_phase(&queued, "queued");

    let cancel_as = |uid: u32, target: &str| -> Value {
        let id = new_id();
        let request =
            serde_json::json!({"action": "cancel", "target": target, "request_id": id}).to_string();
        drop_as(&spool, uid, &id, &request);
        spool.wait_final(&id);
        collect_as(&spool, uid, &id).expect("the canceller reads its answer")
    };
    let nobodys = cancel_as(B, &new_id());
    for target in [&running, &queued] {
        let answer = cancel_as(B, target);
        assert_eq!(answer["code"], "unknown_target", "{answer}");
        // Word for word what an id nobody used gets, but for the id itself.
        assert_eq!(
            answer["message"]
                .as_str()
                .unwrap()
                .replace(target.as_str(), "ID"),
            nobodys["message"]
                .as_str()
                .unwrap()
                .replace(nobodys_target(&nobodys), "ID")
        );
    }

    // A's requests are untouched: the running one finishes, the queued one runs after it.
    fs::write(&gate, "").unwrap();
    assert_eq!(spool.wait_final(&running)["success"], true);
    assert_eq!(spool.wait_final(&queued)["success"], true);

    // A's own cancel of a finished request of its own is told the truth.
    assert_eq!(cancel_as(A, &running)["code"], "already_finished");
}

/// The target named in an `unknown_target` answer's message (the last word).
fn nobodys_target(answer: &Value) -> &str {
    answer["message"]
        .as_str()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
}

#[test]
fn a_name_planted_at_another_writers_status_never_blocks_or_forges_its_answer() {
    let spool = shared_spool();
    let _service = Service::start(&spool);
    // B knows (or guessed) the ids A will use.
    let blocked = new_id();
    let forged = new_id();
    let status = |id: &str| path_str(&spool.status_dir().join(format!("{id}.json")));
    let fake = serde_json::json!({"request_id": forged, "success": true, "message": "forged",
        "phase": "done", "output": "", "error": "", "timestamp": "2026-01-01T00:00:00Z"});
    let (ok, _) = as_writer(
        B,
        &format!(
            "mkdir -p '{}/inner' && mkdir '{}' && cat > '{}'",
            status(&blocked),
            path_str(&spool.progress_path(&blocked)),
            status(&forged)
        ),
        &fake.to_string(),
    );
    assert!(ok, "B plants its names");

    for id in [&blocked, &forged] {
        drop_as(&spool, A, id, &health(id));
        wait_taken(&spool, id);
        let answer = collect_as(&spool, A, id).expect("A gets its real answer");
        assert_eq!(answer["message"], "Health check passed", "{answer}");
    }
    assert!(
        spool.status_names().is_empty(),
        "{:?}",
        spool.status_names()
    );
}

/// Where uids say nothing (every container runs as root, as DuneBugger's `remote` does), one
/// spool per container keeps them apart: the same attacks from another spool fail too.
#[test]
fn drop_boxes_keep_containers_apart_where_uids_say_nothing() {
    let mut spool = Spool::new();
    spool.add_config(
        "[spools.scheduler]\nroot = \"spool-scheduler\"\ncomponents = [\"scheduler\"]\nactions = [\"health\"]\n",
    );
    spool.script("core", "health-check.sh", "echo secret output of main");
    let gate = spool.gated_script("remote", "update.sh", "echo PHASE:installing", "");
    let _service = Service::start(&spool);
    let other = spool.dir.path().join("spool-scheduler");
    let drop_into_other = |id: &str, request: &str| {
        fs::write(other.join(format!("requests/{id}.json")), request).unwrap();
        let file = other.join(format!("requests/{id}.json"));
        wait_until("taken from the drop box", || !file.exists());
        fs::read_to_string(other.join(format!("status/{id}.json")))
            .ok()
            .map(|text| serde_json::from_str::<Value>(&text).unwrap())
    };

    // What the drop box may ask for, it gets, answered in its own status/.
    let own = new_id();
    let answer = drop_into_other(
        &own,
        &Spool::request_json(&own, "scheduler", "health", None),
    )
    .expect("answered in the drop box");
    assert_eq!(answer["success"], true, "{answer}");
    assert!(
        spool.status_file(&own).is_none(),
        "answered in the main spool"
    );
    // Nothing else.
    for (component, action, version) in [
        ("core", "health", None),
        ("scheduler", "update", Some("1.2.3")),
    ] {
        let id = new_id();
        let answer = drop_into_other(&id, &Spool::request_json(&id, component, action, version))
            .expect("refused in the drop box");
        assert_eq!(answer["code"], "not_allowed_here", "{answer}");
    }

    // The main spool's answer is not the drop box's, though both writers are the same uid.
    let main = spool.submit("core", "health", None);
    spool.wait_final(&main);
    fs::remove_file(spool.status_dir().join(format!("{main}.json"))).unwrap();
    assert_eq!(drop_into_other(&main, &health(&main)), None);

    // Nor can it cancel, or learn of, the main spool's running update.
    let running = spool.submit("remote", "update", Some("1.2.3"));
    spool.wait_phase(&running, "installing");
    let cancel = new_id();
    let answer = drop_into_other(
        &cancel,
        &serde_json::json!({"action": "cancel", "target": running, "request_id": cancel})
            .to_string(),
    )
    .expect("the cancel is answered");
    assert_eq!(answer["code"], "unknown_target", "{answer}");
    fs::write(&gate, "").unwrap();
    assert_eq!(spool.wait_final(&running)["success"], true);
}
