//! A directory handle: files are opened, created, renamed and removed relative to it, one name
//! at a time, never following a symlink at the last component. The spool directories are
//! writable by containers; resolving paths from a held handle means nothing they rename or
//! plant can redirect the service to another directory.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};
use rustix::fs::Stat;

#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// One path component: no `/`, not `.` or `..`, not empty.
fn check_name(name: &str) -> io::Result<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(name)
}

impl Dir {
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir {
            fd,
            path: path.to_owned(),
        })
    }

    /// Opens the subdirectory `name` without following a symlink.
    pub fn open_dir(&self, name: &str) -> io::Result<Dir> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(self.fd.as_fd(), check_name(name)?, flags, Mode::empty())?;
        Ok(Dir {
            fd,
            path: self.path.join(name),
        })
    }

    /// For messages only; all access goes through the handle.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens an untrusted file for reading: no symlink, non-blocking (a FIFO cannot hang us).
    pub fn open_untrusted(&self, name: &str) -> io::Result<File> {
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY;
        let fd = openat(self.fd.as_fd(), check_name(name)?, flags, Mode::empty())?;
        Ok(File::from(fd))
    }

    /// Creates a new file; fails if the name exists in any form (file, symlink, ...).
    pub fn create_new(&self, name: &str, mode: u32) -> io::Result<File> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(
            self.fd.as_fd(),
            check_name(name)?,
            flags,
            Mode::from_bits_truncate(mode),
        )?;
        Ok(File::from(fd))
    }

    /// `lstat` of a name in this directory.
    /// Through rustix, whose stat is the 64-bit call on 32-bit ARM too (glibc's plain fstatat
    /// there fails with EOVERFLOW on a file over 2 GiB or a 64-bit inode number).
    pub fn lstat(&self, name: &str) -> io::Result<Stat> {
        Ok(rustix::fs::statat(
            self.fd.as_fd(),
            check_name(name)?,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// Renames `from` in this directory to `to` in `target` (atomically replacing `to`).
    pub fn rename_to(&self, from: &str, target: &Dir, to: &str) -> io::Result<()> {
        Ok(renameat(
            self.fd.as_fd(),
            check_name(from)?,
            target.fd.as_fd(),
            check_name(to)?,
        )?)
    }

    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.rename_to(from, self, to)
    }

    /// Renames `from` over `to` only if `to` exists (`NotFound` otherwise), atomically: `to`
    /// is never re-created once someone removed it. Afterwards `from` holds what `to` held.
    pub fn exchange(&self, from: &str, to: &str) -> io::Result<()> {
        let (from, to) = (check_name(from)?, check_name(to)?);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            use nix::fcntl::{RenameFlags, renameat2};
            let fd = self.fd.as_fd();
            match renameat2(fd, from, fd, to, RenameFlags::RENAME_EXCHANGE) {
                // A filesystem without RENAME_EXCHANGE: fall through to the racy check.
                Err(nix::errno::Errno::EINVAL) => {}
                other => return Ok(other?),
            }
        }
        // Without renameat2 a removal between the check and the rename re-creates `to`.
        self.lstat(to)?;
        self.rename(from, to)
    }

    /// Removes a name (a file, symlink, FIFO, ...; not a directory).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        Ok(unlinkat(
            self.fd.as_fd(),
            check_name(name)?,
            UnlinkatFlags::NoRemoveDir,
        )?)
    }

    /// Makes renames and removals in this directory durable.
    pub fn sync(&self) -> io::Result<()> {
        Ok(nix::unistd::fsync(self.fd.as_fd())?)
    }

    /// Flushes all dirty data and metadata of the filesystem holding this directory.
    pub fn sync_filesystem(&self) -> io::Result<()> {
        Ok(nix::unistd::syncfs(self.fd.as_fd())?)
    }

    /// Names in the directory (`.` and `..` excluded), as raw bytes may not be UTF-8.
    pub fn names(&self) -> io::Result<Vec<std::ffi::OsString>> {
        std::fs::read_dir(&self.path)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_slashes_or_dots_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        for bad in ["", ".", "..", "../x", "a/b"] {
            assert_eq!(
                dir.open_untrusted(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{bad}"
            );
        }
    }

    #[test]
    fn exchange_replaces_an_existing_name_and_never_creates_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        std::fs::write(tmp.path().join("new"), "new").unwrap();
        std::fs::write(tmp.path().join("target"), "old").unwrap();
        dir.exchange("new", "target").unwrap();
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("target")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("new")).unwrap(),
            "old"
        );
        std::fs::remove_file(tmp.path().join("target")).unwrap();
        let err = dir.exchange("new", "target").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(!tmp.path().join("target").exists());
    }

    #[test]
    fn a_handle_keeps_pointing_at_the_directory_it_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let dir = Dir::open(&real).unwrap();
        // Someone swaps the directory for a symlink elsewhere after we opened it.
        std::fs::rename(&real, tmp.path().join("moved")).unwrap();
        std::fs::create_dir(tmp.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), &real).unwrap();
        dir.create_new("f", 0o644).unwrap();
        assert!(tmp.path().join("moved/f").exists());
        assert!(!tmp.path().join("elsewhere/f").exists());
    }
}
