//! Versions: the one string of a request that becomes an argument of a script run as root
//! (`update.sh VERSION`), so it is a checked type that cannot look like an option.

use super::{RequestError, printable};

/// Longest accepted version string.
pub const MAX_VERSION_LEN: usize = 64;

/// A version string that is safe to pass as one argv element: starts with a digit, then
/// `[A-Za-z0-9.+_-]`, at most 64 characters (`1.2.3`, `1.0.0-beta.8`, `2026.01.5`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(String);

impl Version {
    pub fn parse(raw: &str) -> Result<Self, RequestError> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '_' | '-');
        let valid = raw.len() <= MAX_VERSION_LEN
            && raw.starts_with(|c: char| c.is_ascii_digit())
            && raw.chars().all(ok_char);
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(RequestError::InvalidVersion(printable(raw)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_look_like_versions() {
        for good in ["1.2.3", "1.0.0-beta.8", "2026.01.5", "2+build.7"] {
            assert!(Version::parse(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "-1",
            "v1.2.3",
            "1.2.3; rm -rf /",
            "1 2",
            "latest",
            &"1".repeat(65),
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
    }
}
