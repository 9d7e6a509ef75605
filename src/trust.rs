//! Whether a script may be run as root: OpenSSH's StrictModes rule applied to the script and
//! every directory above it. A script anyone but a trusted owner can change is someone else's
//! code running as root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::status::Code;

/// Why a script is not run. `Display` names the path, the reason and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error("{0} does not exist; install the component's scripts")]
    Missing(PathBuf),
    #[error("{script} resolves to {target}, outside the component directory {dir}")]
    EscapesDir {
        script: PathBuf,
        target: PathBuf,
        dir: PathBuf,
    },
    #[error("{0} is not a regular file")]
    NotRegular(PathBuf),
    #[error("{0} is not executable; chmod 755 it")]
    NotExecutable(PathBuf),
    #[error(
        "{path} is owned by uid {uid}; it must be owned by root (or execution.script_owners): chown root {path}"
    )]
    WrongOwner { path: PathBuf, uid: u32 },
    #[error("{path} is writable by group or others (mode {mode:04o}); chmod go-w {path}")]
    Writable { path: PathBuf, mode: u32 },
    #[error("cannot inspect {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
}

impl Untrusted {
    pub fn code(&self) -> Code {
        match self {
            Self::Missing(_) => Code::ScriptMissing,
            _ => Code::ScriptUntrusted,
        }
    }
}

/// Checks `script` (inside `component_dir`) and returns the resolved path to execute.
///
/// Rules: the script resolves (symlinks allowed) to a regular, executable file inside the
/// component directory; it and every directory from it up to `/` are owned by one of `owners`
/// and not writable by group or others. A directory that is group/world-writable but sticky
/// (like `/tmp`) is accepted, because nobody else can rename or replace our entry in it.
pub(crate) fn check_script(
    component_dir: &Path,
    script: &Path,
    owners: &[u32],
) -> Result<PathBuf, Untrusted> {
    let unreadable = |path: &Path, e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Untrusted::Missing(path.to_owned())
        } else {
            Untrusted::Unreadable {
                path: path.to_owned(),
                reason: e.to_string(),
            }
        }
    };
    let dir = component_dir
        .canonicalize()
        .map_err(|e| unreadable(component_dir, e))?;
    let target = script.canonicalize().map_err(|e| unreadable(script, e))?;
    if !target.starts_with(&dir) {
        return Err(Untrusted::EscapesDir {
            script: script.to_owned(),
            target,
            dir,
        });
    }
    let meta = std::fs::metadata(&target).map_err(|e| unreadable(&target, e))?;
    if !meta.is_file() {
        return Err(Untrusted::NotRegular(target));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(Untrusted::NotExecutable(target));
    }
    check_owner_and_mode(&target, &meta, owners, false)?;
    for ancestor in target.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor).map_err(|e| unreadable(ancestor, e))?;
        check_owner_and_mode(ancestor, &meta, owners, true)?;
    }
    Ok(target)
}

fn check_owner_and_mode(
    path: &Path,
    meta: &std::fs::Metadata,
    owners: &[u32],
    sticky_ok: bool,
) -> Result<(), Untrusted> {
    if !owners.contains(&meta.uid()) {
        return Err(Untrusted::WrongOwner {
            path: path.to_owned(),
            uid: meta.uid(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(sticky_ok && sticky) {
        return Err(Untrusted::Writable {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// The uids whose scripts are trusted: root, the user the service runs as, and any configured.
pub(crate) fn trusted_owners(configured: &[u32]) -> Vec<u32> {
    let mut owners = vec![0, nix::unistd::geteuid().as_raw()];
    owners.extend_from_slice(configured);
    owners.sort_unstable();
    owners.dedup();
    owners
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    struct Fixture {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        owners: Vec<u32>,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("remote");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.join("update.sh");
        fs::write(&script, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let owners = trusted_owners(&[]);
        Fixture {
            _tmp: tmp,
            dir,
            owners,
        }
    }

    #[test]
    fn a_well_kept_script_is_trusted() {
        let f = fixture();
        let resolved = check_script(&f.dir, &f.dir.join("update.sh"), &f.owners).unwrap();
        assert!(resolved.ends_with("remote/update.sh"));
    }

    #[test]
    fn a_group_writable_script_or_directory_is_refused_with_the_fix() {
        let f = fixture();
        let script = f.dir.join("update.sh");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o775)).unwrap();
        let err = check_script(&f.dir, &script, &f.owners).unwrap_err();
        assert!(
            matches!(err, Untrusted::Writable { mode: 0o775, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod go-w"));
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&f.dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_script(&f.dir, &script, &f.owners).unwrap_err();
        assert!(
            matches!(&err, Untrusted::Writable { path, .. } if path.ends_with("remote")),
            "{err}"
        );
        assert_eq!(err.code(), Code::ScriptUntrusted);
    }

    #[test]
    fn a_symlink_out_of_the_component_directory_is_refused() {
        let f = fixture();
        let outside = f.dir.parent().unwrap().join("elsewhere.sh");
        fs::write(&outside, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&outside, f.dir.join("rollback.sh")).unwrap();
        let err = check_script(&f.dir, &f.dir.join("rollback.sh"), &f.owners).unwrap_err();
        assert!(matches!(err, Untrusted::EscapesDir { .. }), "{err}");
    }

    #[test]
    fn a_foreign_owner_a_missing_file_and_a_non_executable_are_named() {
        let f = fixture();
        let script = f.dir.join("update.sh");
        let err = check_script(&f.dir, &script, &[u32::MAX]).unwrap_err();
        assert!(matches!(err, Untrusted::WrongOwner { .. }), "{err}");
        let err = check_script(&f.dir, &f.dir.join("health-check.sh"), &f.owners).unwrap_err();
        assert_eq!(err.code(), Code::ScriptMissing);
        fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            check_script(&f.dir, &script, &f.owners),
            Err(Untrusted::NotExecutable(_))
        ));
    }
}
