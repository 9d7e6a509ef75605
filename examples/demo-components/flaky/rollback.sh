#!/bin/sh
# Demo rollback of the flaky component.
echo "PHASE:restoring"
echo "restored ${COMPONENT}"
