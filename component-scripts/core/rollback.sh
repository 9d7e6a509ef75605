#!/bin/bash
# rollback.sh: puts back the install the last successful update.sh replaced
# (INSTALL_DIR.previous) and restarts the service; the install it replaces is kept as
# INSTALL_DIR.rolledback. There is one previous install: a second rollback exits 7. Run for
# the same REQUEST_ID as an update.sh that failed (the coordinator's health-gated update does
# that), it exits 0 and changes nothing when that update.sh changed nothing or already put the
# previous install back.
#
# Phases: checking, stopping, installing, starting, verifying; on failure or SIGTERM:
# restoring (the install from before the rollback, started again if it was active).
#
# Arguments: none.
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
#   0  rolled back, and the service is healthy
#   2  bad setting; 3 a required tool is missing; nothing changed
#   4  the rollback failed; the install from before the rollback is in place again
#   5  the rollback failed and restoring failed too: the state is unknown (see stderr)
#   6  another update or rollback holds LOCK_FILE; nothing changed
#   7  nothing to roll back to (no INSTALL_DIR.previous)
set -euo pipefail

LIB_DIR=$(dirname -- "$(readlink -f -- "$0")") && { [ -f "$LIB_DIR/common.sh" ] || LIB_DIR+=/../lib; }
[ -z "$(find -L "$LIB_DIR/common.sh" -maxdepth 0 \( ! -user "$(stat -L -c %u -- "$0")" -o -perm /022 \) -print 2>&1)" ] || { echo "$0: $LIB_DIR/common.sh is missing, not owned by this script's owner, or writable by group or others" >&2; exit 2; }
. "$LIB_DIR/common.sh"
run_component service.sh service_rollback "$@"
