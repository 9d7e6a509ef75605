//! A group's semaphore as airlock keeps it in etcd: JSON `{"total_slots": N, "holders": [...]}`
//! with the holders sorted (airlock looks them up by binary search), changed only by a
//! transaction that compares the key's version with the one read. Pure: what taking or
//! giving back a slot makes of a value; [`super::etcd`] does the reading and writing.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Semaphore {
    pub total_slots: u64,
    #[serde(default)]
    pub holders: Vec<String>,
}

/// What taking a slot comes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    /// The host holds one already (it took it before a crash, or airlock's client did).
    AlreadyHeld,
    /// Write this value to hold one.
    Write(Semaphore),
    /// Every slot is held by others.
    Full,
}

impl Semaphore {
    pub fn new(total_slots: u64) -> Semaphore {
        Semaphore {
            total_slots,
            holders: Vec::new(),
        }
    }

    pub fn parse(value: &[u8]) -> Result<Semaphore, String> {
        serde_json::from_slice(value)
            .map_err(|e| format!("the semaphore is not airlock's JSON ({e})"))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn holds(&self, host: &str) -> bool {
        self.holders.iter().any(|h| h == host)
    }

    pub fn take(&self, host: &str) -> Take {
        if self.holds(host) {
            return Take::AlreadyHeld;
        }
        // More holders than slots (slots lowered by hand) is full too, not an overflow.
        if self.holders.len() as u64 >= self.total_slots {
            return Take::Full;
        }
        let mut next = self.clone();
        let at = next.holders.partition_point(|h| h.as_str() < host);
        next.holders.insert(at, host.to_owned());
        Take::Write(next)
    }

    /// The value without `host`, or `None` when it holds nothing (nothing to write).
    pub fn release(&self, host: &str) -> Option<Semaphore> {
        if !self.holds(host) {
            return None;
        }
        let mut next = self.clone();
        next.holders.retain(|h| h != host);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sem(slots: u64, holders: &[&str]) -> Semaphore {
        Semaphore {
            total_slots: slots,
            holders: holders.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn reads_and_writes_airlocks_json() {
        let s = Semaphore::parse(br#"{"total_slots":2,"holders":["a","c"]}"#).unwrap();
        assert_eq!(s, sem(2, &["a", "c"]));
        assert_eq!(s.to_json(), r#"{"total_slots":2,"holders":["a","c"]}"#);
        // airlock's fresh semaphore writes an empty list; a missing one reads as empty too.
        assert_eq!(
            Semaphore::new(3).to_json(),
            r#"{"total_slots":3,"holders":[]}"#
        );
        assert_eq!(
            Semaphore::parse(br#"{"total_slots":1}"#).unwrap(),
            sem(1, &[])
        );
        assert!(Semaphore::parse(b"{\"max\":1}").is_err());
    }

    #[test]
    fn a_free_slot_is_taken_keeping_the_holders_sorted() {
        assert_eq!(
            sem(3, &["a", "c"]).take("b"),
            Take::Write(sem(3, &["a", "b", "c"]))
        );
        assert_eq!(sem(3, &[]).take("z"), Take::Write(sem(3, &["z"])));
    }

    #[test]
    fn a_holder_takes_again_without_a_write_and_others_find_it_full() {
        assert_eq!(sem(1, &["a"]).take("a"), Take::AlreadyHeld);
        assert_eq!(sem(1, &["a"]).take("b"), Take::Full);
        assert_eq!(sem(1, &["a", "b"]).take("c"), Take::Full);
        assert_eq!(sem(0, &[]).take("c"), Take::Full);
    }

    #[test]
    fn only_a_holder_has_something_to_give_back() {
        assert_eq!(sem(2, &["a", "b"]).release("a"), Some(sem(2, &["b"])));
        assert_eq!(sem(2, &["b"]).release("a"), None);
    }
}
