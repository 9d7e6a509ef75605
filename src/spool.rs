//! The request spool: the inotify watch, the directory scan, the safe read of one file, and
//! the spool's expected permissions.
//!
//! Events are hints, the directory listing is the truth: the watch is armed first, then the
//! directory is scanned, and it is scanned again whenever the watch overflows or errors. Only
//! "closed after writing" and "renamed into the directory" mean a writer is done. A create
//! is only acted on when the name cannot be a file still being written (a link, FIFO, socket
//! or directory, which never gets a close-write event: see [`may_be_in_progress`]); a plain
//! file is read once its writer closes or renames it.

use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::sys::stat::SFlag;
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use rustix::fs::Stat;

use crate::dir::Dir;
use crate::status::Code;

/// What the watch tells the daemon.
#[derive(Debug)]
pub(crate) enum SpoolEvent {
    /// A writer finished with this file name (it may be gone again by now).
    Ready(String),
    /// A name appeared. A legitimate writer's file is still being written (its close or
    /// rename follows), but links, FIFOs, sockets and directories never get a close-write
    /// event, so they are looked at now.
    Created(String),
    /// A `.json` name that is not UTF-8: it can never be a request; remove it.
    Junk(std::ffi::OsString),
    /// Events may have been lost: list the directory.
    Rescan(String),
}

/// Whether a directory entry is a request file at all. Writers using temp+rename write a
/// dot-file or a non-`.json` name first; those are never looked at.
pub(crate) fn is_request_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".json") && name.len() > ".json".len()
}

/// Arms an inotify watch on `dir`; `send` gets every relevant event. The watcher stops when
/// the returned value is dropped.
pub(crate) fn watch(
    dir: &Path,
    send: impl Fn(SpoolEvent) + Send + 'static,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let event = match res {
            Ok(event) => classify(&event),
            Err(e) => Some(SpoolEvent::Rescan(format!("watch error: {e}"))),
        };
        if let Some(event) = event {
            send(event);
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Arms an inotify watch on `dir` for one name: `send` is called whenever a writer finished
/// with it (closed after writing, or renamed into place), and after lost events.
pub(crate) fn watch_name(
    dir: &Path,
    wanted: &'static str,
    send: impl Fn() + Send + 'static,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let finished = match res {
            Ok(event) => {
                event.need_rescan()
                    || (matches!(
                        event.kind,
                        EventKind::Access(AccessKind::Close(AccessMode::Write))
                            | EventKind::Modify(ModifyKind::Name(RenameMode::To))
                            | EventKind::Modify(ModifyKind::Name(RenameMode::Both))
                    ) && event
                        .paths
                        .iter()
                        .any(|p| p.file_name().is_some_and(|n| n == wanted)))
            }
            Err(_) => true,
        };
        if finished {
            send();
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// What an inotify event means for the spool, if anything.
fn classify(event: &notify::Event) -> Option<SpoolEvent> {
    if event.need_rescan() {
        return Some(SpoolEvent::Rescan("inotify queue overflow".into()));
    }
    let (path, finished) = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => (event.paths.first()?, true),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => (event.paths.first()?, true),
        // A rename inside the directory: [from, to]. The `To` event came already.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => return None,
        EventKind::Create(_) => (event.paths.first()?, false),
        _ => return None,
    };
    let name = path.file_name()?;
    match name.to_str() {
        Some(name) if is_request_name(name) && finished => Some(SpoolEvent::Ready(name.to_owned())),
        Some(name) if is_request_name(name) => Some(SpoolEvent::Created(name.to_owned())),
        Some(_) => None,
        // Not UTF-8: never a request, but it must not pile up.
        None if name.as_bytes().ends_with(b".json") => Some(SpoolEvent::Junk(name.to_owned())),
        None => None,
    }
}

/// What a listing of `requests/` found.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Request file names in arrival order (modification time, then name).
    pub requests: Vec<String>,
    /// Names ending in `.json` that are not UTF-8: never valid, removed on sight.
    pub junk: Vec<std::ffi::OsString>,
}

