//! `update-coordinator follow ID`, and the status-following shared with `submit --wait`:
//! polls `status/<id>.json` and the progress record beside it, and shows phases, progress and
//! new output lines until the status is final. On a terminal a single progress line is redrawn; piped, plain lines are printed.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::request::RequestId;
use crate::status::{Status, StatusDir};

#[derive(Debug, clap::Args)]
pub struct FollowArgs {
    /// The request id to follow
    pub id: String,
    /// Give up after this many seconds
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub timeout: u64,
    /// Spool root (holds requests/ and status/) [default: from the config]
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// One JSON status per line, each time it changes
    #[arg(long)]
    pub json: bool,
}

/// How often the status file is looked at.
const POLL: Duration = Duration::from_millis(200);

pub fn run(args: &FollowArgs) -> ExitCode {
    let result = (|| {
        let id = RequestId::parse(&args.id).map_err(|e| e.to_string())?;
        let (config, _) = args.config.load().map_err(|e| e.to_string())?;
        let root = args.spool.clone().unwrap_or(config.spool_root.clone());
        let output = if args.json {
            Output::Json
        } else {
            Output::detect()
        };
        let status = follow(
            &root,
            Some(&config.state_dir),
            &id,
            Duration::from_secs(args.timeout),
            output,
        )?;
        if !args.json {
            print!("{}", super::summary::summarize(&status));
        }
        Ok(status)
    })();
    super::exit_with(result.map(|status| exit_for(&status)))
}

pub fn exit_for(status: &Status) -> ExitCode {
    if status.success == Some(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A redrawn progress line on stderr, output lines above it.
    Terminal,
    /// Plain lines on stderr.
    Plain,
    /// Every new status as one JSON line on stdout.
    Json,
}

impl Output {
    pub fn detect() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Terminal
        } else {
            Self::Plain
        }
    }
}

/// How long a request may show no sign of being picked up before we say so.
const PICKUP_PATIENCE: Duration = Duration::from_secs(3);

/// Follows `id` until its status is final; returns it (the file is left in place). A request
/// answered and collected earlier is answered from its record in `state_dir` (when readable);
/// an id nobody knows is an error at once, not a silent wait.
pub fn follow(
    root: &std::path::Path,
    state_dir: Option<&std::path::Path>,
    id: &RequestId,
    patience: Duration,
    output: Output,
) -> Result<Status, String> {
    let status_path = root.join("status");
    // Reading only: `read_latest` looks where either kind of spool keeps progress.
    let dir = StatusDir::open(&status_path, false)
        .map_err(|e| format!("cannot open {}: {e}", status_path.display()))?;
    let request_file = root.join("requests").join(id.status_file_name());
    let record = || {
        let store = crate::record::RunStore::open_existing(state_dir?).ok()?;
        Some((store.exists(id), store.final_status(id)))
    };
    let started = Instant::now();
    // Patience counts from the last sign of a request that is not waiting for its maintenance
    // window or not_before: a scheduled wait is announced, not a hang.
    let mut patient_since = started;
    let mut view = View::new(output);
    let mut seen = false;
    let mut said_unpicked = false;
    while patient_since.elapsed() < patience {
        if let Ok(Some(status)) = dir.read_latest(id) {
            seen = true;
            view.show(&status, started.elapsed());
            if status.is_final() {
                view.finish();
                return Ok(status);
            }
            if status.phase == crate::status::Phase::Scheduled {
                patient_since = Instant::now();
            }
        } else if !seen {
            let unpicked = request_file.exists();
            if unpicked && !said_unpicked && started.elapsed() >= PICKUP_PATIENCE {
                said_unpicked = true;
                view.note(&format!(
                    "nobody has picked up {id} after {} s: is the coordinator running (systemctl status dunebugger-update-coordinator) and watching {}? Still waiting (up to {} s).",
                    PICKUP_PATIENCE.as_secs(),
                    root.join("requests").display(),
                    patience.as_secs()
                ));
            }
            match record() {
                // Answered, and its answer collected already: the record has it.
                Some((_, Some(status))) => {
                    view.finish();
                    return Ok(status);
                }
                // Accepted (queued or running): its progress record appears any moment.
                Some((true, None)) => {}
                // Written, not taken yet (said above): keep waiting.
                _ if unpicked => {}
                _ if started.elapsed() >= POLL * 2 => {
                    view.finish();
                    return Err(format!(
                        "no request {id} in {}: not waiting, not running, and no answer (a mistyped id, or an answer collected more than the retention period ago)",
                        root.display()
                    ));
                }
                _ => {}
            }
        }
        std::thread::sleep(POLL);
    }
    view.finish();
    Err(format!(
        "no final status for {id} after {} s; is the coordinator running on {}?",
        patience.as_secs(),
        root.display()
    ))
}

