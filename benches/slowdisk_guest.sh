#!/usr/bin/env bash
# Guest side of benches/slowdisk.sh, run as root in the lab guest (Debian 12 kernel, which has
# device-mapper): ext4 on a dm-delay target over a loop device, then the bench binary with its
# temp dirs (spools and state) on it, once per delay in SLOWDISK_DELAYS (ms). Each table goes
# to /lab/out/slowdisk-<delay>ms.md; progress to stdout.
#
#   slowdisk_guest.sh BENCH_ARGS...      # SLOWDISK_DELAYS="0 5", SLOWDISK_WRITE_MS (default:
#                                        # the delay), set by the host side
set -euo pipefail

lab=/lab
out=$lab/out
mkdir -p "$out"
delays=${SLOWDISK_DELAYS:-0 5}

if ! command -v inotifywait >/dev/null; then
    dpkg -i "$lab"/debs/*.deb >/dev/null
fi
modprobe loop
modprobe dm-delay
echo "device-mapper targets: $(dmsetup targets | tr '\n' ' ')"

# The filesystem is made once, on the loop device itself (fast), with its inode tables and
# journal zeroed now rather than by ext4lazyinit in the background during the runs.
img=/var/tmp/slowdisk.img
truncate -s 512M "$img"
loopdev=$(losetup --find --show "$img")
mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 "$loopdev"
sectors=$(blockdev --getsz "$loopdev")
mnt=/mnt/slow
mkdir -p "$mnt"

for delay in $delays; do
    write_ms=${SLOWDISK_WRITE_MS:-$delay}
    # dm-delay's 9-argument table: reads, writes and flushes (bios with REQ_PREFLUSH: a
    # journal commit, an fsync's cache flush) each with their own delay. Reads are not delayed.
    table="0 $sectors delay $loopdev 0 0 $loopdev 0 $write_ms $loopdev 0 $delay"
    what="writes delayed $write_ms ms, flushes $delay ms, reads 0"
    if ! dmsetup create slow --table "$table" 2>/dev/null; then
        # An older dm-delay (3 or 6 arguments): flushes are writes, delayed as such.
        table="0 $sectors delay $loopdev 0 0 $loopdev 0 $delay"
        what="writes and flushes delayed $delay ms (this dm-delay has no separate flush delay), reads 0"
        dmsetup create slow --table "$table"
    fi
    mount /dev/mapper/slow "$mnt"
    echo "=== $what: $(dmsetup table slow)"
    echo "=== $(findmnt -n -o SOURCE,FSTYPE,OPTIONS "$mnt")"
    table_file=$out/slowdisk-${delay}ms.md
    {
        echo "### slow-flush disk: $what"
        echo
        echo "ext4 (default mount options, with its journal: $(findmnt -n -o OPTIONS "$mnt")) on"
        echo "device-mapper delay over a loop device, in the lab guest (QEMU TCG, 2 vCPUs);"
        echo "bench arguments: $*; dm table: \`$(dmsetup table slow)\`"
    } >"$table_file"
    rc=0
    TMPDIR=$mnt UPDATE_COORDINATOR_BENCH_BIN=$lab/bin/update-coordinator \
        UPDATE_COORDINATOR_BENCH_BASELINE=$lab/inotify-loop.sh \
        "$lab/bin/coordinator-bench" "$@" >>"$table_file" || rc=$?
    echo "=== bench exit status with a $delay ms delay: $rc"
    umount "$mnt"
    dmsetup remove slow
    if ((rc != 0)); then
        echo "the bench failed with a $delay ms delay (exit status $rc)"
        exit "$rc"
    fi
done
losetup -d "$loopdev"
rm -f "$img"
