//! Crash test: a stream of requests while the coordinator is SIGKILLed at random moments (at
//! least 200 times, seeded; the seed is printed, `CRASH_SEED=<n>` replays it) and restarted.
//! At the end every request has exactly one final status with its script's true exit code,
//! the ledger shows no request executed twice, and no temp, partial or leftover files remain.

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

use crate::support::{Service, Spool, path_str, wait_until};

/// xorshift64*: small, seedable, good enough to place kills.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const KILLS: usize = 200;

#[test]
fn random_sigkills_lose_nothing_and_run_nothing_twice() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("crash test seed: {seed} (replay with CRASH_SEED={seed})");
    let mut rng = Rng(seed);

    let mut spool = Spool::new();
    spool.set("spool", "max_queued = 10000");
    spool.set("components.remote", "max_updates_per_hour = 0");
    let ledger = spool.evidence().join("ledger");
    // Each script records that it ran, works a little, and exits with the code its id names.
    let body = format!(
        "echo \"$REQUEST_ID\" >> {}\necho PHASE:working\nsleep 0.0$(( ${{#REQUEST_ID}} % 5 ))\nexit ${{REQUEST_ID##*-x}}",
        path_str(&ledger)
    );
    for component in ["core", "remote", "scheduler"] {
        spool.script(component, "health-check.sh", &body);
        spool.script(component, "update.sh", &body);
    }

    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut service = Service::start(&spool);
    for round in 0..KILLS {
        for _ in 0..rng.below(3) {
            let code = rng.below(4) as i64;
            let id = format!("crash-{round}-{}-x{code}", expected.len());
            let (component, action, version) = match rng.below(4) {
                0 => ("remote", "update", Some("1.0.0")),
                1 => ("core", "health", None),
                2 => ("scheduler", "health", None),
                _ => ("remote", "health", None),
            };
            spool.drop_in_place(&id, &Spool::request_json(&id, component, action, version));
            expected.insert(id, code);
        }
        std::thread::sleep(Duration::from_millis(rng.below(40)));
        service.crash();
        service = Service::start(&spool);
    }
    println!("{} requests, {KILLS} kills", expected.len());

    // Let the last coordinator finish everything.
    for (id, code) in &expected {
        let status = spool.wait_final(id);
        if status["exit_code"] != *code {
            panic!(
                "{id} (seed {seed}): {status}\nits story in the logs:\n{}",
                story(&spool, id)
            );
        }
        assert_eq!(status["success"], *code == 0, "{id} (seed {seed})");
    }
    let ledger = fs::read_to_string(&ledger).unwrap();
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for line in ledger.lines() {
        *runs.entry(line).or_default() += 1;
    }
    for id in expected.keys() {
        assert_eq!(
            runs.get(id.as_str()),
            Some(&1),
            "{id} must have run exactly once (seed {seed})"
        );
    }
    assert_eq!(runs.len(), expected.len(), "nothing else ran (seed {seed})");

    wait_until("request files answered and removed", || {
        spool.request_files().is_empty()
    });
    let state = spool.dir.path().join("state");
    wait_until("exit records consumed", || {
        fs::read_dir(state.join("exits")).unwrap().count() == 0
    });
    service.crash();
    let leftovers: Vec<String> = walk(&spool.root())
        .into_iter()
        .chain(walk(&state))
        .filter(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|name| name.starts_with('.'))
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left behind (seed {seed}): {leftovers:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

/// Every log line (of every coordinator and monitor) that mentions `id`.
fn story(spool: &Spool, id: &str) -> String {
    let mut logs: Vec<_> = fs::read_dir(spool.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("service-"))
        .map(|e| (e.metadata().unwrap().modified().unwrap(), e.path()))
        .collect();
    logs.sort();
    let mut out = String::new();
    for (_, path) in logs {
        for line in fs::read_to_string(&path).unwrap_or_default().lines() {
            if line.contains(id) {
                out.push_str(&format!(
                    "{}: {line}\n",
                    path.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    out
}
