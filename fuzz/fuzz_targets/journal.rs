//! Replaying the journal: arbitrary bytes as `state/journal.jsonl` (a power cut can leave any
//! tail). Checks what `src/record/journal.rs` promises the store: the valid lines are a
//! prefix, each ends with its newline and parses on its own, and replaying that prefix again
//! gives the same lines (so cutting the torn tail off loses nothing valid).
#![no_main]

use libfuzzer_sys::fuzz_target;
use update_coordinator::record::journal::{parse, Entry};

fuzz_target!(|data: &[u8]| {
    let (entries, valid) = parse(data);
    assert!(valid as usize <= data.len());
    let mut next = 0u64;
    for (loc, entry) in &entries {
        assert_eq!(loc.offset, next, "lines are contiguous from the start");
        let end = (loc.offset + u64::from(loc.len)) as usize;
        assert_eq!(data[end - 1], b'\n', "a line ends with its newline");
        let line = &data[loc.offset as usize..end - 1];
        let again: Entry = serde_json::from_slice(line).expect("a valid line parses alone");
        assert_eq!(again.request_id(), entry.request_id());
        next = end as u64;
    }
    assert_eq!(next, valid, "the valid part is exactly the lines");
    let (replayed, valid_again) = parse(&data[..valid as usize]);
    assert_eq!((replayed.len(), valid_again), (entries.len(), valid));
});