pub(crate) fn scan(dir: &Dir) -> io::Result<Listing> {
    let mut listing = Listing::default();
    let mut found: Vec<(SystemTime, String)> = Vec::new();
    for name in dir.names()? {
        match name.to_str() {
            Some(text) if is_request_name(text) => {
                let mtime = dir
                    .lstat(text)
                    .map(|st| mtime(&st))
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((mtime, text.to_owned()));
            }
            Some(_) => {}
            None if !name.as_bytes().starts_with(b".") && name.as_bytes().ends_with(b".json") => {
                listing.junk.push(name)
            }
            None => {}
        }
    }
    found.sort();
    listing.requests = found.into_iter().map(|(_, name)| name).collect();
    Ok(listing)
}

/// The field types differ between x86_64 and 32-bit ARM, hence the casts.
#[allow(clippy::unnecessary_cast)]
fn mtime(st: &Stat) -> SystemTime {
    SystemTime::UNIX_EPOCH
        + Duration::new(
            st.st_mtime.max(0) as u64,
            st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
        )
}

/// Who may drop requests (Postfix's maildrop idea): when either list is non-empty, a file must
/// be owned by one of the uids or one of the gids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writers {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

impl Writers {
    fn allows(&self, uid: u32, gid: u32) -> bool {
        (self.uids.is_empty() && self.gids.is_empty())
            || self.uids.contains(&uid)
            || self.gids.contains(&gid)
    }
}

/// Why a request file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Already handled and removed (a second event for the same file); not an error.
    #[error("the file is gone")]
    Gone,
    #[error("it is {0}, not a regular file; only plain files are read")]
    NotRegular(&'static str),
    #[error("it has {0} hard links; a request file must have exactly one")]
    HardLinked(u64),
    #[error("it is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error(
        "it is owned by uid {uid} / gid {gid}, which are not allowed to submit requests (spool.allowed_uids, spool.allowed_gids)"
    )]
    WriterNotAllowed { uid: u32, gid: u32 },
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
}

impl ReadError {
    pub fn code(&self) -> Code {
        match self {
            Self::Gone | Self::Io(_) => Code::Unreadable,
            Self::NotRegular(_) | Self::HardLinked(_) => Code::NotARegularFile,
            Self::TooLarge { .. } => Code::TooLarge,
            Self::WriterNotAllowed { .. } => Code::WriterNotAllowed,
        }
    }
}

/// A request file's content and who wrote it when.
pub(crate) struct RequestFile {
    pub bytes: Vec<u8>,
    pub modified: SystemTime,
    pub owner_uid: u32,
}

fn is_regular(st: &Stat) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits()
}

/// Whether a just-created name can be a writer's file in progress (a plain, singly linked
/// file). Anything else never becomes a request and is dealt with at once.
pub(crate) fn may_be_in_progress(dir: &Dir, name: &str) -> bool {
    match dir.lstat(name) {
        Ok(st) => is_regular(&st) && st.st_nlink == 1,
        Err(_) => true, // gone again: nothing to do
    }
}

fn kind_of(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFCHR | SFlag::S_IFBLK => "a device",
        _ => "not a regular file",
    }
}

/// Reads `name` as an untrusted file: opened relative to the directory handle, no symlinks
/// followed, non-blocking, checked through the opened handle (regular file, one link, allowed
/// owner, size), and never more than `limit` bytes read.
pub(crate) fn read_request(
    dir: &Dir,
    name: &str,
    limit: u64,
    writers: &Writers,
) -> Result<RequestFile, ReadError> {
    // Look before opening: a device node must never even be opened by root.
    match dir.lstat(name) {
        Ok(st) if !is_regular(&st) => return Err(ReadError::NotRegular(kind_of(st.st_mode))),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::Gone),
        Err(e) => return Err(e.into()),
    }
    let file = match dir.open_untrusted(name) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::Gone),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(ReadError::NotRegular("a symbolic link"));
        }
        // Sockets (ENXIO) and other special files fail to open: say what they are.
        Err(e) => {
            return Err(match dir.lstat(name) {
                Ok(st) if !is_regular(&st) => ReadError::NotRegular(kind_of(st.st_mode)),
                _ => e.into(),
            });
        }
    };
    // rustix: the 64-bit fstat on 32-bit ARM too (see Dir::lstat).
    let st = rustix::fs::fstat(&file).map_err(io::Error::from)?;
    if !is_regular(&st) {
        return Err(ReadError::NotRegular(kind_of(st.st_mode)));
    }
    if st.st_nlink != 1 {
        return Err(ReadError::HardLinked(st.st_nlink as u64));
    }
    if !writers.allows(st.st_uid, st.st_gid) {
        return Err(ReadError::WriterNotAllowed {
            uid: st.st_uid,
            gid: st.st_gid,
        });
    }
    let size = st.st_size.max(0) as u64;
    if size > limit {
        return Err(ReadError::TooLarge { size, limit });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // Read through the same handle, capped: the file may grow after the fstat.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(RequestFile {
        bytes,
        modified: mtime(&st),
        owner_uid: st.st_uid,
    })
}

