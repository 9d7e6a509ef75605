//! Directories planted under request names are moved into `<spool>/quarantine/`, which stays
//! bounded however many come (issue 15: 300 planted directories put 6.6 MB there, never
//! cleaned).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::support::{Service, Spool, files_outside_spool, wait_until};
use update_coordinator::quarantine::{MAX_BYTES, MAX_ENTRIES};

/// Disk used below `path` as the quarantine counts it: every entry at least 4 KiB, symlinks
/// not followed.
fn usage(path: &Path) -> u64 {
    let meta = fs::symlink_metadata(path).unwrap();
    let own = (meta.blocks() * 512).max(4096);
    if !meta.is_dir() {
        return own;
    }
    own + fs::read_dir(path)
        .unwrap()
        .map(|e| usage(&e.unwrap().path()))
        .sum::<u64>()
}

#[test]
fn three_hundred_planted_directories_leave_a_bounded_quarantine() {
    let spool = Spool::new();
    spool.create_dirs();
    let secret = spool.dir.path().join("secret");
    fs::write(&secret, "root:$6$hash:19000:0:99999:7:::\n").unwrap();
    let _service = Service::start(&spool);
    let before = files_outside_spool(&spool);

    for i in 0..300 {
        // Built as a dot-name, then renamed in whole, as a hostile writer would.
        let tmp = spool.requests().join(format!(".plant-{i}"));
        fs::create_dir_all(tmp.join("a/b/c")).unwrap();
        for f in 0..8 {
            fs::write(tmp.join(format!("a/file-{f}")), [b'x'; 2000]).unwrap();
        }
        std::os::unix::fs::symlink(&secret, tmp.join("a/b/c/secret")).unwrap();
        std::os::unix::fs::symlink(spool.dir.path(), tmp.join("a/up")).unwrap();
        fs::rename(&tmp, spool.requests().join(format!("plant-{i}.json"))).unwrap();
    }
    wait_until("every planted directory moved out of requests/", || {
        fs::read_dir(spool.requests()).unwrap().count() == 0
    });

    let quarantine = spool.root().join("quarantine");
    // The last entry is moved in, then the oldest pruned: look once that is done.
    wait_until("the quarantine pruned", || {
        fs::read_dir(&quarantine).unwrap().count() <= MAX_ENTRIES
    });
    let kept = fs::read_dir(&quarantine).unwrap().count();
    assert!(kept <= MAX_ENTRIES, "{kept} entries kept");
    assert!(kept > 0, "the newest are kept for an administrator");
    let used = usage(&quarantine);
    assert!(used <= MAX_BYTES + 4096, "{used} bytes kept");
    assert_eq!(
        fs::read_to_string(&secret).unwrap(),
        "root:$6$hash:19000:0:99999:7:::\n"
    );
    assert_eq!(
        files_outside_spool(&spool),
        before,
        "nothing outside the spool may change"
    );
    let id = spool.submit("core", "health", None);
    assert_eq!(spool.wait_final(&id)["success"], true);
}
