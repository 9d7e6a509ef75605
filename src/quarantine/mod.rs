//! `<spool>/quarantine/`: where entries of `requests/` and `status/` that cannot be unlinked
//! or replaced (directories planted under a request or status name) are moved for an
//! administrator to look at, and the bounds that keep it from growing without end.
//!
//! Each time an entry comes in, the quarantine keeps only the newest [`MAX_ENTRIES`] entries,
//! none older than [`MAX_AGE`], at most [`MAX_BYTES`] together; the rest is removed. The size
//! of an entry is measured once, as it comes in, and written into its name with its arrival
//! time (`<unix time in ns>-<bytes>-<random>-<original name>`): only the coordinator writes in
//! `quarantine/` (0700), so the names can be trusted. A planted tree is walked and removed
//! through directory handles only: no symlink is followed, no other filesystem is entered,
//! a tree deeper than [`MAX_DEPTH`] is cut into pieces that are removed one after the other
//! (a handle per level, never `..`), and each call does a bounded amount of work so a huge
//! tree cannot stall the service: what is left is removed at the next call.

mod tree;

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::sys::stat::Mode;
// rustix, not nix: the 64-bit stat on 32-bit ARM too (see tree.rs).
use rustix::fs::fstat;
use tracing::{info, warn};

use crate::dir::Dir;
use tree::{entries_of, measure, remove_tree};

/// Quarantined entries are removed after this long.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// At most this many entries are kept (the newest).
pub const MAX_ENTRIES: usize = 32;
/// The kept entries use at most this much disk together; every file and directory counts at
/// least [`MIN_CHARGE`]. A single entry larger than this is removed at once.
pub const MAX_BYTES: u64 = 8 << 20;
/// What an entry costs at least: a directory's first block, and the inode of an empty file.
const MIN_CHARGE: u64 = 4096;
/// A tree is held open one directory handle per level up to this depth; deeper parts are
/// moved to the top of the quarantine and removed as trees of their own.
pub(crate) const MAX_DEPTH: usize = 32;
/// Removals (unlink, rmdir, moving a deep part) per call at most.
const WORK_PER_CALL: usize = 20_000;

/// Name of the directory below the spool root.
const DIR_NAME: &str = "quarantine";

/// Moves `name` (in `dir`, the spool's `requests/` or `status/`) into `<spool>/quarantine/`,
/// then removes what exceeds the bounds. Failing to prune is logged, not returned: the entry
/// is out of `dir` either way.
pub(crate) fn admit(dir: &Dir, name: &str) -> io::Result<()> {
    let Some(root) = dir.path().parent() else {
        return Err(io::Error::other("the spool directory has no parent"));
    };
    let quarantine = open(&Dir::open(root)?)?;
    let dev = fstat(quarantine.as_fd())?.st_dev as u64;
    let bytes = measure(dir.as_fd(), name, dev);
    let now = unix_nanos(SystemTime::now());
    let kept_name = Entry::name(now, bytes, name);
    dir.rename_to(name, &quarantine, &kept_name)?;
    if bytes > MAX_BYTES {
        warn!(
            entry = kept_name,
            "a quarantined entry is larger than the quarantine may hold; removing it"
        );
    }
    prune(&quarantine, now);
    Ok(())
}

/// Opens `<root>/quarantine`, creating it 0700; a planted symlink or file there is an error.
fn open(root: &Dir) -> io::Result<Dir> {
    match nix::sys::stat::mkdirat(root.as_fd(), DIR_NAME, Mode::S_IRWXU) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let dir = root.open_dir(DIR_NAME)?;
    let st = fstat(dir.as_fd())?;
    if st.st_uid != nix::unistd::geteuid().as_raw() {
        return Err(io::Error::other(format!(
            "{} is owned by uid {}, not by this service",
            dir.path().display(),
            st.st_uid
        )));
    }
    if st.st_mode & 0o7777 != 0o700 {
        nix::sys::stat::fchmod(dir.as_fd(), Mode::S_IRWXU)?;
    }
    Ok(dir)
}

/// Applies the bounds to the spool's quarantine (under the spool root `root`), if it has one:
/// the retention sweep, so that an old entry goes even when no new one arrives.
pub(crate) fn sweep(root: &Dir) {
    if let Ok(quarantine) = root.open_dir(DIR_NAME) {
        prune(&quarantine, unix_nanos(SystemTime::now()));
    }
}

