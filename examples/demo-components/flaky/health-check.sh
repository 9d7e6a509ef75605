#!/bin/sh
# Demo health check that fails, to show a failed status.
echo "checking ${COMPONENT}..."
echo "container ${COMPONENT} is restarting in a loop" >&2
exit 1
