//! `update-coordinator check`: the same config loading as `run`, then a look at every directory
//! and script the service will touch. Prints a table; exits 1 if anything would fail a request.

use std::process::ExitCode;

use super::ConfigArg;
use crate::request::Action;

pub fn run(args: &ConfigArg) -> ExitCode {
    let (config, source) = match args.load() {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("config: {source}");
    let mut problems = 0;

    println!("spool:  {}", config.spool_root.display());
    for dir in [config.requests_dir(), config.status_dir()] {
        let verdict = match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => "ok".to_string(),
            Ok(_) => {
                problems += 1;
                "PROBLEM: exists but is not a directory".to_string()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                "missing (the service creates it at start)".to_string()
            }
            Err(e) => {
                problems += 1;
                format!("PROBLEM: {e}")
            }
        };
        println!("  {:<60} {verdict}", dir.display());
    }
    match &config.spool_group {
        Some(group) => {
            let deviations = crate::spool::permission_deviations(
                &config.requests_dir(),
                &config.status_dir(),
                group,
            );
            for deviation in &deviations {
                println!("  PROBLEM: {deviation}");
            }
            problems += deviations.len();
            if deviations.is_empty() {
                println!(
                    "  permissions: requests/ root:{group} 1730, status/ root:{group} 1770 ok"
                );
            }
        }
        None => println!("  permissions: not checked (spool.group = \"\")"),
    }
    if let Some(sig) = &config.signature {
        match std::fs::metadata(&sig.key_file) {
            Ok(_) => println!(
                "signed requests required; key {} ok",
                sig.key_file.display()
            ),
            Err(e) => {
                problems += 1;
                println!("PROBLEM: signature key {}: {e}", sig.key_file.display());
            }
        }
    }

    let owners = crate::trust::trusted_owners(&config.script_owners);
    println!();
    println!(
        "{:<12} {:<9} {:>8}  {:<50} CHECK",
        "COMPONENT", "ACTION", "TIMEOUT", "SCRIPT"
    );
    for (name, component) in &config.components {
        for action in Action::ALL {
            let script = component.script(action);
            let verdict = match crate::trust::check_script(&component.dir, &script, &owners) {
                Ok(_) => "ok".to_string(),
                Err(untrusted) => format!("PROBLEM: {untrusted}"),
            };
            if verdict != "ok" {
                problems += 1;
            }
            println!(
                "{:<12} {:<9} {:>7}s  {:<50} {verdict}",
                name,
                action.as_str(),
                component.timeout(action).as_secs_f64(),
                script.display().to_string()
            );
        }
    }
    println!();
    if problems == 0 {
        println!("all checks passed");
        ExitCode::SUCCESS
    } else {
        println!("{problems} problem(s) found");
        ExitCode::FAILURE
    }
}
