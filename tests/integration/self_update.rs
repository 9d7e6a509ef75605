//! The coordinator updates itself through a request: component-scripts/coordinator/update.sh
//! installs a staged build over the running binary and restarts the coordinator, and the
//! request that triggered it is answered by the new process.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::{Service, Spool, bin, path_str, wait_until};

#[test]
fn the_coordinator_updates_itself_and_the_new_process_answers_the_request() {
    let mut spool = Spool::new();
    let version = env!("CARGO_PKG_VERSION");

    // The running build, and a second build staged for the update: the same program, with a
    // marker appended so the installed file can be told apart from the old one.
    let bin_dir = spool.dir.path().join("bin");
    fs::create_dir_all(&bin_dir).unwrap();
    let installed = bin_dir.join("update-coordinator");
    fs::copy(bin(), &installed).unwrap();
    let component = spool.dir.path().join("components/coordinator");
    let staged_dir = component.join(format!("releases/{version}"));
    fs::create_dir_all(&staged_dir).unwrap();
    let mut new_build = fs::read(bin()).unwrap();
    new_build.extend_from_slice(b"\nnew-build-marker\n");
    fs::write(staged_dir.join("update-coordinator"), &new_build).unwrap();
    fs::set_permissions(
        staged_dir.join("update-coordinator"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();

    // The shipped scripts, unchanged, with the install path pointed at the test's binary.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("component-scripts/coordinator");
    for script in ["update.sh", "rollback.sh", "health-check.sh"] {
        fs::copy(shipped.join(script), component.join(script)).unwrap();
        fs::set_permissions(component.join(script), fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::write(
        component.join("coordinator.conf"),
        format!(
            "INSTALL_PATH={}\nSERVICE=not-a-systemd-unit\n",
            path_str(&installed)
        ),
    )
    .unwrap();
    spool.set("components.coordinator", "dir = \"components/coordinator\"");

    let mut old = Service::start_binary(&spool, &installed, &[]);
    let id = spool.submit("coordinator", "update", Some(version));

    // The script stops the old coordinator (no systemd here: we are its supervisor).
    assert!(
        old.wait_exit(),
        "the old coordinator exits cleanly when told to"
    );
    assert_eq!(
        fs::read(&installed).unwrap(),
        new_build,
        "the staged build is installed"
    );
    assert!(
        bin_dir.join("update-coordinator.previous").exists(),
        "the old build is kept for rollback"
    );
    let new = Service::start_binary(&spool, &installed, &[]);

    let status = spool.wait_final(&id);
    assert_eq!(status["success"], true, "{status}");
    let output = status["output"].as_str().unwrap();
    assert!(
        output.contains(&format!("coordinator restarted on {version}")),
        "{output}"
    );
    wait_until("the new process logged the answer", || {
        new.log().contains("request finished")
    });
    assert!(
        !old.log().contains("request finished"),
        "the old process did not answer it"
    );

    // And back: rollback restores the previous build.
    let rollback = spool.submit("coordinator", "rollback", None);
    let mut new = new;
    assert!(new.wait_exit());
    let _third = Service::start_binary(&spool, &installed, &[]);
    assert_eq!(spool.wait_final(&rollback)["success"], true);
    assert_eq!(
        fs::read(&installed).unwrap(),
        fs::read(bin()).unwrap(),
        "the old build is back"
    );
}