/// Removes entries beyond the bounds (see the module doc) as of `now` (unix time in ns).
pub(crate) fn prune(quarantine: &Dir, now: u64) {
    let mut entries: Vec<(Entry, OsString)> = Vec::new();
    let listed = entries_of(quarantine.as_fd()).and_then(|stream| {
        for entry in stream {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                let name = OsString::from_vec(name);
                entries.push((Entry::parse(&name), name));
            }
        }
        Ok(())
    });
    if let Err(e) = listed {
        warn!(error = %e, "cannot list the quarantine");
        return;
    }
    // Newest first; unreadable names (left by older versions) sort last and go.
    entries.sort_by(|a, b| b.0.at.cmp(&a.0.at).then_with(|| a.1.cmp(&b.1)));
    let (mut kept, mut bytes) = (0, 0u64);
    let mut work = WORK_PER_CALL;
    let mut removed = 0;
    for (entry, name) in entries {
        let young = entry.at.saturating_add(MAX_AGE.as_nanos() as u64) >= now;
        if young && kept < MAX_ENTRIES && bytes.saturating_add(entry.bytes) <= MAX_BYTES {
            kept += 1;
            bytes += entry.bytes;
            continue;
        }
        match remove_tree(quarantine, &name, &mut work) {
            Ok(()) => removed += 1,
            Err(e) => {
                warn!(entry = %name.to_string_lossy(), error = %e, "cannot remove a quarantined entry")
            }
        }
        if work == 0 {
            warn!("the quarantine holds more than one call removes; the rest goes next time");
            break;
        }
    }
    if removed > 0 {
        info!(removed, kept, bytes, "quarantine pruned");
    }
}

/// What a quarantined entry's name says about it.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    /// When it was quarantined (unix time in ns, so arrival order is kept); 0 if the name is
    /// not ours.
    at: u64,
    bytes: u64,
}

impl Entry {
    fn name(at: u64, bytes: u64, original: &str) -> String {
        let random = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("{at}-{bytes}-{random}-");
        // A file name has at most 255 bytes.
        let mut end = original.len().min(255 - prefix.len());
        while !original.is_char_boundary(end) {
            end -= 1;
        }
        prefix + &original[..end]
    }

