#!/usr/bin/env bash
# Scenario 3 of the system tests: the shipped compose component scripts, as install.sh put them
# in /opt/dunebugger/remote, really move a Docker Compose service between image tags built on
# the host (no registry, no network), through the coordinator's front door
# (`update-coordinator submit ... --wait`), with the health gate judged the way the scripts
# judge it: the Docker healthcheck status of the service's container.
#
# The guest is Debian 12 as Raspberry Pi OS Bookworm is: docker.io 20.10 without the Compose v2
# plugin, and docker-compose 1.29 (v1), so the scripts must use v1; and a pull fails (no
# network), so the scripts must use the images present locally.
#
#   1.0 -> 1.1   healthy: outcome updated, the container runs 1.1, the inventory says 1.1
#   1.1 -> 2.0   2.0 never gets healthy: update.sh puts 1.1 back, outcome rolled_back
#   a compose file under /home, which the unit makes read-only: refused, nothing changed, and
#   the remedy update.sh names (a drop-in with ReadWritePaths=) does make it writable
#
# docker-compose v1 takes about 6 s a call in the emulated guest (twice that with another VM
# beside it), so each request takes one to three minutes: the scenario keeps to these two. A
# third step, an image healthy after the update but unhealthy when the coordinator's health
# check looks (rollback.sh then undoes the update), passed here too but cost three more
# minutes; see git show 767a0a2:tests/system/compose.sh.
#
# Runs as root in the lab guest after install.sh (tests/system/guest.sh, section 1), with the
# repository at /lab/repo. Prints "PASS compose/name" or "FAIL compose/name: why" per check;
# exits 1 if any failed. Request logs and statuses go to $LOGS (default /lab/out/compose).
set -uo pipefail

R=${R:-/lab/repo}
UNIT=dunebugger-update-coordinator
STATE=/var/lib/update-coordinator
CONFIG=/etc/dunebugger/update-coordinator.toml
SPOOL=/var/dunebugger/updates
DIR=/opt/dunebugger/remote           # where install.sh put the remote component's scripts
COMPOSE_FILE=/opt/dunebugger/docker-compose.yml
IMAGE=dunebugger-test/remote
if [[ -d /lab/out ]]; then LOGS=${LOGS:-/lab/out/compose}; else LOGS=${LOGS:-$(mktemp -d)}; fi
HANDOFF_OUT=$LOGS/handoff         # the remote container's /out: what the updater replica reports
mkdir -p "$LOGS" "$HANDOFF_OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0
started=$SECONDS

pass() { echo "PASS compose/$1"; }
fail() {
    echo "FAIL compose/$1: $2"
    failures=$((failures + 1))
}
# expect NAME COMMAND...: PASS if the command succeeds, else FAIL naming it (and its output).
expect() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "not true: $* $(tail -n 3 <<<"$out" | tr '\n' ' ')"; fi
}

# The service's containers: "STATUS HEALTH IMAGE" per line, read from Docker directly.
containers() {
    docker ps -a --filter label=com.docker.compose.service=remote --format '{{.ID}}' |
        xargs -r docker inspect --format '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}} {{.Config.Image}}'
}
# runs_healthy TAG: exactly one container, running, healthy, on IMAGE:TAG, with /version TAG.
runs_healthy() {
    local want="running healthy $IMAGE:$1" got id
    got=$(containers)
    [[ $got == "$want" ]] || { echo "containers: '${got//$'\n'/; }', expected '$want'"; return 1; }
    id=$(docker ps -q --filter label=com.docker.compose.service=remote)
    [[ $(docker exec "$id" cat /version) == "$1" ]] || { echo "/version in the container is not $1"; return 1; }
}
# image_line: the service's image line in the compose file.
image_line() { grep -E '^    image:' "$COMPOSE_FILE"; }
inventory() { jq -r "$1" "$SPOOL/status/inventory.json"; }

