# shellcheck shell=bash
# Docker Compose components (remote, scheduler): the logic behind their update.sh, rollback.sh
# and health-check.sh, which only source common.sh and have run_component load this file and
# call compose_update / compose_rollback / compose_health. Sourced, never run; needs common.sh.
#
# Several services share one compose file, so every change is confined to the `image:` line
# of this component's service, and update/rollback hold a lock on the file (LOCK_FILE) while
# they run. Settings: see compose_defaults below and component-scripts/README.md.

# Settings and their defaults; component.conf (sourced after this) overrides them.
compose_defaults() {
    COMPOSE_FILE=/opt/dunebugger/docker-compose.yml # the compose file the services run from
    COMPOSE_PROJECT=""                              # docker compose -p NAME ("" = compose's default)
    SERVICE=$(basename -- "$SCRIPT_DIR")            # the service's key under services:
    IMAGE=""                                        # image repository ("" = the one in the compose file)
    TAG_PREFIX=""                                   # tag = TAG_PREFIX + VERSION (e.g. "v")
    HEALTH_TIMEOUT=120                              # seconds to wait for the new container
    HEALTH_INTERVAL=2                               # seconds between checks
    STABLE_SECONDS=10                               # without a healthcheck: seconds it must stay up
    BACKUP_DIR=""                                   # "" = /var/backups/dunebugger/$SERVICE
    KEEP_BACKUPS=5                                  # compose file backups kept per service
    LOCK_FILE=/run/lock/dunebugger-compose.lock     # shared by all services of the compose file
    LOCK_TIMEOUT=120                                # seconds to wait for another update
    DOCKER=docker                                   # the docker command (name or path)
    COMPOSE_CLI=auto                                # auto, plugin ("DOCKER compose") or standalone (DOCKER_COMPOSE)
    DOCKER_COMPOSE=docker-compose                   # the standalone command (name or path), e.g. v1 1.29
    PULL=always                                     # always, or missing: pull only when not present locally
    YQ=yq                                           # YAML reader for a cross-check ("" = none)
}

# How each container is inspected: State|Health|RestartCount|Image.
# shellcheck disable=SC2016  # a Go template, not a shell expansion
readonly COMPOSE_INSPECT_FORMAT='{{.State.Status}}|{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}|{{.RestartCount}}|{{.Config.Image}}'