struct View {
    output: Output,
    last: Option<Status>,
    /// The log tail lines already printed, to print only new ones.
    printed_tail: Vec<String>,
    line_drawn: bool,
}

impl View {
    fn new(output: Output) -> Self {
        Self {
            output,
            last: None,
            printed_tail: Vec::new(),
            line_drawn: false,
        }
    }

    fn show(&mut self, status: &Status, elapsed: Duration) {
        let changed = self.last.as_ref() != Some(status);
        if self.output == Output::Json {
            if changed {
                println!("{}", serde_json::to_string(status).unwrap_or_default());
            }
            self.last = Some(status.clone());
            return;
        }
        let mut err = std::io::stderr().lock();
        let new_lines =
            new_tail_lines(&self.printed_tail, status.log_tail.as_deref().unwrap_or(""));
        if self.line_drawn && (!new_lines.is_empty() || status.is_final()) {
            let _ = write!(err, "\r\x1b[2K");
            self.line_drawn = false;
        }
        for line in &new_lines {
            let _ = writeln!(err, "  | {line}");
        }
        if !new_lines.is_empty() {
            self.printed_tail = status
                .log_tail
                .as_deref()
                .unwrap_or("")
                .lines()
                .map(str::to_owned)
                .collect();
        }
        let phase_changed = self.last.as_ref().map(|s| (&s.phase, s.progress))
            != Some((&status.phase, status.progress));
        if !status.is_final() {
            let progress = status
                .progress
                .map(|p| format!(" {p:>3}%"))
                .unwrap_or_default();
            let until = status
                .scheduled_for
                .as_deref()
                .map(|t| format!(" until {t}"))
                .or_else(|| status.queue_position.map(|p| format!(" (position {p})")))
                .unwrap_or_default();
            let line = format!(
                "phase: {}{until}{progress}  ({} s)",
                status.phase,
                elapsed.as_secs()
            );
            match self.output {
                Output::Terminal => {
                    let _ = write!(err, "\r\x1b[2K{line}");
                    self.line_drawn = true;
                }
                Output::Plain if phase_changed => {
                    let _ = writeln!(err, "{line}");
                }
                _ => {}
            }
        }
        let _ = err.flush();
        self.last = Some(status.clone());
    }

    /// A line about the wait itself (on stderr, never in `--json` output).
    fn note(&mut self, text: &str) {
        if self.output == Output::Json {
            return eprintln!("{text}");
        }
        let mut err = std::io::stderr().lock();
        if self.line_drawn {
            let _ = write!(err, "\r\x1b[2K");
            self.line_drawn = false;
        }
        let _ = writeln!(err, "{text}");
    }

    fn finish(&mut self) {
        if self.line_drawn {
            let _ = writeln!(std::io::stderr());
            self.line_drawn = false;
        }
    }
}

/// The lines of `tail` after what `printed` (the previous tail) already showed.
fn new_tail_lines(printed: &[String], tail: &str) -> Vec<String> {
    let lines: Vec<&str> = tail.lines().collect();
    // The longest suffix of `printed` that is a prefix of `lines` was shown already.
    let overlap = (0..=printed.len().min(lines.len()))
        .rev()
        .find(|&n| {
            printed[printed.len() - n..]
                .iter()
                .map(String::as_str)
                .eq(lines[..n].iter().copied())
        })
        .unwrap_or(0);
    lines[overlap..].iter().map(|l| (*l).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn only_lines_not_shown_before_are_new() {
        assert_eq!(new_tail_lines(&[], "a\nb\n"), ["a", "b"]);
        assert_eq!(new_tail_lines(&owned(&["a", "b"]), "a\nb\nc\n"), ["c"]);
        // The tail slid: "a" dropped off the front.
        assert_eq!(
            new_tail_lines(&owned(&["a", "b", "c"]), "b\nc\nd\ne\n"),
            ["d", "e"]
        );
        assert!(new_tail_lines(&owned(&["a", "b"]), "a\nb\n").is_empty());
        // Nothing in common: all new.
        assert_eq!(new_tail_lines(&owned(&["x"]), "y\n"), ["y"]);
    }
}
