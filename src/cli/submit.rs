//! `update-coordinator submit`: writes a request the way a container would (temp file +
//! rename, uuid4 id) and, with `--wait`, follows its status until it is final, then removes the
//! status file as the container client does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::dir::Dir;
use crate::request::{Action, RequestId};
use crate::status::{Durability, write_atomic};

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[arg(long)]
    pub component: String,
    /// update, rollback or health
    #[arg(long)]
    pub action: String,
    /// Version to install (update only)
    #[arg(long)]
    pub version: Option<String>,
    /// Follow the request's phases and exit 0 on success, 1 on failure
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub timeout: u64,
    /// Spool root (holds requests/ and status/) [default: from the config]
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// Keep the status file after reading it (the container client deletes it)
    #[arg(long)]
    pub keep_status: bool,
    /// With --wait: every status change as one JSON line on stdout
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &SubmitArgs) -> ExitCode {
    super::exit_with(submit(args))
}

fn submit(args: &SubmitArgs) -> Result<ExitCode, String> {
    // The config gives the spool (unless --spool says otherwise) and, when requests must be
    // signed, the key. Without --spool, a config problem is an error; with it, the config is
    // only consulted for the key.
    let loaded = args.config.load();
    let root = match (&args.spool, &loaded) {
        (Some(dir), _) => dir.clone(),
        (None, Ok((config, _))) => config.spool_root.clone(),
        (None, Err(e)) => return Err(e.to_string()),
    };
    let config = loaded.ok().map(|(config, _)| config);
    let action = Action::parse(&args.action).ok_or_else(|| {
        format!(
            "unknown action {:?}; use update, rollback or health",
            args.action
        )
    })?;
    if action == Action::Update && args.version.is_none() {
        return Err("an update needs --version".into());
    }
    let id = RequestId::parse(&uuid::Uuid::new_v4().to_string()).map_err(|e| e.to_string())?;
    let mut request = serde_json::json!({
        "component": args.component,
        "action": action.as_str(),
        "version": args.version,
        "request_id": id.as_str(),
        "timestamp": crate::status::now_rfc3339(),
    });
    if let Some(sig) = config.as_ref().and_then(|c| c.signature.as_ref()) {
        let key = crate::signature::read_key(&sig.key_file).map_err(|e| e.to_string())?;
        let signature = crate::signature::Verifier::new(key, sig.max_age).sign(&request);
        request["signature"] = signature.into();
    }
    let requests = root.join("requests");
    let bytes = serde_json::to_vec_pretty(&request).map_err(|e| e.to_string())?;
    let cannot_write =
        |e: std::io::Error| format!("cannot write the request into {}: {e}", requests.display());
    let requests_dir = Dir::open(&requests).map_err(cannot_write)?;
    write_atomic(
        &requests_dir,
        &format!("{id}.json"),
        &bytes,
        // Once we say "submitted", a power cut must not lose it (the service's record only
        // exists once it has taken the file).
        Durability::Durable,
        None,
        crate::status::Place::Always,
    )
    .map_err(cannot_write)?;
    println!("submitted request {id}");
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }

    let output = if args.json {
        super::follow::Output::Json
    } else {
        super::follow::Output::detect()
    };
    let status = super::follow::follow(&root, &id, Duration::from_secs(args.timeout), output)?;
    if !args.keep_status {
        // As the container client does: the answer is collected.
        let _ = std::fs::remove_file(root.join("status").join(id.status_file_name()));
    }
    if !args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).map_err(|e| e.to_string())?
        );
    }
    Ok(super::follow::exit_for(&status))
}
