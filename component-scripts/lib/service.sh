# shellcheck shell=bash
# A component that is a systemd service installed from a release tarball (core): the logic
# behind its update.sh, rollback.sh and health-check.sh, which only source common.sh and
# have run_component load this file and call service_update / service_rollback / service_health.
# Sourced, never run; needs common.sh.
#
# Layout: the release is unpacked into INSTALL_DIR. An update keeps the install it replaced as
# INSTALL_DIR.previous (the backup rollback.sh restores); a failed update leaves the new one
# as INSTALL_DIR.failed, a rollback the one it replaced as INSTALL_DIR.rolledback, for a look.
# The version installed is recorded in INSTALL_DIR/.dunebugger-version.

# Settings and their defaults; component.conf (sourced after this) overrides them.
service_defaults() {
    UNIT=dunebugger-core                          # the systemd unit to stop, start and check
    INSTALL_DIR=/opt/dunebugger/core-app          # where the release is unpacked
    TARBALL='dunebugger-core-{VERSION}.tar.gz'    # release file name ({VERSION}, {ARCH})
    RELEASES_DIR=$SCRIPT_DIR/releases             # looked in first: RELEASES_DIR/TARBALL
    RELEASE_URL=""                                # else downloaded ({VERSION}, {ARCH}, {TARBALL})
    CHECKSUM_URL=""                               # sha256 file ("" = RELEASES_DIR/TARBALL.sha256 if any)
    REQUIRE_CHECKSUM=no                           # yes: refuse a release without a checksum
    STRIP_COMPONENTS=auto                         # tar --strip-components; auto = 1 if one top dir
    ARCH=""                                       # {ARCH} ("" = dpkg --print-architecture)
    PRESERVE=""                                   # paths (relative) carried over from the old install
    POST_INSTALL=""                               # bash command run in INSTALL_DIR before start
    HEALTH_CMD=""                                 # bash command that must succeed once active
    HEALTH_TIMEOUT=60                             # seconds to wait for the unit to be healthy
    HEALTH_INTERVAL=2                             # seconds between checks
    STABLE_SECONDS=5                              # without HEALTH_CMD: seconds it must stay active
    DOWNLOAD_TIMEOUT=300                          # seconds for one download
    LOCK_FILE=/run/lock/dunebugger-core.lock      # held by update and rollback
    LOCK_TIMEOUT=120                              # seconds to wait for it
    SYSTEMCTL=systemctl                           # commands (name or path)
    CURL=curl
    WGET=wget
}

readonly VERSION_FILE=.dunebugger-version

