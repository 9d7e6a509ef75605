#!/usr/bin/env bash
# Power-cut test, guest side (the host side is powercut.sh). Runs as root in the lab guest at
# every boot of ONE root disk, which the host powers off hard (kills QEMU) in between:
#
#   powercut_guest.sh CYCLE CUTS SEED   (the lab disk's cmd.sh, once per boot)
#     cycle 1          installs the coordinator and the test components, then the workload
#     cycles 2..CUTS   after a power cut: the service is back; then the workload again
#     cycle CUTS+1     after the last cut: waits until everything outstanding is answered and
#                      checks the invariants (powercut_check.py)
#   powercut_guest.sh snapshot          (a unit ordered before the service, at every boot)
#   powercut_guest.sh ready             (a unit ordered after the service is ready, every boot)
#
# The workload submits a stream of requests the ways clients do and prints a marker on the
# serial console once scripts are running; the host then cuts the power after a random delay.
# Everything the checks need lives on the root disk under $P, written with fsync (the lab disk
# is new at every boot, and a power cut loses whatever was not synced).
# Prints "PASS name" / "FAIL name: why" / "NOTE ..." lines; exits non-zero if a check failed.
set -uo pipefail

P=/var/lib/uc-powercut        # the test's own durable records (root disk)
UNIT=dunebugger-update-coordinator
SPOOL=/var/dunebugger/updates
STATE=/var/lib/update-coordinator
COMPONENTS=/opt/uc-powercut
MARKER=UC-POWERCUT-RUNNING    # powercut.sh waits for this on the console
OUT=/lab/out

# say LINE: to the command's log and to the serial console, which survives a power cut (the
# lab disk's log of a cut boot may not).
say() {
    echo "$*"
    echo "uc-powercut: $*" >/dev/ttyS0 2>/dev/null || true
}

# append FILE LINE: a line that must survive a power cut (written, then fsynced).
append() {
    echo "$2" >>"$1" && sync "$1"
}

# result PASS|FAIL NAME [WHY]: a check made in a boot that may be cut short: on the console
# now, and kept in $P/results for the last boot's report.
result() {
    local line="$1 $2${3:+: $3}"
    echo "uc-powercut: $line" >/dev/ttyS0 2>/dev/null || true
    append "$P/results" "$line"
}

# ---------------------------------------------------------------------------------------------
# Boot 1: install the coordinator the way users do, and a test setup.

