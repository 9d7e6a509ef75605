#!/bin/bash
# update.sh VERSION: installs release VERSION of this component, a systemd service (UNIT) run
# from INSTALL_DIR, from a release tarball. Run by update-coordinator (docs/protocol.md, "The
# script contract") as root, in this directory; also fine by hand: sudo ./update.sh 1.2.3
#
# Phases: checking, downloading (RELEASES_DIR/TARBALL if it is there, else RELEASE_URL with
# curl or wget; the sha256 is checked when a checksum file is given), unpacking (into a staging
# directory next to INSTALL_DIR, before anything stops), stopping (systemctl stop UNIT),
# backing-up (INSTALL_DIR becomes INSTALL_DIR.previous), installing (the new tree goes in
# place; PRESERVE paths are copied over from the old one; POST_INSTALL runs), starting,
# verifying (active for STABLE_SECONDS, or HEALTH_CMD succeeds, within HEALTH_TIMEOUT); on
# failure or SIGTERM: restoring (the old tree back, UNIT started again if it was active).
#
# Arguments: VERSION, such as 1.2.3 or 1.0.0-beta.8 (no "v").
# Settings: ./component.conf next to this script, sourced as bash (component-scripts/README.md
#   explains each): UNIT (default dunebugger-core), INSTALL_DIR (/opt/dunebugger/core-app),
#   TARBALL (dunebugger-core-{VERSION}.tar.gz), RELEASES_DIR (./releases), RELEASE_URL,
#   CHECKSUM_URL, REQUIRE_CHECKSUM (no), STRIP_COMPONENTS (auto), ARCH, PRESERVE, POST_INSTALL,
#   HEALTH_CMD, HEALTH_TIMEOUT (60 s), HEALTH_INTERVAL (2 s), STABLE_SECONDS (5 s),
#   DOWNLOAD_TIMEOUT (300 s), LOCK_FILE, LOCK_TIMEOUT (120 s), SYSTEMCTL, CURL, WGET.
# Needs: bash, systemd, tar (and gzip/xz for compressed releases), flock, coreutils; curl or
#   wget only to download (not for releases in RELEASES_DIR); sha256sum to verify checksums.
# Trust: lib/common.sh (next to this script once installed, in ../lib in the source tree) is
#   checked below as the coordinator checks this script; it checks what it loads in turn.
# Exit codes:
#   0  installed, and the service is healthy
#   2  bad argument or setting; nothing changed
#   3  a required tool is missing; nothing changed
#   4  the update failed (no release, bad checksum, service did not start, ...); the previous
#      install is in place and the service runs as before (or nothing was changed yet)
#   5  the update failed and restoring failed too: the state is unknown (see stderr)
#   6  another update or rollback holds LOCK_FILE; nothing changed
set -euo pipefail

LIB_DIR=$(dirname -- "$(readlink -f -- "$0")") && { [ -f "$LIB_DIR/common.sh" ] || LIB_DIR+=/../lib; }
[ -z "$(find -L "$LIB_DIR/common.sh" -maxdepth 0 \( ! -user "$(stat -L -c %u -- "$0")" -o -perm /022 \) -print 2>&1)" ] || { echo "$0: $LIB_DIR/common.sh is missing, not owned by this script's owner, or writable by group or others" >&2; exit 2; }
. "$LIB_DIR/common.sh"
run_component service.sh service_update "$@"
