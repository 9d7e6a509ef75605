//! The request spool: the inotify watch, the directory scan, and the safe read of one file.
//!
//! Events are hints, the directory listing is the truth: the watch is armed first, then the
//! directory is scanned, and it is scanned again whenever the watch overflows or errors. Only
//! "closed after writing" and "renamed into the directory" mean a writer is done; a create
//! never triggers anything.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};

/// What the watch tells the daemon.
#[derive(Debug)]
pub enum SpoolEvent {
    /// A writer finished with this file name (it may be gone again by now).
    Ready(String),
    /// Events may have been lost: list the directory.
    Rescan(String),
}

/// Whether a directory entry is a request file at all. Writers using temp+rename write a
/// dot-file or a non-`.json` name first; those are never looked at.
pub fn is_request_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".json") && name.len() > ".json".len()
}

/// Arms an inotify watch on `dir`; `send` gets every relevant event. The watcher stops when
/// the returned value is dropped.
pub fn watch(
    dir: &Path,
    send: impl Fn(SpoolEvent) + Send + 'static,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(event) if event.need_rescan() => {
                send(SpoolEvent::Rescan("inotify queue overflow".into()))
            }
            Ok(event) => {
                if let Some(name) = finished_file(&event)
                    .and_then(|path| path.file_name())
                    .and_then(|name| name.to_str())
                    .filter(|name| is_request_name(name))
                {
                    send(SpoolEvent::Ready(name.to_owned()));
                }
            }
            Err(e) => send(SpoolEvent::Rescan(format!("watch error: {e}"))),
        })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// The path a writer is done with, for close-after-write and rename-into events.
fn finished_file(event: &notify::Event) -> Option<&PathBuf> {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => event.paths.first(),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => event.paths.first(),
        // A rename inside the directory: [from, to].
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => event.paths.get(1),
        _ => None,
    }
}

/// Lists request files in arrival order (modification time, then name).
pub fn scan(dir: &Path) -> io::Result<Vec<String>> {
    let mut found: Vec<(SystemTime, String)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !is_request_name(&name) {
            continue;
        }
        let mtime = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        found.push((mtime, name));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, name)| name).collect())
}

/// Why a request file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Already handled and removed (a second event for the same file); not an error.
    #[error("the file is gone")]
    Gone,
    #[error("it is not a regular file ({0}); only plain files are read")]
    NotRegular(&'static str),
    #[error("it has {0} hard links; a request file must have exactly one")]
    HardLinked(u64),
    #[error("it is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
}

impl ReadError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Gone | Self::Io(_) => "unreadable",
            Self::NotRegular(_) | Self::HardLinked(_) => "not_a_regular_file",
            Self::TooLarge { .. } => "too_large",
        }
    }
}

/// A request file's content and when it was last written.
pub struct RequestFile {
    pub bytes: Vec<u8>,
    pub modified: SystemTime,
}

/// Reads `dir/name` as an untrusted file: no symlinks followed, non-blocking (a FIFO cannot
/// hang us), checked through the opened handle to be a regular file with one link, and never
/// more than `limit` bytes read.
pub fn read_request(dir: &Path, name: &str, limit: u64) -> Result<RequestFile, ReadError> {
    let path = dir.join(name);
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::Gone),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(ReadError::NotRegular("a symbolic link"));
        }
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    let ft = meta.file_type();
    if !ft.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(ReadError::NotRegular(kind));
    }
    if meta.nlink() != 1 {
        return Err(ReadError::HardLinked(meta.nlink()));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Read through the same handle, capped: the file may grow after the fstat.
    (&mut file).take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(RequestFile {
        bytes,
        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    })
}

/// Removes a request file once it has been answered, durably.
pub fn remove_request(dir: &Path, name: &str) -> io::Result<()> {
    match fs::remove_file(dir.join(name)) {
        Ok(()) => crate::status::sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finished_json_files_are_request_names() {
        assert!(is_request_name("abc.json"));
        for name in [".abc.json", "abc.json.tmp", "abc.tmp", ".json", "abc"] {
            assert!(!is_request_name(name), "{name}");
        }
    }

    #[test]
    fn reading_refuses_what_is_not_a_plain_file_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("secret"), "root only").unwrap();
        std::os::unix::fs::symlink(d.join("secret"), d.join("link.json")).unwrap();
        fs::hard_link(d.join("secret"), d.join("hard.json")).unwrap();
        nix::unistd::mkfifo(&d.join("fifo.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        fs::create_dir(d.join("dir.json")).unwrap();
        fs::write(d.join("big.json"), vec![b' '; 100]).unwrap();

        assert!(matches!(
            read_request(d, "link.json", 64),
            Err(ReadError::NotRegular(_))
        ));
        assert!(matches!(
            read_request(d, "hard.json", 64),
            Err(ReadError::HardLinked(2))
        ));
        assert!(matches!(
            read_request(d, "fifo.json", 64),
            Err(ReadError::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            read_request(d, "dir.json", 64),
            Err(ReadError::NotRegular("a directory"))
        ));
        assert!(matches!(
            read_request(d, "big.json", 64),
            Err(ReadError::TooLarge { size: 100, .. })
        ));
        assert!(matches!(
            read_request(d, "none.json", 64),
            Err(ReadError::Gone)
        ));
        assert_eq!(read_request(d, "big.json", 100).unwrap().bytes.len(), 100);
    }

    #[test]
    fn scan_lists_request_files_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (name, secs) in [
            ("b.json", 20),
            ("a.json", 30),
            ("c.json", 10),
            (".t.json", 0),
            ("x.tmp", 0),
        ] {
            fs::write(d.join(name), "{}").unwrap();
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + secs);
            fs::File::options()
                .write(true)
                .open(d.join(name))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        assert_eq!(scan(d).unwrap(), ["c.json", "b.json", "a.json"]);
    }
}
