#!/usr/bin/env bash
# Power-cut test (docs/durability.md's promises against a real power loss; scenario 7 of the
# system tests): the lab's Debian 12 guest runs the coordinator under a stream of requests, and
# the host cuts its power at random moments: QEMU is SIGKILLed, so the guest's page cache and
# everything in flight are lost, as in a real power cut. The same root disk boots again (the
# service must come back by itself and answer what was outstanding), the workload goes on, and
# after the last cut a final boot drains everything and checks the invariants of
# docs/durability.md: every accepted request has exactly one final status, no script ran twice,
# answers carry the scripts' true exit codes (or `interrupted` for scripts the cut stopped), no
# temp files are left.
#
#   tests/system/powercut.sh                  # 4 cuts at seeded random moments (seed printed)
#   POWERCUT_SEED=<n> tests/system/powercut.sh   # the same cut delays and guest workload again
#   POWERCUT_CUTS=<n>                         # number of power cuts (default 4)
#   POWERCUT_BINARY=<path>                    # test this binary instead of building one
#
# Timing under software emulation is not reproducible, so a replay cuts at the same delays
# after the same markers, not at the same instruction. Guest-side details: powercut_guest.sh
# (workload, snapshots, per-boot checks) and powercut_check.py (the invariants). Prints
# PASS/FAIL lines; exits non-zero naming every failed check, or saying POWER-CUT TEST NOT RUN
# when the lab cannot run. Evidence (consoles, logs, records, journals) stays in the work
# directory it prints.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/system/lab.sh
source "$repo/tests/system/lab.sh"

cuts=${POWERCUT_CUTS:-4}
seed=${POWERCUT_SEED:-$(((RANDOM << 15 | RANDOM) % 1000000))}
RANDOM=$seed
MARKER=UC-POWERCUT-RUNNING
# Per boot: how long the guest may take to print the marker (boot, install, first script) and
# to finish the last boot's checks. Generous: emulation beside other work is slow.
MARKER_TIMEOUT=${POWERCUT_MARKER_TIMEOUT:-420}
FINAL_TIMEOUT=${POWERCUT_FINAL_TIMEOUT:-600}
started=$SECONDS

not_run() {
    echo "POWER-CUT TEST NOT RUN: $*" >&2
    exit 1
}

echo "power-cut test seed: $seed (replay with POWERCUT_SEED=$seed), $cuts cuts"
lab_find "POWER-CUT TEST" || exit 1
command -v qemu-system-x86_64 >/dev/null || not_run "qemu-system-x86_64 is missing"

if [[ -n ${POWERCUT_BINARY:-} ]]; then
    binary=$POWERCUT_BINARY
else
    echo "=== building the release binary"
    if ! (cd "$repo" && cargo build --release --quiet); then
        echo "power-cut test FAILED: cargo build --release failed (see above)" >&2
        exit 1
    fi
    # Where cargo put it: CARGO_TARGET_DIR (relative to the checkout) when set.
    target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$repo/$target
    binary=$target/release/update-coordinator
fi

echo "=== building the guest image (cached after the first time)"
lab_image "POWER-CUT TEST" || exit 1
for f in root.img vmlinuz initrd.img; do
    [[ -f $LAB_CACHE/$f ]] || not_run "$LAB_CACHE/$f is missing"
done

work=$(mktemp -d /var/tmp/uc-powercut.XXXXXX)
echo "=== work directory: $work"
# One root disk for all boots: that is the point. Sparse: the 4 GB image holds under 1 GB.
cp --sparse=always "$LAB_CACHE/root.img" "$work/root.img"
stage=$work/stage
mkdir -p "$stage/bin" "$stage/repo"
cp "$binary" "$stage/bin/update-coordinator"
lab_stage_repo "$stage/repo"

qemu_pid=
# Never leave a guest running behind us (interrupted run, failed step).
trap 'if [[ -n $qemu_pid ]]; then kill -KILL "$qemu_pid" 2>/dev/null || true; fi' EXIT

# start_guest CYCLE GUEST_SEED: boots the shared root disk with a fresh lab disk whose cmd.sh
# runs powercut_guest.sh for this cycle. Sets qemu_pid; the console goes to cycle-N/console.log.
start_guest() {
    local cycle=$1 guest_seed=$2 dir=$work/cycle-$1
    mkdir -p "$dir"
    rm -f "$stage/cmd.sh"
    echo "exec bash /lab/repo/tests/system/powercut_guest.sh $cycle $cuts $guest_seed" >"$stage/cmd.sh"
    mke2fs -q -t ext4 -d "$stage" -L lab "$dir/lab.img" 1G >/dev/null
    # As the lab's vm/run.sh boots it (same kernel arguments, disks, no network).
    local accel=${LAB_ACCEL:-tcg,thread=multi} cpu=max
    [[ $accel == kvm* ]] && cpu=host
    qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -smp 2 -m 2048 -nographic -no-reboot \
        -kernel "$LAB_CACHE/vmlinuz" -initrd "$LAB_CACHE/initrd.img" \
        -append "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 apparmor=0 quiet panic=-1" \
        -drive file="$work/root.img",format=raw,if=virtio \
        -drive file="$dir/lab.img",format=raw,if=virtio \
        -nic none </dev/null >"$dir/console.log" 2>&1 &
    qemu_pid=$!
}