# service_preflight: tools and settings, before anything changes.
service_preflight() {
    local tool
    require_tool "$SYSTEMCTL" "this component is a systemd service: it needs systemd (or set SYSTEMCTL in component.conf)"
    for tool in awk mktemp cp mv rm stat date sleep timeout; do
        require_tool "$tool" "install coreutils/mawk (part of every Debian system)"
    done
    require_setting UNIT
    require_setting INSTALL_DIR
    for tool in HEALTH_TIMEOUT HEALTH_INTERVAL STABLE_SECONDS DOWNLOAD_TIMEOUT LOCK_TIMEOUT; do
        require_number "$tool"
    done
    if [[ $INSTALL_DIR != /?* ]] || [[ $INSTALL_DIR == */ ]] || [[ $INSTALL_DIR == *..* ]]; then
        die "$EX_CONFIG" "setting INSTALL_DIR='$INSTALL_DIR' must be an absolute path without a trailing / or .."
    fi
    if [[ $SCRIPT_DIR/ == "$INSTALL_DIR"/* ]]; then
        die "$EX_CONFIG" "setting INSTALL_DIR='$INSTALL_DIR' holds these scripts ($SCRIPT_DIR): an update would replace them"
    fi
    if [[ $STRIP_COMPONENTS != auto ]] && ! [[ $STRIP_COMPONENTS =~ ^[0-9]+$ ]]; then
        die "$EX_CONFIG" "setting STRIP_COMPONENTS='$STRIP_COMPONENTS' must be auto or a number"
    fi
    RECORD_FILE=$INSTALL_DIR.last-update
    case $REQUIRE_CHECKSUM in
    yes | no) ;;
    *) die "$EX_CONFIG" "setting REQUIRE_CHECKSUM='$REQUIRE_CHECKSUM' must be yes or no" ;;
    esac
}

# expand TEMPLATE VERSION: TEMPLATE with {VERSION}, {ARCH} and {TARBALL} filled in.
expand() {
    local text=$1
    text=${text//'{VERSION}'/$2}
    text=${text//'{ARCH}'/$ARCH}
    text=${text//'{TARBALL}'/${TARBALL_NAME:-}}
    printf '%s\n' "$text"
}

# download URL FILE: curl if present, else wget; exits EX_TOOL without either.
download() {
    if command -v -- "$CURL" >/dev/null 2>&1; then
        "$CURL" -fsSL --retry 3 --max-time "${DOWNLOAD_TIMEOUT%.*}" -o "$2" "$1"
    elif command -v -- "$WGET" >/dev/null 2>&1; then
        "$WGET" -q --tries=3 --timeout="${DOWNLOAD_TIMEOUT%.*}" -O "$2" "$1"
    else
        die "$EX_TOOL" "neither curl nor wget is installed to download $1: install curl (apt-get install curl), or put the release in $RELEASES_DIR"
    fi
}

# expected_sha256 SUMFILE NAME: the checksum for NAME in a sha256sum-style file (or the only
# checksum in a one-line file).
expected_sha256() {
    awk -v name="$2" '
        NF >= 2 { f = $2; sub(/^\*/, "", f); sub(/^.*\//, "", f); if (f == name) { print $1; found = 1; exit } }
        NF >= 1 { lines++; first = $1 }
        END { if (!found && lines == 1) print first }' "$1"
}

# service_fetch VERSION DIR: puts the release tarball (and its checksum, when there is one) in
# DIR as TARBALL_PATH, and checks the checksum.
service_fetch() {
    local version=$1 dir=$2 url sums="" expected actual
    local tarball=$dir/$TARBALL_NAME
    TARBALL_PATH=$tarball
    if [ -n "$RELEASES_DIR" ] && [ -f "$RELEASES_DIR/$TARBALL_NAME" ]; then
        info "using $RELEASES_DIR/$TARBALL_NAME"
        cp -- "$RELEASES_DIR/$TARBALL_NAME" "$tarball"
        if [ -f "$RELEASES_DIR/$TARBALL_NAME.sha256" ]; then
            sums=$dir/checksum
            cp -- "$RELEASES_DIR/$TARBALL_NAME.sha256" "$sums"
        fi
    elif [ -n "$RELEASE_URL" ]; then
        url=$(expand "$RELEASE_URL" "$version")
        info "downloading $url"
        download "$url" "$tarball" || fail "could not download $url"
    else
        fail "no release $TARBALL_NAME in RELEASES_DIR ($RELEASES_DIR), and no RELEASE_URL to download it from"
    fi
    if [ -z "$sums" ] && [ -n "$CHECKSUM_URL" ]; then
        url=$(expand "$CHECKSUM_URL" "$version")
        sums=$dir/checksum
        info "downloading $url"
        download "$url" "$sums" || fail "could not download the checksum $url"
    fi
    if [ -n "$sums" ]; then
        require_tool sha256sum "install coreutils"
        expected=$(expected_sha256 "$sums" "$TARBALL_NAME")
        if ! [[ $expected =~ ^[0-9a-fA-F]{64}$ ]]; then
            fail "no sha256 checksum for $TARBALL_NAME in the checksum file"
        fi
        actual=$(sha256sum <"$tarball")
        actual=${actual%% *}
        if [ "${actual,,}" != "${expected,,}" ]; then
            fail "sha256 mismatch for $TARBALL_NAME: expected $expected, got $actual"
        fi
        info "sha256 verified: $actual"
    elif [ "$REQUIRE_CHECKSUM" = yes ]; then
        fail "no checksum for $TARBALL_NAME (REQUIRE_CHECKSUM=yes): put $TARBALL_NAME.sha256 in $RELEASES_DIR or set CHECKSUM_URL"
    else
        warn "note: no checksum for $TARBALL_NAME, not verified (set CHECKSUM_URL, or REQUIRE_CHECKSUM=yes)"
    fi
}

# service_unpack TARBALL DEST: checks the member names and unpacks into DEST (created).
service_unpack() {
    local tarball=$1 dest=$2 members strip=$STRIP_COMPONENTS
    require_tool tar "install tar"
    case $tarball in
    *.gz | *.tgz) require_tool gzip "install gzip" ;;
    *.xz) require_tool xz "install xz-utils" ;;
    *.bz2) require_tool bzip2 "install bzip2" ;;
    esac
    members=$(tar -tf "$tarball") || fail "$TARBALL_NAME is not a readable tar archive"
    if [ -z "$members" ]; then
        fail "$TARBALL_NAME is empty"
    fi
    if awk '/^\// || /(^|\/)\.\.(\/|$)/ { bad = 1 } END { exit !bad }' <<<"$members"; then
        fail "$TARBALL_NAME has members with absolute paths or '..': refusing to unpack it"
    fi
    if [ "$strip" = auto ]; then
        # One top-level directory holding everything (dist/..., ./...): unpack its contents.
        strip=$(awk '{ top = $0; sub(/\/.*$/, "", top); if (NR == 1) first = top; if (top != first) many = 1
                       if ($0 ~ /\/./) deep = 1 }
                     END { print (!many && deep) ? 1 : 0 }' <<<"$members")
    fi
    mkdir -p -- "$dest"
    tar -xf "$tarball" -C "$dest" --no-same-owner --strip-components="$strip" ||
        fail "could not unpack $TARBALL_NAME"
}

