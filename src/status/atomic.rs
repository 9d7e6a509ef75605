//! Atomic file writes: a file is either complete or absent. We write a temp file in the same
//! directory and rename it over the name, fsyncing as much as the caller's [`Durability`]
//! asks. Its own file because the run records (`crate::record`) and `submit` write this way
//! too, not only `status/`.

use std::io::{self, Write};

use crate::dir::Dir;

/// Whether a write must survive power loss before the caller goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and the directory (final statuses).
    Durable,
    /// fsync the file before the rename, not the directory: after a power cut the name is
    /// absent, the old file, or the whole new one, never an empty file (ext4 allocates a new
    /// file's data late, and a rename that creates a name can reach the disk before the
    /// data does). For the first status a client reads (queued), which then may sit for
    /// minutes; later rewrites replace it, which ext4 orders by itself (auto_da_alloc).
    NeverEmpty,
    /// Atomic rename only (progress updates).
    BestEffort,
}

/// The file a temp file of [`write_atomic`] was going to become: `.<target>.<hex>.tmp`.
fn temp_target(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    Some(inner.rsplit_once('.')?.0)
}

/// Removes the temp files [`write_atomic`] left in `dir` when its writer died, except those
/// whose target `keep` says is still being written. Returns how many were removed.
pub fn remove_temp_files(dir: &Dir, keep: impl Fn(&str) -> bool) -> io::Result<usize> {
    let mut removed = 0;
    for name in dir.names()? {
        let Some(name) = name.to_str() else { continue };
        let Some(target) = temp_target(name) else {
            continue;
        };
        if !keep(target) {
            match dir.remove(name) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Where [`write_via`] may put its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Creates the name or replaces what is there.
    Always,
    /// Only replaces an existing name (`NotFound` otherwise); never re-creates a removed one.
    OnlyOverExisting,
}

/// [`write_via`] a temp file named after `name` (`.<name>.<hex>.tmp`), for directories only
/// the coordinator writes to, where [`remove_temp_files`] can tell what a leftover was for.
/// The file is the coordinator's own (world-readable), created or replaced.
pub fn write_atomic(dir: &Dir, name: &str, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let tmp = format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple());
    write_via(dir, &tmp, name, bytes, durability, None, Place::Always)
}

/// Writes `bytes` to a new temp file `tmp` in `dir` (exclusive create, so nothing planted can
/// redirect the write), optionally fsyncs it, renames it over `name`, optionally fsyncs the
/// directory.
pub(super) fn write_via(
    dir: &Dir,
    tmp: &str,
    name: &str,
    bytes: &[u8],
    durability: Durability,
    owner: Option<u32>,
    place: Place,
) -> io::Result<()> {
    let foreign_owner = owner.filter(|&uid| uid != nix::unistd::geteuid().as_raw());
    // A file given to a client is private to it; our own files are world-readable.
    let mode = if foreign_owner.is_some() {
        0o600
    } else {
        0o644
    };
    let result = (|| {
        let mut file = dir.create_new(tmp, mode)?;
        if let Some(uid) = foreign_owner {
            nix::unistd::fchown(&file, Some(nix::unistd::Uid::from_raw(uid)), None)?;
        }
        file.write_all(bytes)?;
        if durability != Durability::BestEffort {
            file.sync_all()?;
        }
        match place {
            Place::Always => dir.rename(tmp, name),
            // The temp name now holds the old record: removed below.
            // Only over a record of ours: anything else counts as gone.
            Place::OnlyOverExisting => match dir.lstat(name) {
                Ok(st) if st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG => {
                    dir.exchange(tmp, name)
                }
                Ok(_) => Err(io::ErrorKind::NotFound.into()),
                Err(e) => Err(e),
            },
        }
    })();
    if result.is_err() || place == Place::OnlyOverExisting {
        let _ = dir.remove(tmp);
    }
    result?;
    if durability == Durability::Durable {
        dir.sync()?;
    }
    Ok(())
}
