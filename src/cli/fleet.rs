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
    /// Staged rollouts of a component's version to the group's hosts, in waves.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
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

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout: hosts' update requests for COMPONENT VERSION wait for their wave
    Start {
        #[arg(long)]
        component: String,
        #[arg(long)]
        version: String,
        /// Cumulative percentages of hosts per wave, rising to 100
        #[arg(long, default_value = "10,50,100")]
        waves: String,
        /// Time between the opening of one wave and the next (30m, 2h, 45s)
        #[arg(long, default_value = "30m")]
        wave_delay: String,
        /// Failed hosts at which the rollout halts (0: never)
        #[arg(long, default_value_t = 1)]
        max_failures: u64,
        #[command(flatten)]
        config: super::ConfigArg,
    },
    /// Pause the rollout of COMPONENT: no further wave opens until resumed
    Pause(RolloutTarget),
    /// Resume a paused rollout; the time paused is added to every later wave's opening
    Resume(RolloutTarget),
    /// Abort the rollout: hosts that have not started answer rollout_halted
    Abort(RolloutTarget),
}

#[derive(Debug, clap::Args)]
pub struct RolloutTarget {
    #[arg(long)]
    pub component: String,
    #[command(flatten)]
    pub config: super::ConfigArg,
}

fn rollout(command: &RolloutCommand) -> ExitCode {
    use crate::fleet::RolloutChange;
    let (target, change) = match command {
        RolloutCommand::Start {
            component,
            version,
            waves,
            wave_delay,
            max_failures,
            config,
        } => {
            return super::with_config(config, |config| {
                let fleet = fleet_of(&config)?;
                if !config.components.contains_key(component) {
                    return Err(format!("{component} is not a configured component"));
                }
                crate::request::Version::parse(version)
                    .map_err(|e| format!("--version {version:?}: {e}"))?;
                let waves = crate::fleet::rollout::parse_waves(waves)?;
                let delay = humantime::parse_duration(wave_delay)
                    .map_err(|e| format!("--wave-delay {wave_delay:?}: {e} (e.g. 30m, 2h)"))?;
                let r = crate::fleet::start_rollout(
                    fleet,
                    component,
                    version,
                    waves,
                    delay,
                    *max_failures,
                )?;
                println!(
                    "started rollout {} of {component} {version} in fleet group {}: waves {:?} %, {} apart, halts at {} failed host(s)",
                    r.id,
                    fleet.group,
                    r.waves,
                    humantime::format_duration(delay),
                    r.max_failures
                );
                Ok(())
            });
        }
        RolloutCommand::Pause(t) => (t, RolloutChange::Pause),
        RolloutCommand::Resume(t) => (t, RolloutChange::Resume),
        RolloutCommand::Abort(t) => (t, RolloutChange::Abort),
    };
    super::with_config(&target.config, |config| {
        let fleet = fleet_of(&config)?;
        let r = crate::fleet::change_rollout(fleet, &target.component, change)?;
        println!("rollout {} is now {}", r.id, state_word(r.state));
        Ok(())
    })
}

pub fn run(args: &FleetArgs) -> ExitCode {
    match &args.command {
        FleetCommand::Rollout { command } => rollout(command),
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
    for r in &view.rollouts {
        let rollout = &r.rollout;
        let count = |what: &str| r.hosts.iter().filter(|h| h.outcome == what).count();
        out.push_str(&format!(
            "rollout {} of {} {}: {}, waves {:?} % every {}, {} updated, {} failed (halts at {}), {} waiting\n",
            rollout.id,
            rollout.component,
            rollout.version,
            state_word(rollout.state),
            rollout.waves,
            humantime::format_duration(std::time::Duration::from_secs(rollout.wave_delay_secs)),
            count("updated"),
            count("failed"),
            rollout.max_failures,
            count("waiting"),
        ));
        for h in &r.hosts {
            out.push_str(&format!("  wave {} {:<34} {}\n", h.wave, h.host, h.outcome));
        }
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

fn state_word(state: crate::fleet::rollout::State) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