# request NAME ACTION [VERSION]: submits through the CLI and waits (as an operator would);
# sets ID and RC, keeps the output in $LOGS/NAME.log and the final status in $LOGS/NAME.json.
request() {
    local name=$1 t0=$SECONDS
    RC=0
    update-coordinator submit --component remote --action "$2" ${3:+--version "$3"} \
        --wait --keep-status --timeout 900 >"$LOGS/$name.log" 2>&1 || RC=$?
    ID=$(sed -n 's/^submitted request \([^ ]*\)$/\1/p' "$LOGS/$name.log" | head -n 1)
    cp "$SPOOL/status/$ID.json" "$LOGS/$name.json" 2>/dev/null
    echo "NOTE compose: $name ($2${3:+ $3}) took $((SECONDS - t0)) s, exit $RC"
    # The answer replaced the progress record, which went with it.
    expect "$name-no-progress-record-left" test ! -e "$SPOOL/status/$ID.progress.json"
}
# status_is NAME JQ: the final status of request NAME satisfies the jq condition; else FAIL
# with what the status says.
status_is() {
    local name=$1 check=$2 file=$LOGS/$1.json
    if jq -e "$check" "$file" >/dev/null 2>&1; then
        pass "$name-status"
    else
        fail "$name-status" "not $check: $(jq -c '{success, outcome, code, exit_code, message, error: ((.error // "")[-400:])}' "$file" 2>&1 | head -c 900)"
    fi
}

echo "NOTE compose: $(docker compose version 2>&1 | head -n 1) / $(docker-compose version --short 2>&1)"

# Tags of one image, imported from a busybox tree (no registry): 1.x have /healthy, which the
# compose file's healthcheck tests; 2.0 does not, so it never gets healthy. Each runs the
# replica of dunebugger-remote's updater (remote_client.sh) as its main process.
build_images() {
    local tag root
    for tag in 1.0 1.1 1.2 1.3 2.0; do
        root=$WORK/root-$tag
        mkdir -p "$root/bin" "$root/out"
        cp /bin/busybox "$root/bin/busybox"
        for applet in sh sleep test cat rm cp mv sed head date printf echo; do ln -s busybox "$root/bin/$applet"; done
        cp "$R/tests/system/remote_client.sh" "$root/remote_client.sh"
        echo "$tag" >"$root/version"
        [[ $tag == 2.* ]] || : >"$root/healthy"
        tar -C "$root" -c . | docker import - "$IMAGE:$tag" >/dev/null || return 1
    done
}
expect images-imported build_images

# The operator's compose file. The container runs the updater replica, which stops at once on
# SIGTERM. It runs as root: the 52d3692 client writes <spool>/.pending_remote_request, and the
# spool root is root's (0755); see spool-root-not-writable-by-containers.
# HANDOFF_TRIES: the client waits 10 s for the answer after a self-update; emulated, the
# health gate alone takes longer than that (see the NOTE each hand-off prints).
cat >"$COMPOSE_FILE" <<EOF
# DuneBugger system test: the remote service, images built on this host.
services:
  remote:
    image: $IMAGE:1.0   # set by /opt/dunebugger/remote/update.sh
    command: ["/bin/sh", "/remote_client.sh", "start"]
    restart: unless-stopped
    environment:
      HANDOFF_TRIES: "600"
    volumes:
      - $SPOOL:$SPOOL
      - $HANDOFF_OUT:/out
    healthcheck:
      test: ["CMD", "test", "-e", "/healthy"]
      interval: 2s
      timeout: 20s
      retries: 2
EOF
cp "$COMPOSE_FILE" "$WORK/compose-1.0.yml"

# The component's settings: the defaults, except a longer health wait (the guest is emulated).
cat >>"$DIR/component.conf" <<'EOF'

# tests/system/compose.sh: the guest is emulated, and slow.
HEALTH_TIMEOUT=300
# docker-compose v1 gives up on the Docker engine after 60 s: seen on a busy host.
export COMPOSE_HTTP_TIMEOUT=300
EOF
cat >>"$CONFIG" <<'EOF'

