#!/usr/bin/env bash
# install.sh's whole life on a real Debian 12 + systemd guest: install (if not yet), re-install
# (a no-op: no restart), an upgrade (restart; config and a customized script kept; the old
# binary kept as .previous), a service that fails to start (install.sh shows status and
# journal and exits 1), --dry-run (changes nothing), --uninstall (config, spool, run records
# kept), re-install, --purge, and a fresh install after the purge.
#
# Runs as root in the lab guest, with the repository at /lab/repo and a release binary at
# /lab/bin/update-coordinator (override with REPO= and BIN=). May start on a fresh guest or
# after tests/system/guest.sh (whatever config that left is replaced). Prints "PASS name" or
# "FAIL name: why" per check; exits 1 if any failed. install.sh's output of each step is kept
# in $LOGS (default /lab/out/install-flow, else a temp dir).
set -uo pipefail

REPO=${REPO:-/lab/repo}
BIN=${BIN:-/lab/bin/update-coordinator}
UNIT=dunebugger-update-coordinator.service
INSTALLED=/usr/local/bin/update-coordinator
CONFIG=/etc/dunebugger/update-coordinator.toml
SPOOL=/var/dunebugger/updates
STATE=/var/lib/update-coordinator
PROBE=/opt/uc-install-flow/probe
if [[ -d /lab/out ]]; then LOGS=${LOGS:-/lab/out/install-flow}; else LOGS=${LOGS:-$(mktemp -d)}; fi
mkdir -p "$LOGS"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SUITE=install-flow
# shellcheck source=tests/system/checks.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/checks.sh"

invocation() { systemctl show -p InvocationID --value "$UNIT" 2>/dev/null; }
sum() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }
layout() { stat -c '%a %U %G' "$1" 2>/dev/null; }
probe() { update-coordinator submit --component probe --action health --wait --timeout 60 >"$LOGS/probe.log" 2>&1; }

preflight() {
    local problem=""
    [[ $(id -u) == 0 ]] || problem="not root"
    [[ -d /run/systemd/system ]] || problem="systemd is not PID 1"
    [[ -x $BIN ]] || problem="no binary at $BIN"
    [[ -f $REPO/install.sh ]] || problem="no install.sh in $REPO"
    if [[ -n $problem ]]; then
        fail preflight "$problem"
        exit 1
    fi
}

step_install_if_needed() {
    if [[ -f /etc/systemd/system/$UNIT ]]; then
        echo "NOTE install-flow: already installed (tests/system/guest.sh ran first): starting from there"
        return
    fi
    installer install --binary "$BIN"
    expect_rc install 0
}

step_reinstall_is_a_noop() {
    local before config_sum
    before=$(invocation)
    config_sum=$(sum "$CONFIG")
    installer reinstall --binary "$BIN"
    expect_rc reinstall 0
    expect reinstall-did-not-restart test "$(invocation)" = "$before"
    expect reinstall-says-not-restarted said "not restarted"
    expect reinstall-kept-config test "$(sum "$CONFIG")" = "$config_sum"
    expect reinstall-binary-unchanged cmp -s "$BIN" "$INSTALLED"
}

# The operator's own config and component: what an upgrade must keep.
step_customize() {
    mkdir -p "$PROBE"
    chmod 755 "${PROBE%/*}" "$PROBE"
    for script in update rollback health-check; do
        printf '#!/bin/sh\necho "probe %s $*"\n' "$script" >"$PROBE/$script.sh"
        chmod 755 "$PROBE/$script.sh"
    done
    cat >"$CONFIG" <<EOF
# install_flow.sh: the operator's config, which upgrades must keep.
[execution]
max_concurrent = 3
[components.probe]
dir = "$PROBE"
EOF
    systemctl restart "$UNIT"
    expect customized-config-running systemctl is-active --quiet "$UNIT"
    expect probe-request-answered probe
    # A locally changed shipped script.
    if [[ -f /opt/dunebugger/coordinator/health-check.sh ]]; then
        printf '# changed on this host\n' >>/opt/dunebugger/coordinator/health-check.sh
    fi
}

step_upgrade() {
    local before config_sum script_sum old_sum
    # A different build: the same program with other bytes (ELF ignores trailing data).
    cp "$BIN" "$WORK/update-coordinator"
    printf 'install-flow' >>"$WORK/update-coordinator"
    before=$(invocation)
    config_sum=$(sum "$CONFIG")
    script_sum=$(sum /opt/dunebugger/coordinator/health-check.sh)
    old_sum=$(sum "$INSTALLED")
    installer upgrade --binary "$WORK/update-coordinator"
    expect_rc upgrade 0
    expect upgrade-restarted test "$(invocation)" != "$before"
    expect upgrade-active systemctl is-active --quiet "$UNIT"
    expect upgrade-installed-the-new-binary cmp -s "$WORK/update-coordinator" "$INSTALLED"
    expect upgrade-kept-the-old-binary-as-previous test "$(sum "$INSTALLED.previous")" = "$old_sum"
    expect upgrade-kept-config test "$(sum "$CONFIG")" = "$config_sum"
    if [[ -n $script_sum ]]; then
        expect upgrade-kept-customized-script test "$(sum /opt/dunebugger/coordinator/health-check.sh)" = "$script_sum"
        expect upgrade-says-script-kept said "changed locally, kept"
    fi
    expect upgrade-probe-answered probe
}