    fn parse(name: &OsStr) -> Entry {
        let text = name.to_string_lossy();
        let mut parts = text.splitn(3, '-');
        match (
            parts.next().and_then(|s| s.parse().ok()),
            parts.next().and_then(|s| s.parse().ok()),
        ) {
            (Some(at), Some(bytes)) => Entry { at, bytes },
            _ => Entry {
                at: 0,
                bytes: u64::MAX,
            },
        }
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::{Path, PathBuf};

    /// A spool root with `requests/` and its handle.
    fn spool() -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("requests")).unwrap();
        let requests = Dir::open(&tmp.path().join("requests")).unwrap();
        (tmp, requests)
    }

    /// A directory beside the spool with a file in it, which a planted symlink points at.
    fn outside(root: &Path) -> PathBuf {
        let outside = root.join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), "keep me").unwrap();
        outside
    }

    /// Removing what pointed at [`outside`] left it as it was.
    fn assert_untouched(outside: &Path) {
        assert_eq!(
            fs::read_to_string(outside.join("precious")).unwrap(),
            "keep me"
        );
    }

    /// A directory planted as `requests/<name>`: a few files, a subdirectory, and a symlink
    /// to `outside` (which removal must never follow).
    fn plant(root: &Path, name: &str, outside: &Path) {
        let dir = root.join("requests").join(name);
        fs::create_dir_all(dir.join("sub/subsub")).unwrap();
        for i in 0..4 {
            fs::write(dir.join(format!("f{i}")), [b'x'; 100]).unwrap();
        }
        fs::write(dir.join("sub/subsub/deep"), "y").unwrap();
        std::os::unix::fs::symlink(outside, dir.join("sub/link")).unwrap();
    }

    fn quarantined(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(root.join(DIR_NAME))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Every byte the quarantine uses, as `measure` counts it.
    fn usage(root: &Path) -> u64 {
        let q = Dir::open(&root.join(DIR_NAME)).unwrap();
        let dev = fstat(q.as_fd()).unwrap().st_dev;
        quarantined(root)
            .iter()
            .map(|name| measure(q.as_fd(), name, dev))
            .sum()
    }

    #[test]
    fn entry_names_carry_time_and_size_and_fit_a_file_name() {
        let name = Entry::name(1_771_030_263_123_456_789, 12_288, "evil-1.json");
        assert!(name.starts_with("1771030263123456789-12288-"), "{name}");
        assert!(name.ends_with("-evil-1.json"), "{name}");
        assert_eq!(
            Entry::parse(OsStr::new(&name)),
            Entry {
                at: 1_771_030_263_123_456_789,
                bytes: 12_288
            }
        );
        let long = format!("{}.json", "é".repeat(125));
        assert!(Entry::name(u64::MAX, u64::MAX, &long).len() <= 255);
        // Names of older versions (`<uuid>-<name>`) are never kept.
        let old = Entry::parse(OsStr::new("0b6f1c2e6a574d8e9a532f0c8d7e9b11-x.json"));
        assert_eq!((old.at, old.bytes), (0, u64::MAX));
    }

    #[test]
    fn many_planted_directories_leave_a_bounded_quarantine_and_nothing_outside_touched() {
        let (tmp, requests) = spool();
        let outside = outside(tmp.path());
        for i in 0..(3 * MAX_ENTRIES) {
            let name = format!("evil-{i}.json");
            plant(tmp.path(), &name, &outside);
            admit(&requests, &name).unwrap();
            assert!(!tmp.path().join("requests").join(&name).exists());
        }
        let kept = quarantined(tmp.path());
        assert_eq!(kept.len(), MAX_ENTRIES);
        assert!(usage(tmp.path()) <= MAX_BYTES);
        // The newest are the ones kept.
        let newest = format!("-evil-{}.json", 3 * MAX_ENTRIES - 1);
        assert!(kept.iter().any(|n| n.ends_with(&newest)), "{kept:?}");
        assert!(
            !kept.iter().any(|n| n.ends_with("-evil-0.json")),
            "{kept:?}"
        );
        assert_untouched(&outside);
        let mode = fs::metadata(tmp.path().join(DIR_NAME)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o7777,
            0o700
        );
    }

    #[test]
    fn entries_older_than_the_limit_and_of_unknown_age_are_removed() {
        let (tmp, requests) = spool();
        plant(tmp.path(), "a.json", tmp.path());
        admit(&requests, "a.json").unwrap();
        let q = tmp.path().join(DIR_NAME);
        let now = unix_nanos(SystemTime::now());
        let age = MAX_AGE.as_nanos() as u64;
        let stale = Entry::name(now - age - 1, 4096, "stale.json");
        let fresh = Entry::name(now - age + 60_000_000_000, 4096, "fresh.json");
        for name in [&stale, &fresh, "0b6f1c2e6a574d8e9a532f0c8d7e9b11-old.json"] {
            fs::create_dir_all(q.join(name).join("inner")).unwrap();
        }
        prune(&Dir::open(&q).unwrap(), now);
        let kept = quarantined(tmp.path());
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept.contains(&fresh) && !kept.contains(&stale), "{kept:?}");
    }

    #[test]
    fn an_entry_larger_than_the_bound_is_removed_at_once() {
        let (tmp, requests) = spool();
        let dir = tmp.path().join("requests/big.json");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("blob"), vec![7u8; (MAX_BYTES + 1) as usize]).unwrap();
        admit(&requests, "big.json").unwrap();
        assert!(!dir.exists());
        assert_eq!(quarantined(tmp.path()), Vec::<String>::new());
    }

    #[test]
    fn a_tree_deeper_than_the_handles_held_is_removed_in_pieces() {
        let (tmp, requests) = spool();
        let outside = outside(tmp.path());
        // Built by relative steps: the full path is longer than PATH_MAX allows.
        let top = tmp.path().join("requests/deep.json");
        fs::create_dir(&top).unwrap();
        let mut here = Dir::open(&top).unwrap();
        for _ in 0..(5 * MAX_DEPTH + 3) {
            here.create_new("file", 0o600).unwrap();
            std::os::unix::fs::symlink(&outside, here.path().join("link")).unwrap_or(());
            nix::sys::stat::mkdirat(here.as_fd(), "d", Mode::S_IRWXU).unwrap();
            here = here.open_dir("d").unwrap();
        }
        drop(here);
        // Too deep to be kept: measured as too big, and removed whole.
        admit(&requests, "deep.json").unwrap();
        assert!(!top.exists());
        assert_eq!(quarantined(tmp.path()), Vec::<String>::new());
        assert_untouched(&outside);
    }

    #[test]
    fn removal_stops_after_its_work_limit_and_finishes_later() {
        let (tmp, _requests) = spool();
        let q = tmp.path().join(DIR_NAME);
        let entry = q.join(Entry::name(0, 0, "wide.json"));
        fs::create_dir_all(&entry).unwrap();
        for i in 0..50 {
            fs::write(entry.join(format!("f{i}")), "").unwrap();
        }
        let quarantine = Dir::open(&q).unwrap();
        let name = entry.file_name().unwrap();
        let mut work = 10;
        assert!(remove_tree(&quarantine, name, &mut work).is_err());
        assert!(entry.exists());
        let mut work = WORK_PER_CALL;
        remove_tree(&quarantine, name, &mut work).unwrap();
        assert!(!entry.exists());
    }

    #[test]
    fn a_planted_symlink_in_place_of_the_quarantine_is_not_followed() {
        let (tmp, requests) = spool();
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, tmp.path().join(DIR_NAME)).unwrap();
        fs::create_dir(tmp.path().join("requests/x.json")).unwrap();
        assert!(admit(&requests, "x.json").is_err());
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
