//! The `update-coordinator` binary: parse the command line, set up logging, hand over to the
//! library, map the result to an exit code.

use update_coordinator::cli;

fn main() -> std::process::ExitCode {
    cli::main(cli::parse())
}
