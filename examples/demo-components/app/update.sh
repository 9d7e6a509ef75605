#!/bin/sh
# Demo update: announces phases the way the real component scripts do, then "installs".
set -eu
VERSION="$1"
echo "PHASE:downloading"
echo "pulling image for ${COMPONENT} ${VERSION} (request ${REQUEST_ID})"
sleep 1
echo "PHASE:installing"
sleep 1
echo "PHASE:restarting"
sleep 1
echo "${VERSION}" > "${TMPDIR:-/tmp}/demo-${COMPONENT}.version"
echo "${COMPONENT} is now at ${VERSION}"
