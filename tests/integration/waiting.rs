//! Requests that wait: for their component's maintenance window, for their own `not_before`,
//! or for their turn (the queue position their status shows).

use std::fs;
use std::time::{Duration, Instant};

use crate::support::{Service, Spool, assert_message_says, new_id, path_str, wait_until};
use jiff::{Timestamp, ToSpan};

/// A window that opens two hours from now (local time) and lasts one hour.
fn window_excluding_now() -> String {
    let now = jiff::ZonedDateTime::now();
    let start = now.checked_add(2.hours()).unwrap();
    let end = now.checked_add(3.hours()).unwrap();
    format!(
        "{:02}:{:02}-{:02}:{:02}",
        start.hour(),
        start.minute(),
        end.hour(),
        end.minute()
    )
}

fn request(id: &str, component: &str, action: &str, version: Option<&str>) -> serde_json::Value {
    serde_json::from_str(&Spool::request_json(id, component, action, version)).unwrap()
}

fn wait_phase(spool: &Spool, id: &str, phase: &str) -> serde_json::Value {
    let mut last = None;
    let deadline = Instant::now() + crate::support::PATIENCE;
    while Instant::now() < deadline {
        last = spool.status(id);
        if last.as_ref().is_some_and(|s| s["phase"] == phase) {
            return last.unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{id} never reached phase {phase}; last status: {last:?}");
}

#[test]
fn an_update_outside_its_window_waits_scheduled_without_holding_up_others() {
    let mut spool = Spool::new();
    let window = window_excluding_now();
    spool.set_key("components.remote", "window", &format!("\"{window}\""));
    let ledger = spool.evidence().join("ledger");
    for component in ["remote", "core"] {
        for script in ["update.sh", "health-check.sh"] {
            let body = format!("echo {component} {script} >> {}", path_str(&ledger));
            spool.script(component, script, &body);
        }
    }
    let _service = Service::start(&spool);

    let deferred = spool.submit("remote", "update", Some("1.4.2"));
    let status = wait_phase(&spool, &deferred, "scheduled");
    assert_eq!(status["message"], "in_progress", "{status}");
    let scheduled_for: Timestamp = status["scheduled_for"].as_str().unwrap().parse().unwrap();
    let local = scheduled_for.to_zoned_datetime(jiff::tz::TimeZone::system());
    assert_eq!(
        format!("{:02}:{:02}", local.hour(), local.minute()),
        window[..5],
        "it starts when the window opens"
    );
    assert!(scheduled_for > Timestamp::now());
    assert!(
        crate::support::status_schema_errors(&status).is_empty(),
        "{status}"
    );

    // Meanwhile: health checks of remote and updates of other components run at once, even
    // with updates serialized across components.
    let health = spool.submit("remote", "health", None);
    assert_eq!(spool.wait_final(&health)["success"], true);
    let other = spool.submit("core", "update", Some("2.0"));
    assert_eq!(spool.wait_final(&other)["success"], true);
    assert_eq!(
        fs::read_to_string(&ledger).unwrap(),
        "remote health-check.sh\ncore update.sh\n",
        "remote's update has not run"
    );
    assert_eq!(spool.status(&deferred).unwrap()["phase"], "scheduled");

    // A scheduled request can be cancelled like a queued one.
    let cancel = new_id();
    spool.drop_in_place(
        &cancel,
        &serde_json::json!({"action": "cancel", "target": deferred, "request_id": cancel})
            .to_string(),
    );
    assert_eq!(spool.wait_final(&cancel)["success"], true);
    let status = spool.wait_final(&deferred);
    assert_eq!(status["code"], "cancelled", "{status}");
    assert!(
        !fs::read_to_string(&ledger)
            .unwrap()
            .contains("remote update.sh")
    );
}

#[test]
fn not_before_holds_a_request_until_its_time_then_it_runs() {
    let spool = Spool::new();
    let ledger = spool.evidence().join("ledger");
    let script = format!("date +%s.%N >> {}", path_str(&ledger));
    spool.script("core", "health-check.sh", &script);
    let mut service = Service::start(&spool);
    let id = new_id();
    let not_before = Timestamp::now().checked_add(4.seconds()).unwrap();
    let mut body = request(&id, "core", "health", None);
    body["not_before"] = not_before.to_string().into();
    spool.drop_in_place(&id, &body.to_string());

    let waiting = wait_phase(&spool, &id, "scheduled");
    let scheduled_for: Timestamp = waiting["scheduled_for"].as_str().unwrap().parse().unwrap();
    assert_eq!(scheduled_for, not_before, "{waiting}");
    // It keeps waiting across a restart of the service (not_before is in its run record).
    assert!(service.stop(), "the service stops on SIGTERM");
    drop(service);
    let _service = Service::start(&spool);
    assert!(!ledger.exists(), "not run early by the restart");
    let status = spool.wait_final(&id);
    assert_eq!(status["success"], true, "{status}");
    let ran_at: f64 = fs::read_to_string(&ledger).unwrap().trim().parse().unwrap();
    assert!(
        ran_at >= not_before.as_millisecond() as f64 / 1000.0,
        "ran at {ran_at}, before its not_before {not_before}"
    );
}

#[test]
fn a_request_with_an_unreadable_not_before_is_refused() {
    let spool = Spool::new();
    let _service = Service::start(&spool);
    let id = new_id();
    let mut body = request(&id, "core", "health", None);
    body["not_before"] = "after lunch".into();
    spool.drop_in_place(&id, &body.to_string());
    let status = spool.wait_final(&id);
    assert_eq!(status["code"], "invalid_not_before", "{status}");
    assert_message_says(&status, "RFC 3339");
}

#[test]
fn queued_statuses_show_their_position_and_it_moves_up() {
    let spool = Spool::new();
    let gate = spool.evidence().join("gate");
    // Every update waits for the gate file; updates run one at a time.
    for component in ["remote", "core", "scheduler"] {
        let script = format!(
            "while [ ! -e {g} ]; do sleep 0.05; done; rm -f {g}",
            g = path_str(&gate)
        );
        spool.script(component, "update.sh", &script);
    }
    let _service = Service::start(&spool);
    let ids: Vec<String> = (0..4).map(|_| new_id()).collect();
    for (id, component) in ids.iter().zip(["remote", "core", "scheduler", "remote"]) {
        spool.drop_in_place(
            id,
            &Spool::request_json(id, component, "update", Some("1.0")),
        );
        // In order: the position depends on arrival.
        wait_until("the request is taken", || spool.status(id).is_some());
    }
    wait_phase(&spool, &ids[0], "running");
    let positions = || -> Vec<serde_json::Value> {
        ids[1..]
            .iter()
            .map(|id| spool.status(id).unwrap()["queue_position"].clone())
            .collect()
    };
    wait_until("positions 1, 2, 3", || positions() == [1, 2, 3]);
    for id in &ids[1..] {
        let status = spool.status(id).unwrap();
        assert!(
            crate::support::status_schema_errors(&status).is_empty(),
            "{status}"
        );
    }

    fs::write(&gate, "").unwrap();
    assert_eq!(spool.wait_final(&ids[0])["success"], true);
    wait_until("positions move up once the first one finished", || {
        spool.status(&ids[2]).unwrap()["queue_position"] == 1
            && spool.status(&ids[3]).unwrap()["queue_position"] == 2
    });
    for id in &ids[1..] {
        wait_phase(&spool, id, "running");
        fs::write(&gate, "").unwrap();
        assert_eq!(spool.wait_final(id)["success"], true);
    }
}