/// Removes a request file (answered or refused). Not flushed: a removal a power cut undoes is
/// answered again from the journal (docs/durability.md), and refusals are flushed in batches.
pub(crate) fn remove_request(dir: &Dir, name: &str) -> io::Result<()> {
    match dir.remove(name) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        // A directory named `x.json`: moved aside whole, within the quarantine's bounds.
        Err(e) if e.raw_os_error() == Some(nix::libc::EISDIR) => quarantine(dir, name),
        Err(e) => Err(e),
    }
}

/// Moves an entry that cannot be unlinked (a directory planted in `requests/` or `status/`)
/// into `<spool>/quarantine/`, within its bounds (see [`crate::quarantine`]).
pub(crate) fn quarantine(dir: &Dir, name: &str) -> io::Result<()> {
    crate::quarantine::admit(dir, name)
}

/// Removes a name found by the scan that can never be a request (not UTF-8).
pub(crate) fn remove_junk(dir: &Dir, name: &std::ffi::OsStr) -> io::Result<()> {
    let path = dir.path().join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => Ok(()), // left alone: never descend into a writer's tree
        Ok(_) => std::fs::remove_file(&path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deviations of the spool directories from the installed layout (modelled on Postfix's
/// maildrop): `requests/` root:GROUP 1730 (writers create, but cannot list or delete others'
/// files), `status/` root:GROUP 1730 (a client reads and deletes its own status by name,
/// nobody else's, and cannot list the others' ids).
pub(crate) fn permission_deviations(requests: &Path, status: &Path, group: &str) -> Vec<String> {
    let gid = match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => g.gid.as_raw(),
        Ok(None) => {
            return vec![format!(
                "the group {group} does not exist (spool.group); install.sh creates it"
            )];
        }
        Err(e) => return vec![format!("cannot look up the group {group}: {e}")],
    };
    let mut deviations = Vec::new();
    // The spool root holds the quarantine and is reached by path: nobody but root may change it.
    if let Some(root) = requests.parent() {
        match nix::sys::stat::stat(root) {
            Err(e) => deviations.push(format!("{}: {e}", root.display())),
            Ok(st) if st.st_uid != 0 || st.st_mode & 0o022 != 0 => deviations.push(format!(
                "{}: must be owned by root and not writable by group or others (uid {}, mode {:04o})",
                root.display(),
                st.st_uid,
                st.st_mode & 0o7777
            )),
            Ok(_) => {}
        }
    }
    for (dir, expected_mode) in [(requests, 0o1730), (status, 0o1730)] {
        match nix::sys::stat::stat(dir) {
            Err(e) => deviations.push(format!("{}: {e}", dir.display())),
            Ok(st) => {
                let mode = st.st_mode & 0o7777;
                if st.st_uid != 0 {
                    deviations.push(format!(
                        "{}: owned by uid {}, expected root",
                        dir.display(),
                        st.st_uid
                    ));
                }
                if st.st_gid != gid {
                    deviations.push(format!(
                        "{}: group is gid {}, expected {group} ({gid})",
                        dir.display(),
                        st.st_gid
                    ));
                }
                if mode != expected_mode {
                    deviations.push(format!(
                        "{}: mode {mode:04o}, expected {expected_mode:04o}",
                        dir.display()
                    ));
                }
            }
        }
    }
    deviations
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn only_finished_json_files_are_request_names() {
        assert!(is_request_name("abc.json"));
        for name in [".abc.json", "abc.json.tmp", "abc.tmp", ".json", "abc"] {
            assert!(!is_request_name(name), "{name}");
        }
    }

    #[test]
    fn reading_refuses_what_is_not_a_plain_file_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::write(d.join("secret"), "root only").unwrap();
        std::os::unix::fs::symlink(d.join("secret"), d.join("link.json")).unwrap();
        fs::hard_link(d.join("secret"), d.join("hard.json")).unwrap();
        nix::unistd::mkfifo(&d.join("fifo.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        fs::create_dir(d.join("dir.json")).unwrap();
        fs::write(d.join("big.json"), vec![b' '; 100]).unwrap();
        let dir = Dir::open(d).unwrap();
        let any = Writers::default();

        let read = |name: &str, limit: u64| read_request(&dir, name, limit, &any);
        assert!(matches!(
            read("link.json", 64),
            Err(ReadError::NotRegular("a symbolic link"))
        ));
        assert!(matches!(
            read("hard.json", 64),
            Err(ReadError::HardLinked(2))
        ));
        assert!(matches!(
            read("fifo.json", 64),
            Err(ReadError::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            read("dir.json", 64),
            Err(ReadError::NotRegular("a directory"))
        ));
        assert!(matches!(
            read("big.json", 64),
            Err(ReadError::TooLarge { size: 100, .. })
        ));
        assert!(matches!(read("none.json", 64), Err(ReadError::Gone)));
        assert_eq!(read("big.json", 100).unwrap().bytes.len(), 100);
    }

    #[test]
    fn only_allowed_writers_are_read_when_a_list_is_configured() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("r.json"), "{}").unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let others = Writers {
            uids: vec![me + 1],
            gids: vec![],
        };
        assert!(matches!(
            read_request(&dir, "r.json", 64, &others),
            Err(ReadError::WriterNotAllowed { .. })
        ));
        let mine = Writers {
            uids: vec![me],
            gids: vec![],
        };
        assert_eq!(
            read_request(&dir, "r.json", 64, &mine).unwrap().owner_uid,
            me
        );
    }

    #[test]
    fn a_directory_named_like_a_request_is_moved_into_the_quarantine() {
        let tmp = tempfile::tempdir().unwrap();
        let requests = tmp.path().join("requests");
        fs::create_dir_all(requests.join("evil.json/inner")).unwrap();
        let dir = Dir::open(&requests).unwrap();
        remove_request(&dir, "evil.json").unwrap();
        assert!(!requests.join("evil.json").exists());
        let quarantined: Vec<_> = fs::read_dir(tmp.path().join("quarantine"))
            .unwrap()
            .collect();
        assert_eq!(quarantined.len(), 1);
    }

    #[test]
    fn scan_lists_request_files_oldest_first_and_finds_non_utf8_junk() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for (name, secs) in [
            ("b.json", 20),
            ("a.json", 30),
            ("c.json", 10),
            (".t.json", 0),
            ("x.tmp", 0),
        ] {
            fs::write(d.join(name), "{}").unwrap();
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs);
            fs::File::options()
                .write(true)
                .open(d.join(name))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        let junk = std::ffi::OsStr::from_bytes(b"\xff\xfe.json");
        fs::write(d.join(junk), "{}").unwrap();
        let listing = scan(&Dir::open(d).unwrap()).unwrap();
        assert_eq!(listing.requests, ["c.json", "b.json", "a.json"]);
        assert_eq!(listing.junk, [junk.to_owned()]);
    }
}

#[cfg(test)]
mod watch_tests {
    use super::*;
    use std::sync::mpsc;

    fn events_for(action: impl FnOnce(&Path)) -> Vec<String> {
        let tmp = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let _watcher = watch(tmp.path(), move |e| tx.send(format!("{e:?}")).unwrap()).unwrap();
        action(tmp.path());
        let mut seen = Vec::new();
        while let Ok(e) = rx.recv_timeout(Duration::from_millis(300)) {
            seen.push(e);
        }
        seen
    }

    #[test]
    fn a_symlink_or_hard_link_appearing_is_reported_as_created() {
        let seen =
            events_for(|d| std::os::unix::fs::symlink("/etc/hostname", d.join("l.json")).unwrap());
        assert_eq!(seen, [r#"Created("l.json")"#]);
    }

    #[test]
    fn an_in_place_write_is_ready_once_closed() {
        let seen = events_for(|d| std::fs::write(d.join("r.json"), "{}").unwrap());
        assert_eq!(seen, [r#"Created("r.json")"#, r#"Ready("r.json")"#]);
    }

    #[test]
    fn a_rename_into_place_is_ready_and_temp_names_are_ignored() {
        let seen = events_for(|d| {
            std::fs::write(d.join(".r.tmp"), "{}").unwrap();
            std::fs::rename(d.join(".r.tmp"), d.join("r.json")).unwrap();
        });
        assert_eq!(seen, [r#"Ready("r.json")"#]);
    }
}
