# shellcheck shell=bash
# Shared helpers for the DuneBugger component scripts (update.sh, rollback.sh, health-check.sh),
# and their loader. Sourced, never run. Installed next to the scripts that use it (see
# ../README.md); in the source tree the scripts find it in ../lib.
#
# Provides: the exit codes, error and progress helpers, tool checks, loading the component's
# library and settings, the version check, an exclusive lock, and a bounded "wait until
# healthy" loop.
#
# Trusting the code a script sources. The scripts run as root. The coordinator checks the
# script it runs (a trusted owner, not writable by group or others, inside its component
# directory, and so is every directory above it: docs/security.md, "Script trust"), but not
# the files that script sources; a sourced file that another user can write would run that
# user's code as root. So every file is checked before it is sourced, by code that was itself
# checked first, each with the same rule (owned by the script's owner, not writable by group
# or others; for a symlink, its target):
#   the coordinator checks the script;
#   the script checks this file (the few lines at its top: the one check that cannot live in
#   the file it checks), then sources it;
#   this file checks the component's library (run_component) and component.conf
#   (load_settings) with require_trusted before sourcing them.
# The directories were checked with the script, so nobody else can swap a file between its
# check and its sourcing. The rule lives here once; each script keeps only the check of this
# file.

# Exit codes shared by every component script (component-scripts/README.md lists them).
# shellcheck disable=SC2034  # used by the scripts that source this file
readonly EX_OK=0 EX_UNHEALTHY=1 EX_CONFIG=2 EX_TOOL=3 EX_RESTORED=4 EX_RESTORE_FAILED=5 \
    EX_BUSY=6 EX_NOTHING=7

SCRIPT_NAME=$(basename -- "$0")
# The component directory: the script's own, where its settings are.
SCRIPT_DIR=$(dirname -- "$(readlink -f -- "$0")")

# phase NAME: reports progress to the coordinator (a `PHASE:<name>` line on stdout).
phase() {
    printf 'PHASE:%s\n' "$1"
}

# info MESSAGE...: a line for the status's `output`.
info() {
    printf '%s\n' "$*"
}

