//! Bounded capture of a script's output: the last N bytes, plus `PHASE:` line detection.
//! Memory stays bounded whatever the script prints (100 MB, or one line without a newline).

use std::collections::VecDeque;

use super::{RunEvents, Stream};

/// The last `capacity` bytes of a stream, and how much was seen in all.
#[derive(Debug)]
pub struct Tail {
    buf: VecDeque<u8>,
    capacity: usize,
    total: u64,
}

/// What a status carries of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub text: String,
    /// Earlier output was dropped to keep the tail bounded.
    pub truncated: bool,
    pub total_bytes: u64,
}

impl Tail {
    pub fn new(capacity: usize) -> Self {
        Self {
            buf: VecDeque::with_capacity(capacity.min(8192)),
            capacity,
            total: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let keep = &bytes[bytes.len().saturating_sub(self.capacity)..];
        let overflow = (self.buf.len() + keep.len()).saturating_sub(self.capacity);
        self.buf.drain(..overflow);
        self.buf.extend(keep);
    }

    pub fn snapshot(&self) -> Captured {
        let (a, b) = self.buf.as_slices();
        let mut bytes = Vec::with_capacity(self.buf.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        let truncated = self.total > self.buf.len() as u64;
        // Cutting may have split a UTF-8 sequence at the front; drop its continuation bytes.
        let start = if truncated {
            bytes
                .iter()
                .take(3)
                .take_while(|&&b| b & 0xC0 == 0x80)
                .count()
        } else {
            0
        };
        Captured {
            text: String::from_utf8_lossy(&bytes[start..]).into_owned(),
            truncated,
            total_bytes: self.total,
        }
    }
}

/// Splits a byte stream into lines, keeping at most `max` bytes of each (an endless line
/// costs nothing). Lines come out without their newline.
#[derive(Debug)]
pub struct LineScanner {
    line: Vec<u8>,
    max: usize,
}

impl LineScanner {
    pub fn new(max: usize) -> Self {
        Self {
            line: Vec::new(),
            max,
        }
    }

    pub fn feed(&mut self, bytes: &[u8], mut each: impl FnMut(&[u8])) {
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            let room = self.max.saturating_sub(self.line.len());
            self.line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.ends_with(b"\n") {
                if self.line.last() == Some(&b'\n') {
                    self.line.pop();
                }
                each(&self.line);
                self.line.clear();
            }
        }
    }
}

/// A line kept for the journal and the status's log tail is cut at this many bytes.
pub const MAX_LINE: usize = 2048;

/// One output stream as the runner reads it: cut into lines (at most [`MAX_LINE`] bytes kept
/// of each), every line reported to [`RunEvents`], and on stdout the `PHASE:` and `PROGRESS:`
/// announcements too. The reader thread feeds it each pipe read; the fuzzer, arbitrary chunks.
#[derive(Debug)]
pub struct OutputScanner {
    lines: LineScanner,
    stream: Stream,
}

/// A phase name longer than this is cut.
pub const MAX_PHASE_LEN: usize = 64;
const PREFIX: &[u8] = b"PHASE:";

impl OutputScanner {
    pub fn new(stream: Stream) -> Self {
        Self {
            lines: LineScanner::new(MAX_LINE),
            stream,
        }
    }

