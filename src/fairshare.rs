//! Fair share between writers: who a writer is, and how much of a shared limit one writer may
//! take, so that one writer (one container, one uid) cannot refuse or stall another.
//!
//! Every shared limit has a per-writer bound: the queue (`spool.max_queued_per_writer`),
//! requests waiting for their time (`spool.max_scheduled_per_writer`), each component's hourly
//! update cap (`components.<name>.max_updates_per_hour_per_writer`) and the run slots
//! (`execution.max_running_per_writer`). Unset, a bound defaults to [`half`] of its total: one
//! writer alone never holds more than the others may still use. The order in which requests
//! start is fair too: round-robin between writers ([`crate::schedule::Rounds`]).

use std::fmt;

/// Who wrote a request: the spool it was dropped into (an index into the config's spools, 0
/// for `[spool]`) and the uid that owns its request file (read with `fstat` on the open file,
/// so it cannot be swapped). One writer's answers, cancels and duplicates never reach
/// another's requests, and each has its own share of every limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Writer {
    pub spool: usize,
    pub uid: u32,
}

impl fmt::Display for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.spool {
            0 => write!(f, "uid {}", self.uid),
            spool => write!(f, "uid {} of spool #{spool}", self.uid),
        }
    }
}

/// One writer's default share of `total`: half, rounded down, but at least 1. Rounded down so
/// that the other writers always have at least as much as one writer can take (a total of 3
/// gives 1, not 2); at least 1, because a bound of 0 would refuse everything. A total of 1
/// cannot be shared: its single unit goes to whoever comes first.
pub fn half(total: usize) -> usize {
    (total / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_half_rounded_down_and_never_zero() {
        for (total, share) in [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (20, 10), (100, 50)] {
            assert_eq!(half(total), share, "half of {total}");
        }
        assert_eq!(
            Writer {
                spool: 0,
                uid: 2001
            }
            .to_string(),
            "uid 2001"
        );
    }
}