# The test components' scripts. Each records its start and end in the ledger, fsynced, so a
# second run of the same request would show; it works for a short random time (a power cut
# should find scripts running) and exits with the code its request names: an update's
# version is 1.<cycle>.<code>, a health check's id ends in -x<code>.
write_component() {
    local dir=$COMPONENTS/$1
    mkdir -p "$dir"
    chmod 755 "$COMPONENTS" "$dir"
    cat >"$dir/update.sh" <<'SH'
#!/bin/bash
ledger=/var/lib/uc-powercut/ledger
code=${1##*.}
echo "start update $REQUEST_ID" >>"$ledger" && sync "$ledger"
echo PHASE:working
sleep "$((RANDOM % 3)).$((RANDOM % 10))"
echo "end update $REQUEST_ID $code" >>"$ledger" && sync "$ledger"
exit "$code"
SH
    # Standalone, the code is the id's; as the health gate of an update, the version's (so a
    # failed update's rollback is followed by a failing health check: rollback_failed).
    cat >"$dir/health-check.sh" <<'SH'
#!/bin/bash
ledger=/var/lib/uc-powercut/ledger
code=${REQUEST_ID##*-x}
if [ -n "${VERSION:-}" ]; then code=${VERSION##*.}; fi
echo "start health $REQUEST_ID" >>"$ledger" && sync "$ledger"
sleep "0.$((RANDOM % 10))"
echo "end health $REQUEST_ID $code" >>"$ledger" && sync "$ledger"
exit "$code"
SH
    cat >"$dir/rollback.sh" <<'SH'
#!/bin/bash
ledger=/var/lib/uc-powercut/ledger
echo "start rollback $REQUEST_ID" >>"$ledger" && sync "$ledger"
sleep "0.$((RANDOM % 10))"
echo "end rollback $REQUEST_ID 0" >>"$ledger" && sync "$ledger"
exit 0
SH
    chmod 755 "$dir"/*.sh
}

# oneshot_unit NAME ORDER DESCRIPTION MODE: a unit that runs this script's MODE at boot, ORDER
# (Before or After) the coordinator's unit.
oneshot_unit() {
    cat >"/etc/systemd/system/$1.service" <<EOF
[Unit]
Description=Power-cut test: $3
$2=$UNIT.service

[Service]
Type=oneshot
ExecStart=/bin/bash $P/powercut_guest.sh $4

[Install]
WantedBy=multi-user.target
EOF
}

setup() {
    say "installing the coordinator"
    mkdir -p "$OUT" "$P/snap"
    if ! bash /lab/repo/install.sh --binary /lab/bin/update-coordinator >"$OUT/install.log" 2>&1; then
        result FAIL install "install.sh failed: $(tail -n 5 "$OUT/install.log" | tr '\n' ' ')"
        return 1
    fi
    # pca: a plain update (exit code = result); pcb: a health-gated update (update, health
    # check, rollback: three scripts under one monitor). No rate limits: the stream is fast.
    write_component pca
    write_component pcb
    cat >/etc/dunebugger/update-coordinator.toml <<'TOML'
[spool]
max_queued = 1000
[components.pca]
dir = "/opt/uc-powercut/pca"
auto_rollback = false
max_updates_per_hour = 0
[components.pcb]
dir = "/opt/uc-powercut/pcb"
max_updates_per_hour = 0
health_retries = 1
health_interval = 0
TOML
    : >"$P/ledger"
    : >"$P/submitted"
    : >"$P/writes"
    : >"$P/seen"
    : >"$P/results"
    # The state the power cut left, copied before the service touches it: the checks compare
    # each request's final answer with what its records said at that moment.
    cp "$0" "$P/powercut_guest.sh"
    cp "$(dirname "$0")"/{journal_view,powercut_ready}.py "$P/"
    oneshot_unit uc-powercut-snapshot Before \
        "copy the coordinator's spool and state as the power cut left them" snapshot
    # And the status files clients find once the service is ready again (Type=notify: READY
    # comes after it has read its records).
    oneshot_unit uc-powercut-ready After \
        "the status files clients read once the coordinator is ready" ready
    systemctl daemon-reload
    systemctl enable uc-powercut-snapshot.service uc-powercut-ready.service 2>/dev/null
    # The test components never use Docker, and the service is ordered after docker.service,
    # whose start costs half a minute of every emulated boot: off, for more cuts in less time.
    systemctl disable --now docker.service docker.socket containerd.service >/dev/null 2>&1 || true
    systemctl restart "$UNIT"
    sync
    if systemctl is-active --quiet "$UNIT"; then
        result PASS install
    else
        result FAIL install "the service is not active with the test configuration"
        return 1
    fi
}

# From the snapshot unit: copies spool and state into $P/snap/cut-<n>.tar (n counts the
# boots after the first, i.e. the power cuts), and marks the cut in the ledger and in the
# client's log ("cut <n>"): nothing of the cut boot runs any more and the service has not
# started, so every line above the mark happened before the cut, every line below after it.
# Must never fail the boot.
snapshot() {
    mkdir -p "$P/snap"
    local n
    n=$(($(find "$P/snap" -name 'cut-*.tar' | wc -l) + 1))
    tar -C / -cf "$P/snap/cut-$n.tar" "${SPOOL#/}" "${STATE#/}" 2>/dev/null || true
    # On a line of its own even after a line the cut tore (blank lines are skipped).
    append "$P/ledger" $'\n'"cut $n"
    append "$P/seen" $'\n'"cut $n"
    sync
    return 0
}

# From the ready unit, right after the service said READY (it has rebuilt the status files from
# its journal): the status files and progress records of every request the journal knows, as a
# polling client finds them (powercut_ready.py says what must hold). Written to
# $P/ready/cut-<n> ("checked", then one line per problem) for after_cut to judge; must never
# fail the boot.
ready() {
    local n out
    n=$(find "$P/snap" -name 'cut-*.tar' | wc -l)
    ((n > 0)) || return 0
    out=$(python3 "$P/powercut_ready.py" "$SPOOL" "$STATE" 2>&1) || out+="${out:+ }(powercut_ready.py failed)"
    mkdir -p "$P/ready"
    printf 'checked\n%s' "${out:+$out$'\n'}" >"$P/ready/cut-$n"
    sync "$P/ready/cut-$n"
    return 0
}

# ---------------------------------------------------------------------------------------------
# After a power cut: the service must be back by itself.

after_cut() {
    local cut=$1 unit_ok=0
    for _ in $(seq 1 120); do
        if systemctl is-active --quiet "$UNIT"; then unit_ok=1; break; fi
        sleep 1
    done
    if ((unit_ok)); then
        result PASS "service-active-after-cut-$cut"
    else
        result FAIL "service-active-after-cut-$cut" "$(systemctl is-active "$UNIT") ($(systemctl show -p Result --value "$UNIT"))"
    fi
    if journalctl -b -u "$UNIT" --no-pager | grep -q 'update coordinator ready'; then
        result PASS "service-ready-after-cut-$cut"
    else
        result FAIL "service-ready-after-cut-$cut" "no 'update coordinator ready' in this boot's journal"
    fi
    local report=$P/ready/cut-$cut
    for _ in $(seq 1 60); do [[ -s $report ]] && break; sleep 1; done
    if [[ ! -s $report ]]; then
        result FAIL "statuses-readable-once-ready-after-cut-$cut" "the ready unit left no $report"
    elif (($(wc -l <"$report") == 1)); then
        result PASS "statuses-readable-once-ready-after-cut-$cut"
    else
        result FAIL "statuses-readable-once-ready-after-cut-$cut" "the service is ready and carries on with these requests, but their status files or progress records are not right: $(tail -n +2 "$report" | tr '\n' ' ')"
    fi
    if [[ -s $P/snap/cut-$cut.tar ]]; then
        result PASS "snapshot-of-cut-$cut"
    else
        result FAIL "snapshot-of-cut-$cut" "the snapshot unit left no $P/snap/cut-$cut.tar"
    fi
}

# ---------------------------------------------------------------------------------------------
# The workload: a stream of requests, until the power goes.

# Records which requests the coordinator has answered how, as a client would see it: the first
# status seen for each id (its phase from the progress record status/<id>.progress.json, or
# "final"), every final answer seen (status/<id>.json), and any in-progress record found in a
# status file ("inprog": the default layout never writes one there). A request seen in
# progress was durably accepted (the queued record is written after the run record), so it
# must end with its run's answer; a final answer seen must never change.
start_watcher() {
    python3 - "$P" "$SPOOL/status" <<'PY' &
import json, os, sys, time
p, status_dir = sys.argv[1], sys.argv[2]
seen, final, inprog = set(), set(), set()
out = open(os.path.join(p, "seen"), "a")
def record(line):
    out.write(line + "\n"); out.flush(); os.fsync(out.fileno())
def load(name):
    try:
        with open(os.path.join(status_dir, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
while True:
    with open(os.path.join(p, "submitted")) as f:
        ids = [line.split()[0] for line in f if line.strip()]
    for i in ids:
        if i in final:
            continue
        s = load(i + ".json")
        if s is not None and s.get("message") == "in_progress":
            if i not in inprog:
                inprog.add(i)
                record(f"inprog {i} {s.get('phase', '?')}")
        elif s is None:
            s = load(i + ".progress.json")
            if s is None or s.get("message") != "in_progress":
                continue
        done = s.get("message") != "in_progress"
        if i not in seen:
            seen.add(i)
            record(f"seen {i} {'final' if done else s.get('phase', '?')}")
        if done:
            final.add(i)
            record(f"fin {i} {s.get('code') or '-'} {s.get('exit_code', '-')} {s.get('success')}")
    time.sleep(0.3)
PY
}

# Prints the marker once a script has started in this boot (the ledger grew).
start_marker() {
    local before=$1
    (
        for _ in $(seq 1 600); do
            if (($(wc -l <"$P/ledger") > before)); then
                say "$MARKER cycle=$cycle"
                exit 0
            fi
            sleep 0.2
        done
        result FAIL "scripts-run-in-cycle-$cycle" "no script started within 120 s"
        say "$MARKER cycle=$cycle (no script started)"
    ) &
}

# submit_one N: request number N of this cycle, of a random kind. The submitted list gets the request before
# its file exists (fsynced), so a request lost with the power is still known to the checks.
submit_one() {
    local n=$1 code=$((RANDOM % 4)) kind=$((RANDOM % 20)) component=pca action version id json how
    if ((RANDOM % 2)); then component=pcb; fi
    if ((kind < 4)); then action=health version=-; else action=update version=1.$cycle.$code; fi
    id=c$cycle-$n-$component-$action-x$code
    json="{\"request_id\": \"$id\", \"component\": \"$component\", \"action\": \"$action\""
    [[ $action == update ]] && json+=", \"version\": \"$version\""
    json+="}"
    if ((kind >= 16 && kind < 18)) && [[ $action == update ]]; then
        # The coordinator's own client: temp file + rename; the id is only known afterwards
        # (a request whose line did not make it is checked from its status alone).
        id=$(update-coordinator submit --component "$component" --action update --version "$version" | awk '{print $3}')
        [[ -n $id ]] && append "$P/submitted" "$id $component $action $version $code submit $cycle"
        return
    fi
    case $kind in
        18 | 19) how=slow ;;
        1[0-5]) how=client ;;
        *) how=inplace ;;
    esac
    append "$P/submitted" "$id $component $action $version $code $how $cycle"
    local file=$SPOOL/requests/$id.json
    case $how in
        inplace) # in place, as root, as the existing container client writes
            printf '%s\n' "$json" >"$file" ;;
        client) # in place, as a container's unprivileged user in the spool group
            printf '%s\n' "$json" | setpriv --reuid=1000 --regid=1000 --groups="$gid" sh -c "cat >'$file'" ;;
        slow) # in place, stalling half-way with the first half already on disk (the page cache
            # was flushed): a power cut now leaves a half-written request
            local fd
            exec {fd}>"$file"
            printf '%s' "${json:0:20}" >&"$fd"
            sync "$file"
            append "$P/writes" "half $id"
            sleep 3
            printf '%s\n' "${json:20}" >&"$fd"
            exec {fd}>&-
            append "$P/writes" "whole $id"
            ;;
    esac
}

workload() {
    local count
    gid=$(getent group dunebugger-updates | cut -d: -f3)
    start_watcher
    start_marker "$(wc -l <"$P/ledger")"
    count=$((8 + RANDOM % 8))
    say "cycle $cycle: submitting $count requests"
    for n in $(seq 1 "$count"); do
        submit_one "$n"
        sleep "0.$((RANDOM % 10))"
    done
    say "cycle $cycle: all submitted; waiting for the power cut"
    # The host cuts within seconds of the marker; still running after this means it did not.
    sleep 300
    say "cycle $cycle: the power was never cut"
    return 1
}

# ---------------------------------------------------------------------------------------------
# The last boot: let the service finish, then check.

# How many things are still to be done: request files, requests the journal has not finished,
# runs still in progress (runs/<id>/, exits/<id>.json), progress records, in-progress statuses.
outstanding() {
    local pending=0 f
    for f in "$SPOOL"/requests/*.json; do [[ -e $f ]] && pending=$((pending + 1)); done
    pending=$((pending + $(python3 "$P/journal_view.py" "$STATE/journal.jsonl" ids | grep -vc '^[^ ]* finished ')))
    for f in "$STATE"/exits/*.json "$STATE"/runs/*/; do [[ -e $f ]] && pending=$((pending + 1)); done
    for f in "$SPOOL"/status/*.json; do
        [[ $f == */inventory.json ]] && continue
        if [[ $f == *.progress.json ]]; then
            pending=$((pending + 1))
        elif grep -q '"message": "in_progress"' "$f" 2>/dev/null; then
            pending=$((pending + 1))
        fi
    done
    echo "$pending"
}

final_check() {
    local cuts=$1 end=$((SECONDS + 300)) left
    until left=$(outstanding) && ((left == 0)); do
        if ((SECONDS > end)); then
            say "still $left outstanding after 300 s"
            break
        fi
        sleep 1
    done
    mkdir -p "$OUT"
    # Every boot's checks (the cut ones wrote them to the root disk), then the invariants.
    cat "$P/results"
    if [[ $(systemctl show -p StatusText --value "$UNIT") == idle ]]; then
        echo "PASS service-idle-at-the-end"
    else
        echo "FAIL service-idle-at-the-end: $(systemctl show -p StatusText --value "$UNIT")"
    fi
    python3 /lab/repo/tests/system/powercut_check.py "$P" "$SPOOL" "$STATE" "$cuts"
    local rc=$?
    # Evidence for a failure: the records, the snapshots, every boot's journal of the service.
    cp -r "$P" "$OUT/uc-powercut"
    tar -C / -cf "$OUT/final-state.tar" "${SPOOL#/}" "${STATE#/}" 2>/dev/null
    journalctl -u "$UNIT" -o short-precise --no-pager >"$OUT/coordinator-journal" 2>&1
    journalctl --list-boots --no-pager >"$OUT/boots" 2>&1
    ! grep -q '^FAIL ' "$P/results" && ((rc == 0))
}

main() {
    case ${1:-} in
        snapshot) snapshot; return ;;
        ready) ready; return ;;
    esac
    cycle=$1
    local cuts=$2 seed=$3
    RANDOM=$seed
    say "cycle $cycle of $((cuts + 1)), seed $seed, boot $(cat /proc/sys/kernel/random/boot_id)"
    if ((cycle == 1)); then
        setup || return 1
    else
        after_cut $((cycle - 1))
    fi
    if ((cycle <= cuts)); then
        workload
    else
        final_check "$cuts"
    fi
}

main "$@"