# service_probe: the unit's state for wait_until_healthy ("STATE RESTARTS DETAIL").
service_probe() {
    local state restarts out
    state=$("$SYSTEMCTL" is-active "$UNIT" 2>/dev/null) || true
    restarts=$("$SYSTEMCTL" show -p NRestarts --value "$UNIT" 2>/dev/null) || true
    [[ $restarts =~ ^[0-9]+$ ]] || restarts=0
    case $state in
    active)
        if [ -z "$HEALTH_CMD" ]; then
            echo "running $restarts $UNIT is active"
        elif out=$(cd "$INSTALL_DIR" && timeout 30 bash -c "$HEALTH_CMD" 2>&1); then
            echo "healthy $restarts $UNIT is active and HEALTH_CMD succeeds"
        else
            echo "starting $restarts $UNIT is active but HEALTH_CMD fails: ${out//$'\n'/ }"
        fi
        ;;
    activating | reloading) echo "starting $restarts $UNIT is $state" ;;
    *) echo "failed $restarts $UNIT is ${state:-unknown}" ;;
    esac
}

# installed_version [DIR]: the version recorded in DIR (default INSTALL_DIR), or "unknown".
installed_version() {
    cat -- "${1:-$INSTALL_DIR}/$VERSION_FILE" 2>/dev/null || echo unknown
}

# The transaction. TXN: "" (nothing changed), "stopped" (the unit was stopped), "swapped"
# (INSTALL_DIR was replaced; the old one is in PUT_BACK_FROM). On failure the replacement
# goes to MOVE_FAILED_TO.
TXN=""
WAS_ACTIVE=""
HAD_INSTALL=""
PUT_BACK_FROM=""
MOVE_FAILED_TO=""
TEMP_DIRS=()
TARBALL_NAME=""
TARBALL_PATH=""
KEPT_PREVIOUS=""
ACTION_KIND=""  # update or rollback: which script's transaction this is
RECORD_FILE=""  # see record_update in common.sh

# The EXIT trap: removes the staging directory; after a change, puts the old install back and
# starts the unit again if it was active. Exits EX_RESTORED or EX_RESTORE_FAILED.
service_finish() {
    local rc=$?
    trap - EXIT TERM INT HUP
    service_restore "$rc" || rc=$?
    if [ "${#TEMP_DIRS[@]}" -gt 0 ]; then
        rm -rf -- "${TEMP_DIRS[@]}"
    fi
    exit "$rc"
}

