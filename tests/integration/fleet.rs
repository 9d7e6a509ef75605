//! Fleet coordination through a real 3-member etcd cluster on loopback, with several
//! coordinators, each its own host (spool, state and host_id): the group's semaphore (airlock's
//! key and JSON) caps how many hosts update at once, across crashes of a holder, the loss of an
//! etcd member and a host cut off from etcd. Skipped, loudly, only where etcd cannot be
//! installed (see [`etcd::available`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::cli::check;
use crate::support::etcd::{self, Cluster, Proxy};
use crate::support::{PATIENCE, Service, Spool, path_str, status_schema_errors, wait_until};

const GROUP: &str = "pis";

/// A host of the fleet: its own spool and state, `host_id`, and `[fleet]` naming `endpoints`.
fn host(endpoints: &str, host_id: &str, max_concurrent: u64) -> Spool {
    let mut spool = Spool::new();
    spool.add_config(&format!(
        "[fleet]\nendpoints = {endpoints}\ngroup = \"{GROUP}\"\nhost_id = \"{host_id}\"\n\
         max_concurrent = {max_concurrent}\ncall_timeout = 2\n"
    ));
    spool
}

/// An update script that notes its start and end (with the time) in the shared `timeline`.
fn timed_update(spool: &Spool, host_id: &str, timeline: &Path, seconds: f64) {
    let note = |what: &str| {
        format!(
            "echo \"$(date +%s.%N) {what} {host_id}\" >> {}",
            path_str(timeline)
        )
    };
    spool.script(
        "remote",
        "update.sh",
        &format!("{}\nsleep {seconds}\n{}", note("start"), note("end")),
    );
}

/// The most scripts that ran at once according to the timeline, and how many ran.
fn most_at_once(timeline: &Path) -> (usize, usize) {
    let text = fs::read_to_string(timeline).unwrap_or_default();
    let mut events: Vec<(f64, i32)> = text
        .lines()
        .map(|line| {
            let mut words = line.split_whitespace();
            let at: f64 = words.next().unwrap().parse().unwrap();
            // An end sorts before a start at the same instant: they did not overlap.
            let step = if words.next() == Some("start") { 1 } else { -1 };
            (at, step)
        })
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0, 0);
    for (_, step) in &events {
        now += step;
        most = most.max(now);
    }
    let starts = events.iter().filter(|(_, s)| *s == 1).count();
    (most as usize, starts)
}

fn wait_holders(cluster: &Cluster, expected: &[&str]) {
    wait_until(&format!("slot holders {expected:?}"), || {
        cluster.holders(GROUP) == expected
    });
}

