#!/bin/sh
# The coordinator is healthy if its binary runs and (under systemd) its unit is active.
set -eu
INSTALL_PATH=/usr/local/bin/update-coordinator
SERVICE=dunebugger-update-coordinator
# shellcheck source=/dev/null
[ -f ./coordinator.conf ] && . ./coordinator.conf

"$INSTALL_PATH" --version
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl is-active --quiet "$SERVICE"
    echo "$SERVICE is active"
fi
