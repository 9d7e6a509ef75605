#!/usr/bin/env bash
# The baseline for benches/coordinator.rs: the update loop a user would write by hand instead of
# running update-coordinator. It serves the same spool layout and status format:
#
#   inotify-loop.sh SPOOL_ROOT COMPONENTS_DIR
#
# watches SPOOL_ROOT/requests with `inotifywait -m -e close_write,moved_to`, parses each
# `<id>.json` request with jq, runs COMPONENTS_DIR/<component>/{update.sh VERSION, rollback.sh,
# health-check.sh} with a timeout, writes SPOOL_ROOT/status/<id>.json through a temp file and
# `mv`, and deletes the request. Requests already present at start are handled first (the
# watch is armed before the listing, so nothing slips through in between). One request at a
# time; no fsync. Prints "ready" on stderr once the start-up listing is done.
#
# Needs bash >= 4.4, inotifywait (inotify-tools), jq >= 1.6, coreutils.
set -u

root=${1:?usage: inotify-loop.sh SPOOL_ROOT COMPONENTS_DIR}
components=${2:?usage: inotify-loop.sh SPOOL_ROOT COMPONENTS_DIR}
requests=$root/requests
status=$root/status
tail_bytes=${TAIL_BYTES:-65536}
kill_grace=${KILL_GRACE:-10}

mkdir -p "$requests" "$status" || exit 1
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT

# write_status ID COMPONENT ACTION VERSION SUCCESS CODE MESSAGE EXIT_CODE DURATION_MS
# Output and error tails are read from $work/out and $work/err.
write_status() {
    local id=$1 timestamp tmp
    printf -v timestamp '%(%Y-%m-%dT%H:%M:%SZ)T' -1
    tmp=$status/.$id.json.tmp
    if jq -n \
        --arg request_id "$id" --arg component "$2" --arg action "$3" --arg version "$4" \
        --argjson success "$5" --arg code "$6" --arg message "$7" \
        --argjson exit_code "$8" --argjson duration_ms "$9" --arg timestamp "$timestamp" \
        --rawfile output "$work/out" --rawfile error "$work/err" \
        '{request_id: $request_id, component: $component, action: $action}
         + (if $version == "" then {} else {version: $version} end)
         + {success: $success, message: $message}
         + (if $code == "" then {} else {code: $code} end)
         + {phase: (if $success then "done" else "failed" end), output: $output, error: $error}
         + (if $exit_code < 0 then {} else {exit_code: $exit_code} end)
         + {duration_ms: $duration_ms, timestamp: $timestamp}' >"$tmp"; then
        mv -f -- "$tmp" "$status/$id.json"
    else
        rm -f -- "$tmp"
        return 1
    fi
}

# refuse ID NAME CODE MESSAGE: answer a request that is not run, then delete it.
refuse() {
    : >"$work/out"
    : >"$work/err"
    write_status "$1" "" "" "" false "$3" "$4" -1 0 && rm -f -- "$requests/$2"
}

handle() {
    local name=$1 file=$requests/$1
    case $name in
        .* | *..* | *[!A-Za-z0-9._-]*) return 0 ;;
        ?*.json) ;;
        *) return 0 ;;
    esac
    [ -f "$file" ] || return 0 # answered already (an event and the start-up listing both saw it)

    local fields id component action version
    if ! fields=$(jq -er '[.request_id // "", .component // "", .action // "", .version // ""]
                          | map(tostring) | @tsv' "$file" 2>/dev/null); then
        refuse "${name%.json}" "$name" invalid_json "the request is not valid JSON"
        return 0
    fi
    IFS=$'\t' read -r id component action version <<<"$fields"
    if ! [[ $id =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ ]] || [[ $id == *..* ]]; then
        refuse "${name%.json}" "$name" invalid_request_id "bad request_id"
        return 0
    fi
    if ! [[ $component =~ ^[a-z0-9_-]{1,64}$ ]] || ! [ -d "$components/$component" ]; then
        refuse "$id" "$name" unknown_component "unknown component '$component'"
        return 0
    fi
    local script limit args=()
    case $action in
        update)
            if ! [[ $version =~ ^[0-9][A-Za-z0-9.+_-]{0,63}$ ]]; then
                refuse "$id" "$name" invalid_version "update needs a valid version"
                return 0
            fi
            script=update.sh limit=600 args=("$version") ;;
        rollback) script=rollback.sh limit=600 version="" ;;
        health) script=health-check.sh limit=60 version="" ;;
        *)
            refuse "$id" "$name" unknown_action "unknown action '$action'"
            return 0 ;;
    esac

    local started=${EPOCHREALTIME/./} rc
    (cd "$components/$component" &&
        REQUEST_ID=$id COMPONENT=$component ACTION=$action VERSION=$version \
            exec timeout -k "$kill_grace" "$limit" "$PWD/$script" "${args[@]}") \
        </dev/null 2>"$work/err.all" | tail -c "$tail_bytes" >"$work/out"
    rc=${PIPESTATUS[0]}
    tail -c "$tail_bytes" "$work/err.all" >"$work/err"
    local duration_ms=$(((${EPOCHREALTIME/./} - started) / 1000))

    local success=false code="" message
    if [ "$rc" -eq 0 ]; then
        success=true message="$action succeeded"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        code=timeout message="$script timed out after ${limit}s"
    else
        code=script_failed message="$script exited with code $rc"
    fi
    write_status "$id" "$component" "$action" "$version" "$success" "$code" "$message" \
        "$rc" "$duration_ms" && rm -f -- "$file"
}

# inotifywait reports "Watches established." on stderr once the watch is armed; with 2>&1 that
# line reaches the loop before any event, which is when the existing files are listed.
inotifywait -m -e close_write,moved_to --format %f "$requests" 2>&1 |
    while IFS= read -r name; do
        case $name in
            'Setting up watches.') ;;
            'Watches established.')
                for f in "$requests"/*.json; do
                    [ -e "$f" ] && handle "${f##*/}"
                done
                echo ready >&2 ;;
            *) handle "$name" ;;
        esac
    done