/// Waits until the request's status shows it waiting for a fleet slot; returns that status.
fn wait_for_slot(spool: &Spool, id: &str, reason: &str) -> Value {
    let mut last = None;
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::time::Instant::now() < deadline {
        last = spool.status(id);
        if let Some(s) = &last
            && s["phase"] == "waiting_for_slot"
            && s["fleet_slot"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains(reason))
        {
            return s.clone();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{id} never waited for a slot because {reason:?}; last status: {last:?}");
}

fn timeline_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let timeline = dir.path().join("timeline");
    (dir, timeline)
}

#[test]
fn five_hosts_never_update_more_than_max_concurrent_at_once_even_when_an_etcd_member_dies() {
    if !etcd::available() {
        return;
    }
    let mut cluster = Cluster::start(3);
    let (_dir, timeline) = timeline_dir();
    let hosts: Vec<Spool> = (0..5)
        .map(|i| {
            let spool = host(&cluster.endpoints_toml(), &format!("host-{i}"), 2);
            timed_update(&spool, &format!("host-{i}"), &timeline, 0.3);
            spool
        })
        .collect();
    let _services: Vec<Service> = hosts.iter().map(Service::start).collect();

    let first: Vec<String> = hosts
        .iter()
        .map(|h| h.submit("remote", "update", Some("2.0.0")))
        .collect();
    // A member dies while the hosts compete (quorum stays); the first in every endpoint list.
    std::thread::sleep(Duration::from_millis(300));
    cluster.kill_member(0);
    let second: Vec<String> = hosts
        .iter()
        .map(|h| h.submit("remote", "update", Some("2.0.1")))
        .collect();
    for (spool, ids) in hosts.iter().zip(first.iter().zip(&second)) {
        for id in [ids.0, ids.1] {
            let status = spool.wait_final(id);
            assert_eq!(status["success"], true, "{status:#}");
        }
    }

    let (most, ran) = most_at_once(&timeline);
    assert_eq!(
        ran,
        10,
        "every update ran once:\n{}",
        fs::read_to_string(&timeline).unwrap()
    );
    assert!(
        most <= 2,
        "{most} hosts updated at once, max_concurrent is 2:\n{}",
        fs::read_to_string(&timeline).unwrap()
    );
    // Every slot is given back once the runs have concluded.
    wait_holders(&cluster, &[]);
    let sem: Value = serde_json::from_str(
        &cluster
            .get(&format!("com.coreos.airlock/groups/{GROUP}/v1/semaphore"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(sem, serde_json::json!({"total_slots": 2, "holders": []}));
}

#[test]
fn an_update_waits_for_a_slot_showing_the_holders_while_health_checks_still_run() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(3);
    let hosts: Vec<Spool> = (0..3)
        .map(|i| host(&cluster.endpoints_toml(), &format!("host-{i}"), 2))
        .collect();
    let gates: Vec<PathBuf> = hosts[..2]
        .iter()
        .map(|h| h.gated_script("remote", "update.sh", "", ""))
        .collect();
    hosts[2].script("remote", "update.sh", &hosts[2].record_run());
    let _services: Vec<Service> = hosts.iter().map(Service::start).collect();

    let holding: Vec<String> = hosts[..2]
        .iter()
        .map(|h| h.submit("remote", "update", Some("3.0.0")))
        .collect();
    for (h, id) in hosts.iter().zip(&holding) {
        h.wait_phase(id, "running");
    }
    wait_holders(&cluster, &["host-0", "host-1"]);

    let waiting = hosts[2].submit("remote", "update", Some("3.0.0"));
    let status = wait_for_slot(&hosts[2], &waiting, "are held");
    assert_eq!(status["fleet_slot"]["group"], GROUP, "{status:#}");
    assert_eq!(status["fleet_slot"]["holders"], 2, "{status:#}");
    assert_eq!(status["fleet_slot"]["total_slots"], 2, "{status:#}");
    assert_eq!(status_schema_errors(&status), Vec::<String>::new());
    // A health check takes no slot: it runs while the update waits.
    let health = hosts[2].submit("core", "health", None);
    assert_eq!(hosts[2].wait_final(&health)["success"], true);
    assert!(hosts[2].runs().is_empty(), "the update ran without a slot");

    fs::write(&gates[0], "").unwrap();
    assert_eq!(hosts[0].wait_final(&holding[0])["success"], true);
    assert_eq!(hosts[2].wait_final(&waiting)["success"], true);
    assert_eq!(hosts[2].runs(), [waiting]);
    fs::write(&gates[1], "").unwrap();
    assert_eq!(hosts[1].wait_final(&holding[1])["success"], true);
    wait_holders(&cluster, &[]);
}

#[test]
fn a_holder_killed_mid_update_keeps_its_slot_until_it_comes_back_and_its_run_concludes() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(3);
    let a = host(&cluster.endpoints_toml(), "host-a", 1);
    let b = host(&cluster.endpoints_toml(), "host-b", 1);
    let gate = a.gated_script("remote", "update.sh", &a.record_run(), "");
    b.script("remote", "update.sh", &b.record_run());
    let mut service_a = Service::start(&a);
    let _service_b = Service::start(&b);

    let update_a = a.submit("remote", "update", Some("4.0.0"));
    a.wait_phase(&update_a, "running");
    wait_holders(&cluster, &["host-a"]);
    service_a.crash(); // SIGKILL: the script's monitor carries on

    let update_b = b.submit("remote", "update", Some("4.0.0"));
    wait_for_slot(&b, &update_b, "are held");
    assert_eq!(
        cluster.holders(GROUP),
        ["host-a"],
        "a dead coordinator's slot stays held"
    );

    let _service_a = Service::start(&a);
    // Back, with its run still going: the slot stays with it.
    a.wait_sentinel();
    assert_eq!(cluster.holders(GROUP), ["host-a"]);
    assert!(b.runs().is_empty());

    fs::write(&gate, "").unwrap();
    assert_eq!(a.wait_final(&update_a)["success"], true);
    assert_eq!(b.wait_final(&update_b)["success"], true);
    assert_eq!(
        a.runs(),
        [update_a],
        "the update ran once, across the crash"
    );
    assert_eq!(b.runs(), [update_b]);
    wait_holders(&cluster, &[]);
}

#[test]
fn a_host_that_comes_back_with_nothing_running_gives_back_the_slot_it_held() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(3);
    // As a host that crashed holding a slot (or was reinstalled) left the semaphore.
    set_semaphore(
        &cluster,
        r#"{"total_slots":1,"holders":["host-c","zincati-node"]}"#,
    );
    let c = host(&cluster.endpoints_toml(), "host-c", 1);
    let _service = Service::start(&c);
    // Only its own: the Zincati node behind airlock keeps its slot.
    wait_holders(&cluster, &["zincati-node"]);
}

#[test]
fn a_host_cut_off_from_etcd_waits_and_goes_on_once_it_is_reconnected() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(3);
    let proxy = Proxy::start(cluster.client_port(1));
    let spool = host(&format!("[{:?}]", proxy.url()), "host-far", 1);
    spool.script("remote", "update.sh", &spool.record_run());
    let service = Service::start(&spool);

    proxy.cut();
    let update = spool.submit("remote", "update", Some("5.0.0"));
    let status = wait_for_slot(&spool, &update, "etcd cannot be reached");
    assert_eq!(status_schema_errors(&status), Vec::<String>::new());
    // Health checks go on; the update does not run while the host cannot take a slot.
    let health = spool.submit("core", "health", None);
    assert_eq!(spool.wait_final(&health)["success"], true);
    assert!(spool.runs().is_empty(), "the update ran without a slot");
    assert!(
        service.log().contains("cannot reach etcd"),
        "the journal says why it waits:\n{}",
        service.log()
    );

    proxy.restore();
    assert_eq!(spool.wait_final(&update)["success"], true);
    assert_eq!(spool.runs(), [update]);
    wait_holders(&cluster, &[]);
}

