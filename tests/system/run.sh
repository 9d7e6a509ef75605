#!/usr/bin/env bash
# System tests: the whole product in a real Debian 12 + systemd 252 guest (the lab in
# ../shared/lab boots it under QEMU), the way users meet it: install.sh, systemd, journald,
# cgroups, a Docker container as the client. Prints a PASS/FAIL line per check and exits
# non-zero if any check failed, or if the lab could not run (said loudly: never a silent pass).
#
#   tests/system/run.sh            # builds the release binary and its amd64 packages, boots the
#                                  # guest, runs guest.sh
#
# LAB_DIR (default: the shared lab next to the checkout, else /work/shared/lab, else the copy in
# tests/system/lab) holds vm/build.sh and vm/run.sh; LAB_CACHE is where the guest image is
# cached. SYSTEM_TEST_OUT (default: a new temp dir) receives the guest's log, journal and
# console; on a failure their ends are printed too, so a CI log alone tells what broke.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/system/lab.sh
source "$repo/tests/system/lab.sh"
lab_find "SYSTEM TESTS" || exit 1

echo "=== building the release binary"
(cd "$repo" && cargo build --release --quiet)

echo "=== building the guest image (cached after the first time)"
lab_image "SYSTEM TESTS" || exit 1

in=$(mktemp -d) out=${SYSTEM_TEST_OUT:-$(mktemp -d)}
mkdir -p "$out"
trap 'rm -rf "$in"' EXIT
mkdir -p "$in/bin" "$in/repo"
# Where cargo put it: CARGO_TARGET_DIR (relative to the checkout) when set.
target=${CARGO_TARGET_DIR:-target}
[[ $target == /* ]] || target=$repo/$target
cp "$target/release/update-coordinator" "$in/bin/"
lab_stage_repo "$in/repo"
# The amd64 release packages of this very build, for tests/system/takeover.sh (.deb, tarball).
echo "=== the amd64 release packages of this build (packaging/release.sh)"
pkg=$(mktemp -d)
if ! CARGO_TARGET_DIR=$pkg bash "$repo/packaging/release.sh" --arch amd64 --no-setup \
    --binary "amd64=$target/release/update-coordinator" >"$pkg/release.log" 2>&1; then
    cat "$pkg/release.log"
    echo "SYSTEM TESTS NOT RUN: packaging/release.sh failed (above)" >&2
    exit 1
fi
mkdir -p "$in/dist"
cp "$pkg"/dist/* "$in/dist/"
rm -rf "$pkg"
# SYSTEM_TEST_HANDOFF_ROLLBACK=1 adds a rolled-back self-update hand-off (compose.sh).
printf 'export SYSTEM_TEST_HANDOFF_ROLLBACK=%q\nexec bash /lab/repo/tests/system/guest.sh\n' \
    "${SYSTEM_TEST_HANDOFF_ROLLBACK:-0}" >"$in/cmd.sh"

echo "=== booting the guest (software emulation: a few minutes)"
rc=0
bash "$lab/vm/run.sh" "$in" "$out" "${SYSTEM_TEST_TIMEOUT:-2400}" || rc=$?
if ((rc == 125)); then
    # The lab itself failed (the guest never ran the tests): an infrastructure hiccup of an
    # emulated boot on a busy host, not a test result. One more boot, then it counts.
    echo "=== the lab failed to boot the guest; booting once more (console: $out/console.log)"
    mv "$out/console.log" "$out/console.first-boot.log" 2>/dev/null || true
    rc=0
    bash "$lab/vm/run.sh" "$in" "$out" "${SYSTEM_TEST_TIMEOUT:-2400}" || rc=$?
fi

echo "=== results (guest output in $out)"
grep -E '^(PASS|FAIL|NOTE) ' "$out/log" 2>/dev/null || true
passed=$(grep -c '^PASS ' "$out/log" 2>/dev/null || true)
failed=$(grep -c '^FAIL ' "$out/log" 2>/dev/null || true)
case $rc in
    0) ;;
    124) echo "SYSTEM TESTS FAILED: the guest did not finish in time (see $out/console.log)" >&2 ;;
    125) echo "SYSTEM TESTS NOT RUN: the lab failed to boot the guest (see $out/console.log)" >&2 ;;
    *) echo "the guest test script exited with $rc" >&2 ;;
esac
echo "system tests: ${passed:-0} passed, ${failed:-0} failed"
if ((rc != 0)) || [[ ${failed:-0} != 0 ]] || [[ ${passed:-0} == 0 ]]; then
    echo "--- last lines of the guest log:"; tail -n 40 "$out/log" 2>/dev/null || true
    echo "--- the service's journal in the guest (last lines):"
    grep -E 'update-coordinator|dunebugger-update' "$out/journal" 2>/dev/null | tail -n 60 || true
    echo "--- the guest console (last lines):"; tail -n 30 "$out/console.log" 2>/dev/null || true
    exit 1
fi
