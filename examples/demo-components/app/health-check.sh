#!/bin/sh
# Demo health check: always healthy.
echo "${COMPONENT} is running"