# tests/system/compose.sh: the shipped remote component on the test compose file.
[components.remote]
dir = "/opt/dunebugger/remote"
timeouts = { update = 900, rollback = 900, health = 300 }
EOF
systemctl restart "$UNIT"
expect service-restarted systemctl is-active --quiet "$UNIT"

# The first deployment, by hand as an operator does it.
expect first-up docker-compose -f "$COMPOSE_FILE" up -d remote
wait_healthy() {
    local end=$((SECONDS + 240))
    until runs_healthy "$1" >/dev/null 2>&1; do
        ((SECONDS < end)) || { runs_healthy "$1"; return 1; }
        sleep 2
    done
}
expect first-up-healthy wait_healthy 1.0
expect check-is-clean update-coordinator check

echo "-- 1.0 -> 1.1: healthy"
request update-1.1 update 1.1
status_is update-1.1 '.success == true and .outcome == "updated" and .exit_code == 0'
# No Compose v2 plugin here: the scripts used docker-compose (v1). No network: the pull failed,
# and the image present locally was used.
expect update-1.1-used-compose-v1 grep -q '(with docker-compose)' "$LOGS/update-1.1.json"
expect update-1.1-used-the-local-image grep -q 'as present locally' "$LOGS/update-1.1.json"
expect update-1.1-runs-1.1 runs_healthy 1.1
expect update-1.1-image-line test "$(image_line)" = "    image: $IMAGE:1.1   # set by /opt/dunebugger/remote/update.sh"
expect update-1.1-only-that-line test "$(diff "$WORK/compose-1.0.yml" "$COMPOSE_FILE" | grep -c '^[<>]')" = 2
expect update-1.1-inventory test "$(inventory .components.remote.version)" = 1.1
cp "$COMPOSE_FILE" "$WORK/compose-1.1.yml"

echo "-- 1.1 -> 2.0: never healthy"
request update-2.0 update 2.0
status_is update-2.0 '.success == false and .outcome == "rolled_back" and .code == "rolled_back" and .exit_code == 4 and ([.steps[].step] == ["update", "rollback", "health"])'
expect update-2.0-said-unhealthy grep -q 'health unhealthy' "$LOGS/update-2.0.json"
expect update-2.0-back-on-1.1 grep -q "is back on $IMAGE:1.1" "$LOGS/update-2.0.json"
expect update-2.0-runs-1.1-healthy runs_healthy 1.1
expect update-2.0-compose-file-restored cmp "$WORK/compose-1.1.yml" "$COMPOSE_FILE"
expect update-2.0-inventory-still-1.1 test "$(inventory .components.remote.version)" = 1.1
expect update-2.0-inventory-outcome test "$(inventory '.components.remote.recent[0].outcome')" = rolled_back

echo "-- a compose file under /home (ProtectHome=read-only in the unit)"
HOME_DIR=/home/pi/dunebugger
mkdir -p "$HOME_DIR"
cp "$COMPOSE_FILE" "$HOME_DIR/docker-compose.yml"
cp "$DIR/component.conf" "$WORK/component.conf"
echo "COMPOSE_FILE=$HOME_DIR/docker-compose.yml" >>"$DIR/component.conf"
request home update 2.0
status_is home '.success == false and .exit_code == 2'
expect home-says-why-and-what-to-do grep -q "ReadWritePaths=$HOME_DIR" "$LOGS/home.json"
expect home-compose-file-unchanged cmp "$COMPOSE_FILE" "$HOME_DIR/docker-compose.yml"
expect home-still-runs-1.1 runs_healthy 1.1
cp "$WORK/component.conf" "$DIR/component.conf"
# The remedy it names, in a sandbox like the unit's (the scripts replace files by rename).
expect home-readwritepaths-remedy-works systemd-run --wait --quiet -p ProtectHome=read-only -p PrivateTmp=yes \
    -p ProtectSystem=full -p "ReadWritePaths=$HOME_DIR" \
    bash -c "mktemp $HOME_DIR/docker-compose.yml.XXXXXX >/dev/null && ! touch /home/pi/outside 2>/dev/null"

