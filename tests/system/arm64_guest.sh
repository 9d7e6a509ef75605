#!/usr/bin/env bash
# Runs inside the arm64 lab guest (Debian 12 under qemu-system-aarch64): the arm64 .deb
# installed with apt, started by systemd, answering a request. /lab/dist holds the package.
# Prints "PASS arm64/name" or "FAIL arm64/name: why"; exits 1 if any failed.
set -uo pipefail
failures=0
pass() { echo "PASS arm64/$1"; }
fail() {
    echo "FAIL arm64/$1: $2"
    failures=$((failures + 1))
}
uptime_s() { cut -d' ' -f1 /proc/uptime; }

echo "NOTE arm64: $(uname -m), command started $(uptime_s) s after the kernel"
if [[ $(uname -m) == aarch64 ]]; then pass machine; else fail machine "uname -m is $(uname -m)"; fi
deb=$(find /lab/dist -maxdepth 1 -name 'update-coordinator_*_arm64.deb' | head -n 1)
start=$(uptime_s)
if apt-get install -y "$deb" >/lab/out/apt.log 2>&1; then pass apt-install; else fail apt-install "$(tail -n 5 /lab/out/apt.log | tr '\n' ' ')"; fi
echo "NOTE arm64: apt-get install (postinst: install.sh --configure-package) took $(awk -v s="$start" '{print $1 - s}' /proc/uptime) s"
if systemctl is-active --quiet dunebugger-update-coordinator; then pass active; else fail active "$(systemctl is-active dunebugger-update-coordinator)"; fi
if grep -q "all checks passed" /lab/out/apt.log; then pass check-clean; else fail check-clean "see apt.log"; fi

# A component whose scripts run here, to see a request answered end to end.
mkdir -p /opt/probe && chmod 755 /opt/probe
for s in update rollback health-check; do
    # shellcheck disable=SC2016  # expands when the script runs
    printf '#!/bin/sh\necho "probe %s on $(uname -m)"\n' "$s" >"/opt/probe/$s.sh"
    chmod 755 "/opt/probe/$s.sh"
done
printf '[components.probe]\ndir = "/opt/probe"\n' >>/etc/dunebugger/update-coordinator.toml
systemctl restart dunebugger-update-coordinator
if update-coordinator submit --component probe --action health --wait --timeout 600 --json >/lab/out/answer.json 2>/lab/out/submit.err &&
    tail -n 1 /lab/out/answer.json | grep -q '"output":"probe health-check on aarch64\\n"'; then
    pass request-answered
else
    fail request-answered "$(tail -n 1 /lab/out/answer.json) $(cat /lab/out/submit.err)"
fi
echo "NOTE arm64: done $(uptime_s) s after the kernel started"
[[ $failures -eq 0 ]]
