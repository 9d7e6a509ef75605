#!/bin/sh
# A replica, in busybox sh, of how dunebugger-remote's updater (branch 23-remote-update, commit
# 52d3692, app/dunebugger_updater.py) talks to the coordinator when it updates its own
# container: the behaviour, not its code. Runs inside the `remote` container of the compose
# stack that tests/system/compose.sh builds (section "self-update hand-off").
#
#   remote_client.sh start                      the container's main process: first the
#       hand-off check the new container makes at start-up, then idle until SIGTERM
#   remote_client.sh request COMPONENT VERSION  (docker exec) asks for an update, as the old
#       container does, and polls until it is killed or gets a final status
#
# The client's steps, as that updater takes them:
#   request: write requests/<uuid>.json in place (open, write, close; json.dump(indent=2)),
#     then, for component remote, the id into <spool>/.pending_remote_request (no newline);
#     poll status/<id>.json every second; while message == "in_progress" forward the phase and
#     keep polling; anything else is the answer: delete the file, report it.
#   start: if the pending file exists and names an id: wait up to HANDOFF_TRIES x 1 s
#     (the client's 10) for status/<id>.json to EXIST, read it ONCE without looking at
#     message, delete it and the pending file, report success and message. No status file by
#     then: leave the pending file (the client looks again at its next start).
#
# Reports go to /out (a host directory): <id>.old (the old container's log), <id>.read.json
# (what the new container read), <id>.report ("waited N", "success X", "message M").
spool=${SPOOL:-/var/dunebugger/updates}
pending=$spool/.pending_remote_request
out=${OUT_DIR:-/out}

# field NAME FILE: the raw value of a top-level "NAME": value line of a pretty-printed JSON
# status (serde_json's to_vec_pretty puts one key per line), without quotes or comma.
field() {
    sed -n "s/^  \"$1\": \(.*\)\$/\1/p" "$2" | sed 's/,$//; s/^"//; s/"$//' | head -n 1
}

start() {
    if [ -f "$pending" ]; then
        id=$(cat "$pending")
        if [ -z "$id" ]; then
            rm -f "$pending"
        else
            status=$spool/status/$id.json
            waited=0
            while [ "$waited" -lt "${HANDOFF_TRIES:-10}" ] && [ ! -e "$status" ]; do
                sleep 1
                waited=$((waited + 1))
            done
            if [ -e "$status" ]; then
                # Read once; whatever it says is the outcome.
                cp "$status" "$out/$id.read.json.tmp"
                rm -f "$status" "$pending"
                mv "$out/$id.read.json.tmp" "$out/$id.read.json"
                {
                    echo "waited $waited"
                    echo "success $(field success "$out/$id.read.json")"
                    echo "message $(field message "$out/$id.read.json")"
                } >"$out/$id.report.tmp"
                mv "$out/$id.report.tmp" "$out/$id.report"
            else
                echo "no status file for $id after $waited s; pending file kept" >>"$out/$id.nostatus"
            fi
        fi
    fi
    trap 'exit 0' TERM
    while :; do sleep 1; done
}

request() {
    id=$(cat /proc/sys/kernel/random/uuid)
    log=$out/$id.old
    # As json.dump(request, f, indent=2) writes it, in place.
    printf '{\n  "component": "%s",\n  "action": "update",\n  "version": "%s",\n  "request_id": "%s",\n  "timestamp": "%s"\n}' \
        "$1" "$2" "$id" "$(date +%Y-%m-%dT%H:%M:%S.000000)" >"$spool/requests/$id.json"
    if [ "$1" = remote ]; then
        printf '%s' "$id" >"$pending"
    fi
    echo "$id" >"$out/request.id"
    echo "requested $1 $2 as $id" >>"$log"
    status=$spool/status/$id.json
    last=""
    i=0
    while [ $i -lt 600 ]; do
        if [ -e "$status" ]; then
            cp "$status" "$out/$id.old-read.json"
            if [ "$(field message "$out/$id.old-read.json")" = in_progress ]; then
                phase=$(field phase "$out/$id.old-read.json")
                if [ "$phase" != "$last" ]; then
                    echo "phase $phase" >>"$log"
                    last=$phase
                fi
            else
                rm -f "$status"
                echo "answer success $(field success "$out/$id.old-read.json") message $(field message "$out/$id.old-read.json")" >>"$log"
                return 0
            fi
        fi
        sleep 1
        i=$((i + 1))
    done
    echo "timed out" >>"$log"
    return 1
}

case ${1:-} in
start) start ;;
request) request "$2" "$3" ;;
*) echo "usage: remote_client.sh start | request COMPONENT VERSION" >&2; exit 2 ;;
esac
