#!/bin/bash
# health-check.sh: the service (UNIT) is active, and HEALTH_CMD succeeds when it is set.
# Changes nothing; takes no lock.
#
# Phases: checking.
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
# Exit codes:
#   0  healthy
#   1  unhealthy: not active (inactive, failed, activating), or HEALTH_CMD fails
#   2  bad setting; 3 a required tool is missing
set -euo pipefail

# The shared code: next to this script when installed, in ../lib in the source tree. It must
# be as trustworthy as this script: same owner, not writable by group or others.
SCRIPT_DIR=$(dirname -- "$(readlink -f -- "$0")")
LIB_DIR=$SCRIPT_DIR
[ -f "$LIB_DIR/common.sh" ] || LIB_DIR=$SCRIPT_DIR/../lib
if [ -n "$(find -L "$LIB_DIR/common.sh" "$LIB_DIR/service.sh" -maxdepth 0 \( ! -user "$(stat -L -c %u -- "$0")" -o -perm /022 \) -print 2>&1)" ]; then
    echo "$0: $LIB_DIR/common.sh or $LIB_DIR/service.sh is missing, not owned by this script's owner, or writable by group or others" >&2
    exit 2
fi
# shellcheck source=../lib/common.sh
. "$LIB_DIR/common.sh"
# shellcheck source=../lib/service.sh
. "$LIB_DIR/service.sh"
load_settings "$SCRIPT_DIR"

if [ "$#" -ne 0 ]; then
    die "$EX_CONFIG" "usage: health-check.sh (no arguments)"
fi
service_health
