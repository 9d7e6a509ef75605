#!/bin/sh
# Demo rollback.
set -eu
echo "PHASE:restoring"
sleep 1
echo "${COMPONENT} restored to the previous version"