# Finds the `image:` line of service $SVC in a compose file (stdin or $1). Prints
# "LINE|START|LENGTH|VALUE": the line number, where the value starts on it (1-based, inside any
# quotes), its length, and the value. Exit codes: 3 no such service, 4 the service has no
# block-style `image:` line of its own, 5 more than one, 6 unreadable value.
# shellcheck disable=SC2016  # awk program
readonly COMPOSE_LOCATE_AWK='
function indent_of(s) { match(s, /^ */); return RLENGTH }
function key_of(t,   k) {
    k = t
    if (k ~ /^"/) { k = substr(k, 2); sub(/".*$/, "", k); return k }
    if (k ~ /^\047/) { k = substr(k, 2); sub(/\047.*$/, "", k); return k }
    sub(/[ \t]*:.*$/, "", k)
    return k
}
BEGIN { svc = ENVIRON["SVC"]; st = 0; services = 0; found = 0; n = 0 }
/^[ \t]*(#.*)?\r?$/ { next }
{
    ind = indent_of($0); text = substr($0, ind + 1)
    if (st == 0) {
        if (ind == 0 && text ~ /^services[ \t]*:[ \t]*(#.*)?\r?$/) { st = 1; sind = -1; services++ }
        next
    }
    if (ind == 0) { st = 0; if (text ~ /^services[ \t]*:/) { st = 1; sind = -1; services++ } ; next }
    if (st == 2 && ind <= sind) st = 1
    if (st == 2) {
        if (kind < 0) kind = ind
        if (ind == kind && text ~ /^image[ \t]*:/) {
            n++; line = NR
            match(text, /^image[ \t]*:[ \t]*/); start = ind + RLENGTH + 1; val = substr(text, RLENGTH + 1)
        }
        next
    }
    if (sind < 0) sind = ind
    if (ind == sind && key_of(text) == svc && text ~ /:[ \t]*(#.*)?\r?$/) { st = 2; kind = -1; found++ }
    else if (ind == sind && key_of(text) == svc) { flow = 1 }
}
END {
    if (!found && flow) exit 4
    if (!found) exit 3
    if (found > 1 || n > 1) exit 5
    if (n == 0) exit 4
    q = substr(val, 1, 1)
    if (q == "\"" || q == "\047") {
        rest = substr(val, 2); i = index(rest, q)
        if (i == 0) exit 6
        v = substr(rest, 1, i - 1); after = substr(rest, i + 1); start++
    } else {
        v = val; after = ""
        if (match(v, /[ \t]+#/)) { after = substr(v, RSTART); v = substr(v, 1, RSTART - 1) }
        sub(/[ \t\r]+$/, "", v)
    }
    sub(/^[ \t]+/, "", after); sub(/[ \t\r]+$/, "", after)
    if (v == "" || (after != "" && after !~ /^#/)) exit 6
    print line "|" start "|" length(v) "|" v
}'

# The compose command, chosen once by compose_select_cli: ("$DOCKER" compose) or
# ("$DOCKER_COMPOSE"); COMPOSE_NAME names it in messages.
COMPOSE_CMD=()
COMPOSE_NAME="docker compose"

# compose_select_cli: picks the compose command per COMPOSE_CLI. auto: the Compose v2 plugin
# when `DOCKER compose version` works, else the standalone DOCKER_COMPOSE (the docker-compose
# package of Debian 12 and Raspberry Pi OS Bookworm is Compose v1 1.29; Docker's repository
# ships the plugin instead). Everything the scripts ask of compose (config, pull, up -d
# --no-deps, ps -a -q) means the same to both. Where their output differs (v1's config sorts
# the keys and adds `version:`; v1, a Python program, may print library warnings on stderr),
# it is read so that both work. Exits EX_TOOL when the chosen one is missing, EX_CONFIG on a
# bad setting.
compose_select_cli() {
    local plugin_hint="install docker-compose-plugin (Docker's repository; get.docker.com installs it)"
    local standalone_hint="install docker-compose (apt install docker-compose: Compose v1 on Debian 12) or set DOCKER_COMPOSE in component.conf"
    case $COMPOSE_CLI in
    auto | plugin)
        if "$DOCKER" compose version >/dev/null 2>&1; then
            COMPOSE_CMD=("$DOCKER" compose)
            COMPOSE_NAME="$DOCKER compose"
            return 0
        fi
        if [ "$COMPOSE_CLI" = plugin ]; then
            die "$EX_TOOL" "'$DOCKER compose' (the Compose v2 plugin) is not available and COMPOSE_CLI=plugin: $plugin_hint, or set COMPOSE_CLI=auto to use docker-compose"
        fi
        if ! command -v -- "$DOCKER_COMPOSE" >/dev/null 2>&1; then
            die "$EX_TOOL" "neither '$DOCKER compose' (the Compose v2 plugin) nor '$DOCKER_COMPOSE' is available: $plugin_hint; or $standalone_hint"
        fi
        ;;
    standalone)
        require_tool "$DOCKER_COMPOSE" "$standalone_hint"
        ;;
    *)
        die "$EX_CONFIG" "setting COMPOSE_CLI='$COMPOSE_CLI' must be auto, plugin or standalone"
        ;;
    esac
    COMPOSE_CMD=("$DOCKER_COMPOSE")
    COMPOSE_NAME=$DOCKER_COMPOSE
}

# compose CMD...: the chosen compose command on COMPOSE_FILE (and COMPOSE_PROJECT).
compose() {
    local args=(-f "$COMPOSE_FILE")
    if [ -n "$COMPOSE_PROJECT" ]; then
        args+=(-p "$COMPOSE_PROJECT")
    fi
    "${COMPOSE_CMD[@]}" "${args[@]}" "$@"
}

# compose_capture VAR CMD...: runs `compose CMD...` with its stdout in VAR and its stderr in
# COMPOSE_ERR; returns its exit code. Output that is parsed must not pick up warnings printed
# on stderr (Compose v1 is a Python program: deprecation warnings of its libraries land there).
compose_capture() {
    local _var=$1 _err _out _rc=0
    shift
    _err=$(mktemp) || return 1
    TEMP_FILES+=("$_err")
    _out=$(compose "$@" 2>"$_err") || _rc=$?
    COMPOSE_ERR=$(cat -- "$_err")
    rm -f -- "$_err"
    unset 'TEMP_FILES[-1]'
    printf -v "$_var" '%s' "$_out"
    return "$_rc"
}

# compose_image_present REF: REF is in the local image store (`docker image inspect`).
compose_image_present() {
    "$DOCKER" image inspect --format '{{.Id}}' "$1" 2>/dev/null
}

# compose_locate FILE|-: prints "LINE|START|LENGTH|VALUE" for SERVICE's image (see the awk
# program above), or explains on stderr why not and returns 1.
compose_locate() {
    local out rc=0 what=$1
    [ "$what" != - ] || what="the output of '$COMPOSE_NAME config'"
    out=$(SVC=$SERVICE awk "$COMPOSE_LOCATE_AWK" "$1") || rc=$?
    case $rc in
    0) printf '%s\n' "$out" ;;
    3) warn "no service '$SERVICE' under services: in $what" ;;
    4) warn "service '$SERVICE' in $what has no block-style 'image:' line of its own (flow style, YAML anchors, extends: are not edited): give it one, e.g. 'image: REPOSITORY:TAG'" ;;
    5) warn "service '$SERVICE' or its 'image:' key appears more than once in $what" ;;
    6) warn "cannot read the 'image:' value of service '$SERVICE' in $what" ;;
    *) warn "awk failed ($rc) on $what" ;;
    esac
    return "$rc"
}