# guest_lines CYCLE: the guest's own lines from the console (they survive a cut).
guest_lines() {
    sed -n 's/^.*uc-powercut: //p' "$work/cycle-$1/console.log" | tr -d '\r'
}

# results CYCLE: the lab disk's /out (the guest's log and evidence) into cycle-N/out. A cut
# boot's lab disk is replayed first (e2fsck), since the guest could not unmount it.
results() {
    local dir=$work/cycle-$1
    e2fsck -fy "$dir/lab.img" >/dev/null 2>&1 || true
    debugfs -R "rdump /out $dir" "$dir/lab.img" >/dev/null 2>&1 || true
    rm -f "$dir/lab.img"
}

failures=()

# cut CYCLE: boots, waits for the marker (scripts are running), waits a seeded random delay,
# and pulls the plug.
cut() {
    local cycle=$1 guest_seed=$((RANDOM * 32768 + RANDOM)) delay_ms=$((RANDOM % 10000))
    echo "=== boot $cycle: workload, then power cut $cycle at marker + $((delay_ms / 1000)).$(printf %03d $((delay_ms % 1000))) s"
    start_guest "$cycle" "$guest_seed"
    local console=$work/cycle-$cycle/console.log end=$((SECONDS + MARKER_TIMEOUT)) t0=$SECONDS
    until grep -q "$MARKER" "$console" 2>/dev/null; do
        if ! kill -0 "$qemu_pid" 2>/dev/null; then
            wait "$qemu_pid" || true
            qemu_pid=
            if ! grep -q 'uc-powercut: ' "$console"; then
                tail -n 20 "$console"
                not_run "QEMU ended before the guest ran anything (the lab failed to boot it; console: $console)"
            fi
            guest_lines "$cycle"
            results "$cycle"
            failures+=("boot $cycle ended before its power cut (guest log: $work/cycle-$cycle/out/log)")
            return 1
        fi
        if ((SECONDS > end)); then
            guest_lines "$cycle"
            failures+=("boot $cycle: no marker within $MARKER_TIMEOUT s (console: $console)")
            return 1
        fi
        sleep 0.1
    done
    echo "    marker after $((SECONDS - t0)) s"
    sleep "$((delay_ms / 1000)).$(printf %03d $((delay_ms % 1000)))"
    kill -KILL "$qemu_pid"
    wait "$qemu_pid" 2>/dev/null || true
    qemu_pid=
    echo "    power cut"
    guest_lines "$cycle" | sed 's/^/    guest: /'
    results "$cycle"
}

# final: boots once more, lets the guest drain and check, and collects its report.
final() {
    local cycle=$((cuts + 1))
    echo "=== boot $cycle: drain and check"
    start_guest "$cycle" 0
    local end=$((SECONDS + FINAL_TIMEOUT))
    while kill -0 "$qemu_pid" 2>/dev/null; do
        if ((SECONDS > end)); then
            kill -KILL "$qemu_pid"
            failures+=("boot $cycle did not finish within $FINAL_TIMEOUT s")
            break
        fi
        sleep 1
    done
    wait "$qemu_pid" 2>/dev/null || true
    qemu_pid=
    results "$cycle"
}

boots_ok=1
for cycle in $(seq 1 "$cuts"); do
    cut "$cycle" || { boots_ok=0; break; }
done
if ((boots_ok)); then final; fi

# A clean shutdown after power cuts: the root file system must be consistent.
if ((boots_ok)); then
    if fsck_out=$(e2fsck -fn "$work/root.img" 2>&1); then
        echo "PASS root-filesystem-consistent"
    else
        echo "FAIL root-filesystem-consistent: $(echo "$fsck_out" | tail -n 5 | tr '\n' ' ')"
        failures+=("root-filesystem-consistent")
    fi
fi

log=$work/cycle-$((cuts + 1))/out/log
echo "=== results (guest output in $work/cycle-*/out, consoles in $work/cycle-*/console.log)"
if [[ -f $log ]]; then
    grep -E '^(PASS|FAIL|NOTE) ' "$log" || true
    while IFS= read -r line; do failures+=("${line#FAIL }"); done < <(grep '^FAIL ' "$log" || true)
    grep -q '^PASS ' "$log" || failures+=("the last boot reported no checks (see $log)")
elif ((boots_ok)); then
    failures+=("the last boot left no log (console: $work/cycle-$((cuts + 1))/console.log)")
fi

elapsed=$((SECONDS - started))
if ((${#failures[@]} == 0)); then
    echo "power-cut test PASSED: seed $seed, $cuts cuts, $((elapsed / 60)) min $((elapsed % 60)) s"
    rm -f "$work/root.img"
    exit 0
fi
echo "power-cut test FAILED (seed $seed, replay with POWERCUT_SEED=$seed; $((elapsed / 60)) min $((elapsed % 60)) s):"
for f in "${failures[@]}"; do echo "  - $f"; done
if [[ -f $log ]]; then echo "--- last lines of the guest log:"; tail -n 20 "$log"; fi
echo "evidence: $work (the root disk as the last boot left it: $work/root.img; re-check on the host:"
echo "  tar -C DIR -xf $work/cycle-$((cuts + 1))/out/final-state.tar && tests/system/powercut_check.py $work/cycle-$((cuts + 1))/out/uc-powercut /var/dunebugger/updates /var/lib/update-coordinator $cuts DIR)"
exit 1
