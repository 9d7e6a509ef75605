#!/bin/bash
# update.sh VERSION: moves this component's Docker Compose service to the image tag
# TAG_PREFIX+VERSION. Run by update-coordinator (docs/protocol.md, "The script contract") as
# root, in this directory; also fine to run by hand: sudo ./update.sh 1.2.3
#
# Phases: checking, backing-up (a copy of the compose file into BACKUP_DIR), configuring (the
# service's `image:` line and nothing else, checked with `docker compose config`), downloading
# (docker compose pull SERVICE), restarting (docker compose up -d --no-deps SERVICE), verifying
# (healthy within HEALTH_TIMEOUT: healthcheck status if the image defines one, else running
# for STABLE_SECONDS); on failure or SIGTERM: restoring (the backup, and the old container).
#
# Arguments: VERSION, such as 1.2.3 or 1.0.0-beta.8 (no "v"; no "+", which tags cannot hold).
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
#   0  updated, and the new container is healthy
#   2  bad argument or setting, or the compose file cannot be edited safely; nothing changed
#   3  a required tool is missing; nothing changed
#   4  the update failed; the compose file was restored and the old image runs again
#   5  the update failed and restoring failed too: the state is unknown (see stderr)
#   6  another update or rollback holds LOCK_FILE; nothing changed
set -euo pipefail

LIB_DIR=$(dirname -- "$(readlink -f -- "$0")") && { [ -f "$LIB_DIR/common.sh" ] || LIB_DIR+=/../lib; }
[ -z "$(find -L "$LIB_DIR/common.sh" -maxdepth 0 \( ! -user "$(stat -L -c %u -- "$0")" -o -perm /022 \) -print 2>&1)" ] || { echo "$0: $LIB_DIR/common.sh is missing, not owned by this script's owner, or writable by group or others" >&2; exit 2; }
. "$LIB_DIR/common.sh"
run_component compose.sh compose_update "$@"
