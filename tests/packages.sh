#!/usr/bin/env bash
# The release packages on their own architectures (CI runs this after packaging/release.sh).
# For each .deb in $CARGO_TARGET_DIR/dist (default target/dist), the packaged binary must be
# built for the package's architecture (read from its ELF header, as install.sh reads it), be
# the same build as the tarball's, and answer requests: the integration suite runs against it
# (tests/integration/support: UPDATE_COORDINATOR_BIN). amd64 runs natively; arm64 and armhf under qemu-user
# through binfmt_misc, with the CPU of the oldest board each package is for (QEMU_CPU:
# cortex-a53 = Raspberry Pi 3, cortex-a7 = Raspberry Pi 2), so an instruction those boards lack
# fails here. The exclusions below name each test qemu-user cannot run, and why.
#
#   tests/packages.sh [ARCH...]        (default: amd64 arm64 armhf)
#
# Needs root for the qemu setup (apt-get, binfmt_misc). Exits non-zero if any check failed.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dist=${CARGO_TARGET_DIR:-$repo/target}/dist
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)
# shellcheck source=install.sh
source "$repo/install.sh"
arches=("$@")
((${#arches[@]})) || arches=(amd64 arm64 armhf)

# Modules of the integration suite (tests/integration/main.rs), all but those whose subject is
# not the coordinator binary: install.sh, packaging/ and the component scripts (run by /bin/sh on
# the host whatever the binary's architecture).
SUITE=(cli lifecycle hostile service durability schema waiting self_update crash example_clients signing_example
    client_generations isolation fairshare quarantine signing_keys)
# armhf: all but service (sd_notify, watchdog, journald fallback) and crash (random
# SIGKILLs): together half the emulated time (460 s and 120-410 s under qemu here), and
# nothing in them depends on the word or time_t size that sets armhf (32-bit) apart from
# arm64, where they do run. The armhf set keeps every test of timestamps, records and sizes.
SUITE_ARMHF=(cli lifecycle hostile durability schema waiting self_update example_clients signing_example
    client_generations isolation fairshare quarantine signing_keys)
# amd64: `cargo test` has already run the whole suite on this architecture (a debug build of the
# same code); the packaged release build answers the lifecycle and command-line tests.
SUITE_AMD64=(cli lifecycle)

# What qemu-user cannot do, found by running the whole suite under it (both architectures):
EXCLUDED_UNDER_QEMU=(
    # qemu-user (7.2) does not pass prctl(PR_SET_CHILD_SUBREAPER) on to the kernel (strace of
    # the host shows the monitor's PR_SET_NAME but no PR_SET_CHILD_SUBREAPER), so a script's
    # setsid daemon is reparented to init instead of the monitor, which cannot sweep it.
    a_daemon_left_behind_by_a_successful_script_is_swept
    without_cgroups_a_timeout_still_kills_a_setsid_daemon_and_the_status_says_no_limit_was_enforced
    # glibc's posix_spawn reports a failed exec through memory shared by
    # clone(CLONE_VM|CLONE_VFORK); qemu-user runs that clone as a plain fork, so the report is
    # lost and a missing script reads as exit 127 instead of script_missing.
    real_start_failures_and_interruptions_match_the_status_schema
    # Times the service's own watchdog period against the test's clock: under emulation the
    # service is slow to start, more pings than the test counts arrive before its clock starts,
    # and the elapsed time reads as zero.
    the_watchdog_is_pinged_at_half_its_timeout_when_systemd_asks_for_it
    # The example client waits 1.5 s once a scheduled request's time has come; under qemu-arm
    # starting the per-run monitor (a new emulated process) alone takes over a second, so the
    # answer comes 1.7 s after that time (measured: armhf, QEMU_CPU=cortex-a7).
    python_client_waits_out_a_scheduled_request_beyond_its_timeout
)

failures=0
fail() {
    echo "FAIL $*" >&2
    failures=$((failures + 1))
}

setup_qemu() {
    local need=()
    [[ -x /usr/libexec/qemu-binfmt/aarch64-binfmt-P ]] || need+=(qemu-user-binfmt)
    # The foreign C libraries at the paths the binaries name (/lib/ld-linux-aarch64.so.1, ...):
    # QEMU_LD_PREFIX would not reach the scripts, which run with a clean environment, and the
    # self-update scripts run the staged build.
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    dpkg --print-foreign-architectures | grep -qx armhf || dpkg --add-architecture armhf
    [[ -e /lib/ld-linux-aarch64.so.1 ]] || need+=(libc6:arm64)
    [[ -e /lib/ld-linux-armhf.so.3 ]] || need+=(libc6:armhf)
    if ((${#need[@]})); then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    # The service re-executes itself (/proc/self/exe) for every run: the kernel must hand
    # foreign ELF files to qemu itself.
    /lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf /usr/lib/binfmt.d/qemu-arm.conf
    grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 && grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-arm
}

expected_elf() {
    case $1 in
    amd64) echo x86_64 ;;
    arm64) echo aarch64 ;;
    armhf) echo armv7 ;;
    esac
}
qemu_cpu() {
    case $1 in
    arm64) echo cortex-a53 ;;
    armhf) echo cortex-a7 ;;
    esac
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
logs=${CARGO_TARGET_DIR:-$repo/target}/packages
mkdir -p "$logs"
qemu_ready=0
for arch in "${arches[@]}"; do
    echo "=== $arch"
    start=$SECONDS
    deb=$dist/update-coordinator_${version}_$arch.deb
    tarball=$dist/update-coordinator-$version-$arch.tar.gz
    if [[ ! -f $deb || ! -f $tarball ]]; then
        fail "$arch: no package in $dist (run packaging/release.sh first)"
        continue
    fi
    [[ $(dpkg-deb -f "$deb" Architecture) == "$arch" ]] || fail "$arch: the .deb says Architecture $(dpkg-deb -f "$deb" Architecture)"
    dpkg-deb -x "$deb" "$work/$arch"
    tar -xzf "$tarball" -C "$work/$arch"
    bin=$work/$arch/usr/bin/update-coordinator
    found=$(elf_arch "$bin" || echo "not an ELF executable")
    if [[ $found != "$(expected_elf "$arch")" ]]; then
        fail "$arch: the packaged binary is built for $found, not $(expected_elf "$arch")"
        continue
    fi
    cmp -s "$bin" "$work/$arch/update-coordinator-$version-$arch/update-coordinator" ||
        fail "$arch: the .deb and the tarball hold different builds"
    skip=()
    if [[ $arch != amd64 ]]; then
        if ((!qemu_ready)); then
            setup_qemu || { fail "qemu-user could not be set up through binfmt_misc"; break; }
            qemu_ready=1
        fi
        export QEMU_CPU
        QEMU_CPU=$(qemu_cpu "$arch")
        for name in "${EXCLUDED_UNDER_QEMU[@]}"; do skip+=(--skip "$name"); done
    else
        unset QEMU_CPU
    fi
    out=$("$bin" --version 2>&1) || true
    if [[ $out != "update-coordinator $version" ]]; then
        fail "$arch: --version printed '$out'"
        continue
    fi
    echo "$arch: $found, $out${QEMU_CPU:+ (qemu-user, QEMU_CPU=$QEMU_CPU)}"
    case $arch in
    amd64) suite=("${SUITE_AMD64[@]}") ;;
    armhf) suite=("${SUITE_ARMHF[@]}") ;;
    *) suite=("${SUITE[@]}") ;;
    esac
    # One filter per module: libtest runs every test whose name contains any of them, and a
    # test's name starts with its module's (`cli::`), the `::` keeping `cli` from matching
    # other modules' tests.
    filters=()
    for module in "${suite[@]}"; do filters+=("$module::"); done
    log=$logs/$arch.log
    if ! (cd "$repo" && UPDATE_COORDINATOR_BIN=$bin cargo test --quiet --no-fail-fast --test integration -- "${filters[@]}" "${skip[@]}" >"$log" 2>&1); then
        # Under emulation on a busy machine a test that waits on wall-clock time can miss once
        # (seen here at load average 25 on 2 CPUs: a polled phase, a patience deadline). Each
        # failed test runs once more, alone; a test that fails twice fails the package.
        mapfile -t failed < <(sed -n 's/^---- \(.*\) stdout ----$/\1/p' "$log" | sort -u)
        ((${#failed[@]})) || failed=("(no test named: see $log)")
        for name in "${failed[@]}"; do
            if [[ $name != "("* ]] && (cd "$repo" && UPDATE_COORDINATOR_BIN=$bin cargo test --quiet --test integration -- --exact "$name" >"$log.retry" 2>&1); then
                echo "$arch: $name failed once and passed alone on retry (a timing miss under load; first failure in $log)"
            else
                fail "$arch: $name failed twice against the packaged binary (output: $log, $log.retry):"
                grep -E -A 4 "^---- $name " "$log" | head -n 12 >&2
            fi
        done
    fi
    passed=$(grep -oE '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
    echo "$arch: $passed tests passed against the packaged binary"
    echo "$arch: $((SECONDS - start)) s"
done

if ((failures)); then
    echo "packages: $failures failure(s)" >&2
    exit 1
fi
echo "packages: ${arches[*]}: right architecture, and the integration suite passes against each packaged binary (under qemu-user: ${#EXCLUDED_UNDER_QEMU[@]} tests excluded, named above)"
