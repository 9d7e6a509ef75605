#!/bin/sh
# submit.sh [-s SPOOL] [-t TIMEOUT] COMPONENT ACTION [VERSION]: asks update-coordinator to
# update, roll back or health-check COMPONENT and waits for the answer, printing each phase.
# A POSIX shell client for containers without Python (busybox sh and dash are enough; it
# needs only cat, mv, rm, sleep, date, awk, od or /proc for the id).
#
#   submit.sh scheduler update 1.2.3
#   submit.sh -s /var/dunebugger/updates core health
#
# The request is written as requests/.ID.tmp and renamed to requests/ID.json; then
# status/ID.json (the answer) and status/ID.progress.json (phases until then) are polled once a
# second until the answer is there; it is printed and deleted (docs/protocol.md). Requests are not signed: use dunebugger_updates.py when the
# coordinator requires signatures.
#
# Options: -s SPOOL   spool root (default $DUNEBUGGER_UPDATES_SPOOL or /var/dunebugger/updates)
#          -t TIMEOUT seconds to wait for the final status (default 1800)
# Output:  "request: ID", "phase: NAME" for each phase seen, then "success: true|false",
#          "message: ...", "code: ..." (failures), and the script's stderr on failure.
# Exit codes: 0 success; 1 the request failed or was refused; 2 bad arguments or the request
#          could not be written; 3 no final status within TIMEOUT (the status file is kept).
set -eu

spool=${DUNEBUGGER_UPDATES_SPOOL:-/var/dunebugger/updates}
timeout=1800

usage() {
    echo "usage: submit.sh [-s SPOOL] [-t TIMEOUT] COMPONENT update|rollback|health [VERSION]" >&2
    exit 2
}

while getopts s:t: opt; do
    case $opt in
    s) spool=$OPTARG ;;
    t) timeout=$OPTARG ;;
    *) usage ;;
    esac
done
shift $((OPTIND - 1))
if [ "$#" -lt 2 ] || [ "$#" -gt 3 ]; then
    usage
fi
component=$1
action=$2
version=${3:-}

# The coordinator checks all of this too; checking here keeps the JSON below free of
# characters that would need escaping.
case $component in
"" | *[!a-z0-9_-]*) echo "submit.sh: invalid component '$component'" >&2; exit 2 ;;
esac
case $action in
update)
    case $version in
    [0-9]*) ;;
    *) echo "submit.sh: update needs a version such as 1.2.3 (no 'v')" >&2; exit 2 ;;
    esac
    case $version in
    *[!A-Za-z0-9.+_-]*) echo "submit.sh: invalid version '$version'" >&2; exit 2 ;;
    esac
    ;;
rollback | health)
    [ -z "$version" ] || { echo "submit.sh: $action takes no version" >&2; exit 2; }
    ;;
*) usage ;;
esac
case $timeout in
"" | *[!0-9]*) echo "submit.sh: -t needs whole seconds" >&2; exit 2 ;;
esac

if [ -r /proc/sys/kernel/random/uuid ]; then
    id=$(cat /proc/sys/kernel/random/uuid)
else
    id=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
fi
requests=$spool/requests
status=$spool/status/$id.json
progress=$spool/status/$id.progress.json
if [ ! -d "$requests" ]; then
    echo "submit.sh: $requests does not exist: is the spool bind-mounted into the container?" >&2
    exit 2
fi

tmp=$requests/.$id.tmp
trap 'rm -f "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
version_line=""
if [ -n "$version" ]; then
    version_line=$(printf '\n  "version": "%s",' "$version")
fi
(
    umask 077
    printf '{\n  "component": "%s",\n  "action": "%s",%s\n  "request_id": "%s",\n  "timestamp": "%s"\n}\n' \
        "$component" "$action" "$version_line" "$id" "$(date -u +%Y-%m-%dT%H:%M:%S)" >"$tmp"
) || { echo "submit.sh: cannot write in $requests (is this user in the dunebugger-updates group?)" >&2; exit 2; }
if [ -e "$requests/$id.json" ]; then
    echo "submit.sh: $requests/$id.json already exists" >&2
    exit 2
