//! Request ids: the one string of a request that becomes a file name (`requests/<id>.json`,
//! `status/<id>.json`, the run records), so it is a checked type that cannot hold a path.

use std::fmt;

use super::{RequestError, printable};

/// Longest accepted request id. A uuid4 is 36 characters; leave room for other id schemes.
pub const MAX_ID_LEN: usize = 128;

/// A request id that is safe to use as a file name: 1–128 characters from `[A-Za-z0-9._-]`,
/// not starting with `.` or `-`, and without `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(String);

impl RequestId {
    pub fn parse(raw: &str) -> Result<Self, RequestError> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        let valid = !raw.is_empty()
            && raw.len() <= MAX_ID_LEN
            && raw.chars().all(ok_char)
            && !raw.starts_with('.')
            && !raw.starts_with('-')
            && !raw.contains("..")
            // `status/inventory.json` is the published inventory, not a request's answer.
            && raw != "inventory"
            // `status/<id>.progress.json` is request <id>'s progress record.
            && !raw.ends_with(PROGRESS_SUFFIX);
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(RequestError::InvalidRequestId(printable(raw)))
        }
    }

    /// The id a request file name stands for (`<id>.json`), if that stem is a safe id.
    pub fn from_file_name(name: &str) -> Option<Self> {
        Self::parse(name.strip_suffix(".json")?).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of this request's status file, `<id>.json`.
    pub fn status_file_name(&self) -> String {
        format!("{}.json", self.0)
    }

    /// The name of this request's progress record, `<id>.progress.json` (beside the status
    /// file, where clients that only know final statuses never look).
    pub(crate) fn progress_file_name(&self) -> String {
        format!("{}{PROGRESS_SUFFIX}.json", self.0)
    }

    /// The id a progress record's name (`<id>.progress.json`) stands for.
    pub(crate) fn from_progress_file_name(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(".json")?.strip_suffix(PROGRESS_SUFFIX)?;
        Self::parse(stem).ok()
    }
}

/// What marks a progress record's name; no request id may end with it.
const PROGRESS_SUFFIX: &str = ".progress";

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_that_could_escape_the_status_directory_are_refused() {
        for bad in [
            "",
            "../etc/passwd",
            "a/b",
            ".hidden",
            "-rf",
            "a..b",
            // Would collide with request `x`'s progress record.
            "x.progress",
            "a\nb",
            "é",
            &"x".repeat(129),
        ] {
            assert!(RequestId::parse(bad).is_err(), "{bad:?} must be refused");
        }
        for good in [
            "0b6f1c2e-6a57-4d8e-9a53-2f0c8d7e9b11",
            "test-123",
            "a.b_c",
            &"x".repeat(128),
        ] {
            assert!(RequestId::parse(good).is_ok(), "{good:?} must be accepted");
        }
    }

    #[test]
    fn id_from_file_name_needs_the_json_suffix_and_a_safe_stem() {
        assert_eq!(
            RequestId::from_file_name("abc.json").unwrap().as_str(),
            "abc"
        );
        assert!(RequestId::from_file_name("abc.txt").is_none());
        assert!(RequestId::from_file_name(".abc.json").is_none());
        // A progress record is not a request's status.
        assert!(RequestId::from_file_name("abc.progress.json").is_none());
        assert_eq!(
            RequestId::from_progress_file_name("abc.progress.json")
                .unwrap()
                .as_str(),
            "abc"
        );
        assert!(RequestId::from_progress_file_name("abc.json").is_none());
    }
}
