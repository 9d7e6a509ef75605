#!/bin/bash
# rollback.sh: puts this component's Docker Compose service back on the image it ran before
# the last successful update.sh, as recorded in the newest compose file backup in BACKUP_DIR.
# Only this service's `image:` line is restored: other services in the shared compose file
# keep what they run now. Running it twice is harmless (same backup, same image). Run for
# the same REQUEST_ID as an update.sh that failed (the coordinator's health-gated update does
# that), it exits 0 and changes nothing when that update.sh changed nothing or already put the
# previous image back; after one that succeeded, it undoes exactly that update.
#
# Phases: checking, backing-up (a safety copy of the compose file), configuring, restarting
# (docker compose up -d --no-deps SERVICE), verifying; on failure or SIGTERM: restoring (the
# compose file as it was, and the container it ran).
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
#   0  rolled back, and the container is healthy
#   2  bad setting, or the compose file or backup cannot be read safely; nothing changed
#   3  a required tool is missing; nothing changed
#   4  the rollback failed; the compose file was restored and the image from before runs again
#   5  the rollback failed and restoring failed too: the state is unknown (see stderr)
#   6  another update or rollback holds LOCK_FILE; nothing changed
#   7  nothing to roll back to (no backup yet)
set -euo pipefail

LIB_DIR=$(dirname -- "$(readlink -f -- "$0")") && { [ -f "$LIB_DIR/common.sh" ] || LIB_DIR+=/../lib; }
[ -z "$(find -L "$LIB_DIR/common.sh" -maxdepth 0 \( ! -user "$(stat -L -c %u -- "$0")" -o -perm /022 \) -print 2>&1)" ] || { echo "$0: $LIB_DIR/common.sh is missing, not owned by this script's owner, or writable by group or others" >&2; exit 2; }
. "$LIB_DIR/common.sh"
run_component compose.sh compose_rollback "$@"
