//! `update-coordinator fleet`: the fleet group's slots in etcd as an operator sees them (who
//! holds one, alive or gone, running what), and freeing the slot of a host that is gone.

use std::process::ExitCode;

use crate::fleet::liveness::{GroupView, Liveness};

#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// The group's slots, each host that holds one with its liveness and what it runs, and
    /// the other hosts of the group.
    Status {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: super::ConfigArg,
    },
    /// Free the slot HOST holds (a host that is gone for good); refuses a host whose
    /// coordinator is alive unless --force.
    Release {
        /// The holder's host id, as `fleet status` lists it
        host: String,
        /// Free it even though its coordinator is alive (it may be updating right now)
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        config: super::ConfigArg,
    },
}

pub fn run(args: &FleetArgs) -> ExitCode {
    match &args.command {
        FleetCommand::Status { json, config } => super::with_config(config, |config| {
            let fleet = fleet_of(&config)?;
            let view = crate::fleet::group_view(fleet)?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&view).unwrap_or_default()
                );
            } else {
                print!("{}", render(&view));
            }
            Ok(())
        }),
        FleetCommand::Release {
            host,
            force,
            config,
        } => {
            let loaded = config.load().map_err(|e| e.to_string());
            let result = loaded.and_then(|(config, _)| {
                let fleet = fleet_of(&config)?;
                match crate::fleet::release(fleet, host, *force) {
                    Ok(true) => {
                        println!("freed the slot {host} held in fleet group {}", fleet.group);
                        Ok(ExitCode::SUCCESS)
                    }
                    Ok(false) => {
                        println!("{host} holds no slot of fleet group {}", fleet.group);
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(refused @ crate::fleet::ReleaseError::Alive { .. }) => {
                        eprintln!("refused: {refused}");
                        Ok(ExitCode::FAILURE)
                    }
                    Err(e) => Err(e.to_string()),
                }
            });
            super::exit_with(result)
        }
    }
}

fn fleet_of(config: &crate::config::Config) -> Result<&crate::fleet::FleetConfig, String> {
    config
        .fleet
        .as_ref()
        .ok_or_else(|| "the config has no [fleet] table: this host takes part in no fleet".into())
}

fn render(view: &GroupView) -> String {
    let mut out = match view.total_slots {
        Some(total) => format!(
            "fleet group {}: {} of {total} slot(s) held\n",
            view.group,
            view.hosts.iter().filter(|h| h.holds_slot).count()
        ),
        None => format!(
            "fleet group {}: no semaphore yet (the first update creates it)\n",
            view.group
        ),
    };
    out.push_str(&format!(
        "{:<34} {:<5} {:<8} RUNNING\n",
        "HOST", "SLOT", "LIVENESS"
    ));
    for h in &view.hosts {
        let liveness = match h.liveness {
            Liveness::Alive => "alive",
            Liveness::Gone => "gone",
            Liveness::Unknown => "unknown",
        };
        out.push_str(&format!(
            "{:<34} {:<5} {:<8} {}\n",
            h.host,
            if h.holds_slot { "yes" } else { "-" },
            liveness,
            if h.running.is_empty() {
                "-".to_owned()
            } else {
                h.running.join(", ")
            }
        ));
    }
    if view
        .hosts
        .iter()
        .any(|h| h.holds_slot && h.liveness == Liveness::Gone)
    {
        out.push_str("a holder that is gone keeps its slot until it comes back, `fleet release HOST`, or fleet.stale_after\n");
    }
    out
}
