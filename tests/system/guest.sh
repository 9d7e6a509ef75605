#!/usr/bin/env bash
# shellcheck disable=SC2016  # the test scripts are single-quoted on purpose: they expand in the guest
# Runs inside the lab guest (Debian 12, systemd 252, cgroup v2, Docker), as root, once.
# Prints one "PASS name" or "FAIL name: why" line per check; exits non-zero if any failed.
# The repository is at /lab/repo, the release binary at /lab/bin/update-coordinator, its amd64
# release packages in /lab/dist.
set -uo pipefail

R=/lab/repo
BIN=/lab/bin/update-coordinator
OUT=/lab/out
UNIT=dunebugger-update-coordinator
SPOOL=/var/dunebugger/updates
mkdir -p "$OUT"
failures=0

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; failures=$((failures + 1)); }
# check NAME COMMAND...: PASS if the command succeeds, else FAIL with its output.
check() {
    local name=$1 output
    shift
    if output=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(echo "$output" | tail -n 5 | tr '\n' ' ')"; fi
}
# Waits up to $2 seconds for the command in $3... to succeed.
wait_for() {
    local what=$1 limit=$2
    shift 2
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS > end)); then echo "timed out waiting for $what" >&2; return 1; fi
        sleep 0.5
    done
}
# status/<id>.json holds only the answer (the default layout); progress is in
# status/<id>.progress.json beside it until then. final() also notes any in-progress record it
# finds in a status file (checked at the end: status-files-only-ever-final).
status_of() { cat "$SPOOL/status/$1.json" 2>/dev/null; }
final() {
    local s
    s=$(status_of "$1") || return 1
    if jq -e '.message == "in_progress"' >/dev/null 2>&1 <<<"$s"; then
        echo "$1 $(jq -r .phase <<<"$s")" >>"$OUT/in-progress-status-files"
        return 1
    fi
    jq -e . >/dev/null 2>&1 <<<"$s"
}
field() { status_of "$1" | jq -r "$2"; }
progress_field() { jq -r "$2" "$SPOOL/status/$1.progress.json" 2>/dev/null; }
# The checks run in `bash -c`: they need these too.
export SPOOL OUT
export -f status_of final field progress_field
# Scripts run with a private /tmp (PrivateTmp=yes): gates and pid files live here instead.
RUN=/opt/uc-test/run
mkdir -p "$RUN"
submit() { update-coordinator submit --component "$1" --action "$2" ${3:+--version "$3"} | awk '{print $3}'; }