# service_restore RC: returns the script's exit code for its exit code RC (see service_finish).
service_restore() {
    local rc=$1 ok=1
    if [ -z "$TXN" ]; then
        case $rc in
        0 | "$EX_CONFIG" | "$EX_TOOL" | "$EX_BUSY" | "$EX_NOTHING") return "$rc" ;;
        *)
            warn "failed before anything was changed; $(installed_version) is still installed"
            return "$EX_RESTORED"
            ;;
        esac
    fi
    phase restoring
    if [ "$TXN" = swapped ]; then
        "$SYSTEMCTL" stop "$UNIT" || warn "systemctl stop $UNIT failed"
        rm -rf -- "$MOVE_FAILED_TO"
        if [ -e "$INSTALL_DIR" ] && ! mv -T -- "$INSTALL_DIR" "$MOVE_FAILED_TO"; then
            warn "could not move $INSTALL_DIR aside to $MOVE_FAILED_TO"
            ok=0
        elif [ -n "$HAD_INSTALL" ] && ! mv -T -- "$PUT_BACK_FROM" "$INSTALL_DIR"; then
            warn "could not move $PUT_BACK_FROM back to $INSTALL_DIR"
            ok=0
        else
            info "put $(installed_version) back in $INSTALL_DIR (the failed one is in $MOVE_FAILED_TO)"
        fi
    fi
    if [ -n "$KEPT_PREVIOUS" ] && [ -e "$KEPT_PREVIOUS" ] && [ "$ok" = 1 ] &&
        ! mv -T -- "$KEPT_PREVIOUS" "$INSTALL_DIR.previous"; then
        warn "could not move $KEPT_PREVIOUS back to $INSTALL_DIR.previous"
        ok=0
    fi
    if [ "$ok" = 1 ] && [ "$WAS_ACTIVE" = active ] && { [ "$TXN" = stopped ] || [ -n "$HAD_INSTALL" ]; }; then
        if ! "$SYSTEMCTL" start "$UNIT"; then
            warn "systemctl start $UNIT failed after restoring"
            ok=0
        elif [ -n "$TERMINATED" ]; then
            info "started $UNIT again (not waiting for its health: stopped by SIG$TERMINATED)"
        elif ! wait_until_healthy service_probe "$HEALTH_TIMEOUT" "$HEALTH_INTERVAL" "$STABLE_SECONDS"; then
            warn "$UNIT is not healthy on $(installed_version) either"
            ok=0
        fi
    fi
    if [ "$ok" = 1 ] && [ "$ACTION_KIND" = update ]; then
        record_update "$RECORD_FILE" restored
    fi
    if [ "$ok" = 1 ] && [ -z "$HAD_INSTALL" ] && [ "$TXN" = swapped ]; then
        warn "failed; there was no install before this one, so $UNIT stays stopped"
        return "$EX_RESTORED"
    elif [ "$ok" = 1 ]; then
        warn "failed; $(installed_version) is back in place${WAS_ACTIVE:+ and $UNIT is $WAS_ACTIVE as before}"
        return "$EX_RESTORED"
    fi
    warn "failed, and restoring failed too: the state of $UNIT and $INSTALL_DIR is unknown"
    return "$EX_RESTORE_FAILED"
}

# service_start_and_verify: starts the unit and waits for it to be healthy.
service_start_and_verify() {
    phase starting
    "$SYSTEMCTL" start "$UNIT" || fail "systemctl start $UNIT failed"
    phase verifying
    wait_until_healthy service_probe "$HEALTH_TIMEOUT" "$HEALTH_INTERVAL" "$STABLE_SECONDS" ||
        fail "$UNIT did not become healthy"
}

# service_stop: records whether the unit was active, and stops it.
service_stop() {
    WAS_ACTIVE=$("$SYSTEMCTL" is-active "$UNIT" 2>/dev/null) || true
    phase stopping
    TXN=stopped
    "$SYSTEMCTL" stop "$UNIT" || fail "systemctl stop $UNIT failed"
}

