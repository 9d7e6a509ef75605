//! The `update-coordinator` binary: parse the command line, set up logging, hand over to the
//! library, map the result to an exit code.

use clap::Parser;
use update_coordinator::cli::{self, Cli};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli::main(cli)
}
