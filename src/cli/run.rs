//! `update-coordinator run`: the service.

use std::process::ExitCode;

use tracing::{error, info};

use super::ConfigArg;
use crate::{daemon, logging};

pub fn run(args: &ConfigArg, verbose: u8) -> ExitCode {
    crate::runner::seal_inherited_fds();
    logging::init(verbose);
    let (config, source) = match args.load() {
        Ok(loaded) => loaded,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    info!(config = %source, version = env!("CARGO_PKG_VERSION"), "starting");
    // Files we create (statuses) are 0644 whatever umask we were started with; scripts inherit 022.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));

    // One thread is plenty: the loop only moves small messages; scripts and their output
    // readers run on their own threads. It also keeps the idle footprint small.
    let Some(runtime) = super::runtime("") else {
        return ExitCode::FAILURE;
    };
    let served = runtime.block_on(async {
        let shutdown = daemon::stop_signals()?;
        daemon::serve(config, shutdown).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
