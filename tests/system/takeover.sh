#!/usr/bin/env bash
# Taking over a host that runs the upstream coordinator, in the lab guest (Debian 12, systemd).
# The guest is laid out as dunebugger-install leaves it: the coordinator script under
# /opt/dunebugger/update-coordinator/ (here a stand-in: a bash script with a child, as the
# real one has its inotifywait), run by dunebugger-update-coordinator.service in
# /etc/systemd/system, its component scripts in .../component-scripts/<component>/, the spool
# directories 0755 root, a log directory in /var/log/dunebugger, and a request waiting in the
# spool. Then, twice (the .deb through `install.sh --package`, and the release tarball):
# the old unit and everything it started must be gone, its unit file moved aside, the waiting
# request answered by the new service, each old component script accounted for. The .deb is
# then re-installed (nothing restarts; a changed conffile is kept) and purged; the tarball's
# install is replaced by the .deb (its files removed, the package's unit and binary run).
#
# Runs as root in the guest with the repository at /lab/repo and the amd64 release packages in
# /lab/dist (tests/system/run.sh stages both). Prints "PASS takeover/name" or
# "FAIL takeover/name: why"; exits 1 if any failed. Installer output goes to $LOGS.
set -uo pipefail

REPO=${REPO:-/lab/repo}
DIST=${DIST:-/lab/dist}
UNIT=dunebugger-update-coordinator.service
OLD=/opt/dunebugger/update-coordinator
SPOOL=/var/dunebugger/updates
CHILD_PID=/run/uc-takeover-old-child.pid
if [[ -d /lab/out ]]; then LOGS=${LOGS:-/lab/out/takeover}; else LOGS=${LOGS:-$(mktemp -d)}; fi
mkdir -p "$LOGS"
SUITE=takeover
# shellcheck source=tests/system/checks.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/checks.sh"

answered() { jq -e --arg id "$1" '.request_id == $id and .message != "in_progress" and has("code")' "$SPOOL/status/$1.json"; }
old_runs() { pgrep -f "$OLD/update-coordinator\\.sh" || { [[ -s $CHILD_PID ]] && kill -0 "$(cat "$CHILD_PID")"; }; }
export OLD CHILD_PID
export -f old_runs

# Whatever an earlier test left (tests/system/guest.sh installs with install.sh).
clean_slate() {
    if dpkg-query -W -f='${db:Status-Status}' update-coordinator 2>/dev/null | grep -qx installed; then
        apt-get purge -y update-coordinator >"$LOGS/clean-purge.log" 2>&1
    fi
    if [[ -f /etc/systemd/system/$UNIT ]] && grep -q '^ExecStart=.*update-coordinator run' "/etc/systemd/system/$UNIT"; then
        bash "$REPO/install.sh" --purge --force >"$LOGS/clean-install-sh.log" 2>&1
    fi
    systemctl disable --now "$UNIT" >/dev/null 2>&1 || true
    rm -rf /opt/dunebugger /var/log/dunebugger "$SPOOL" "/etc/systemd/system/$UNIT"
    systemctl daemon-reload
    systemctl reset-failed "$UNIT" >/dev/null 2>&1 || true
}

