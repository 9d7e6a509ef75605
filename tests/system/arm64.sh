#!/usr/bin/env bash
# The arm64 .deb in an arm64 Debian 12 guest (qemu-system-aarch64, software emulation, a
# Cortex-A53 as on a Raspberry Pi 3): `apt install` it, it starts under systemd and answers a
# request (tests/system/arm64_guest.sh). Run packaging/release.sh first.
#
#   tests/system/arm64.sh
#
# Uses the lab copy in tests/system/lab (LAB_ARCH=arm64 is in that copy only) and its own image
# cache (LAB_CACHE_ARM64, default /var/tmp/update-coordinator-lab-arm64). Building the image
# runs debootstrap's second stage under qemu-user: by far the slowest part (measured here: 45
# min at load average 22 on 2 CPUs); a boot and the test then take about 2 minutes. Not in
# .ci/run for that reason; see README.md ("Building the packages").
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
lab=$repo/tests/system/lab
dist=${CARGO_TARGET_DIR:-$repo/target}/dist
deb=$(find "$dist" -maxdepth 1 -name 'update-coordinator_*_arm64.deb' | head -n 1)
[[ -n $deb ]] || { echo "ARM64 GUEST NOT RUN: no arm64 .deb in $dist (run packaging/release.sh)" >&2; exit 1; }
export LAB_ARCH=arm64 LAB_CACHE=${LAB_CACHE_ARM64:-/var/tmp/update-coordinator-lab-arm64}
echo "=== the arm64 guest image (cached after the first time)"
bash "$lab/vm/build.sh" "$LAB_CACHE" || { echo "ARM64 GUEST NOT RUN: the image could not be built" >&2; exit 1; }
in=$(mktemp -d) out=${ARM64_TEST_OUT:-$(mktemp -d)}
trap 'rm -rf "$in"' EXIT
mkdir -p "$in/dist"
cp "$deb" "$in/dist/"
cp "$repo/tests/system/arm64_guest.sh" "$in/"
echo 'exec bash /lab/arm64_guest.sh' >"$in/cmd.sh"
echo "=== booting the arm64 guest"
rc=0
bash "$lab/vm/run.sh" "$in" "$out" "${ARM64_TEST_TIMEOUT:-1800}" || rc=$?
grep -E '^(PASS|FAIL|NOTE) ' "$out/log" 2>/dev/null || true
if ((rc != 0)) || ! grep -q '^PASS ' "$out/log" 2>/dev/null || grep -q '^FAIL ' "$out/log"; then
    echo "ARM64 GUEST FAILED (rc $rc; output in $out)" >&2
    tail -n 30 "$out/console.log" 2>/dev/null || true
    exit 1
fi
echo "arm64 guest: passed (output in $out)"