    /// Feeds bytes; reports the lines completed in them, in order.
    pub fn feed(&mut self, bytes: &[u8], events: &dyn RunEvents) {
        let stream = self.stream;
        self.lines.feed(bytes, |line| {
            if stream == Stream::Stdout {
                if let Some(phase) = phase_of(line) {
                    events.phase(phase);
                } else if let Some(percent) = progress_of(line) {
                    events.progress(percent);
                }
            }
            events.line(stream, &String::from_utf8_lossy(line));
        });
    }
}

/// The phase a `PHASE:<name>` line announces: trimmed, control characters dropped, cut at
/// [`MAX_PHASE_LEN`] characters.
fn phase_of(line: &[u8]) -> Option<String> {
    let rest = line.strip_prefix(PREFIX)?;
    let text = String::from_utf8_lossy(rest);
    let name: String = text
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_PHASE_LEN)
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The percentage a `PROGRESS:<n>` line announces (0–100; larger values are clamped).
fn progress_of(line: &[u8]) -> Option<u8> {
    let rest = std::str::from_utf8(line.strip_prefix(b"PROGRESS:")?).ok()?;
    let n: u64 = rest.trim().trim_end_matches('%').parse().ok()?;
    Some(n.min(100) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn tail_keeps_the_last_bytes_and_counts_everything() {
        let mut t = Tail::new(5);
        t.push(b"abc");
        assert_eq!(
            t.snapshot(),
            Captured {
                text: "abc".into(),
                truncated: false,
                total_bytes: 3
            }
        );
        t.push(b"defg");
        t.push(b"");
        assert_eq!(
            t.snapshot(),
            Captured {
                text: "cdefg".into(),
                truncated: true,
                total_bytes: 7
            }
        );
        t.push(b"0123456789");
        assert_eq!(t.snapshot().text, "56789");
    }

    #[test]
    fn tail_does_not_start_with_half_a_character() {
        let mut t = Tail::new(4);
        t.push("xé€".as_bytes()); // x(1) é(2) €(3): the last 4 bytes split é
        assert_eq!(t.snapshot().text, "€");
    }

    /// What a scanner reported, in order.
    #[derive(Default)]
    struct Heard(Mutex<Vec<String>>);

    impl RunEvents for Heard {
        fn phase(&self, name: String) {
            self.0.lock().unwrap().push(format!("phase {name}"));
        }
        fn progress(&self, percent: u8) {
            self.0.lock().unwrap().push(format!("progress {percent}"));
        }
    }

    impl Heard {
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut self.0.lock().unwrap())
        }
    }

    #[test]
    fn phases_are_found_across_chunk_boundaries() {
        let heard = Heard::default();
        let mut s = OutputScanner::new(Stream::Stdout);
        s.feed(b"hello\nPHA", &heard);
        assert!(heard.take().is_empty());
        s.feed(b"SE: downloading \nPHASE:installing\nPHASE:", &heard);
        assert_eq!(heard.take(), ["phase downloading", "phase installing"]);
        s.feed(b"  \n", &heard);
        assert!(heard.take().is_empty(), "an empty phase is ignored");
        s.feed(b"xPHASE:no\nPROGRESS:5\n", &heard);
        assert_eq!(heard.take(), ["progress 5"], "only at the start of a line");
        let mut stderr = OutputScanner::new(Stream::Stderr);
        stderr.feed(b"PHASE:not on stderr\n", &heard);
        assert!(heard.take().is_empty());
    }

    #[test]
    fn progress_lines_give_a_clamped_percentage() {
        assert_eq!(progress_of(b"PROGRESS:42"), Some(42));
        assert_eq!(progress_of(b"PROGRESS: 7%"), Some(7));
        assert_eq!(progress_of(b"PROGRESS:250"), Some(100));
        assert_eq!(progress_of(b"PROGRESS:-1"), None);
        assert_eq!(progress_of(b"progress:5"), None);
    }

    #[test]
    fn lines_are_split_and_cut() {
        let mut lines = LineScanner::new(4);
        let mut seen = Vec::new();
        lines.feed(b"ab\ncdefgh", |l| seen.push(l.to_vec()));
        lines.feed(b"ij\n\n", |l| seen.push(l.to_vec()));
        assert_eq!(seen, [b"ab".to_vec(), b"cdef".to_vec(), b"".to_vec()]);
    }

    #[test]
    fn an_endless_line_is_not_buffered() {
        let heard = Heard::default();
        let mut s = OutputScanner::new(Stream::Stdout);
        for _ in 0..1000 {
            s.feed(&[b'x'; 4096], &heard);
        }
        assert!(s.lines.line.len() <= MAX_LINE);
        s.feed(b"\nPHASE:ok\n", &heard);
        assert_eq!(heard.take(), ["phase ok"]);
    }

    #[test]
    fn a_phase_line_is_read_as_far_as_any_line_is_kept() {
        let heard = Heard::default();
        let mut s = OutputScanner::new(Stream::Stdout);
        let mut line = b"PHASE:".to_vec();
        line.extend([0x01; 1000]);
        line.extend(b"late\n");
        s.feed(&line, &heard);
        assert_eq!(heard.take(), ["phase late"]);
    }

    #[test]
    fn long_phase_names_are_cut_and_control_characters_dropped() {
        let heard = Heard::default();
        let mut s = OutputScanner::new(Stream::Stdout);
        let line = format!("PHASE:a\u{1b}[31m{}\n", "b".repeat(200));
        s.feed(line.as_bytes(), &heard);
        let phase = &heard.take()[0]["phase ".len()..].to_owned();
        assert_eq!(phase.chars().count(), MAX_PHASE_LEN);
        assert!(!phase.contains('\u{1b}'));
    }
}
