#!/bin/sh
# Demo update that fails half-way, to show a failed status with its last phase.
echo "PHASE:downloading"
sleep 1
echo "PHASE:installing"
echo "disk full while unpacking ${COMPONENT} $1" >&2
exit 3
