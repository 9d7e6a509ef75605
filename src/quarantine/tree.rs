//! Walking a tree planted in the spool through directory handles only: measuring it when it
//! comes into the quarantine, and removing it with a bounded amount of work per call. No
//! symlink is followed, no other filesystem entered, and a tree deeper than [`MAX_DEPTH`] is
//! cut into pieces (a handle per level, never `..`).

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::libc;
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};
// Directory listing and stat through rustix, not nix: nix calls glibc's readdir and fstatat,
// which on 32-bit ARM (armhf) are the old 32-bit-offset versions and fail with EOVERFLOW on
// 64-bit directory offsets and inode numbers (met in CI under qemu-user, where ext4 hands out
// 64-bit hash offsets once a directory grows past one block); rustix makes the 64-bit calls.
use rustix::fs::{AtFlags, Dir as DirStream, FileType, Stat, fstat, statat};

use super::{Entry, MAX_BYTES, MAX_DEPTH, MIN_CHARGE, WORK_PER_CALL};
use crate::dir::Dir;

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

fn is_dot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

/// Opens a subdirectory without following a symlink; one on another filesystem (a mount
/// point) is refused, never entered.
fn open_dir(parent: BorrowedFd<'_>, name: &CStr, dev: u64) -> io::Result<OwnedFd> {
    let fd = openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    if fstat(fd.as_fd())?.st_dev as u64 != dev {
        return Err(io::Error::other(format!(
            "{name:?} is on another filesystem (a mount point); left alone"
        )));
    }
    Ok(fd)
}

/// The names in an open directory, through a second handle on it (`.`), so the first one
/// stays free for `*at` calls while they are read.
pub(super) fn entries_of(dir: BorrowedFd<'_>) -> io::Result<DirStream> {
    Ok(DirStream::read_from(dir)?)
}

/// Larger than [`MAX_BYTES`], too deep, on another filesystem or unreadable.
struct TooBig;

/// The disk an entry uses (each file or directory counted at least [`MIN_CHARGE`]), or more
/// than [`MAX_BYTES`] if it is too big to keep (see [`TooBig`]). Stops as soon as it knows.
pub(super) fn measure(parent: BorrowedFd<'_>, name: &str, dev: u64) -> u64 {
    let mut total = 0;
    match measure_tree(parent, name, dev, &mut total) {
        Ok(()) => total,
        Err(TooBig) => MAX_BYTES + 1,
    }
}

