//! Fair share between writers (issue 15, attack 4 "Starving everyone"): two real uids write
//! requests, each as its own process (`setpriv`), the way two containers in the spool group
//! would. B fills everything it may fill (queue, scheduled requests, hourly cap, run slots)
//! and A is served all the same; requests start round-robin between writers.
//!
//! Needs root (to write as other uids); the CI runs as root.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};

use crate::support::{Service, Spool, new_id, path_str, wait_until};
use jiff::{Timestamp, ToSpan};

const A: u32 = 2001;
const B: u32 = 2002;

fn need_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root (requests written as two other uids); CI runs as root");
    }
}

/// Lets any uid reach `requests/` and write into it (the real spool: group 1730).
fn open_spool_to_writers(spool: &Spool) {
    spool.create_dirs();
    for dir in [spool.dir.path(), &spool.root()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(spool.requests(), fs::Permissions::from_mode(0o1733)).unwrap();
}

/// Writes `requests/<id>.json` as `uid` (its own process, open/write/close like the client).
fn drop_as(spool: &Spool, uid: u32, id: &str, body: &serde_json::Value) {
    let path = spool.requests().join(format!("{id}.json"));
    let mut writer = Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
            "sh".into(),
            "-c".into(),
            r#"cat > "$1""#.into(),
            "sh".into(),
        ])
        .arg(&path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("setpriv");
    let mut stdin = writer.stdin.take().unwrap();
    stdin.write_all(body.to_string().as_bytes()).unwrap();
    drop(stdin);
    assert!(
        writer.wait().unwrap().success(),
        "writing {id} as uid {uid}"
    );
}

fn request(component: &str, action: &str, version: Option<&str>) -> (String, serde_json::Value) {
    let id = new_id();
    let body = serde_json::from_str(&Spool::request_json(&id, component, action, version)).unwrap();
    (id, body)
}

fn not_before(mut body: serde_json::Value, at: Timestamp) -> serde_json::Value {
    body["not_before"] = at.to_string().into();
    body
}

/// Drops a request as `uid` and waits until the service has taken it (a status or progress
/// record exists, owned by the writer); returns its id.
fn submit_as(spool: &Spool, uid: u32, (id, body): (String, serde_json::Value)) -> String {
    drop_as(spool, uid, &id, &body);
    wait_until("the request is taken", || spool.status(&id).is_some());
    let status = spool.status_dir().join(format!("{id}.json"));
    let answered = if status.exists() {
        status
    } else {
        spool.progress_path(&id)
    };
    assert_eq!(fs::metadata(&answered).unwrap().uid(), uid, "{id}");
    id
}

