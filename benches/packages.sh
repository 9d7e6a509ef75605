#!/usr/bin/env bash
# Binary size and idle RSS of each packaged binary (BENCHMARKS.md, "Per architecture").
#
#   benches/packages.sh [ARCH...]     (default: amd64 arm64 armhf; run packaging/release.sh,
#                                      and for arm64/armhf tests/packages.sh's qemu setup, first)
#
# For each .deb in $CARGO_TARGET_DIR/dist: the size of the packaged (stripped) binary, then the
# service started on a temporary spool with the demo's component scripts, 20 health requests
# answered one after another, 1 s of rest, and VmRSS of the service process. arm64 and armhf run
# under qemu-user (binfmt_misc), so their RSS is qemu's process: the emulated program plus
# qemu itself (its translated-code cache, its own libraries); it is an upper bound, not what
# the program takes on a Pi.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dist=${CARGO_TARGET_DIR:-$repo/target}/dist
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)
arches=("$@")
((${#arches[@]})) || arches=(amd64 arm64 armhf)
work=$(mktemp -d)
service=""
cleanup() {
    [[ -z $service ]] || kill "$service" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The submitting client: the amd64 package's build (only the service's architecture is under test).
dpkg-deb -x "$dist/update-coordinator_${version}_amd64.deb" "$work/host"
client=$work/host/usr/bin/update-coordinator

printf '| %-6s | %-16s | %-14s | %-22s | %s\n' arch "binary (bytes)" "binary (MiB)" "idle RSS (MiB)" "how it ran"
for arch in "${arches[@]}"; do
    deb=$dist/update-coordinator_${version}_$arch.deb
    [[ -f $deb ]] || { echo "no $deb: run packaging/release.sh first" >&2; exit 1; }
    dpkg-deb -x "$deb" "$work/$arch"
    bin=$work/$arch/usr/bin/update-coordinator
    size=$(stat -c %s "$bin")
    root=$work/run-$arch
    mkdir -p "$root/components"
    cp -r "$repo/examples/demo-components/app" "$root/components/app"
    cat >"$root/config.toml" <<EOF
[spool]
root = "spool"
group = ""
[state]
dir = "state"
[components.remote]
dir = "components/app"
EOF
    "$bin" run --config "$root/config.toml" >"$root/log" 2>&1 &
    service=$!
    for _ in $(seq 1 200); do
        grep -q "update coordinator ready" "$root/log" && break
        sleep 0.1
    done
    grep -q "update coordinator ready" "$root/log" || { cat "$root/log" >&2; exit 1; }
    for _ in $(seq 1 20); do
        "$client" submit --spool "$root/spool" --component remote --action health --wait >/dev/null 2>&1
    done
    sleep 1
    rss_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$service/status")
    kill "$service"
    wait "$service" 2>/dev/null || true
    service=""
    how=native
    [[ $arch == amd64 ]] || how="qemu-user ($(dpkg-deb -f "$deb" Architecture), emulated: qemu's RSS included)"
    printf '| %-6s | %-16s | %-14s | %-22s | %s\n' "$arch" "$size" "$(awk -v b="$size" 'BEGIN {printf "%.2f", b / 1048576}')" \
        "$(awk -v k="$rss_kib" 'BEGIN {printf "%.2f", k / 1024}')" "$how"
done
