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
    /// The component to act on (one of the config's components)
    #[arg(long, required_unless_present_any = ["components", "cancel"])]
    pub component: Option<String>,
    /// What to do with it
    #[arg(long, required_unless_present_any = ["components", "cancel"], value_parser = ["update", "rollback", "health"])]
    pub action: Option<String>,
    /// Version to install (update only)
    #[arg(long)]
    pub version: Option<String>,
    /// Update several components in order, rolling the earlier ones back if a later one fails:
    /// NAME=VERSION, once per component
    #[arg(long = "components", value_name = "NAME=VERSION", conflicts_with_all = ["component", "action", "version", "cancel"])]
    pub components: Vec<String>,
    /// Cancel a queued or running request you submitted earlier
    #[arg(long, value_name = "ID", conflicts_with_all = ["component", "action", "version", "dry_run", "not_before"])]
    pub cancel: Option<String>,
    /// Check everything and run nothing: the answer says what would run
    #[arg(long)]
    pub dry_run: bool,
    /// Do not start before this time (RFC 3339, or local time such as 2026-03-01T02:00)
    #[arg(long, value_name = "TIME")]
    pub not_before: Option<String>,
    /// Follow the request's phases, print its answer and exit 0 on success, 1 on failure
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub timeout: u64,
    /// Spool root (holds requests/ and status/) [default: from the config]
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub spool: Option<PathBuf>,
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// Keep the status file after reading it (the container client deletes it)
    #[arg(long)]
    pub keep_status: bool,
    /// With --wait: every status change as one JSON line on stdout (the last is the answer)
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &SubmitArgs) -> ExitCode {
    super::exit_with(submit(args))
}

fn submit(args: &SubmitArgs) -> Result<ExitCode, String> {
    // The config gives the spool (unless --spool says otherwise), the components to check the
    // request against and, when requests must be signed, the key. Without --spool, a config
    // problem is an error; with it, the config is only consulted for the key and the names.
    let loaded = args.config.load();
    let (root, config_note) = match (&args.spool, &loaded) {
        (Some(dir), _) => (dir.clone(), format!("--spool {}", dir.display())),
        (None, Ok((config, note))) => (config.spool_root.clone(), format!("config: {note}")),
        (None, Err(e)) => return Err(e.to_string()),
    };
    let config = loaded.ok().map(|(config, _)| config);
    let id = RequestId::parse(&uuid::Uuid::new_v4().to_string()).map_err(|e| e.to_string())?;
    let mut request = request_json(args, &id)?;
    // The coordinator's own parser: what it would refuse is refused here, before writing.
    let bytes = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    match crate::request::Cancel::parse(&bytes) {
        Some(cancel) => {
            cancel.map_err(|r| format!("{} (nothing was written)", r.error))?;
        }
        None => {
            let known = config
                .as_ref()
                .map(|c| c.component_names().map(str::to_owned).collect::<Vec<_>>())
                .unwrap_or_else(|| {
                    // Without a config, any name goes: the coordinator will say.
                    request["components"]
                        .as_object()
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_else(|| vec![args.component.clone().unwrap_or_default()])
                });
            crate::request::Request::parse(&bytes, known.iter().map(String::as_str))
                .map_err(|r| format!("{} (nothing was written)", r.error))?;
        }
    }
    if let Some(sig) = config.as_ref().and_then(|c| c.signature.as_ref()) {
        let key = crate::signature::read_key(&sig.key_file).map_err(|e| e.to_string())?;
        let signature = crate::signature::Verifier::new(key, sig.max_age).sign(&request);
        request["signature"] = signature.into();
    }
    let requests = root.join("requests");
    let bytes = serde_json::to_vec_pretty(&request).map_err(|e| e.to_string())?;
    let cannot_write = |e: std::io::Error| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => {
                "; is update-coordinator installed (install.sh), or is this the wrong spool? Pass --config FILE or --spool DIR"
            }
            std::io::ErrorKind::PermissionDenied => {
                "; run as root (sudo) or as a member of the spool group"
            }
            _ => "",
        };
        format!(
            "cannot write the request into {}: {e} ({config_note}){hint}",
            requests.display()
        )
    };
    let requests_dir = Dir::open(&requests).map_err(cannot_write)?;
    write_atomic(
        &requests_dir,
        &format!("{id}.json"),
        &bytes,
        // Once we say "submitted", a power cut must not lose it (the service's record only
        // exists once it has taken the file).
        Durability::Durable,
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
    let state_dir = config.as_ref().map(|c| c.state_dir.as_path());
    let status = super::follow::follow(
        &root,
        state_dir,
        &id,
        Duration::from_secs(args.timeout),
        output,
    )?;
    if !args.keep_status {
        // As the container client does: the answer is collected.
        let _ = std::fs::remove_file(root.join("status").join(id.status_file_name()));
    }
    if !args.json {
        print!("{}", super::summary::summarize(&status));
    }
    Ok(super::follow::exit_for(&status))
}

/// The request as the protocol spells it (docs/protocol.md, "Writing a request").
fn request_json(args: &SubmitArgs, id: &RequestId) -> Result<serde_json::Value, String> {
    let mut request = serde_json::Map::new();
    if let Some(target) = &args.cancel {
        RequestId::parse(target).map_err(|e| format!("--cancel: {e} (nothing was written)"))?;
        request.insert("action".into(), "cancel".into());
        request.insert("target".into(), target.as_str().into());
    } else if !args.components.is_empty() {
        let mut members = serde_json::Map::new();
        for pair in &args.components {
            let (name, version) = pair.split_once('=').ok_or_else(|| {
                format!("--components {pair:?}: write NAME=VERSION, e.g. remote=1.4.2 (nothing was written)")
            })?;
            members.insert(name.into(), version.into());
        }
        request.insert("components".into(), members.into());
        request.insert("action".into(), "update".into());
    } else {
        let action = args.action.as_deref().unwrap_or_default();
        if Action::parse(action) == Some(Action::Update) && args.version.is_none() {
            return Err("an update needs --version (nothing was written)".into());
        }
        request.insert("component".into(), args.component.clone().into());
        request.insert("action".into(), action.into());
        if let Some(version) = &args.version {
            request.insert("version".into(), version.as_str().into());
        }
    }
    if args.dry_run {
        request.insert("dry_run".into(), true.into());
    }
    if let Some(time) = &args.not_before {
        request.insert("not_before".into(), time.as_str().into());
    }
    request.insert("request_id".into(), id.as_str().into());
    request.insert("timestamp".into(), crate::status::now_rfc3339().into());
    Ok(request.into())
}
