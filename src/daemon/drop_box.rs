//! One spool as the daemon holds it: handles on its directories (created if missing, their
//! layout checked, temp files of an earlier crash removed) and what may be asked there.

use std::io;

use tracing::{info, warn};

use super::ServeError;
use crate::config::SpoolConfig;
use crate::dir::Dir;
use crate::spool;
use crate::status::StatusDir;

/// One spool as the daemon holds it: handles on its directories, and what may be asked there.
pub(super) struct DropBox {
    pub(super) config: SpoolConfig,
    /// The spool root, for the self-update hand-off file (see [`super::handoff`]).
    pub(super) root: Dir,
    pub(super) requests: Dir,
    pub(super) status: StatusDir,
}

impl DropBox {
    /// Prepares a spool's directories (created if missing) and checks their layout.
    pub(super) fn open(
        config: &SpoolConfig,
        progress_in_status: bool,
        group: Option<&str>,
    ) -> Result<DropBox, ServeError> {
        let (requests_dir, status_dir) = (config.requests_dir(), config.status_dir());
        for dir in [&requests_dir, &status_dir] {
            std::fs::create_dir_all(dir).map_err(prepare(dir))?;
        }
        let status =
            StatusDir::open(&status_dir, progress_in_status).map_err(prepare(&status_dir))?;
        match status.remove_stale_temp_files() {
            Ok(0) => {}
            Ok(n) => {
                info!(spool = %config.name, count = n, "removed temp files left by an earlier crash")
            }
            Err(e) => {
                warn!(spool = %config.name, error = %e, "cannot clean up temp files in the status directory")
            }
        }
        if let Some(group) = group {
            for deviation in spool::permission_deviations(&requests_dir, &status_dir, group) {
                warn!(
                    spool = %config.name,
                    "spool permissions: {deviation}; run `update-coordinator check` (install.sh sets them)"
                );
            }
        }
        Ok(DropBox {
            root: Dir::open(&config.root).map_err(prepare(&config.root))?,
            requests: Dir::open(&requests_dir).map_err(prepare(&requests_dir))?,
            status,
            config: config.clone(),
        })
    }
}

pub(super) fn prepare(path: &std::path::Path) -> impl FnOnce(io::Error) -> ServeError + '_ {
    move |source| ServeError::Prepare {
        path: path.to_owned(),
        source,
    }
}