#[test]
fn check_reports_the_fleet_settings_and_who_holds_the_slots() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(1);
    set_semaphore(&cluster, r#"{"total_slots":3,"holders":["zincati-node"]}"#);
    let spool = host(&cluster.endpoints_toml(), "host-check", 3);
    let (code, text) = check(&spool);
    assert_eq!(code, 0, "{text}");
    crate::support::assert_contains_all(
        "check's report",
        &text,
        &[
            "fleet:",
            &cluster.endpoints()[0],
            "com.coreos.airlock/groups/pis/v1/semaphore",
            "host-check",
            "answers; 1 of 3 slot(s) held by zincati-node",
        ],
    );

    // etcd gone: a warning that says what updates would do, not a failure of the check.
    drop(cluster);
    let (code, text) = check(&spool);
    assert_eq!(code, 0, "{text}");
    crate::support::assert_contains_all(
        "check's report",
        &text,
        &[
            "no etcd endpoint answered",
            "would wait (fleet.fail = closed)",
        ],
    );
}

#[test]
fn a_fleet_table_without_endpoints_is_refused_saying_what_to_write() {
    let mut spool = Spool::new();
    spool.add_config("[fleet]\ngroup = \"pis\"\n");
    let (code, text) = check(&spool);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("fleet.endpoints: required"), "{text}");
}

