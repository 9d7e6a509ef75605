//! `update-coordinator man`: the manual pages, rendered from the command-line definition:
//! update-coordinator(1), which lists the subcommands, and update-coordinator-SUB(1) with the
//! options of each one it lists (hidden subcommands get none).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_mangen::Man;
use clap_mangen::roff::{Roff, roman};

/// The main page's name, as `man` looks it up.
const NAME: &str = "update-coordinator";

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write every page (update-coordinator.1 and update-coordinator-SUBCOMMAND.1) into DIR,
    /// creating it if needed, and print their paths; without it, the main page goes to stdout
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub dir: Option<PathBuf>,
}

pub fn run(args: &ManArgs) -> ExitCode {
    super::exit_with(
        match &args.dir {
            None => pages()
                .and_then(|pages| io::stdout().write_all(&pages[0].1))
                .map_err(|e| e.to_string()),
            Some(dir) => write_pages(dir),
        }
        .map(|()| ExitCode::SUCCESS),
    )
}

fn write_pages(dir: &Path) -> Result<(), String> {
    let pages = pages().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, roff) in pages {
        let path = dir.join(name);
        std::fs::write(&path, roff).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// Every page as (file name, roff), the main page first.
pub fn pages() -> io::Result<Vec<(String, Vec<u8>)>> {
    // `help` is the same text as `--help`: no page of its own, so the main page does not list it.
    let mut cmd = super::command().disable_help_subcommand(true);
    cmd.build();
    let source = format!("{NAME} {}", env!("CARGO_PKG_VERSION"));
    let mut pages = vec![render(Man::new(cmd.clone()).source(&source), false)?];
    subcommand_pages(&cmd, &source, &mut pages)?;
    Ok(pages)
}

/// A page for each subcommand of `cmd` that is not hidden, and for theirs in turn
/// (`fleet status`: update-coordinator-fleet-status(1)).
fn subcommand_pages(
    cmd: &clap::Command,
    source: &str,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> io::Result<()> {
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let sub = sub.clone().disable_help_subcommand(true);
        pages.push(render(Man::new(sub.clone()).source(source), true)?);
        subcommand_pages(&sub, source, pages)?;
    }
    Ok(())
}

fn render(man: Man, see_main: bool) -> io::Result<(String, Vec<u8>)> {
    let mut roff = Vec::new();
    man.render(&mut roff)?;
    if see_main {
        Roff::default()
            .control("SH", ["SEE ALSO"])
            .text([roman(format!("{NAME}(1)"))])
            .to_writer(&mut roff)?;
    }
    Ok((man.get_filename(), roff))
}