# The upstream layout, with its coordinator running and a request waiting. Sets REQUEST.
upstream_host() {
    mkdir -p "$OLD/component-scripts"/{core,scheduler,remote,terminal} "$SPOOL/requests" "$SPOOL/status" /var/log/dunebugger
    chmod 755 /opt/dunebugger "$OLD" "$SPOOL" "$SPOOL/requests" "$SPOOL/status" /var/log/dunebugger
    for c in core scheduler remote; do
        for s in update rollback; do
            printf '#!/bin/bash\necho "upstream %s %s $*"\n' "$c" "$s" >"$OLD/component-scripts/$c/$s.sh"
        done
    done
    printf '#!/bin/bash\necho "upstream remote health"\n' >"$OLD/component-scripts/remote/health-check.sh"
    # One old script that is the same as its replacement, one with none.
    cp "$REPO/component-scripts/compose-service/health-check.sh" "$OLD/component-scripts/scheduler/health-check.sh"
    printf '#!/bin/bash\necho "upstream terminal update"\n' >"$OLD/component-scripts/terminal/update.sh"
    chmod 755 "$OLD"/component-scripts/*/*.sh
    # The stand-in coordinator: a long-running bash script with a child, answering nothing.
    cat >"$OLD/update-coordinator.sh" <<EOF
#!/bin/bash
echo "stand-in upstream coordinator \$\$ watching $SPOOL/requests"
sleep 86400 &
echo \$! >$CHILD_PID
wait
EOF
    chmod 755 "$OLD/update-coordinator.sh"
    cat >"/etc/systemd/system/$UNIT" <<EOF
[Unit]
Description=stand-in for the upstream DuneBugger update coordinator
After=network.target docker.service

[Service]
Type=simple
WorkingDirectory=/opt/dunebugger
ExecStart=/bin/bash $OLD/update-coordinator.sh
Restart=on-failure

[Install]
WantedBy=multi-user.target
EOF
    systemctl daemon-reload
    systemctl enable --now "$UNIT" >/dev/null 2>&1
    wait_for 30 test -s "$CHILD_PID"
    REQUEST=takeover-$RANDOM$RANDOM
    # As the upstream client writes it: in place, as root.
    printf '{"request_id": "%s", "component": "remote", "action": "health", "timestamp": "%s"}\n' \
        "$REQUEST" "$(date -Iseconds)" >"$SPOOL/requests/$REQUEST.json"
}

# expect_taken_over LABEL UNIT_PATH EXEC: the checks after either takeover.
expect_taken_over() {
    local label=$1 unit_path=$2 exec=$3
    expect "$label-old-process-gone" bash -c "! pgrep -f '$OLD/update-coordinator\\.sh'"
    expect "$label-old-child-gone" bash -c "! kill -0 $OLD_CHILD"
    expect "$label-old-unit-moved-aside" test -f "$OLD/$UNIT.replaced"
    # realpath: on merged-/usr Debian 12 systemd names /usr/lib/systemd/system as /lib/...
    expect "$label-new-unit-is-the-one-loaded" test "$(realpath "$(systemctl show -p FragmentPath --value "$UNIT")")" = "$(realpath "$unit_path")"
    expect "$label-new-service-active" systemctl is-active --quiet "$UNIT"
    expect "$label-runs-the-new-binary" bash -c "systemctl show -p ExecStart --value $UNIT | grep -q 'path=$exec '"
    expect "$label-enabled" systemctl is-enabled --quiet "$UNIT"
    if wait_for 120 answered "$REQUEST"; then
        pass "$label-waiting-request-answered-by-the-new-service"
        cp "$SPOOL/status/$REQUEST.json" "$LOGS/$label-answer.json"
    else
        fail "$label-waiting-request-answered-by-the-new-service" "no final status for $REQUEST: $(cat "$SPOOL/status/$REQUEST.json" 2>&1)"
    fi
    expect "$label-spool-requests-layout" test "$(stat -c '%a %U %G' "$SPOOL/requests")" = "1730 root dunebugger-updates"
    expect "$label-spool-status-layout" test "$(stat -c '%a %U %G' "$SPOOL/status")" = "1730 root dunebugger-updates"
    expect "$label-said-taking-over" said "Taking over from the upstream coordinator"
    expect "$label-said-request-waiting" said "requests waiting in $SPOOL/requests: 1"
    expect "$label-script-replaced-stated" said "~ $OLD/component-scripts/core/update.sh: replaced by /opt/dunebugger/core/update.sh"
    expect "$label-script-same-stated" said "= $OLD/component-scripts/scheduler/health-check.sh: the same as /opt/dunebugger/scheduler/health-check.sh"
    expect "$label-script-without-replacement-stated" said "! $OLD/component-scripts/terminal/update.sh: nothing replaces it"
    expect "$label-old-scripts-kept" test -f "$OLD/component-scripts/core/update.sh"
    expect "$label-new-scripts-installed" test -x /opt/dunebugger/remote/health-check.sh
    expect "$label-check-ran" said "update-coordinator check"
}

deb=$(find "$DIST" -maxdepth 1 -name 'update-coordinator_*_amd64.deb' 2>/dev/null | head -n 1)
tarball=$(find "$DIST" -maxdepth 1 -name 'update-coordinator-*-amd64.tar.gz' 2>/dev/null | head -n 1)
if [[ -z $deb || -z $tarball ]]; then
    fail preflight "no amd64 .deb and .tar.gz in $DIST"
    exit 1
fi

echo "== the .deb, through install.sh --package, over the upstream coordinator"
clean_slate
upstream_host
expect upstream-running systemctl is-active --quiet "$UNIT"
OLD_CHILD=$(cat "$CHILD_PID")
installer deb --package "$deb"
expect_rc deb-install 0
expect_taken_over deb "/usr/lib/systemd/system/$UNIT" /usr/bin/update-coordinator
expect deb-installed bash -c "dpkg-query -W -f='\${db:Status-Status}' update-coordinator | grep -qx installed"
expect deb-postinst-ran-install-sh said "update-coordinator check"
expect deb-self-update-scripts-not-installed test ! -e /opt/dunebugger/coordinator
expect deb-no-old-left-running bash -c "! old_runs"
# install.sh refuses to install over the package (it would shadow it).
before=$(systemctl show -p InvocationID --value "$UNIT")
installer over-deb --binary /usr/bin/update-coordinator
expect_rc install-sh-over-the-deb-refused 1
expect install-sh-over-the-deb-says-why said "Debian package is installed"
# Installing the same package again changes nothing and restarts nothing.
installer deb-again --package "$deb"
expect_rc deb-again 0
expect deb-again-not-restarted test "$(systemctl show -p InvocationID --value "$UNIT")" = "$before"
# A local change to the config (a conffile) survives an upgrade of the package.
echo "# changed on this host" >>/etc/dunebugger/update-coordinator.toml
apt-get install -y --reinstall -o Dpkg::Options::=--force-confold "$deb" >"$LOGS/deb-reinstall.log" 2>&1
expect deb-reinstall-keeps-local-config grep -q "changed on this host" /etc/dunebugger/update-coordinator.toml
expect deb-reinstall-active systemctl is-active --quiet "$UNIT"
apt-get purge -y update-coordinator >"$LOGS/deb-purge.log" 2>&1
expect deb-purged bash -c "! dpkg-query -W -f='\${db:Status-Status}' update-coordinator 2>/dev/null | grep -qx installed"
expect deb-purge-unit-gone bash -c "! systemctl cat $UNIT"
expect deb-purge-service-stopped bash -c "! systemctl is-active --quiet $UNIT"
expect deb-purge-config-gone test ! -e /etc/dunebugger/update-coordinator.toml
expect deb-purge-spool-gone test ! -e "$SPOOL"
expect deb-purge-state-gone test ! -e /var/lib/update-coordinator
expect deb-purge-kept-group getent group dunebugger-updates
expect deb-purge-kept-scripts test -f /opt/dunebugger/remote/update.sh

echo "== the release tarball, through install.sh --package, over the upstream coordinator"
clean_slate
upstream_host
OLD_CHILD=$(cat "$CHILD_PID")
installer tarball --package "$tarball"
if [[ $RC == 3 ]]; then RC=0; fi # installed and running; `check` findings are printed, not failed here
expect_rc tarball-install 0
expect_taken_over tarball "/etc/systemd/system/$UNIT" /usr/local/bin/update-coordinator
expect tarball-no-old-left-running bash -c "! old_runs"

echo "== the .deb over the install made by install.sh (the tarball's)"
installer deb-over-install-sh --package "$deb"
expect_rc deb-over-install-sh 0
expect deb-over-install-sh-said-so said "Replacing the install made by install.sh"
expect deb-over-install-sh-unit-from-the-package test "$(realpath "$(systemctl show -p FragmentPath --value "$UNIT")")" = "$(realpath "/usr/lib/systemd/system/$UNIT")"
expect deb-over-install-sh-old-binary-gone test ! -e /usr/local/bin/update-coordinator
expect deb-over-install-sh-old-rules-gone test ! -e /usr/local/lib/tmpfiles.d/update-coordinator.conf
expect deb-over-install-sh-active systemctl is-active --quiet "$UNIT"
expect deb-over-install-sh-runs-usr-bin bash -c "[ \"\$(readlink /proc/\$(systemctl show -p MainPID --value $UNIT)/exe)\" = /usr/bin/update-coordinator ]"
apt-get purge -y update-coordinator >"$LOGS/deb-over-install-sh-purge.log" 2>&1
expect deb-over-install-sh-purged bash -c "! systemctl cat $UNIT"
clean_slate

echo "takeover: $failures failure(s); installer output in $LOGS"
[[ $failures -eq 0 ]]