/// `update-coordinator fleet ARGS --config` of `spool`: exit code, stdout, stderr.
fn fleet_cli(spool: &Spool, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(crate::support::bin())
        .arg("fleet")
        .args(args)
        .arg("--config")
        .arg(spool.config_path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fleet_status(spool: &Spool) -> Value {
    let (code, stdout, stderr) = fleet_cli(spool, &["status", "--json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// The host's row of `fleet status --json`.
fn row(status: &Value, host: &str) -> Value {
    status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == host)
        .cloned()
        .unwrap_or_else(|| panic!("{host} not in {status:#}"))
}

#[test]
fn fleet_status_shows_each_holder_alive_and_what_it_runs_and_release_refuses_a_live_one() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(1);
    set_semaphore(&cluster, r#"{"total_slots":3,"holders":["zincati-node"]}"#);
    let a = host(&cluster.endpoints_toml(), "host-a", 3);
    let b = host(&cluster.endpoints_toml(), "host-b", 3);
    let gate = a.gated_script("remote", "update.sh", "", "");
    let _services = [Service::start(&a), Service::start(&b)];
    let update = a.submit("remote", "update", Some("6.0.0"));
    a.wait_phase(&update, "running");

    wait_until(
        "host-a shown alive, holding a slot, running its update",
        || {
            let status = fleet_status(&b);
            let a = row(&status, "host-a");
            a["holds_slot"] == true
                && a["liveness"] == "alive"
                && a["running"] == serde_json::json!(["remote update 6.0.0"])
        },
    );
    let status = fleet_status(&b);
    assert_eq!(status["total_slots"], 3, "{status:#}");
    let zincati = row(&status, "zincati-node");
    assert_eq!(
        (&zincati["holds_slot"], &zincati["liveness"]),
        (&Value::Bool(true), &Value::from("unknown"))
    );
    let idle = row(&status, "host-b");
    assert_eq!(
        (&idle["holds_slot"], &idle["liveness"]),
        (&Value::Bool(false), &Value::from("alive"))
    );
    let (code, text, _) = fleet_cli(&b, &["status"]);
    assert_eq!(code, 0);
    crate::support::assert_contains_all(
        "fleet status",
        &text,
        &[
            "fleet group pis: 2 of 3 slot(s) held",
            "host-a",
            "remote update 6.0.0",
            "zincati-node",
        ],
    );

    let (code, _, stderr) = fleet_cli(&b, &["release", "host-a"]);
    assert_eq!(code, 1, "{stderr}");
    crate::support::assert_contains_all(
        "the refusal",
        &stderr,
        &["host-a is alive", "running remote update 6.0.0", "--force"],
    );
    assert_eq!(cluster.holders(GROUP), ["host-a", "zincati-node"]);
    let (code, stdout, stderr) = fleet_cli(&b, &["release", "host-a", "--force"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(cluster.holders(GROUP), ["zincati-node"]);
    let (code, stdout, _) = fleet_cli(&b, &["release", "host-b"]);
    assert_eq!(
        (code, stdout.trim()),
        (0, "host-b holds no slot of fleet group pis")
    );

    fs::write(&gate, "").unwrap();
    assert_eq!(a.wait_final(&update)["success"], true);
}

#[test]
fn a_holder_gone_longer_than_stale_after_loses_its_slot_to_a_waiting_host() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(1);
    let a = host(&cluster.endpoints_toml(), "host-a", 1);
    let mut b = host(&cluster.endpoints_toml(), "host-b", 1);
    b.add_config("stale_after = 4");
    let gate = a.gated_script("remote", "update.sh", "", "");
    b.script("remote", "update.sh", &b.record_run());
    let mut service_a = Service::start(&a);
    let service_b = Service::start(&b);
    let update_a = a.submit("remote", "update", Some("7.0.0"));
    a.wait_phase(&update_a, "running");
    wait_holders(&cluster, &["host-a"]);
    let update_b = b.submit("remote", "update", Some("7.0.0"));
    wait_for_slot(&b, &update_b, "are held");

    service_a.crash();
    // Once its lease has expired, host-a shows as gone, still holding its slot...
    wait_until("host-a shown gone", || {
        row(&fleet_status(&b), "host-a")["liveness"] == "gone"
    });
    assert_eq!(
        cluster.holders(GROUP),
        ["host-a"],
        "freed before stale_after"
    );
    // ...until host-b, waiting, has seen it gone for stale_after.
    assert_eq!(b.wait_final(&update_b)["success"], true);
    assert_eq!(b.runs(), [update_b]);
    assert!(
        service_b
            .log()
            .contains("freed the fleet slot of a host gone for longer than fleet.stale_after"),
        "{}",
        service_b.log()
    );
    fs::write(&gate, "").unwrap();
}

/// Starts a rollout with `fleet rollout start ARGS` through `spool`'s config; its record.
fn start_rollout(cluster: &Cluster, spool: &Spool, args: &[&str]) -> Value {
    let mut all = vec!["rollout", "start", "--component", "remote"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = fleet_cli(spool, &all);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let record = cluster
        .get(&format!("update-coordinator/fleet/{GROUP}/rollouts/remote"))
        .expect("the rollout in etcd");
    serde_json::from_str(&record).unwrap()
}

fn rollout_of(record: &Value) -> update_coordinator::fleet::rollout::Rollout {
    serde_json::from_value(record.clone()).unwrap()
}

#[test]
fn a_staged_rollout_opens_its_waves_in_order_a_delay_apart() {
    use update_coordinator::fleet::rollout::wave_of;
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(1);
    let operator = host(&cluster.endpoints_toml(), "operator", 8);
    let record = start_rollout(
        &cluster,
        &operator,
        &[
            "--version",
            "8.0.0",
            "--waves",
            "34,67,100",
            "--wave-delay",
            "3s",
        ],
    );
    let rollout = rollout_of(&record);
    // Two hosts in each wave: which ids those are depends on the rollout's id.
    let mut ids: Vec<(usize, String)> = Vec::new();
    for wave in 1..=3 {
        let hosts = (0..)
            .map(|i| format!("pi-{i}"))
            .filter(|h| wave_of(h, &rollout) == wave)
            .take(2);
        ids.extend(hosts.map(|h| (wave, h)));
    }
    let (_dir, timeline) = timeline_dir();
    let hosts: Vec<Spool> = ids
        .iter()
        .map(|(_, id)| {
            let spool = host(&cluster.endpoints_toml(), id, 8);
            timed_update(&spool, id, &timeline, 0.0);
            spool
        })
        .collect();
    let _services: Vec<Service> = hosts.iter().map(Service::start).collect();
    let requests: Vec<String> = hosts
        .iter()
        .map(|h| h.submit("remote", "update", Some("8.0.0")))
        .collect();

    // A host of the last wave says which wave it waits for, and when it opens.
    let last = hosts.len() - 1;
    let status = {
        let mut seen = None;
        wait_until("the last wave's request scheduled", || {
            seen = hosts[last].status(&requests[last]);
            seen.as_ref().is_some_and(|s| s["rollout_wave"] == 3)
        });
        seen.unwrap()
    };
    assert_eq!(status["phase"], "scheduled", "{status:#}");
    assert_eq!(status["rollout_id"], rollout.id.as_str());
    let opens: jiff::Timestamp = status["scheduled_for"].as_str().unwrap().parse().unwrap();
    assert_eq!(opens.as_second(), rollout.started_at + 6, "{status:#}");
    assert_eq!(status_schema_errors(&status), Vec::<String>::new());
    // Health checks are not held back by the rollout.
    let health = hosts[last].submit("core", "health", None);
    assert_eq!(hosts[last].wait_final(&health)["success"], true);

    for (spool, id) in hosts.iter().zip(&requests) {
        assert_eq!(spool.wait_final(id)["success"], true);
    }
    // Each host started no earlier than its wave opened, so the waves ran in order.
    let text = fs::read_to_string(&timeline).unwrap();
    let started: Vec<(f64, &str)> = text
        .lines()
        .filter(|l| l.contains(" start "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[0].parse().unwrap(), w[2])
        })
        .collect();
    assert_eq!(started.len(), 6, "{text}");
    for (at, host) in &started {
        let wave = ids.iter().find(|(_, h)| h == host).unwrap().0;
        let opens = (rollout.started_at + 3 * (wave as i64 - 1)) as f64;
        assert!(
            *at >= opens,
            "{host} of wave {wave} started at {at}, before {opens}:\n{text}"
        );
    }
    let mut by_time = started.clone();
    by_time.sort_by(|a, b| a.0.total_cmp(&b.0));
    let waves_in_order: Vec<usize> = by_time
        .iter()
        .map(|(_, h)| ids.iter().find(|(_, id)| id == h).unwrap().0)
        .collect();
    assert!(waves_in_order.is_sorted(), "{waves_in_order:?}:\n{text}");
}

#[test]
fn the_brake_halts_a_rollout_after_max_failures_and_the_rest_answer_rollout_halted() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(1);
    // One host at a time, so which hosts ran before the brake holds is known: two.
    let hosts: Vec<Spool> = (0..4)
        .map(|i| {
            let spool = host(&cluster.endpoints_toml(), &format!("host-{i}"), 1);
            spool.script(
                "remote",
                "update.sh",
                &format!("{}\nexit 1", spool.record_run()),
            );
            spool
        })
        .collect();
    let record = start_rollout(
        &cluster,
        &hosts[0],
        &[
            "--version",
            "9.0.0",
            "--waves",
            "100",
            "--wave-delay",
            "0s",
            "--max-failures",
            "2",
        ],
    );
    let _services: Vec<Service> = hosts.iter().map(Service::start).collect();
    let requests: Vec<String> = hosts
        .iter()
        .map(|h| h.submit("remote", "update", Some("9.0.0")))
        .collect();
    let answers: Vec<Value> = hosts
        .iter()
        .zip(&requests)
        .map(|(h, id)| h.wait_final(id))
        .collect();
    let codes: Vec<&str> = answers
        .iter()
        .map(|a| a["code"].as_str().unwrap())
        .collect();
    let failed = codes.iter().filter(|c| **c == "script_failed").count();
    let halted = codes.iter().filter(|c| **c == "rollout_halted").count();
    assert_eq!((failed, halted), (2, 2), "{answers:#?}");
    for (spool, answer) in hosts.iter().zip(&answers) {
        if answer["code"] == "rollout_halted" {
            assert!(spool.runs().is_empty(), "a halted host ran its update");
            crate::support::assert_message_says(answer, "halted after 2 failed host(s)");
            assert_eq!(status_schema_errors(answer), Vec::<String>::new());
        }
    }
    let now: Value = serde_json::from_str(
        &cluster
            .get(&format!("update-coordinator/fleet/{GROUP}/rollouts/remote"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (&now["id"], &now["state"]),
        (&record["id"], &Value::from("halted"))
    );
    wait_holders(&cluster, &[]);
    // fleet status: the rollout, halted, with the two failed hosts and two that never ran.
    let status = fleet_status(&hosts[0]);
    let rollout = &status["rollouts"][0];
    assert_eq!(rollout["state"], "halted", "{status:#}");
    let outcomes: Vec<&str> = rollout["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "failed").count(),
        2,
        "{status:#}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o == "waiting").count(),
        2,
        "{status:#}"
    );

    // A halted rollout cannot be resumed: a new one is started for a fixed version.
    let (code, _, stderr) = fleet_cli(&hosts[0], &["rollout", "resume", "--component", "remote"]);
    assert_eq!(code, 2, "{stderr}");
}

/// Writes the group's airlock semaphore as another host (or airlock itself) left it.
fn set_semaphore(cluster: &Cluster, json: &str) {
    cluster.put(
        &format!("com.coreos.airlock/groups/{GROUP}/v1/semaphore"),
        json,
    );
}