# compose_image_of FILE: SERVICE's image reference in FILE, checked to be a plain reference.
compose_image_of() {
    local loc ref
    loc=$(compose_locate "$1") || return 1
    ref=${loc#*|*|*|}
    if ! [[ $ref =~ ^[A-Za-z0-9][A-Za-z0-9._/:@-]*$ ]]; then
        warn "service '$SERVICE' in $1 has image '$ref', which is not a plain image reference (variables such as \${TAG} are not edited): write it out, e.g. 'image: REPOSITORY:TAG'"
        return 1
    fi
    printf '%s\n' "$ref"
}

# compose_yq_check FILE EXPECTED: when a yq is installed, its reading of SERVICE's image in
# FILE must be EXPECTED. yq only reads: rewriting with it would drop comments (Debian's yq)
# or re-indent the file (mikefarah's yq).
compose_yq_check() {
    local got
    if [ -z "$YQ" ] || ! command -v -- "$YQ" >/dev/null 2>&1; then
        return 0
    fi
    if ! got=$("$YQ" -r ".services[\"$SERVICE\"].image" "$1" 2>/dev/null); then
        info "note: $YQ could not read $1; cross-check skipped"
        return 0
    fi
    if [ "$got" != "$2" ]; then
        warn "$YQ reads service '$SERVICE''s image in $1 as '$got', the line-based reading as '$2'; refusing to edit a file the two read differently"
        return 1
    fi
}

# image_repository REF: REF without its tag and digest.
image_repository() {
    local ref=${1%%@*}
    if [[ ${ref##*/} == *:* ]]; then
        ref=${ref%:*}
    fi
    printf '%s\n' "$ref"
}

# compose_set_image FILE REF: replaces the value of SERVICE's `image:` line in FILE with REF,
# leaving every other byte of the file as it was. Atomic (temp file + rename), keeps mode and
# owner.
compose_set_image() {
    local file=$1 ref=$2 loc lineno start len tmp
    loc=$(compose_locate "$file") || return 1
    IFS='|' read -r lineno start len _ <<<"$loc"
    tmp=$(mktemp -- "$file.XXXXXX") || return 1
    TEMP_FILES+=("$tmp")
    if ! LINE=$lineno START=$start LEN=$len NEW=$ref awk '
        NR == ENVIRON["LINE"] + 0 {
            $0 = substr($0, 1, ENVIRON["START"] - 1) ENVIRON["NEW"] substr($0, ENVIRON["START"] + ENVIRON["LEN"])
        }
        { print }' "$file" >"$tmp"; then
        warn "could not write $tmp"
        return 1
    fi
    chmod --reference="$file" -- "$tmp" && chown --reference="$file" -- "$tmp" && mv -f -- "$tmp" "$file"
}

# compose_replace_file FROM: puts a copy of FROM in place of COMPOSE_FILE atomically.
compose_replace_file() {
    local tmp
    tmp=$(mktemp -- "$COMPOSE_FILE.XXXXXX") || return 1
    TEMP_FILES+=("$tmp")
    cp -p -- "$1" "$tmp" && mv -f -- "$tmp" "$COMPOSE_FILE"
}

# compose_validate EXPECTED: `compose config` accepts the file and resolves SERVICE's image to
# EXPECTED. The plugin prints the file normalized; v1 also sorts the keys and adds `version:`.
compose_validate() {
    local out got
    if ! compose_capture out config; then
        warn "$COMPOSE_NAME config rejects $COMPOSE_FILE:"
        printf '%s\n' "$COMPOSE_ERR" >&2
        return 1
    fi
    got=$(printf '%s\n' "$out" | compose_locate -) || return 1
    got=${got#*|*|*|}
    if [ "$got" != "$1" ]; then
        warn "$COMPOSE_NAME config resolves service '$SERVICE''s image to '$got', expected '$1'"
        return 1
    fi
    compose_yq_check "$COMPOSE_FILE" "$1"
}

# compose_probe: the state of SERVICE's containers for wait_until_healthy ("STATE RESTARTS
# DETAIL"). With EXPECT_IMAGE set, a container running another image counts as failed.
compose_probe() {
    local ids id out state health restarts image verdict rank worst=0 total=0 details=""
    if ! compose_capture ids ps -a -q "$SERVICE"; then
        echo "starting 0 $COMPOSE_NAME ps failed: ${COMPOSE_ERR//$'\n'/ }"
        return 0
    fi
    if [ -z "$ids" ]; then
        echo "starting 0 no container for service $SERVICE"
        return 0
    fi
    for id in $ids; do
        if ! out=$("$DOCKER" inspect --format "$COMPOSE_INSPECT_FORMAT" "$id" 2>&1); then
            echo "starting 0 docker inspect $id failed: ${out//$'\n'/ }"
            return 0
        fi
        IFS='|' read -r state health restarts image <<<"$out"
        if [ -n "${EXPECT_IMAGE:-}" ] && [ "$image" != "$EXPECT_IMAGE" ]; then
            verdict=failed
        else
            case $state/$health in
            running/healthy) verdict=healthy ;;
            running/none | running/) verdict=running ;;
            running/starting | created/* | restarting/*) verdict=starting ;;
            *) verdict=failed ;;
            esac
        fi
        case $verdict in healthy) rank=0 ;; running) rank=1 ;; starting) rank=2 ;; *) rank=3 ;; esac
        if ((rank > worst)); then
            worst=$rank
        fi
        total=$((total + ${restarts:-0}))
        details+="${details:+; }container ${id:0:12} $state, health $health, image $image"
    done
    local names=(healthy running starting failed)
    echo "${names[worst]} $total $SERVICE: $details"
}

# compose_preflight: tools, settings and the compose file, before anything changes.
compose_preflight() {
    local tool
    require_tool "$DOCKER" "install Docker (docker-ce from Docker's repository, or docker.io) or set DOCKER in component.conf"
    compose_select_cli
    for tool in awk mktemp cp mv chmod chown stat date sleep; do
        require_tool "$tool" "install coreutils/mawk (part of every Debian system)"
    done
    require_setting SERVICE
    require_setting COMPOSE_FILE
    if ! [[ $SERVICE =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]]; then
        die "$EX_CONFIG" "setting SERVICE='$SERVICE' is not a compose service name"
    fi
    if [ -n "$IMAGE" ] && ! [[ $IMAGE =~ ^[A-Za-z0-9][A-Za-z0-9._/:-]*$ ]]; then
        die "$EX_CONFIG" "setting IMAGE='$IMAGE' is not an image repository (no tag), e.g. ghcr.io/owner/name"
    fi
    if [ -n "$TAG_PREFIX" ] && ! [[ $TAG_PREFIX =~ ^[A-Za-z0-9_][A-Za-z0-9._-]*$ ]]; then
        die "$EX_CONFIG" "setting TAG_PREFIX='$TAG_PREFIX' cannot start a docker tag"
    fi
    case $PULL in
    always | missing) ;;
    *) die "$EX_CONFIG" "setting PULL='$PULL' must be always or missing" ;;
    esac
    for tool in HEALTH_TIMEOUT HEALTH_INTERVAL STABLE_SECONDS LOCK_TIMEOUT KEEP_BACKUPS; do
        require_number "$tool"
    done
    BACKUP_DIR=${BACKUP_DIR:-/var/backups/dunebugger/$SERVICE}
    RECORD_FILE=$BACKUP_DIR/.last-update
    if [ ! -f "$COMPOSE_FILE" ]; then
        die "$EX_CONFIG" "compose file $COMPOSE_FILE not found (setting COMPOSE_FILE)"
    fi
    COMPOSE_FILE=$(readlink -f -- "$COMPOSE_FILE")
}

# compose_require_writable: update and rollback replace COMPOSE_FILE through a temp file next to
# it. Refuses, before anything changes, when that directory cannot be written: a read-only
# mount, such as /home and /root under the coordinator's unit (ProtectHome=read-only).
compose_require_writable() {
    local dir hint=""
    dir=$(dirname -- "$COMPOSE_FILE")
    if [ -w "$dir" ]; then
        return 0
    fi
    case $dir/ in
    /home/* | /root/*)
        hint=" The coordinator's unit makes /home and /root read-only (ProtectHome=read-only): keep the compose file elsewhere (the default is /opt/dunebugger), or let the unit write here: sudo systemctl edit dunebugger-update-coordinator, then [Service] ReadWritePaths=$dir"
        ;;
    esac
    die "$EX_CONFIG" "cannot write in $dir, where $COMPOSE_FILE is replaced through a temp file; nothing was changed.$hint"
}

# compose_current_image: SERVICE's image in the compose file as it is now; exits EX_CONFIG
# when the file cannot be edited safely.
compose_current_image() {
    local ref out
    if ! compose_capture out config; then
        warn "$COMPOSE_NAME config rejects $COMPOSE_FILE as it is (before any change):"
        printf '%s\n' "$COMPOSE_ERR" >&2
        exit "$EX_CONFIG"
    fi
    ref=$(compose_image_of "$COMPOSE_FILE") || exit "$EX_CONFIG"
    compose_yq_check "$COMPOSE_FILE" "$ref" || exit "$EX_CONFIG"
    printf '%s\n' "$ref"
}

# The transaction: what a failure must undo. TXN is "" (nothing to undo), "edited" (the
# compose file may differ from BACKUP) or "restarted" (the container may have been replaced).
TXN=""
BACKUP=""
OLD_IMAGE=""
TEMP_FILES=()
ACTION_KIND=""  # update or rollback: which script's transaction this is
RECORD_FILE=""  # see record_update in common.sh

# compose_restart IMAGE: the restarting and verifying steps of update.sh and rollback.sh:
# SERVICE's container is recreated from the edited compose file and must become healthy on
# IMAGE; a failure leaves TXN=restarted for compose_finish.
compose_restart() {
    phase restarting
    TXN=restarted
    compose up -d --no-deps "$SERVICE" || fail "$COMPOSE_NAME up -d --no-deps $SERVICE failed"

    phase verifying
    EXPECT_IMAGE=$1 wait_until_healthy compose_probe "$HEALTH_TIMEOUT" "$HEALTH_INTERVAL" "$STABLE_SECONDS" ||
        fail "$SERVICE did not become healthy on $1"
    TXN=""
}

# The EXIT trap: on failure restores BACKUP and, when the container was touched, brings the
# old one back up. Exits EX_RESTORED or EX_RESTORE_FAILED.
compose_finish() {
    local rc=$? ok=1
    trap - EXIT TERM INT HUP
    if [ "${#TEMP_FILES[@]}" -gt 0 ]; then
        rm -f -- "${TEMP_FILES[@]}"
    fi
    if [ -z "$TXN" ]; then
        exit "$rc"
    fi
    phase restoring
    if compose_replace_file "$BACKUP"; then
        info "restored $COMPOSE_FILE from $BACKUP"
    else
        warn "could not restore $COMPOSE_FILE from $BACKUP: restore it by hand"
        ok=0
    fi
    if [ "$TXN" = restarted ] && [ "$ok" = 1 ]; then
        if ! compose up -d --no-deps "$SERVICE"; then
            warn "$COMPOSE_NAME up -d --no-deps $SERVICE failed after restoring $COMPOSE_FILE"
            ok=0
        elif [ -n "$TERMINATED" ]; then
            info "restarted $SERVICE on $OLD_IMAGE (not waiting for its health: stopped by SIG$TERMINATED)"
        elif ! EXPECT_IMAGE=$OLD_IMAGE wait_until_healthy compose_probe "$HEALTH_TIMEOUT" "$HEALTH_INTERVAL" "$STABLE_SECONDS"; then
            warn "$SERVICE is not healthy on $OLD_IMAGE either"
            ok=0
        fi
    fi
    if [ "$ok" = 1 ]; then
        rm -f -- "$BACKUP"
        if [ "$ACTION_KIND" = update ]; then
            record_update "$RECORD_FILE" restored
        fi
        if [ "$TXN" = restarted ]; then
            warn "failed; $SERVICE is back on $OLD_IMAGE"
        else
            warn "failed before $SERVICE's container was touched; the compose file is as it was ($OLD_IMAGE)"
        fi
        exit "$EX_RESTORED"
    fi
    warn "failed, and restoring $OLD_IMAGE failed too: $SERVICE's state is unknown (backup: $BACKUP)"
    exit "$EX_RESTORE_FAILED"
}

# compose_backups: this service's compose file backups, oldest first.
compose_backups() {
    local f
    for f in "$BACKUP_DIR/$(basename -- "$COMPOSE_FILE")".*; do
        if [ -f "$f" ]; then
            printf '%s\n' "$f"
        fi
    done
}

compose_prune_backups() {
    local all
    mapfile -t all < <(compose_backups)
    local keep=${KEEP_BACKUPS%.*}
    if ((keep < 1)); then
        keep=1 # rollback.sh needs the newest
    fi
    local excess=$((${#all[@]} - keep))
    if ((excess > 0)); then
        rm -f -- "${all[@]:0:excess}"
    fi
}

# compose_pull IMAGE: makes sure IMAGE (SERVICE's new image) is there to start. PULL=missing
# skips the pull when it is present locally already. A failed pull is fatal only when the image
# is not present locally: images built or loaded on the host (docker build, docker load) and
# hosts without a network pull nothing, and a tag names one version, so the local copy is it.
compose_pull() {
    local id
    if [ "$PULL" = missing ] && id=$(compose_image_present "$1"); then
        info "$1 is present locally ($id); not pulling (PULL=missing)"
        return 0
    fi
    if compose pull "$SERVICE"; then
        return 0
    fi
    if id=$(compose_image_present "$1"); then
        warn "note: $COMPOSE_NAME pull $SERVICE failed; using $1 as present locally ($id)"
        return 0
    fi
    fail "$COMPOSE_NAME pull $SERVICE failed, and $1 is not present locally"
}

# update.sh VERSION
compose_update() {
    expect_args 1 "update.sh VERSION" "$@"
    local version=$1 tag repo
    ACTION_KIND=update
    phase checking
    compose_preflight
    record_update "$RECORD_FILE" started
    compose_require_writable
    check_version "$version"
    if [[ $version == *+* ]]; then
        die "$EX_CONFIG" "version '$version' contains '+', which docker image tags cannot"
    fi
    tag=$TAG_PREFIX$version
    if ((${#tag} > 128)); then
        die "$EX_CONFIG" "tag '$tag' is longer than docker's 128 characters"
    fi
    take_lock "$LOCK_FILE" "$LOCK_TIMEOUT"
    OLD_IMAGE=$(compose_current_image)
    repo=${IMAGE:-$(image_repository "$OLD_IMAGE")}
    local new_image=$repo:$tag
    info "$SERVICE: $OLD_IMAGE -> $new_image (with $COMPOSE_NAME)"

    phase backing-up
    mkdir -p -- "$BACKUP_DIR"
    chmod 0700 -- "$BACKUP_DIR" # copies of the compose file may hold secrets
    BACKUP=$BACKUP_DIR/$(basename -- "$COMPOSE_FILE").$(utc_stamp)
    cp -p -- "$COMPOSE_FILE" "$BACKUP"
    info "backed up $COMPOSE_FILE to $BACKUP"
    begin_transaction compose_finish
    TXN=edited
    record_update "$RECORD_FILE" changed "$BACKUP"

    phase configuring
    compose_set_image "$COMPOSE_FILE" "$new_image" || fail "could not set $SERVICE's image in $COMPOSE_FILE"
    compose_validate "$new_image" || fail "the edited $COMPOSE_FILE does not check out"

    phase downloading
    compose_pull "$new_image"

    compose_restart "$new_image"

    record_update "$RECORD_FILE" updated "$BACKUP"
    compose_prune_backups
    info "$SERVICE is now on $new_image (the previous compose file is kept as $BACKUP)"
}

# rollback.sh: SERVICE goes back to the image named in its newest backup. Only SERVICE's
# image line changes: the other services in the file keep what they run now.
compose_rollback() {
    expect_args 0 "rollback.sh (no arguments)" "$@"
    local backups previous source undone=""
    ACTION_KIND=rollback
    phase checking
    compose_preflight
    nothing_to_undo "$RECORD_FILE"
    compose_require_writable
    take_lock "$LOCK_FILE" "$LOCK_TIMEOUT"
    mapfile -t backups < <(compose_backups)
    if [ "${#backups[@]}" -eq 0 ]; then
        die "$EX_NOTHING" "nothing to roll back to: no backup of $COMPOSE_FILE in $BACKUP_DIR (update.sh makes one per update)"
    fi
    source=${backups[-1]}
    if recorded_update "$RECORD_FILE" && [ -f "$RECORDED_DETAIL" ]; then
        source=$RECORDED_DETAIL # the backup this request's update.sh made
        undone=$source
    fi
    previous=$(compose_image_of "$source") || die "$EX_CONFIG" "cannot read $SERVICE's image from $source"
    OLD_IMAGE=$(compose_current_image)
    info "$SERVICE: $OLD_IMAGE -> $previous (from $source, with $COMPOSE_NAME)"

    phase backing-up
    BACKUP=$BACKUP_DIR/.before-rollback.$(utc_stamp)
    cp -p -- "$COMPOSE_FILE" "$BACKUP"
    begin_transaction compose_finish
    TXN=edited

    phase configuring
    if [ "$previous" = "$OLD_IMAGE" ]; then
        info "$COMPOSE_FILE already names $previous; making sure it runs"
    else
        compose_set_image "$COMPOSE_FILE" "$previous" || fail "could not set $SERVICE's image in $COMPOSE_FILE"
    fi
    compose_validate "$previous" || fail "the edited $COMPOSE_FILE does not check out"

    compose_restart "$previous"

    rm -f -- "$BACKUP"
    if [ -n "$undone" ]; then
        # This request's update is undone, as if it had failed: its backup goes (update.sh drops
        # the backup of an update it put right itself), so a later rollback request goes back
        # one more update instead of to what runs now; run again for this request, it is a no-op.
        rm -f -- "$undone"
        record_update "$RECORD_FILE" restored
    fi
    info "$SERVICE is back on $previous"
}

# health-check.sh: SERVICE's containers run, and are healthy where they define a healthcheck.
compose_health() {
    expect_args 0 "health-check.sh (no arguments)" "$@"
    local state restarts detail
    phase checking
    compose_preflight
    read -r state restarts detail <<<"$(compose_probe)"
    case $state in
    healthy | running)
        info "healthy: $detail"
        ;;
    *)
        die "$EX_UNHEALTHY" "unhealthy ($state): $detail"
        ;;
    esac
}

compose_defaults