# warn MESSAGE...: a line for the status's `error`.
warn() {
    printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

# die CODE MESSAGE...: prints the message on stderr and exits with CODE.
die() {
    local code=$1
    shift
    warn "$*"
    exit "$code"
}

# expect_args COUNT USAGE ARG...: exits EX_CONFIG, saying USAGE, unless there are COUNT ARGs.
expect_args() {
    local count=$1 usage=$2
    shift 2
    if [ "$#" -ne "$count" ]; then
        die "$EX_CONFIG" "usage: $usage"
    fi
}

# require_tool COMMAND HINT: exits EX_TOOL with HINT (what to install) when COMMAND is missing.
# COMMAND may be a name looked up on PATH or a path.
require_tool() {
    if ! command -v -- "$1" >/dev/null 2>&1; then
        die "$EX_TOOL" "required tool '$1' not found (PATH=$PATH): $2"
    fi
}

# require_trusted FILE: refuses a file the script would source or trust when someone other
# than the script's owner could have written it (the coordinator checks only the script
# itself, not the files it sources).
require_trusted() {
    local file=$1 owner mode
    owner=$(stat -L -c %u -- "$0")
    if ! mode=$(stat -L -c '%u %a' -- "$file" 2>/dev/null); then
        die "$EX_CONFIG" "cannot read $file"
    fi
    if [ "${mode%% *}" != "$owner" ] || (((8#${mode##* } & 8#022) != 0)); then
        die "$EX_CONFIG" "refusing $file: it must be owned by uid $owner (like $0) and not writable by group or others (is: uid ${mode%% *}, mode ${mode##* }); fix with: chown $owner $file && chmod go-w $file"
    fi
}

# run_component LIBRARY FUNCTION ARG...: sources LIB_DIR/LIBRARY (compose.sh or service.sh,
# found where the script found this file) and the component's settings, then runs FUNCTION
# ARG... (such as compose_update VERSION): all a script does after loading this file.
run_component() {
    require_trusted "$LIB_DIR/$1"
    # shellcheck source=/dev/null  # compose.sh or service.sh, each checked on its own
    . "$LIB_DIR/$1"
    load_settings "$SCRIPT_DIR"
    "${@:2}"
}

# load_settings DIR: sources DIR/component.conf when it exists. Call after setting defaults,
# so the file overrides them.
load_settings() {
    local conf=$1/component.conf
    if [ -e "$conf" ]; then
        require_trusted "$conf"
        # shellcheck source=/dev/null
        . "$conf"
    fi
}

# require_setting NAME: exits EX_CONFIG when the variable NAME is empty.
require_setting() {
    if [ -z "${!1:-}" ]; then
        die "$EX_CONFIG" "setting $1 is empty: set it in component.conf next to $SCRIPT_NAME"
    fi
}

# require_number NAME: exits EX_CONFIG unless the variable NAME is a non-negative number
# (integer or decimal, as `sleep` takes it).
require_number() {
    if ! [[ ${!1:-} =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
        die "$EX_CONFIG" "setting $1='${!1:-}' is not a number of seconds"
    fi
}

# check_version VERSION: the coordinator's version rule (starts with a digit, then
# A-Z a-z 0-9 . + _ -, at most 64 characters), checked again for manual runs.
check_version() {
    if ! [[ $1 =~ ^[0-9][A-Za-z0-9.+_-]{0,63}$ ]]; then
        die "$EX_CONFIG" "invalid version '$1': expected something like 1.2.3 or 1.0.0-beta.8 (no 'v' prefix)"
    fi
}

# take_lock FILE TIMEOUT: holds an exclusive flock on FILE (descriptor 9) until the script
# exits, waiting at most TIMEOUT seconds; exits EX_BUSY when another script holds it.
take_lock() {
    require_tool flock "install util-linux"
    mkdir -p -- "$(dirname -- "$1")"
    exec 9>>"$1"
    if ! flock -w "$2" 9; then
        die "$EX_BUSY" "another update or rollback holds $1 (waited ${2}s); nothing was changed"
    fi
}

# wait_until_healthy PROBE TIMEOUT INTERVAL STABLE: calls PROBE until it reports healthy, for
# at most TIMEOUT seconds, sleeping INTERVAL between calls. PROBE prints one line,
# "STATE RESTARTS DETAIL...", where STATE is
#   healthy    healthy now (no further wait)
#   running    up, but with no health check of its own: must stay up, with the same
#              RESTARTS count, for STABLE seconds
#   starting   not there yet: keep waiting
#   failed     will not get better (unhealthy, exited, failed): give up at once
# Returns 0 when healthy, 1 otherwise; the last DETAIL goes to stderr on failure.
wait_until_healthy() {
    local probe=$1 timeout=$2 interval=$3 stable=$4
    local deadline=$((SECONDS + ${timeout%.*})) since="" restarts0="" line state restarts detail
    while :; do
        line=$("$probe") || line="failed 0 probe failed: $probe"
        read -r state restarts detail <<<"$line"
        case $state in
        healthy)
            info "healthy: $detail"
            return 0
            ;;
        running)
            if [ -z "$since" ] || [ "$restarts" != "$restarts0" ]; then
                since=$SECONDS
                restarts0=$restarts
            fi
            if ((SECONDS - since >= ${stable%.*})); then
                info "up for ${stable}s without restarts (no health check defined): $detail"
                return 0
            fi
            ;;
        starting)
            since=""
            ;;
        *)
            warn "not healthy: $detail"
            return 1
            ;;
        esac
        if ((SECONDS >= deadline)); then
            warn "not healthy within ${timeout}s: $detail"
            return 1
        fi
        sleep "$interval"
    done
}

# update.sh and rollback.sh are transactions. begin_transaction FINISH: from here on, the
# script's exit runs FINISH (the library's compose_finish or service_finish, which put back what
# a failure left half done), and SIGTERM (the coordinator's timeout), SIGINT and SIGHUP end
# the script through it, with TERMINATED set to the signal's name (FINISH then skips the health
# wait: the coordinator's SIGKILL follows within kill_grace seconds).
TERMINATED=""
begin_transaction() {
    # shellcheck disable=SC2064  # FINISH is a function's name: expanded now, on purpose
    trap "$1" EXIT
    trap 'on_signal TERM' TERM
    trap 'on_signal INT' INT
    trap 'on_signal HUP' HUP
}

on_signal() {
    TERMINATED=$1
    warn "stopped by SIG$1"
    exit 143
}

# fail MESSAGE: ends a step of the transaction; FINISH puts back what was changed.
fail() {
    warn "$*"
    exit 1
}

# The last update's record, for rollback.sh. The coordinator's health-gated update runs
# rollback.sh, with the same REQUEST_ID, after update.sh fails (whatever its exit code) or when
# the health check fails after it. An update.sh that changed nothing, or that put the previous
# state back itself, leaves nothing to undo: rolling back "the last update" then would go one
# version too far. So update.sh records how far it got, and rollback.sh run for the same
# request reads it. Without REQUEST_ID (a manual run) nothing is recorded.
#
# record_update FILE STATE [DETAIL]: STATE is started (nothing changed yet), changed (the
# change may be in effect; DETAIL says what undoes it), updated (succeeded) or restored (failed,
# and the previous state is back).
record_update() {
    local tmp=$1.tmp.$$
    if [ -z "${REQUEST_ID:-}" ]; then
        return 0
    fi
    if ! { mkdir -p -- "$(dirname -- "$1")" && printf '%s\n%s\n%s\n' "$REQUEST_ID" "$2" "${3:-}" >"$tmp" &&
        mv -f -- "$tmp" "$1"; } 2>/dev/null; then
        rm -f -- "$tmp"
        warn "note: could not record the update's progress in $1"
    fi
}

# recorded_update FILE: when FILE records an update for this REQUEST_ID, sets RECORDED_STATE
# and RECORDED_DETAIL and returns 0; returns 1 otherwise.
recorded_update() {
    local id="" state="" detail=""
    if [ -z "${REQUEST_ID:-}" ] || [ ! -f "$1" ]; then
        return 1
    fi
    { read -r id && read -r state && read -r detail; } <"$1" || true
    if [ "$id" != "$REQUEST_ID" ]; then
        return 1
    fi
    RECORDED_STATE=$state
    RECORDED_DETAIL=$detail
}

# nothing_to_undo: for rollback.sh, exits 0 when this request's update.sh changed nothing or
# already restored the previous state (see record_update).
nothing_to_undo() {
    if recorded_update "$1"; then
        case $RECORDED_STATE in
        started | restored)
            info "update.sh for request $REQUEST_ID $([ "$RECORDED_STATE" = started ] && echo "changed nothing" || echo "already put the previous state back"): nothing to roll back"
            exit "$EX_OK"
            ;;
        esac
    fi
}

# utc_stamp: a sortable UTC time stamp with nanoseconds, for backup names.
utc_stamp() {
    date -u +%Y%m%dT%H%M%S.%NZ
}

# Scripts run by the coordinator get HOME; manual runs through `sudo -i` or cron may not.
if [ -z "${HOME:-}" ]; then
    HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
    export HOME="${HOME:-/root}"
fi