fn phase(spool: &Spool, id: &str) -> String {
    spool.status(id).unwrap()["phase"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn refused(spool: &Spool, id: &str, code: &str, key: &str) {
    let status = spool.wait_final(id);
    assert_eq!(status["code"], code, "{status}");
    let message = status["message"].as_str().unwrap();
    assert!(message.contains(key), "{message}");
}

#[test]
fn a_writer_is_served_while_another_has_filled_everything_it_may_fill() {
    need_root();
    let mut spool = Spool::new();
    // Shares (half of each total): 3 queued, 2 scheduled, 2 updates an hour per component,
    // 1 run slot.
    spool.set("spool", "max_queued = 6\nmax_scheduled_per_writer = 2");
    spool.set("execution", "max_concurrent = 2");
    for c in ["remote", "core", "scheduler"] {
        spool.set_key(&format!("components.{c}"), "max_updates_per_hour", "4");
    }
    let gate = spool.gated_script("core", "health-check.sh", "", "");
    spool.gated_script("remote", "health-check.sh", "", "");
    open_spool_to_writers(&spool);
    let mut service = Service::start(&spool);
    let soon = Timestamp::now().checked_add(144.hours()).unwrap();

    // B: a health check that hangs holds B's one run slot; its next one waits for it although
    // a slot is free.
    let b_running = submit_as(&spool, B, request("core", "health", None));
    wait_until("B's health check runs", || {
        phase(&spool, &b_running) == "running"
    });
    let b_waits_for_its_slot = submit_as(&spool, B, request("remote", "health", None));
    // Two updates: B's share of remote's hourly cap; with the health check, B's share of the
    // queue.
    let b_updates: Vec<String> = ["1.0", "1.1"]
        .into_iter()
        .map(|v| submit_as(&spool, B, request("remote", "update", Some(v))))
        .collect();
    let (id, body) = request("remote", "update", Some("1.2"));
    drop_as(&spool, B, &id, &not_before(body, soon));
    refused(
        &spool,
        &id,
        "rate_limited",
        "components.remote.max_updates_per_hour_per_writer",
    );
    let (id, body) = request("scheduler", "health", None);
    drop_as(&spool, B, &id, &body);
    refused(&spool, &id, "queue_full", "spool.max_queued_per_writer");
    // Scheduled requests: two, B's limit; and none for ever.
    let b_scheduled: Vec<String> = (0..2)
        .map(|_| {
            let (id, body) = request("core", "health", None);
            submit_as(&spool, B, (id, not_before(body, soon)))
        })
        .collect();
    let (id, body) = request("core", "health", None);
    drop_as(&spool, B, &id, &not_before(body, soon));
    refused(&spool, &id, "queue_full", "spool.max_scheduled_per_writer");
    let (id, body) = request("core", "health", None);
    let forever = "9999-01-01T00:00:00Z".parse().unwrap();
    drop_as(&spool, B, &id, &not_before(body, forever));
    refused(&spool, &id, "invalid_not_before", "state.retention_days");
    for id in &b_scheduled {
        wait_until("B's request waits for its time", || {
            phase(&spool, id) == "scheduled"
        });
    }

    // A: its updates are within its own share of the hourly caps, and start ahead of B's
    // older ones (B runs all it may).
    for version in ["2.0", "2.1"] {
        let a_update = submit_as(&spool, A, request("remote", "update", Some(version)));
        assert_eq!(spool.wait_final(&a_update)["success"], true);
    }

    // All of B's requests survive a restart (the hourly caps are kept in memory only).
    assert!(service.stop());
    drop(service);
    let _service = Service::start(&spool);

    // A is served at once beside B's hanging run, gets scheduled requests of its own, and
    // room in the queue beside B's full share.
    let a_health = submit_as(&spool, A, request("scheduler", "health", None));
    assert_eq!(spool.wait_final(&a_health)["success"], true);
    let (id, body) = request("core", "health", None);
    let a_scheduled = submit_as(&spool, A, (id, not_before(body, soon)));
    wait_until("A's request waits for its time", || {
        phase(&spool, &a_scheduled) == "scheduled"
    });
    // A fills its own share of the queue beside B's (its first one runs beside B's).
    let a_queued: Vec<String> = (0..3)
        .map(|_| submit_as(&spool, A, request("core", "health", None)))
        .collect();
    for id in b_updates.iter().chain([&b_waits_for_its_slot]) {
        assert_eq!(phase(&spool, id), "queued", "B's {id} still waits");
    }
    assert_eq!(phase(&spool, &b_running), "running");

    // Once B's run ends, everything due runs.
    fs::write(&gate, "").unwrap();
    for id in [&b_running, &b_waits_for_its_slot]
        .into_iter()
        .chain(&b_updates)
        .chain(&a_queued)
    {
        assert_eq!(spool.wait_final(id)["success"], true, "{id}");
    }
    for id in b_scheduled.iter().chain([&a_scheduled]) {
        assert_eq!(phase(&spool, id), "scheduled", "{id}");
    }
}

#[test]
fn requests_start_round_robin_between_writers() {
    need_root();
    let mut spool = Spool::new();
    spool.set_key("components.core", "max_updates_per_hour", "0");
    let ledger = spool.evidence().join("ledger");
    let gate = spool.evidence().join("gate");
    // Updates run one at a time; the first waits for the gate, so the others line up.
    let script = format!(
        "echo \"$1\" >> {ledger}; if [ \"$1\" = 1.1 ]; then while [ ! -e {gate} ]; do sleep 0.05; done; fi",
        ledger = path_str(&ledger),
        gate = path_str(&gate),
    );
    spool.script("core", "update.sh", &script);
    open_spool_to_writers(&spool);
    let _service = Service::start(&spool);

    let mut ids = Vec::new();
    for version in ["1.1", "1.2", "1.3", "1.4", "1.5"] {
        ids.push(submit_as(
            &spool,
            B,
            request("core", "update", Some(version)),
        ));
    }
    wait_until("B's first update runs", || {
        phase(&spool, &ids[0]) == "running"
    });
    let a = submit_as(&spool, A, request("core", "update", Some("2.0")));
    // A's one request is next in line, not sixth.
    wait_until("A's update is shown next", || {
        spool.status(&a).is_some_and(|s| s["queue_position"] == 1)
    });
    wait_until("B's next one moved back", || {
        spool
            .status(&ids[1])
            .is_some_and(|s| s["queue_position"] == 2)
    });
    fs::write(&gate, "").unwrap();
    for id in ids.iter().chain([&a]) {
        assert_eq!(spool.wait_final(id)["success"], true, "{id}");
    }
    assert_eq!(
        fs::read_to_string(&ledger).unwrap(),
        "1.1\n2.0\n1.2\n1.3\n1.4\n1.5\n",
        "one writer's backlog does not put another's request at its end"
    );
}
