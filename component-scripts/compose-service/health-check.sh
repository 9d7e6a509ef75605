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
# Trust: lib/common.sh (next to this script once installed, in ../lib in the source tree) is
#   checked below as the coordinator checks this script; it checks what it loads in turn.
# Exit codes:
#   0  healthy (running; healthcheck "healthy" where there is one)
#   1  unhealthy: no container, not running, restarting, healthcheck "starting" or "unhealthy"
#   2  bad setting; 3 a required tool is missing
set -euo pipefail

LIB_DIR=$(dirname -- "$(readlink -f -- "$0")") && { [ -f "$LIB_DIR/common.sh" ] || LIB_DIR+=/../lib; }
[ -z "$(find -L "$LIB_DIR/common.sh" -maxdepth 0 \( ! -user "$(stat -L -c %u -- "$0")" -o -perm /022 \) -print 2>&1)" ] || { echo "$0: $LIB_DIR/common.sh is missing, not owned by this script's owner, or writable by group or others" >&2; exit 2; }
. "$LIB_DIR/common.sh"
run_component compose.sh compose_health "$@"
