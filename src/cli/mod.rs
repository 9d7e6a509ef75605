//! Command line: one file per subcommand, each with a `run()`.

mod check;
mod completions;
mod fleet;
mod follow;
mod history;
mod inventory;
mod man;
mod run;
mod status;
mod submit;
mod summary;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueHint};

use crate::config::{self, Config, ConfigError};

#[derive(Debug, Parser)]
#[command(
    name = "update-coordinator",
    version,
    about = "Runs allow-listed update scripts for containers that drop JSON requests into a spool directory"
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (what the systemd unit starts).
    Run(ConfigArg),
    /// Check the config, the spool directories and every component's scripts; exit 1 on problems,
    /// 0 with only warnings.
    Check(check::CheckArgs),
    /// Drop a request into the spool, as a container would, and optionally wait for its result.
    Submit(submit::SubmitArgs),
    /// Recent and running requests, or one request in detail (reads the run records: root).
    Status(status::StatusArgs),
    /// Follow one request's phases and output until it is final; exit 0 on success, 1 on failure.
    Follow(follow::FollowArgs),
    /// The version each component runs, and its last results (status/inventory.json).
    Inventory(inventory::InventoryArgs),
    /// What happened to requests, from the audit log: received, queued, started, phases,
    /// health failures, rollbacks, results (reads the state directory: root).
    History(history::HistoryArgs),
    /// The fleet group's slots in etcd (with [fleet]): who holds them, alive or gone, and
    /// freeing a gone host's slot.
    Fleet(fleet::FleetArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff) to stdout, or write every page into a directory (--dir).
    Man(man::ManArgs),
    /// Internal: the per-run monitor the service starts for each script.
    #[command(name = "__monitor", hide = true)]
    Monitor {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Config file [default: /etc/dunebugger/update-coordinator.toml; built-in defaults if absent]
    #[arg(short, long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// Loads the named file, or the default path, or (when the default path does not exist)
    /// the built-in defaults. Also returns a note on where the config came from.
    pub fn load(&self) -> Result<(Config, String), ConfigError> {
        match &self.config {
            Some(path) => Ok((Config::load(path)?, path.display().to_string())),
            None if Path::new(config::DEFAULT_PATH).exists() => Ok((
                Config::load(Path::new(config::DEFAULT_PATH))?,
                config::DEFAULT_PATH.into(),
            )),
            None => Ok((
                Config::defaults(),
                format!(
                    "built-in defaults ({} does not exist)",
                    config::DEFAULT_PATH
                ),
            )),
        }
    }
}

/// The command line as clap sees it, for parsing, completions and man pages alike: the derive
/// definition, plus what an argument of the same name means in every subcommand that has one
/// (so the subcommands' files need not repeat it): `--spool` is a directory.
pub(crate) fn command() -> clap::Command {
    Cli::command().mut_subcommands(|sub| {
        sub.mut_args(|arg| match arg.get_id().as_str() {
            "spool" => arg.value_hint(ValueHint::DirPath),
            _ => arg,
        })
    })
}

/// Parses the process's arguments with [`command`]; exits with clap's message on bad ones.
pub fn parse() -> Cli {
    Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit())
}

/// A command's result as its exit status: an error is printed and exits 2 (bad arguments,
/// unreadable config or files), distinct from the 1 of a request that failed.
/// For a subcommand that only reports: loads the config and runs `body` with it; exit 0, or
/// 2 with the error printed.
fn with_config(arg: &ConfigArg, body: impl FnOnce(Config) -> Result<(), String>) -> ExitCode {
    let result = arg.load().map_err(|e| e.to_string());
    exit_with(
        result
            .and_then(|(config, _)| body(config))
            .map(|()| ExitCode::SUCCESS),
    )
}

fn exit_with(result: Result<ExitCode, String>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// The single-threaded tokio runtime of the service and of each monitor, or `None` with the
/// error logged (`who` starts the line).
pub(crate) fn runtime(who: &str) -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .inspect_err(|e| tracing::error!(error = %e, "{who}cannot start the async runtime"))
        .ok()
}

pub fn main(cli: Cli) -> ExitCode {
    if !matches!(cli.command, Command::Run(_) | Command::Monitor { .. }) {
        crate::runner::default_sigpipe();
    }
    match cli.command {
        Command::Run(args) => run::run(&args, cli.verbose),
        Command::Check(args) => check::run(&args),
        Command::Submit(args) => submit::run(&args),
        Command::Status(args) => status::run(&args),
        Command::Follow(args) => follow::run(&args),
        Command::Inventory(args) => inventory::run(&args),
        Command::History(args) => history::run(&args),
        Command::Fleet(args) => fleet::run(&args),
        Command::Completions(args) => completions::run(&args),
        Command::Man(args) => man::run(&args),
        Command::Monitor { state_dir, id } => {
            crate::runner::seal_inherited_fds();
            crate::logging::init(cli.verbose);
            crate::monitor::main(&state_dir, &id)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        super::command().debug_assert();
    }

    /// `submit --action` lists its values (for completions, help and validation); they must be
    /// the actions the request parser knows, no more and no fewer.
    #[test]
    fn submit_offers_exactly_the_actions_requests_know() {
        let command = super::command();
        let submit = command.find_subcommand("submit").unwrap();
        let action = submit
            .get_arguments()
            .find(|a| a.get_id() == "action")
            .unwrap();
        let offered: Vec<String> = action
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_owned())
            .collect();
        let known: Vec<&str> = crate::request::Action::ALL
            .iter()
            .map(|a| a.as_str())
            .collect();
        assert_eq!(offered, known);
    }
}
