#!/bin/sh
# Self-update of the update coordinator: update.sh VERSION installs the build staged for
# VERSION and restarts the service. The request that triggered it is answered by the new
# coordinator: this script runs under its own monitor, which outlives the restart
# (KillMode=process), and the new process re-attaches to it.
#
# Settings (optional) in ./coordinator.conf, sourced as shell:
#   INSTALL_PATH  the binary the service runs      (default /usr/local/bin/update-coordinator)
#   RELEASES_DIR  staged builds, RELEASES_DIR/VERSION/update-coordinator (default ./releases)
#   SERVICE       the systemd unit                 (default dunebugger-update-coordinator)
set -eu

VERSION="${1:?usage: update.sh VERSION}"
INSTALL_PATH=/usr/local/bin/update-coordinator
RELEASES_DIR="$(pwd)/releases"
SERVICE=dunebugger-update-coordinator
# shellcheck source=/dev/null
[ -f ./coordinator.conf ] && . ./coordinator.conf

NEW="$RELEASES_DIR/$VERSION/update-coordinator"

echo "PHASE:verifying"
if [ ! -x "$NEW" ]; then
    echo "no staged build for $VERSION: expected an executable at $NEW" >&2
    exit 2
fi
REPORTED="$("$NEW" --version 2>&1 || true)"
if [ "$REPORTED" != "update-coordinator $VERSION" ]; then
    echo "the staged build at $NEW reports '$REPORTED', expected 'update-coordinator $VERSION'" >&2
    exit 3
fi
"$NEW" check >/dev/null 2>&1 || echo "note: '$NEW check' reports problems with the current configuration" >&2

echo "PHASE:installing"
if [ -e "$INSTALL_PATH" ]; then
    cp -p "$INSTALL_PATH" "$INSTALL_PATH.previous"
fi
cp "$NEW" "$INSTALL_PATH.new"
chmod 755 "$INSTALL_PATH.new"
mv -f "$INSTALL_PATH.new" "$INSTALL_PATH"   # atomic: the old binary keeps running until restart
echo "installed $VERSION at $INSTALL_PATH (previous kept at $INSTALL_PATH.previous)"

echo "PHASE:restarting"
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    # Blocks until the new coordinator is ready; only the old main process is stopped.
    systemctl restart "$SERVICE"
elif [ -n "${COORDINATOR_PID:-}" ]; then
    # Without systemd, whoever supervises the coordinator restarts it after it exits.
    kill -TERM "$COORDINATOR_PID"
    while kill -0 "$COORDINATOR_PID" 2>/dev/null; do sleep 0.1; done
else
    echo "cannot restart the coordinator: no systemd and no COORDINATOR_PID" >&2
    exit 4
fi
echo "coordinator restarted on $VERSION"
