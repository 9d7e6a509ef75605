# shellcheck shell=bash
# Shared by the system-test drivers (run.sh, powercut.sh), sourced: finds the QEMU lab, makes
# sure its Debian 12 guest image exists and is patched for a slow host, and stages the
# repository for the guest. Expects `repo` (the checkout) to be set; sets `lab` and exports
# LAB_CACHE.
#
# LAB_DIR (default: the shared lab next to the checkout, else /work/shared/lab, else the copy in
# tests/system/lab) holds
# vm/build.sh and vm/run.sh; LAB_CACHE is where the guest image is cached.

# One package list for every driver: the same list means the same cached image (build.sh
# rebuilds when the list changes).
LAB_PACKAGES=(docker.io busybox-static docker-compose jq python3)

# lab_find LABEL: sets `lab` to the directory holding vm/run.sh; otherwise says "LABEL NOT RUN"
# and fails (a missing lab must never look like a pass).
lab_find() {
    local label=$1 candidate
    lab=${LAB_DIR:-}
    # The shared lab when it is there (it may be newer), else the copy kept in the repository,
    # so a CI machine with only a clone can run the system tests too.
    for candidate in "$lab" "${repo:?}/../shared/lab" /work/shared/lab "$repo/tests/system/lab"; do
        if [[ -n $candidate && -x $candidate/vm/run.sh ]]; then lab=$candidate; break; fi
    done
    if [[ -z $lab || ! -x $lab/vm/run.sh ]]; then
        echo "$label NOT RUN: no lab found (set LAB_DIR to the directory holding vm/run.sh)" >&2
        return 1
    fi
    export LAB_CACHE=${LAB_CACHE:-/var/tmp/update-coordinator-lab}
}

# lab_image LABEL: builds the guest image (cached after the first time) and patches its fstab.
lab_image() {
    local label=$1 image fstab
    if ! bash "$lab/vm/build.sh" "$LAB_CACHE" "${LAB_PACKAGES[@]}"; then
        echo "$label NOT RUN: the lab image could not be built (see above)" >&2
        return 1
    fi
    # The image waits 10 s for the lab disk; a busy host under software emulation can miss
    # that (the guest then never runs the tests). Give it two minutes.
    image=$LAB_CACHE/root.img
    if debugfs -R "cat /etc/fstab" "$image" 2>/dev/null | grep -q 'device-timeout=10s'; then
        fstab=$(mktemp)
        debugfs -R "cat /etc/fstab" "$image" 2>/dev/null | sed 's/device-timeout=10s/device-timeout=120s/' >"$fstab"
        chmod 644 "$fstab"
        debugfs -w -R "rm /etc/fstab" "$image" >/dev/null 2>&1
        debugfs -w -R "write $fstab /etc/fstab" "$image" >/dev/null 2>&1
        rm -f "$fstab"
    fi
}

# lab_stage_repo DIR: the tracked and new (not ignored) files of the working tree, as they are
# now, into DIR (what install.sh and the guest scripts use).
lab_stage_repo() {
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -c) | tar -x -C "$1"
}