# A test component: dir /opt/uc-test/NAME, scripts from heredocs, listed in the test config.
component() {
    local name=$1 dir=/opt/uc-test/$1
    mkdir -p "$dir"
    chmod 755 /opt/uc-test "$dir"
    for action in update rollback health-check; do
        printf '#!/bin/sh\nexit 0\n' >"$dir/$action.sh"
    done
    chmod 755 "$dir"/*.sh
}
script() { printf '#!/bin/sh\n%s\n' "$3" >"/opt/uc-test/$1/$2.sh"; chmod 755 "/opt/uc-test/$1/$2.sh"; }

echo "== 1. install.sh on a fresh system"
check install "bash" "$R/install.sh" --binary "$BIN"
check unit-active systemctl is-active --quiet "$UNIT"
check ready-status-line bash -c "systemctl show -p StatusText --value $UNIT | grep -qx idle"
check requests-permissions bash -c "[ \"\$(stat -c '%a %U %G' $SPOOL/requests)\" = '1730 root dunebugger-updates' ]"
check status-permissions bash -c "[ \"\$(stat -c '%a %U %G' $SPOOL/status)\" = '1730 root dunebugger-updates' ]"
check state-directory bash -c "[ \"\$(stat -c '%a %U' /var/lib/update-coordinator)\" = '700 root' ]"
check check-clean update-coordinator check
pid_before=$(systemctl show -p MainPID --value "$UNIT")
check reinstall-is-a-noop bash -c "bash $R/install.sh --binary $BIN >/dev/null && [ \"\$(systemctl show -p MainPID --value $UNIT)\" = $pid_before ]"

echo "== test configuration"
for c in demo hog forker spinner daemonizer; do component "$c"; done
script demo update 'echo PHASE:downloading; sleep 2; echo PROGRESS:50; echo PHASE:installing; sleep 2; while [ ! -e /opt/uc-test/run/gate-"$REQUEST_ID" ] && [ ! -e /opt/uc-test/run/gate-all ]; do sleep 0.2; done; echo "installed $1"'
script demo health-check 'echo healthy'
script hog update 'python3 -c "b = bytearray(300 * 1024 * 1024); print(len(b))"'
script forker update 'i=0; while [ $i -lt 100 ]; do sleep 5 & i=$((i + 1)); done; wait'
script spinner update 'end=$(( $(date +%s) + 5 )); while [ "$(date +%s)" -lt "$end" ]; do :; done; echo spun'
script daemonizer update 'setsid sh -c "echo \$\$ > /opt/uc-test/run/daemon.pid; trap \"\" TERM; while :; do sleep 1; done" & sleep 300'
script demo rollback 'echo PHASE:restoring; echo restored'
cat >/etc/dunebugger/update-coordinator.toml <<'TOML'
[components.demo]
dir = "/opt/uc-test/demo"
[components.hog]
dir = "/opt/uc-test/hog"
limits = { memory_max = "64M" }
[components.forker]
dir = "/opt/uc-test/forker"
limits = { tasks_max = 20 }
[components.spinner]
dir = "/opt/uc-test/spinner"
limits = { cpu_quota = 20 }
[components.daemonizer]
dir = "/opt/uc-test/daemonizer"
timeouts = { update = 3 }
[components.coordinator]
dir = "/opt/dunebugger/coordinator"
TOML
systemctl restart "$UNIT"
check restart-with-test-config systemctl is-active --quiet "$UNIT"

echo "== 2. a real container as the client"
gid=$(getent group dunebugger-updates | cut -d: -f3)
rootfs=$(mktemp -d)
mkdir -p "$rootfs/bin"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh cat sleep rm grep sed printf date mkdir echo; do ln -s busybox "$rootfs/bin/$applet"; done
cp "$R/tests/system/client.sh" "$rootfs/client.sh"
check import-client-image bash -c "tar -C $rootfs -c . | docker import - uc-client:1"
client() { docker run --rm --user 1000:1000 --group-add "$gid" -v "$SPOOL:$SPOOL" -v "$OUT:/out" uc-client:1 /bin/sh /client.sh "$@"; }
out=$(client demo health) && id=$(echo "$out" | sed -n 's/^id //p')
check container-health bash -c "echo '$out' | grep -q '\"success\": true'"
check container-deleted-its-status bash -c "[ ! -e $SPOOL/status/$id.json ] && [ ! -e $SPOOL/status/$id.progress.json ]"
touch "$RUN/gate-all"
out=$(client demo update 1.4.2) && id=$(echo "$out" | sed -n 's/^id //p')
echo "$out" >"$OUT/container-update.log"
# Phases from the progress record beside the status file, which only ever held the answer.
check container-update-phases bash -c "echo '$out' | grep -q 'phase downloading' && echo '$out' | grep -q 'phase installing'"
check container-status-file-only-final bash -c "! echo '$out' | grep -q 'in-progress status file'"
check container-update-success bash -c "echo '$out' | grep -q '\"success\": true'"
check container-progress-record-removed bash -c "[ ! -e $SPOOL/status/$id.progress.json ]"
rm -f "$RUN/gate-all"
out=$(client nosuch health)
check container-invalid-request bash -c "echo '$out' | grep -q '\"code\": \"unknown_component\"'"
script demo health-check 'echo "container restarting" >&2; exit 1'
out=$(client demo health)
check container-failing-health bash -c "echo '$out' | grep -q '\"success\": false' && echo '$out' | grep -q '\"code\": \"script_failed\"'"
out=$(client demo rollback)
check container-rollback bash -c "echo '$out' | grep -q '\"success\": true'"
script demo health-check 'echo healthy'

if [ -f "$R/tests/system/compose.sh" ]; then
    echo "== 3. the compose component scripts: update between local image tags, roll back an unhealthy one"
    bash "$R/tests/system/compose.sh" || failures=$((failures + 1))
fi

echo "== 4. the journal tells one request's story"
id=$(submit demo update 2.0.0)
# While it runs: the progress record says where it is; no status file yet.
wait_for "installing" 60 bash -c "[ \"\$(progress_field $id .phase)\" = installing ]"
check progress-beside-the-status-file bash -c "[ \"\$(progress_field $id .message)\" = in_progress ] && [ \"\$(progress_field $id .success)\" = null ] && [ ! -e $SPOOL/status/$id.json ]"
touch "$RUN/gate-$id"
wait_for "final status" 60 final "$id"
check answer-replaced-the-progress-record bash -c "[ \"\$(field $id .success)\" = true ] && [ ! -e $SPOOL/status/$id.progress.json ]"
journalctl -u "$UNIT" "REQUEST_ID=$id" -o json >"$OUT/journal-$id.json"
check journal-has-the-request bash -c "[ \$(wc -l < $OUT/journal-$id.json) -ge 4 ]"
check journal-fields bash -c "jq -s -e 'all(.[]; .COMPONENT == \"demo\" and .ACTION == \"update\")' $OUT/journal-$id.json"
check journal-phase-field bash -c "jq -s -e 'any(.[]; .PHASE == \"installing\")' $OUT/journal-$id.json"
check journal-outcome-field bash -c "jq -s -e 'any(.[]; .OUTCOME == \"succeeded\")' $OUT/journal-$id.json"
check journal-script-output bash -c "jq -s -e 'any(.[]; .MESSAGE == \"installed 2.0.0\" and .STREAM == \"stdout\")' $OUT/journal-$id.json"

echo "== 5. cgroup limits, enforced and reported"
id=$(submit hog update 1.0.0); wait_for "hog final" 120 final "$id"
check oom-killed-at-memory-max bash -c "[ \"\$(field $id .oom_killed)\" = true ] && [ \"\$(field $id .success)\" = false ]"
check memory-limit-reported bash -c "[ \"\$(field $id .limits.enforced.memory_max)\" = 67108864 ] && [ \"\$(field $id .limits.mechanism)\" = systemd-scope ]"
check memory-peak-near-the-limit bash -c "p=\$(field $id .memory_peak_bytes); [ \$p -gt 50000000 ] && [ \$p -le 67108864 ]"
status_of "$id" >"$OUT/hog.json"
id=$(submit forker update 1.0.0); wait_for "forker final" 120 final "$id"
check fork-loop-stops-at-tasks-max bash -c "[ \"\$(field $id .success)\" = false ] && field $id .error | grep -qi 'fork\\|resource'"
status_of "$id" >"$OUT/forker.json"
id=$(submit spinner update 1.0.0); wait_for "spinner final" 120 final "$id"
check cpu-held-to-quota bash -c "c=\$(field $id .cpu_time_ms); d=\$(field $id .duration_ms); [ \$c -lt \$((d * 35 / 100)) ] && [ \$c -gt \$((d * 5 / 100)) ]"
status_of "$id" >"$OUT/spinner.json"
id=$(submit daemonizer update 1.0.0); wait_for "daemonizer final" 120 final "$id"
check timeout-reported bash -c "[ \"\$(field $id .timed_out)\" = true ]"
check daemonized-grandchild-gone bash -c "[ -s $RUN/daemon.pid ] && ! kill -0 \$(cat $RUN/daemon.pid) 2>/dev/null"
check no-run-scope-left bash -c "[ -z \"\$(systemctl list-units --no-legend 'uc-run-*')\" ]"

echo "== 6. systemctl kill -s KILL mid-update; the watchdog"
id=$(submit demo update 3.0.0)
wait_for "installing" 60 bash -c "[ \"\$(progress_field $id .phase)\" = installing ]"
restarts=$(systemctl show -p NRestarts --value "$UNIT")
systemctl kill -s KILL "$UNIT"
wait_for "restart" 60 bash -c "[ \$(systemctl show -p NRestarts --value $UNIT) -gt $restarts ] && systemctl is-active --quiet $UNIT"
touch "$RUN/gate-$id"
wait_for "final after kill" 60 final "$id"
check killed-service-restarted-and-update-finished bash -c "[ \"\$(field $id .success)\" = true ] && field $id .output | grep -q 'installed 3.0.0'"
mkdir -p "/etc/systemd/system/$UNIT.service.d"
printf '[Service]\nWatchdogSec=3s\n' >"/etc/systemd/system/$UNIT.service.d/watchdog.conf"
systemctl daemon-reload && systemctl restart "$UNIT"
restarts=$(systemctl show -p NRestarts --value "$UNIT")
kill -STOP "$(systemctl show -p MainPID --value "$UNIT")"
check watchdog-restarts-a-hung-service wait_for "watchdog restart" 60 bash -c "[ \$(systemctl show -p NRestarts --value $UNIT) -gt $restarts ] && systemctl is-active --quiet $UNIT"
rm -r "/etc/systemd/system/$UNIT.service.d"; systemctl daemon-reload; systemctl restart "$UNIT"

echo "== 8. the coordinator updates itself through a request"
version=$("$BIN" --version | awk '{print $2}')
mkdir -p "/opt/dunebugger/coordinator/releases/$version"
cp "$BIN" "/opt/dunebugger/coordinator/releases/$version/update-coordinator"
pid_before=$(systemctl show -p MainPID --value "$UNIT")
id=$(submit coordinator update "$version")
wait_for "self-update final" 120 final "$id"
check self-update-succeeded bash -c "[ \"\$(field $id .success)\" = true ]"
check self-update-restarted-the-service bash -c "[ \"\$(systemctl show -p MainPID --value $UNIT)\" != $pid_before ]"
check self-update-answered-by-the-new-process bash -c "journalctl -u $UNIT REQUEST_ID=$id _PID=\$(systemctl show -p MainPID --value $UNIT) | grep -q 'request finished'"

echo "== the status files held only answers"
# Every final() above polled status/<id>.json; in the default layout it never held progress.
check status-files-only-ever-final bash -c "[ ! -s $OUT/in-progress-status-files ] || { cat $OUT/in-progress-status-files; false; }"
check no-progress-records-left bash -c "[ -d $SPOOL/status ] && ! ls $SPOOL/status | grep '\.progress\.json\$'"

if [ -f "$R/tests/system/install_flow.sh" ]; then
    echo "== 1b. upgrade, uninstall, purge"
    bash "$R/tests/system/install_flow.sh" || failures=$((failures + 1))
fi

if [ -f "$R/tests/system/takeover.sh" ]; then
    echo "== 9. the upstream coordinator taken over by the .deb and by the release tarball"
    bash "$R/tests/system/takeover.sh" || failures=$((failures + 1))
fi

echo "== done: $failures failure(s)"
[ "$failures" -eq 0 ]