echo "-- self-update hand-off: the remote container asks for its own update (dunebugger-remote 52d3692)"
# The container runs remote_client.sh, a replica of that client's behaviour: the old container
# writes the request and <spool>/.pending_remote_request and polls; update.sh recreates it
# mid-request; the new container waits for status/<id>.json to exist, reads it once without
# looking at `message`, deletes it and the hand-off file, and reports to /out. Both status
# layouts: the default (the status file only ever holds the answer) and progress_in_status
# (the coordinator withdraws the in-progress record once the hand-off file names the request).
PENDING=$SPOOL/.pending_remote_request

# The spool root is root's (0755): a container running as the documented user (uid 1000, the
# spool group added) cannot write there, so it cannot plant anything next to requests/ and
# status/ (docs/security.md). The price: dunebugger-remote 52d3692 keeps its hand-off file
# there, so its self-update hand-off needs a container that runs as root, as DuneBugger's
# remote does (docs/protocol.md, "When the client updates itself"); the scenario below does.
gid=$(getent group dunebugger-updates | cut -d: -f3)
if out=$(docker run --rm --user 1000:1000 --group-add "$gid" -v "$SPOOL:$SPOOL" "$IMAGE:1.1" \
    /bin/sh -c "printf probe >$PENDING && rm $PENDING" 2>&1); then
    fail spool-root-not-writable-by-containers "uid 1000 with group_add $gid wrote $PENDING: the spool root is $(stat -c '%a %U:%G' "$SPOOL")"
else
    pass spool-root-not-writable-by-containers
fi
rm -f "$PENDING"

# watch_status ID: what a client finds at status/ID.json, every 0.3 s, until killed:
# "TIME in_progress|answer|empty [pending]" (pending: the hand-off file exists).
watch_status() {
    local status=$SPOOL/status/$1.json s kind
    while :; do
        if s=$(cat "$status" 2>/dev/null); then
            if [[ $s == *'"message": "in_progress"'* ]]; then kind=in_progress; elif [[ -n $s ]]; then kind=answer; else kind=empty; fi
            echo "$(date +%s.%N) $kind$([[ -e $PENDING ]] && echo " pending")"
        fi
        sleep 0.3
    done
}

# recorded_answer ID: the final status the coordinator recorded for ID (its journal's finished
# record), as JSON; fails while there is none.
recorded_answer() {
    python3 "$R/tests/system/journal_view.py" "$STATE/journal.jsonl" finished "$1"
}

