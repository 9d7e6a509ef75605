//! Script output capture: a byte stream cut into chunks, fed to `Tail` and to the runner's own
//! `OutputScanner` (its line limit, its `PHASE:`/`PROGRESS:` parsing) as the runner does with
//! pipe reads.
//!
//! Input layout: byte 0 is the tail capacity (0-255 bytes; the logic does not depend on the
//! size, small ones truncate more often), byte 1 seeds the chunk lengths (1-32 bytes each),
//! the rest is the stream. So a seed file is two characters, then the script's output.
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use update_coordinator::runner::{
    OutputScanner, RunEvents, Stream, Tail, MAX_LINE, MAX_PHASE_LEN,
};

/// What the scanner reported, in order.
#[derive(Debug, Default)]
struct Heard(Mutex<Vec<Event>>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Phase(String),
    Progress(u8),
    Line(String),
}

impl RunEvents for Heard {
    fn phase(&self, name: String) {
        check_phase(&name);
        self.0.lock().unwrap().push(Event::Phase(name));
    }
    fn progress(&self, percent: u8) {
        assert!(percent <= 100, "progress {percent}");
        self.0.lock().unwrap().push(Event::Progress(percent));
    }
    fn line(&self, _stream: Stream, line: &str) {
        // Lossy decoding turns each kept byte into at most one char.
        assert!(
            line.chars().count() <= MAX_LINE,
            "a line of {} chars",
            line.chars().count()
        );
        assert!(!line.contains('\n'));
        self.0.lock().unwrap().push(Event::Line(line.to_owned()));
    }
}

impl Heard {
    fn events(self) -> Vec<Event> {
        self.0.into_inner().unwrap()
    }
}

fuzz_target!(|data: &[u8]| {
    let [capacity, seed, stream @ ..] = data else {
        return;
    };
    let capacity = usize::from(*capacity);

    let mut tail = Tail::new(capacity);
    let mut scanner = OutputScanner::new(Stream::Stdout);
    let heard = Heard::default();
    let mut fed = 0usize;
    for chunk in chunks(stream, *seed) {
        tail.push(chunk);
        fed += chunk.len();
        let captured = tail.snapshot();
        assert_eq!(captured.total_bytes, fed as u64);
        assert_eq!(captured.truncated, fed > capacity);
        // Lossy decoding turns each kept byte into at most one char.
        assert!(
            captured.text.chars().count() <= capacity,
            "tail of capacity {capacity} holds {} chars",
            captured.text.chars().count()
        );
        scanner.feed(chunk, &heard);
    }

    // The tail holds exactly the last `capacity` bytes, less a split UTF-8 sequence in front.
    let captured = tail.snapshot();
    assert_eq!(captured.total_bytes, stream.len() as u64);
    let kept = &stream[stream.len().saturating_sub(capacity)..];
    let skip = if captured.truncated {
        kept.iter()
            .take(3)
            .take_while(|&&b| b & 0xC0 == 0x80)
            .count()
    } else {
        0
    };
    assert_eq!(captured.text, String::from_utf8_lossy(&kept[skip..]));

    // Lines, phases and progress do not depend on how the stream was cut into reads.
    let whole = Heard::default();
    OutputScanner::new(Stream::Stdout).feed(stream, &whole);
    assert_eq!(
        heard.events(),
        whole.events(),
        "events differ between chunked and whole reads"
    );
});

fn check_phase(phase: &str) {
    assert!(!phase.is_empty());
    assert!(
        phase.chars().count() <= MAX_PHASE_LEN,
        "phase of {} chars",
        phase.chars().count()
    );
    assert!(!phase.chars().any(char::is_control), "{phase:?}");
}

/// Splits `stream` into chunks of 1-32 bytes, lengths drawn from a tiny LCG seeded by `seed`.
fn chunks(stream: &[u8], seed: u8) -> impl Iterator<Item = &[u8]> {
    let mut state = u32::from(seed);
    let mut rest = stream;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let len = (1 + (state >> 16) as usize % 32).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        Some(chunk)
    })
}
