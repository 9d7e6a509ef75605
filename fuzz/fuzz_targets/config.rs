//! Config parsing: arbitrary UTF-8 as the TOML config file. `Config::from_toml` must never
//! panic (its error path slices the text at the parser's error span), and what it accepts
//! must hold the limits it documents.
#![no_main]

use std::path::{Component, Path};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use update_coordinator::config::Config;

const YEAR: Duration = Duration::from_secs(366 * 24 * 3600);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text, Path::new("/etc/dunebugger")) {
        Ok(config) => check(&config),
        Err(message) => assert!(!message.is_empty()),
    }
});

fn check(config: &Config) {
    assert!(config.max_concurrent >= 1);
    assert!((1024..=16 * 1024 * 1024).contains(&config.output_tail_bytes));
    assert!(
        !config.kill_grace.is_zero() && config.kill_grace <= YEAR,
        "{:?}",
        config.kill_grace
    );
    assert!(
        !config.retention.is_zero() && config.retention <= YEAR,
        "{:?}",
        config.retention
    );
    check_path(&config.state_dir);
    check_path(&config.spool_root);
    for (name, component) in &config.components {
        assert!(
            !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'_'
                    || b == b'-'),
            "component name {name:?}"
        );
        check_path(&component.dir);
        for timeout in [
            component.update_timeout,
            component.rollback_timeout,
            component.health_timeout,
        ] {
            assert!(!timeout.is_zero() && timeout <= YEAR, "{timeout:?}");
        }
    }
}

/// Every path the service uses is absolute and already normalized (no `.` or `..`).
fn check_path(path: &Path) {
    assert!(path.is_absolute(), "{path:?}");
    assert!(
        !path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir)),
        "{path:?}"
    );
}
