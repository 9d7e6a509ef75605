#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target for a bounded time; exits non-zero if any target crashes
# (a panic, a failed invariant, an abort, a timeout or running out of memory).
#
#   bash fuzz/run.sh [SECONDS]
#
# SECONDS (default 60) is the TOTAL fuzzing budget, split evenly across the targets
# (60 → 15 s each for request, config, output, journal). Installing cargo-fuzz (~30 s, only when
# missing) and building the targets (~1-2 min from scratch) come on top of it.
#
# Works on a stable toolchain: targets are built with `--sanitizer none`, which needs no `-Z`
# flag. The code under test is safe Rust, so what the fuzzer finds is panics, broken
# invariants, hangs and runaway memory; for AddressSanitizer on top (slower to build and run),
# set FUZZ_SANITIZER=address: that needs `-Zsanitizer`, allowed on stable via RUSTC_BOOTSTRAP=1.
#
# Each target runs on a temporary COPY of its seed corpus (fuzz/corpus/<target>/), so the
# committed corpus never fills up with generated inputs. A crash leaves the offending input
# in fuzz/artifacts/<target>/ (gitignored); reproduce it with
#   cargo fuzz run -s none <target> fuzz/artifacts/<target>/crash-...
set -euo pipefail

targets=(request config output journal)
cargo_fuzz_version=0.13.2

total=${1:-60}
if ! [[ $total =~ ^[0-9]+$ ]] || [ "$total" -lt 1 ]; then
    echo "usage: $0 [SECONDS]   (total fuzzing time, a positive integer; default 60)" >&2
    exit 2
fi
per_target=$((total / ${#targets[@]}))
if [ "$per_target" -lt 1 ]; then
    per_target=1
fi

cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install the Rust toolchain (https://rustup.rs) and re-run" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "=== installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

sanitizer=${FUZZ_SANITIZER:-none}
if [ "$sanitizer" != none ]; then
    # Sanitizers other than `none` pass `-Zsanitizer=...` to rustc.
    export RUSTC_BOOTSTRAP=1
fi

echo "=== building fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failed=()
for target in "${targets[@]}"; do
    echo
    echo "=== fuzzing $target for ${per_target}s"
    mkdir -p "$work/$target"
    cp -R "fuzz/corpus/$target/." "$work/$target/"
    # -timeout: an input that takes longer than 10 s counts as a hang, i.e. a failure.
    if ! cargo fuzz run --sanitizer "$sanitizer" "$target" "$work/$target" -- \
        -max_total_time="$per_target" -timeout=10 -print_final_stats=1; then
        failed+=("$target")
    fi
done

echo
if [ "${#failed[@]}" -gt 0 ]; then
    echo "=== fuzzing FAILED for: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "=== fuzzing passed: ${targets[*]}, ${per_target}s each, no crash"
