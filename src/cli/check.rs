//! `update-coordinator check`: the same config loading as `run`, then a look at every directory
//! and script the service will touch. Prints a table; exits 1 if anything would fail a request.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
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

    println!();
    println!(
        "{:<12} {:<9} {:>8}  {:<50} CHECK",
        "COMPONENT", "ACTION", "TIMEOUT", "SCRIPT"
    );
    for (name, component) in &config.components {
        for action in Action::ALL {
            let script = component.script(action);
            let verdict = script_verdict(&script);
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

fn script_verdict(script: &Path) -> String {
    match std::fs::metadata(script) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "PROBLEM: missing; install the component's scripts".into()
        }
        Err(e) => format!("PROBLEM: {e}"),
        Ok(m) if !m.is_file() => "PROBLEM: not a regular file".into(),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            "PROBLEM: not executable; chmod 755 it".into()
        }
        Ok(_) => "ok".into(),
    }
}