fi
mv -f "$tmp" "$requests/$id.json"
echo "request: $id"

# json FIELD: the top-level FIELD of the JSON document on stdin; strings are unescaped
# (\uXXXX outside printable ASCII is left as it is). Prints nothing when FIELD is absent.
json() {
    awk -v want="$1" '
    function hexval(h,   k, x) {
        x = 0
        for (k = 1; k <= 4; k++) x = x * 16 + index("0123456789abcdef", tolower(substr(h, k, 1))) - 1
        return x
    }
    function unescape(s,   p, n, k, out, piece, e, h) {
        n = split(s, p, /\\/)
        out = p[1]
        for (k = 2; k <= n; k++) {
            piece = p[k]
            if (piece == "") { out = out "\\"; k++; if (k <= n) out = out p[k]; continue }
            e = substr(piece, 1, 1); piece = substr(piece, 2)
            if (e == "n") e = "\n"; else if (e == "t") e = "\t"; else if (e == "r") e = "\r"
            else if (e == "u") {
                h = substr(piece, 1, 4); piece = substr(piece, 5)
                e = (h ~ /^00[2-7][0-9A-Fa-f]$/) ? sprintf("%c", hexval(h)) : "\\u" h
            }
            out = out e piece
        }
        return out
    }
    { doc = doc $0 "\n" }
    END {
        n = length(doc); i = 1; depth = 0; have_key = 0
        while (i <= n) {
            c = substr(doc, i, 1)
            if (c == "\"") {
                rest = substr(doc, i + 1)
                if (!match(rest, /^([^"\\]|\\.)*"/)) exit
                s = substr(rest, 1, RLENGTH - 1); i += RLENGTH + 1
                if (depth == 1 && !have_key) {
                    j = i; while (substr(doc, j, 1) ~ /[ \t\r\n]/) j++
                    if (substr(doc, j, 1) == ":") { key = unescape(s); have_key = 1; i = j + 1 }
                } else if (depth == 1) {
                    if (key == want) { printf "%s", unescape(s); exit }
                    have_key = 0
                }
                continue
            }
            if (c == "{" || c == "[") { if (depth == 1) have_key = 0; depth++ }
            else if (c == "}" || c == "]") depth--
            else if (depth == 1 && have_key && match(substr(doc, i), /^[-+.0-9A-Za-z]+/)) {
                if (key == want) { printf "%s", substr(doc, i, RLENGTH); exit }
                have_key = 0; i += RLENGTH; continue
            }
            i++
        }
    }'
}

waited=0
last_phase=""
while :; do
    # The answer is status/ID.json; until then progress is in status/ID.progress.json beside
    # it (or in status/ID.json itself where the coordinator has progress_in_status).
    doc=""
    for file in "$status" "$progress"; do
        if [ -f "$file" ] && doc=$(cat "$file" 2>/dev/null) && [ -n "$doc" ]; then
            break
        fi
        doc=""
    done
    if [ -n "$doc" ]; then
        message=$(printf '%s' "$doc" | json message)
        if [ -n "$message" ] && [ "$message" != in_progress ]; then
            success=$(printf '%s' "$doc" | json success)
            code=$(printf '%s' "$doc" | json code)
            echo "success: $success"
            echo "message: $message"
            [ -z "$code" ] || [ "$code" = null ] || echo "code: $code"
            if [ "$success" != true ]; then
                error=$(printf '%s' "$doc" | json error)
                [ -z "$error" ] || printf 'error:\n%s\n' "$error"
            fi
            rm -f "$status" 2>/dev/null || true
            [ "$success" = true ] && exit 0
            exit 1
        fi
        phase=$(printf '%s' "$doc" | json phase)
        if [ -n "$phase" ] && [ "$phase" != "$last_phase" ]; then
            echo "phase: $phase"
            last_phase=$phase
        fi
    fi
    if [ "$waited" -ge "$timeout" ]; then
        echo "submit.sh: no final status for $id within ${timeout}s; it stays in $status" >&2
        exit 3
    fi
    sleep 1
    waited=$((waited + 1))
done
