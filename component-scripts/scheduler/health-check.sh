#!/bin/bash
# health-check.sh: this component's Docker Compose service has containers, all running, and
# healthy where the image defines a healthcheck. Changes nothing; takes no lock.
#
# Phases: checking.
#
# Arguments: none.
# Settings: ./component.conf next to this script, sourced as bash (component-scripts/README.md
#   explains each): COMPOSE_FILE (default /opt/dunebugger/docker-compose.yml), SERVICE (default:
#   this directory's name), IMAGE, TAG_PREFIX, COMPOSE_PROJECT, HEALTH_TIMEOUT (120 s),
#   HEALTH_INTERVAL (2 s), STABLE_SECONDS (10 s), BACKUP_DIR (/var/backups/dunebugger/SERVICE),
#   KEEP_BACKUPS (5), LOCK_FILE, LOCK_TIMEOUT (120 s), DOCKER (docker), COMPOSE_CLI (auto),
#   DOCKER_COMPOSE (docker-compose), PULL (always), YQ (yq).
# Needs: bash, docker with the Compose v2 plugin or the standalone docker-compose (v1 1.29 on
#   Debian 12), awk, flock, coreutils; yq is optional.
# Exit codes:
#   0  healthy (running; healthcheck "healthy" where there is one)
#   1  unhealthy: no container, not running, restarting, healthcheck "starting" or "unhealthy"
#   2  bad setting; 3 a required tool is missing
set -euo pipefail

# The shared code: next to this script when installed, in ../lib in the source tree. It must
# be as trustworthy as this script: same owner, not writable by group or others.
SCRIPT_DIR=$(dirname -- "$(readlink -f -- "$0")")
LIB_DIR=$SCRIPT_DIR
[ -f "$LIB_DIR/common.sh" ] || LIB_DIR=$SCRIPT_DIR/../lib
if [ -n "$(find -L "$LIB_DIR/common.sh" "$LIB_DIR/compose.sh" -maxdepth 0 \( ! -user "$(stat -L -c %u -- "$0")" -o -perm /022 \) -print 2>&1)" ]; then
    echo "$0: $LIB_DIR/common.sh or $LIB_DIR/compose.sh is missing, not owned by this script's owner, or writable by group or others" >&2
    exit 2
fi
# shellcheck source=../lib/common.sh
. "$LIB_DIR/common.sh"
# shellcheck source=../lib/compose.sh
. "$LIB_DIR/compose.sh"
load_settings "$SCRIPT_DIR"

if [ "$#" -ne 0 ]; then
    die "$EX_CONFIG" "usage: health-check.sh (no arguments)"
fi
compose_health
