#!/bin/sh
# The DuneBugger container client's protocol in busybox sh, run inside a container as a
# non-root user: write the request in place (open, write, close), poll every second, print
# each phase (from status/<id>.progress.json, beside the answer), then print the final status
# (status/<id>.json) and delete it. A status file holding an in-progress record is reported
# ("in-progress status file"): by default the coordinator never writes one there.
#   client.sh COMPONENT ACTION [VERSION]
spool=/var/dunebugger/updates
id=$(cat /proc/sys/kernel/random/uuid)
version=""
[ -n "${3:-}" ] && version="\"version\": \"$3\","
printf '{\n    "component": "%s",\n    "action": "%s",\n    %s\n    "request_id": "%s",\n    "timestamp": "%s"\n}\n' \
    "$1" "$2" "$version" "$id" "$(date +%Y-%m-%dT%H:%M:%S.000000)" >"$spool/requests/$id.json"
echo "id $id"
last=""
i=0
while [ $i -lt 600 ]; do
    if [ -f "$spool/status/$id.json" ]; then
        status=$(cat "$spool/status/$id.json")
        if echo "$status" | grep -q '"message": "in_progress"'; then
            echo "in-progress status file"
        else
            echo "$status"
            rm "$spool/status/$id.json" && echo "deleted"
            exit 0
        fi
    elif [ -f "$spool/status/$id.progress.json" ]; then
        phase=$(sed -n 's/.*"phase": "\([^"]*\)".*/\1/p' "$spool/status/$id.progress.json")
        [ -n "$phase" ] && [ "$phase" != "$last" ] && echo "phase $phase" && last=$phase
    fi
    sleep 1
    i=$((i + 1))
done
echo "timed out" >&2
exit 1
