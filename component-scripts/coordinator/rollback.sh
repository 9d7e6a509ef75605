#!/bin/sh
# Rolls the update coordinator back to the binary update.sh replaced, and restarts it.
set -eu
INSTALL_PATH=/usr/local/bin/update-coordinator
SERVICE=dunebugger-update-coordinator
# shellcheck source=/dev/null
[ -f ./coordinator.conf ] && . ./coordinator.conf

echo "PHASE:restoring"
if [ ! -x "$INSTALL_PATH.previous" ]; then
    echo "nothing to roll back to: $INSTALL_PATH.previous does not exist" >&2
    exit 2
fi
cp -p "$INSTALL_PATH.previous" "$INSTALL_PATH.new"
mv -f "$INSTALL_PATH.new" "$INSTALL_PATH"
echo "restored $("$INSTALL_PATH" --version)"

echo "PHASE:restarting"
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl restart "$SERVICE"
elif [ -n "${COORDINATOR_PID:-}" ]; then
    kill -TERM "$COORDINATOR_PID"
    while kill -0 "$COORDINATOR_PID" 2>/dev/null; do sleep 0.1; done
fi