fn measure_tree(
    parent: BorrowedFd<'_>,
    name: &str,
    dev: u64,
    total: &mut u64,
) -> Result<(), TooBig> {
    let name = CString::new(name).map_err(|_| TooBig)?;
    let st = statat(parent, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(|_| TooBig)?;
    charge(&st, total)?;
    if !is_dir(&st) {
        return Ok(());
    }
    // One level per frame: the open directory and its subdirectories still to visit.
    let mut stack = vec![read_level(parent, &name, dev, total)?];
    loop {
        let depth = stack.len();
        let Some((dir, subdirs)) = stack.last_mut() else {
            break;
        };
        match subdirs.pop() {
            None => {
                stack.pop();
            }
            Some(_) if depth == MAX_DEPTH => return Err(TooBig),
            Some(child) => {
                let level = read_level(dir.as_fd(), &child, dev, total)?;
                stack.push(level);
            }
        }
    }
    Ok(())
}

/// Opens one directory, charges everything in it and names its subdirectories.
fn read_level(
    parent: BorrowedFd<'_>,
    name: &CStr,
    dev: u64,
    total: &mut u64,
) -> Result<(OwnedFd, Vec<CString>), TooBig> {
    let dir = open_dir(parent, name, dev).map_err(|_| TooBig)?;
    let mut subdirs = Vec::new();
    for entry in entries_of(dir.as_fd()).map_err(|_| TooBig)? {
        let entry = entry.map_err(|_| TooBig)?;
        let child = entry.file_name();
        if is_dot(child) {
            continue;
        }
        // Gone meanwhile: nothing to count.
        let Ok(st) = statat(dir.as_fd(), child, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        charge(&st, total)?;
        if is_dir(&st) {
            subdirs.push(child.to_owned());
        }
    }
    Ok((dir, subdirs))
}

/// `st_blocks` is signed on x86_64 and unsigned on 32-bit ARM.
#[allow(clippy::unnecessary_cast, clippy::unnecessary_min_or_max)]
fn allocated_blocks(st: &Stat) -> u64 {
    st.st_blocks.max(0) as u64
}

fn charge(st: &Stat, total: &mut u64) -> Result<(), TooBig> {
    *total += (allocated_blocks(st) * 512).max(MIN_CHARGE);
    if *total > MAX_BYTES {
        return Err(TooBig);
    }
    Ok(())
}

/// Removes the entry `name` of the quarantine and everything below it, spending at most
/// `work` removals; parts cut off below [`MAX_DEPTH`] are removed after it.
pub(super) fn remove_tree(quarantine: &Dir, name: &OsStr, work: &mut usize) -> io::Result<()> {
    let dev = fstat(quarantine.as_fd())?.st_dev as u64;
    let name =
        CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut pending = vec![name];
    while let Some(name) = pending.pop() {
        remove_one(quarantine, &name, dev, work, &mut pending)?;
    }
    Ok(())
}

fn spend(work: &mut usize) -> io::Result<()> {
    *work = work.saturating_sub(1);
    if *work == 0 {
        return Err(io::Error::other(format!(
            "stopped after {WORK_PER_CALL} removals; the rest is removed next time"
        )));
    }
    Ok(())
}

/// Empties and removes one top-level entry: depth first, one handle per level, every entry
/// that is not a directory unlinked as it is met. The directory is read again after each
/// subdirectory is gone, so nothing but the handles is held per level.
fn remove_one(
    quarantine: &Dir,
    name: &CStr,
    dev: u64,
    work: &mut usize,
    pending: &mut Vec<CString>,
) -> io::Result<()> {
    let top = quarantine.as_fd();
    match statat(top, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
        Ok(st) if !is_dir(&st) => {
            ignore_gone(unlinkat(top, name, UnlinkatFlags::NoRemoveDir))?;
            return spend(work);
        }
        Ok(_) => {}
    }
    let mut stack: Vec<(OwnedFd, CString)> = vec![(open_dir(top, name, dev)?, name.to_owned())];
    while let Some((dir, _)) = stack.last() {
        let mut subdir = None;
        for entry in entries_of(dir.as_fd())? {
            let entry = entry?;
            let child = entry.file_name();
            if is_dot(child) {
                continue;
            }
            let child_is_dir = match entry.file_type() {
                FileType::Unknown => statat(dir.as_fd(), child, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| is_dir(&st)),
                kind => kind == FileType::Directory,
            };
            if child_is_dir {
                subdir = Some(child.to_owned());
                break;
            }
            ignore_gone(unlinkat(dir.as_fd(), child, UnlinkatFlags::NoRemoveDir))?;
            spend(work)?;
        }
        match subdir {
            Some(child) if stack.len() == MAX_DEPTH => {
                // Cut here: the part below becomes an entry of its own (dated 0, so it is
                // never kept), removed after this one.
                let cut = CString::new(Entry::name(0, 0, "deeper-part"))
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                renameat(dir.as_fd(), child.as_c_str(), top, cut.as_c_str())?;
                pending.push(cut);
            }
            Some(child) => match open_dir(dir.as_fd(), &child, dev) {
                Ok(opened) => stack.push((opened, child)),
                // Swapped for a link or file since it was listed: unlink that instead.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                    ignore_gone(unlinkat(
                        dir.as_fd(),
                        child.as_c_str(),
                        UnlinkatFlags::NoRemoveDir,
                    ))?;
                }
                Err(e) => return Err(e),
            },
            None => {
                let Some((_, empty)) = stack.pop() else { break };
                let parent = stack.last().map_or(top, |(fd, _)| fd.as_fd());
                match unlinkat(parent, empty.as_c_str(), UnlinkatFlags::RemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    // Something was added through a handle held inside: empty it again.
                    Err(Errno::ENOTEMPTY) => {
                        let reopened = open_dir(parent, &empty, dev)?;
                        stack.push((reopened, empty));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        spend(work)?;
    }
    Ok(())
}

fn ignore_gone(result: nix::Result<()>) -> io::Result<()> {
    match result {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