step_failed_start_is_diagnosed() {
    local dropin=/etc/systemd/system/$UNIT.d/install-flow-broken.conf
    mkdir -p "${dropin%/*}"
    printf '[Service]\nExecStartPre=/bin/sh -c "echo install-flow: broken on purpose >&2; exit 1"\n' >"$dropin"
    systemctl daemon-reload
    # A changed binary forces the restart that fails.
    cp "$BIN" "$WORK/update-coordinator"
    installer failed-start --binary "$WORK/update-coordinator" --timeout 20
    expect_rc failed-start-exits-1 1
    expect failed-start-shows-status said "did not become ready"
    expect failed-start-shows-the-journal said "broken on purpose"
    rm -f "$dropin"
    rmdir "${dropin%/*}" 2>/dev/null || true
    systemctl daemon-reload
    installer recover --binary "$BIN"
    expect_rc recovered-by-re-running 0
    expect recovered-active systemctl is-active --quiet "$UNIT"
}

snapshot() {
    local path
    for path in "$INSTALLED" "/etc/systemd/system/$UNIT" "$CONFIG" /usr/local/lib/sysusers.d/update-coordinator.conf \
        /usr/local/lib/tmpfiles.d/update-coordinator.conf /opt/dunebugger/coordinator/health-check.sh; do
        stat -c '%n %s %Y %a' "$path" 2>/dev/null || echo "$path absent"
    done
    invocation
}

step_dry_run_changes_nothing() {
    local before
    cp "$BIN" "$WORK/dry-run-build"
    printf 'dry-run' >>"$WORK/dry-run-build"
    before=$(snapshot)
    installer dry-run --dry-run --binary "$WORK/dry-run-build"
    expect_rc dry-run 0
    expect dry-run-changed-nothing test "$(snapshot)" = "$before"
    expect dry-run-would-restart said "restarting"
}

step_uninstall() {
    local gid
    gid=$(getent group dunebugger-updates | cut -d: -f3)
    installer uninstall --uninstall
    expect_rc uninstall 0
    expect uninstall-stopped bash -c "! systemctl is-active --quiet $UNIT"
    expect uninstall-unit-gone bash -c "! systemctl cat $UNIT"
    expect uninstall-binary-gone test ! -e "$INSTALLED"
    expect uninstall-previous-gone test ! -e "$INSTALLED.previous"
    expect uninstall-rules-gone bash -c "[ ! -e /usr/local/lib/sysusers.d/update-coordinator.conf ] && [ ! -e /usr/local/lib/tmpfiles.d/update-coordinator.conf ]"
    expect uninstall-kept-config grep -q "install_flow.sh" "$CONFIG"
    expect uninstall-kept-spool test -d "$SPOOL/requests"
    expect uninstall-kept-state test -d "$STATE"
    expect uninstall-kept-group test "$(getent group dunebugger-updates | cut -d: -f3)" = "$gid"
    expect uninstall-kept-scripts test -f /opt/dunebugger/coordinator/update.sh
}

step_reinstall_after_uninstall() {
    installer reinstall-after-uninstall --binary "$BIN"
    expect_rc reinstall-after-uninstall 0
    expect reinstall-after-uninstall-active systemctl is-active --quiet "$UNIT"
    expect reinstall-after-uninstall-kept-config grep -q "install_flow.sh" "$CONFIG"
    expect reinstall-after-uninstall-probe-answered probe
}

step_purge() {
    installer purge --purge
    expect_rc purge 0
    expect purge-unit-gone bash -c "! systemctl cat $UNIT"
    expect purge-config-gone test ! -e "$CONFIG"
    expect purge-spool-gone test ! -e "$SPOOL"
    expect purge-state-gone test ! -e "$STATE"
    expect purge-kept-group getent group dunebugger-updates
    expect purge-kept-scripts test -f /opt/dunebugger/coordinator/update.sh
}

step_fresh_install_after_purge() {
    installer fresh-install --binary "$BIN"
    expect_rc fresh-install 0
    expect fresh-install-active systemctl is-active --quiet "$UNIT"
    expect fresh-install-enabled systemctl is-enabled --quiet "$UNIT"
    expect fresh-install-ready-status bash -c "systemctl show -p StatusText --value $UNIT | grep -qx idle"
    expect fresh-install-default-config cmp -s "$REPO/packaging/update-coordinator.toml" "$CONFIG"
    expect fresh-install-spool-root test "$(layout "$SPOOL")" = "755 root root"
    expect fresh-install-requests test "$(layout "$SPOOL/requests")" = "1730 root dunebugger-updates"
    expect fresh-install-status test "$(layout "$SPOOL/status")" = "1730 root dunebugger-updates"
    expect fresh-install-state-dir test "$(stat -c '%a %U' "$STATE" 2>/dev/null)" = "700 root"
    expect fresh-install-check-clean update-coordinator check
    expect fresh-install-prints-group-add said "group_add: [\"$(getent group dunebugger-updates | cut -d: -f3)\"]"
    expect fresh-install-prints-test-request said "submit --component remote --action health --wait"
    # The spool is re-asserted by the rules, as at every boot.
    chmod 0777 "$SPOOL/requests"
    systemd-tmpfiles --create update-coordinator.conf
    expect tmpfiles-re-asserts-the-spool test "$(layout "$SPOOL/requests")" = "1730 root dunebugger-updates"
}

preflight
step_install_if_needed
step_reinstall_is_a_noop
step_customize
step_upgrade
step_failed_start_is_diagnosed
step_dry_run_changes_nothing
step_uninstall
step_reinstall_after_uninstall
step_purge
step_fresh_install_after_purge
rm -rf "${PROBE%/*}"

echo "install-flow: $failures failure(s); install.sh output in $LOGS"
[[ $failures -eq 0 ]]
