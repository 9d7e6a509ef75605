//! Script output capture: a byte stream cut into chunks, fed to `Tail` and `PhaseScanner`
//! as the runner does with pipe reads.
//!
//! Input layout: byte 0 is the tail capacity (0-255 bytes; the logic does not depend on the
//! size, small ones truncate more often), byte 1 seeds the chunk lengths (1-32 bytes each),
//! the rest is the stream. So a seed file is two characters, then the script's output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use update_coordinator::runner::{PhaseScanner, Tail, MAX_PHASE_LEN};

fuzz_target!(|data: &[u8]| {
    let [capacity, seed, stream @ ..] = data else {
        return;
    };
    let capacity = usize::from(*capacity);

    let mut tail = Tail::new(capacity);
    let mut scanner = PhaseScanner::default();
    let mut phases = Vec::new();
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
        for phase in scanner.feed(chunk) {
            check_phase(&phase);
            phases.push(phase);
        }
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

    // Phases do not depend on how the stream was cut into reads.
    let whole = PhaseScanner::default().feed(stream);
    assert_eq!(
        phases, whole,
        "phases differ between chunked and whole reads"
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
