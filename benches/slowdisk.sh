#!/usr/bin/env bash
# The slow-flush disk figure of issue 19: the benchmark's in-place latency and burst figures,
# ours and the inotifywait loop side by side, with the spool and the state on a filesystem
# whose block device delays every write and every flush by a few milliseconds, the way a
# Raspberry Pi's SD card does. The host has no device-mapper, so this runs in the lab's
# Debian 12 guest (tests/system/lab): ext4 (default mount options, with its journal) on a
# device-mapper `delay` target over a loop device.
#
#   benches/slowdisk.sh                          # --quick --only=latency,burst, 0 ms then 5 ms
#   SLOWDISK_DELAYS="0 5 20" benches/slowdisk.sh # one table per delay (ms, writes and flushes)
#   SLOWDISK_WRITE_MS=1 benches/slowdisk.sh      # writes delayed 1 ms, flushes by the delay
#   benches/slowdisk.sh --only=latency           # other arguments go to the bench binary
#   UPDATE_COORDINATOR_BENCH_BIN=PATH benches/slowdisk.sh   # another build of the service
#
# On the host: builds the release binary (the bench's own build, target/coordinator-bench) and
# the bench executable, fetches inotify-tools (the guest image has jq but not inotifywait,
# and no network) with `apt-get download`, boots the guest once (tests/system/lab.sh, a
# throw-away copy of the cached image) and prints the tables the guest wrote. The guest side
# is benches/slowdisk_guest.sh. The 0 ms table is the same device without delays: the
# difference between the two is what slow flushes cost each subject. Times in the guest are
# under software emulation (QEMU TCG), several times slower than on the host: compare the
# columns within one table, not with BENCHMARKS.md's host figures. Takes about 40 minutes
# (two delays, on a loaded host): an on-demand command, not a CI step.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tests/system/lab.sh
source "$repo/tests/system/lab.sh"
lab_find "SLOW-DISK BENCHMARK" || exit 1

bench_args=("$@")
((${#bench_args[@]})) || bench_args=(--quick "--only=latency,burst")
target=${CARGO_TARGET_DIR:-target}
[[ $target == /* ]] || target=$repo/$target

if [[ -n ${UPDATE_COORDINATOR_BENCH_BIN:-} ]]; then
    binary=$UPDATE_COORDINATOR_BENCH_BIN
else
    echo "=== building the release binary (as the bench does: target/coordinator-bench)"
    (cd "$repo" && cargo build --release --quiet --bin update-coordinator --target-dir "$target/coordinator-bench")
    binary=$target/coordinator-bench/release/update-coordinator
fi

echo "=== building the bench executable"
bench_exe=$(cd "$repo" && cargo bench --bench coordinator --no-run 2>&1 |
    sed -n 's/^ *Executable benches\/coordinator.rs (\(.*\))$/\1/p' | tail -n 1)
[[ -x $bench_exe ]] || { echo "SLOW-DISK BENCHMARK NOT RUN: no bench executable found" >&2; exit 1; }

echo "=== building the guest image (cached after the first time)"
lab_image "SLOW-DISK BENCHMARK" || exit 1

in=$(mktemp -d) out=${SLOWDISK_OUT:-$(mktemp -d)}
mkdir -p "$out"
trap 'rm -rf "$in"' EXIT
mkdir -p "$in/bin" "$in/debs"
# apt-get download fetches as the _apt user when that user can write there (else it warns).
chmod 755 "$in"
chown _apt "$in/debs" 2>/dev/null || true
cp "$binary" "$in/bin/update-coordinator"
cp "$bench_exe" "$in/bin/coordinator-bench"
cp "$repo/benches/baseline/inotify-loop.sh" "$repo/benches/slowdisk_guest.sh" "$in/"
echo "=== inotify-tools for the guest (apt-get download)"
(cd "$in/debs" && apt-get download inotify-tools libinotifytools0 >/dev/null)
{
    printf 'export SLOWDISK_DELAYS=%q SLOWDISK_WRITE_MS=%q\n' "${SLOWDISK_DELAYS:-0 5}" "${SLOWDISK_WRITE_MS:-}"
    printf 'exec bash /lab/slowdisk_guest.sh'
    printf ' %q' "${bench_args[@]}"
    printf '\n'
} >"$in/cmd.sh"

echo "=== booting the guest (software emulation: the run takes a while)"
rc=0
bash "$lab/vm/run.sh" "$in" "$out" "${SLOWDISK_TIMEOUT:-3600}" || rc=$?
if ((rc == 125)); then
    echo "=== the lab failed to boot the guest; booting once more (console: $out/console.log)"
    mv "$out/console.log" "$out/console.first-boot.log" 2>/dev/null || true
    rc=0
    bash "$lab/vm/run.sh" "$in" "$out" "${SLOWDISK_TIMEOUT:-3600}" || rc=$?
fi

shopt -s nullglob
tables=("$out"/slowdisk-*.md)
for t in "${tables[@]}"; do cat "$t"; echo; done
if ((rc != 0)) || ((${#tables[@]} == 0)); then
    echo "--- last lines of the guest log ($out/log):"
    tail -n 40 "$out/log" 2>/dev/null || true
    echo "--- the guest console (last lines):"
    tail -n 20 "$out/console.log" 2>/dev/null || true
    echo "SLOW-DISK BENCHMARK FAILED (guest exit status $rc; output in $out)" >&2
    exit 1
fi
echo "slow-disk benchmark: ${#tables[@]} table(s); guest output in $out"