# handoff NAME VERSION: the container in the remote service asks for remote's update to
# VERSION and waits for the container that replaces it to report. Sets HID. Evidence in
# $LOGS/NAME.*: .watch (watch_status), .old-gone (when the old client died), .final.json (the
# coordinator's answer, from its journal); the container's own files in $HANDOFF_OUT.
handoff() {
    local name=$1 version=$2 t0=$SECONDS cid exec_pid watch_pid end
    HID=""
    rm -f "$HANDOFF_OUT/request.id"
    cid=$(docker ps -q --filter label=com.docker.compose.service=remote)
    docker exec "$cid" /bin/sh /remote_client.sh request remote "$version" >"$LOGS/$name.exec.log" 2>&1 &
    exec_pid=$!
    end=$((SECONDS + 60))
    until [[ -s $HANDOFF_OUT/request.id ]] || ((SECONDS > end)); do sleep 0.2; done
    HID=$(cat "$HANDOFF_OUT/request.id" 2>/dev/null)
    if [[ -z $HID ]]; then
        kill "$exec_pid" 2>/dev/null
        fail "$name-requested" "the container wrote no request within 60 s: $(tr '\n' ' ' <"$LOGS/$name.exec.log")"
        return 1
    fi
    watch_status "$HID" >"$LOGS/$name.watch" &
    watch_pid=$!
    # The old client polls until update.sh replaces its container (docker exec then returns).
    local exec_rc=0
    wait "$exec_pid" || exec_rc=$?
    echo "$(date +%s.%N) $exec_rc" >"$LOGS/$name.old-gone"
    local gone=$((SECONDS - t0)) answered=""
    # A new container (or the old one started again by a restore) reports once the answer is
    # there; it waits HANDOFF_TRIES seconds for it. Unless the old client got the answer itself:
    # then there is no hand-off to wait for.
    end=$((SECONDS + 1200))
    until [[ -e $HANDOFF_OUT/$HID.report || -e $HANDOFF_OUT/$HID.nostatus ]] || ((SECONDS > end)); do
        grep -q '^answer ' "$HANDOFF_OUT/$HID.old" 2>/dev/null && break
        if [[ -z $answered ]] && recorded_answer "$HID" >/dev/null; then answered=$SECONDS; fi
        if [[ -n $answered ]] && ((SECONDS > answered + 60)); then break; fi
        sleep 1
    done
    kill "$watch_pid" 2>/dev/null
    wait "$watch_pid" 2>/dev/null
    # The request file goes right after the answer; the journal keeps the answer.
    end=$((SECONDS + 30))
    while [[ -e $SPOOL/requests/$HID.json ]] && ((SECONDS < end)); do sleep 1; done
    recorded_answer "$HID" >"$LOGS/$name.final.json"
    echo "NOTE compose: $name (remote $version, request $HID) took $((SECONDS - t0)) s; the old container went after $gone s; the new one waited $(sed -n 's/^waited //p' "$HANDOFF_OUT/$HID.report" 2>/dev/null || echo '?') s for the answer (the real client waits 10 s); the old client saw: $(tail -n +2 "$HANDOFF_OUT/$HID.old" 2>/dev/null | tr '\n' ';')"
}

# handoff_checks NAME MODE ANSWER_JQ TAG: what the new container reported is the coordinator's
# answer, which satisfies ANSWER_JQ; the right image runs; nothing is left behind.
handoff_checks() {
    local name=$1 mode=$2 want=$3 tag=$4 final=$LOGS/$1.final.json read=$HANDOFF_OUT/$HID.read.json report=$HANDOFF_OUT/$HID.report
    [[ -n $HID ]] || return 0
    expect "$name-answered" jq -e "$want" "$final"
    if [[ -s $report ]]; then
        pass "$name-new-container-reported"
    else
        fail "$name-new-container-reported" "no report from the new container ($(cat "$HANDOFF_OUT/$HID.nostatus" 2>/dev/null))"
    fi
    # It read the answer, not an in-progress record, and reported what the answer says.
    local keys='{request_id, success, message, outcome, code, exit_code}'
    expect "$name-new-container-read-the-answer" test "$(jq -c "$keys" "$read" 2>&1)" = "$(jq -c "$keys" "$final" 2>&1)"
    expect "$name-reported-the-true-outcome" test "$(sed -n 's/^success //p; s/^message //p' "$report" 2>&1 | tr '\n' '|')" \
        = "$(jq -r '.success' "$final")|$(jq '.message' "$final" | sed 's/^"//; s/"$//')|"
    # The old client was killed before the answer: this was a hand-off, not a plain poll.
    expect "$name-old-client-killed-mid-request" bash -c "grep -q '^requested ' '$HANDOFF_OUT/$HID.old' && ! grep -q '^answer ' '$HANDOFF_OUT/$HID.old'"
    if [[ $mode == default ]]; then
        expect "$name-status-file-never-in-progress" bash -c "! grep -q in_progress '$LOGS/$name.watch'"
    else
        # Once the hand-off file names the request its in-progress record goes; certainly
        # nothing in progress is there once the container that reads it can start.
        local gone
        gone=$(cut -d' ' -f1 "$LOGS/$name.old-gone")
        expect "$name-no-in-progress-record-once-handed-off" bash -c "! awk -v t=$gone '\$2 == \"in_progress\" && \$1 >= t' '$LOGS/$name.watch' | grep -q ."
        echo "NOTE compose: $name: a watcher saw an in-progress status file $(grep -c in_progress "$LOGS/$name.watch") time(s), first/last at $(awk '$2 == "in_progress" {print $1}' "$LOGS/$name.watch" | sed -n '1p;$p' | tr '\n' ' ')(the hand-off file was written right after the request; the old container went at $gone); journal: $(journalctl -u "$UNIT" "REQUEST_ID=$HID" -o cat --no-pager 2>/dev/null | grep -c 'hand-off') hand-off line(s)"
    fi
    expect "$name-runs-$tag" runs_healthy "$tag"
    expect "$name-nothing-left" bash -c "for f in '$SPOOL/status/$HID.json' '$SPOOL/status/$HID.progress.json' '$PENDING' '$SPOOL/requests/$HID.json'; do if [ -e \"\$f\" ]; then echo \"left: \$f\"; exit 1; fi; done"
}