# update.sh VERSION
service_update() {
    expect_args 1 "update.sh VERSION" "$@"
    local version=$1 parent stage path
    ACTION_KIND=update
    phase checking
    service_preflight
    record_update "$RECORD_FILE" started
    check_version "$version"
    if [ -z "$ARCH" ]; then
        ARCH=$(dpkg --print-architecture 2>/dev/null || uname -m)
    fi
    TARBALL_NAME=$(expand "$TARBALL" "$version")
    if [[ $TARBALL_NAME == */* ]] || [ -z "$TARBALL_NAME" ]; then
        die "$EX_CONFIG" "setting TARBALL='$TARBALL' must be a file name"
    fi
    for path in $PRESERVE; do
        if [[ $path == /* ]] || [[ $path == *..* ]]; then
            die "$EX_CONFIG" "PRESERVE entry '$path' must be a relative path without .."
        fi
    done
    take_lock "$LOCK_FILE" "$LOCK_TIMEOUT"
    info "$UNIT: $(installed_version) -> $version"
    parent=$(dirname -- "$INSTALL_DIR")
    mkdir -p -- "$parent"
    begin_transaction service_finish
    # Staged next to INSTALL_DIR, so the swap below is a rename on one filesystem.
    stage=$(mktemp -d -- "$parent/.$(basename -- "$INSTALL_DIR").new.XXXXXX")
    TEMP_DIRS+=("$stage")

    phase downloading
    service_fetch "$version" "$stage"

    phase unpacking
    service_unpack "$TARBALL_PATH" "$stage/new"
    printf '%s\n' "$version" >"$stage/new/$VERSION_FILE"

    service_stop

    phase backing-up
    PUT_BACK_FROM=$INSTALL_DIR.previous
    MOVE_FAILED_TO=$INSTALL_DIR.failed
    if [ -e "$INSTALL_DIR" ]; then
        if [ -e "$PUT_BACK_FROM" ]; then
            # The rollback target of the last update: dropped only once this one succeeds.
            KEPT_PREVIOUS=$stage/previous
            mv -T -- "$PUT_BACK_FROM" "$KEPT_PREVIOUS"
        fi
        mv -T -- "$INSTALL_DIR" "$PUT_BACK_FROM"
        HAD_INSTALL=1
        info "kept $(installed_version "$PUT_BACK_FROM") as $PUT_BACK_FROM"
    fi
    TXN=swapped
    record_update "$RECORD_FILE" changed "$PUT_BACK_FROM"

    phase installing
    mv -T -- "$stage/new" "$INSTALL_DIR"
    if [ -n "$HAD_INSTALL" ]; then
        for path in $PRESERVE; do
            if [ -e "$PUT_BACK_FROM/$path" ] || [ -L "$PUT_BACK_FROM/$path" ]; then
                rm -rf -- "${INSTALL_DIR:?}/$path"
                mkdir -p -- "$(dirname -- "$INSTALL_DIR/$path")"
                cp -a -- "$PUT_BACK_FROM/$path" "$INSTALL_DIR/$path" || fail "could not carry $path over"
            fi
        done
    fi
    if [ -n "$POST_INSTALL" ]; then
        (cd "$INSTALL_DIR" && bash -c "$POST_INSTALL") || fail "POST_INSTALL failed"
    fi
    service_start_and_verify
    TXN=""
    record_update "$RECORD_FILE" updated "$PUT_BACK_FROM"
    info "$UNIT is now on $version (the previous install is kept as $PUT_BACK_FROM)"
}

# rollback.sh: INSTALL_DIR.previous goes back into place; the install it replaces is kept as
# INSTALL_DIR.rolledback. A second rollback finds no INSTALL_DIR.previous and exits 7.
service_rollback() {
    expect_args 0 "rollback.sh (no arguments)" "$@"
    ACTION_KIND=rollback
    phase checking
    service_preflight
    nothing_to_undo "$RECORD_FILE"
    take_lock "$LOCK_FILE" "$LOCK_TIMEOUT"
    if [ ! -d "$INSTALL_DIR.previous" ]; then
        die "$EX_NOTHING" "nothing to roll back to: $INSTALL_DIR.previous does not exist (update.sh keeps the install it replaces there)"
    fi
    info "$UNIT: $(installed_version) -> $(installed_version "$INSTALL_DIR.previous")"
    begin_transaction service_finish
    service_stop

    phase installing
    PUT_BACK_FROM=$INSTALL_DIR.rolledback
    MOVE_FAILED_TO=$INSTALL_DIR.previous
    rm -rf -- "$PUT_BACK_FROM"
    if [ -e "$INSTALL_DIR" ]; then
        mv -T -- "$INSTALL_DIR" "$PUT_BACK_FROM"
        HAD_INSTALL=1
    fi
    TXN=swapped
    mv -T -- "$INSTALL_DIR.previous" "$INSTALL_DIR"

    service_start_and_verify
    TXN=""
    info "$UNIT is back on $(installed_version) (the install it replaced is kept as $PUT_BACK_FROM)"
}

# health-check.sh: the unit is active (and HEALTH_CMD succeeds, when set).
service_health() {
    expect_args 0 "health-check.sh (no arguments)" "$@"
    local state restarts detail
    phase checking
    service_preflight
    read -r state restarts detail <<<"$(service_probe)"
    case $state in
    healthy | running) info "healthy: $detail (version $(installed_version))" ;;
    *) die "$EX_UNHEALTHY" "unhealthy: $detail (version $(installed_version))" ;;
    esac
}

service_defaults
