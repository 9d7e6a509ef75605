//! `update-coordinator completions SHELL`: shell completions, generated from the same command
//! line definition that parses the arguments (so `--action` offers its values).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

pub fn run(args: &CompletionsArgs) -> ExitCode {
    clap_complete::generate(
        args.shell,
        &mut super::command(),
        "update-coordinator",
        &mut std::io::stdout(),
    );
    ExitCode::SUCCESS
}