echo "-- hand-off, default layout: 1.1 -> 1.2, healthy"
handoff handoff-default 1.2
handoff_checks handoff-default default '.success == true and .outcome == "updated"' 1.2
expect handoff-default-inventory test "$(inventory .components.remote.version)" = 1.2

echo "-- hand-off, progress_in_status = true"
cp "$CONFIG" "$WORK/config.default"
cat >>"$CONFIG" <<'EOF'

# tests/system/compose.sh: in-progress records in status/<id>.json (the hand-off scenario).
[spool]
progress_in_status = true
EOF
systemctl restart "$UNIT"
expect progress-in-status-service-restarted systemctl is-active --quiet "$UNIT"
# The mode is on: a health check's status file holds an in-progress record while it runs.
probe_in_progress() {
    local id end=$((SECONDS + 120)) seen=0 s
    id=$(update-coordinator submit --component remote --action health | awk '{print $3}')
    while ((SECONDS < end)); do
        s=$(cat "$SPOOL/status/$id.json" 2>/dev/null) || s=""
        if [[ $s == *'"message": "in_progress"'* ]]; then seen=1
        elif [[ -n $s ]]; then break; fi
        sleep 0.2
    done
    rm -f "$SPOOL/status/$id.json"
    ((seen)) || echo "no in-progress record seen in status/$id.json (final: ${s:0:200})"
    ((seen))
}
expect progress-in-status-is-on probe_in_progress

echo "-- hand-off, progress_in_status: 1.2 -> 1.3, healthy"
handoff handoff-pis 1.3
handoff_checks handoff-pis progress_in_status '.success == true and .outcome == "updated"' 1.3

# About four more minutes: only when asked for (SYSTEM_TEST_HANDOFF_ROLLBACK=1 tests/system/run.sh).
if [[ ${SYSTEM_TEST_HANDOFF_ROLLBACK:-0} == 1 ]]; then
    echo "-- hand-off, progress_in_status: 1.3 -> 2.0, never healthy: the new container reports the rollback"
    handoff handoff-pis-rollback 2.0
    handoff_checks handoff-pis-rollback progress_in_status '.success == false and .outcome == "rolled_back"' 1.3
fi

cp "$WORK/config.default" "$CONFIG"
systemctl restart "$UNIT"
expect default-layout-service-restarted systemctl is-active --quiet "$UNIT"
expect handoff-no-progress-records-left bash -c "! ls '$SPOOL/status' | grep -q '\\.progress\\.json\$'"
expect handoff-no-hand-off-file-left test ! -e "$PENDING"

# Stop the service: its healthcheck would cost CPU in the next sections (CPU quota checks).
docker-compose -f "$COMPOSE_FILE" down >"$LOGS/down.log" 2>&1 || echo "NOTE compose: docker-compose down failed (see $LOGS/down.log)"
echo "NOTE compose: scenario took $((SECONDS - started)) s"
[[ $failures -eq 0 ]]
