//! `update-coordinator inventory`: the version each component runs and its last results, as
//! the service publishes them in `status/inventory.json`.

use std::process::ExitCode;

use crate::inventory::Inventory;

#[derive(Debug, clap::Args)]
pub struct InventoryArgs {
    /// Machine-readable output (the published file itself)
    #[arg(long)]
    pub json: bool,
    /// Also list each component's recent results
    #[arg(long)]
    pub recent: bool,
    #[command(flatten)]
    pub config: super::ConfigArg,
}

pub fn run(args: &InventoryArgs) -> ExitCode {
    super::with_config(&args.config, |config| {
        // The state directory's copy (root only) names each result's request; the one
        // published in status/ does not.
        let state_copy = config.state_dir.join(crate::inventory::FILE);
        let path = if std::fs::File::open(&state_copy).is_ok() {
            state_copy
        } else {
            config.status_dir().join(crate::inventory::FILE)
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read {}: {e} (the service writes it at start)",
                path.display()
            )
        })?;
        let inventory: Inventory = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not an inventory: {e}", path.display()))?;
        if args.json {
            print!("{text}");
            return Ok(());
        }
        println!(
            "{:<12} {:<16} {:<10} {:<9} {:<16} LAST AT",
            "COMPONENT", "VERSION", "SOURCE", "LAST", "OUTCOME"
        );
        for (name, c) in &inventory.components {
            println!(
                "{:<12} {:<16} {:<10} {:<9} {:<16} {}",
                name,
                c.version.as_deref().unwrap_or("unknown"),
                c.version_source,
                c.last_action.as_deref().unwrap_or("-"),
                c.last_outcome.as_deref().unwrap_or("-"),
                c.last_at.as_deref().unwrap_or("-")
            );
            if args.recent {
                for e in &c.recent {
                    println!(
                        "    {} {:<8} {:<12} {:<16} {}",
                        e.at,
                        e.action,
                        e.version.as_deref().unwrap_or(""),
                        e.outcome,
                        e.request_id
                    );
                }
            }
        }
        Ok(())
    })
}
