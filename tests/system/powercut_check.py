#!/usr/bin/env python3
"""Power-cut test: the durability invariants, checked in the guest after the last boot.

    powercut_check.py P SPOOL STATE CUTS [ROOT]

ROOT (default /) is where SPOOL and STATE are now: on the host, the checks run again on a
run's evidence with P=<cycle-N>/out/uc-powercut and ROOT=<final-state.tar unpacked>.

P holds what powercut_guest.sh recorded, all fsynced so that it survived the power cuts:
  submitted   "<id> <component> <action> <version|-> <code> <how> <cycle>", written before the
              request file (how: inplace, client, slow, submit; submit lines come after)
  writes      "half <id>" / "whole <id>" around a slow writer's stall
  seen        "seen <id> <phase|final>" (first status a client saw: a phase from the progress
              record status/<id>.progress.json, or final), "fin <id> <code> <exit_code>
              <success>" (every final answer a client saw), "inprog <id> <phase>" (an
              in-progress record found in status/<id>.json, which by default holds only answers)
  ledger      "start <action> <id>" / "end <action> <id> <code>" from the scripts themselves
  snap/cut-<n>.tar   the spool and state directories as power cut n left them (copied at the
              next boot before the service started)

Prints "PASS name", "FAIL name: why" (with the request ids concerned) and "NOTE ..." lines;
exits 1 if any check failed.
"""

import collections
import json
import os
import sys
import tarfile

p, spool, state, cuts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
root = sys.argv[5] if len(sys.argv) > 5 else "/"
live_spool, live_state = root + spool, root + state
failed = False

# Answers that refuse a file without running anything (nothing is recorded for them).
REFUSALS = {"invalid_json", "missing_field", "invalid_field", "unreadable", "not_a_regular_file",
            "too_large", "invalid_file_name", "unknown_component", "invalid_version"}


def check(name, bad, what="requests"):
    """PASS when `bad` (a list of "id: why" strings) is empty, else FAIL naming them."""
    global failed
    if not bad:
        print(f"PASS {name}")
        return
    failed = True
    shown = "; ".join(sorted(bad)[:8]) + (f"; ... ({len(bad)} {what})" if len(bad) > 8 else "")
    print(f"FAIL {name}: {shown}")


def note(text):
    print(f"NOTE {text}")


def lines(name):
    try:
        with open(os.path.join(p, name)) as f:
            return [line.split() for line in f if line.strip()]
    except OSError:
        return []


def parse(data):
    try:
        return json.loads(data)
    except ValueError:
        return None


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


# ---- what the test did and saw ------------------------------------------------------------

submitted = {}
for f in lines("submitted"):
    if len(f) >= 7:
        submitted[f[0]] = {"component": f[1], "action": f[2], "version": f[3], "code": int(f[4]),
                           "how": f[5], "cycle": f[6]}
half = {f[1] for f in lines("writes") if f[0] == "half"}
whole = {f[1] for f in lines("writes") if f[0] == "whole"}
first_seen = {}
answers_seen = collections.defaultdict(set)
# status/<id>.json holding an in-progress record: seen by the watcher, or left by a cut.
in_progress_in_status = []
for f in lines("seen"):
    if f[0] == "seen" and len(f) == 3:
        first_seen.setdefault(f[1], f[2])
    elif f[0] == "fin" and len(f) == 5:
        answers_seen[f[1]].add(tuple(f[2:]))
    elif f[0] == "inprog" and len(f) == 3:
        in_progress_in_status.append(f"{f[1]}: {f[2]}, seen by a client")
starts = collections.Counter()
ends = collections.defaultdict(list)
ledger_ids = set()
for f in lines("ledger"):
    if f[0] == "start" and len(f) == 3:
        starts[(f[1], f[2])] += 1
        ledger_ids.add(f[2])
    elif f[0] == "end" and len(f) == 4:
        ends[(f[1], f[2])].append(int(f[3]))

# ---- the final state -----------------------------------------------------------------------

status_dir = os.path.join(live_spool, "status")
statuses, unreadable_statuses, progress_left = {}, [], []
for name in os.listdir(status_dir):
    if name.startswith(".") or not name.endswith(".json") or name == "inventory.json":
        continue
    if name.endswith(".progress.json"):
        progress_left.append(name)
        continue
    s = parse(read(os.path.join(status_dir, name)) or b"")
    if s is None:
        unreadable_statuses.append(name)
    else:
        statuses[name[:-5]] = s
runs = {}
for name in os.listdir(os.path.join(live_state, "runs")):
    d = os.path.join(live_state, "runs", name)
    runs[name] = {f: read(os.path.join(d, f)) for f in os.listdir(d)}

# ---- the snapshots: each request's records as each power cut left them ------------------------

# per id: list of (cut, set of record files present and parsable, exit record or None,
# final.json or None)
at_cut = collections.defaultdict(list)
snap_notes = []
broken_statuses = []
for n in range(1, cuts + 1):
    path = os.path.join(p, "snap", f"cut-{n}.tar")
    if not os.path.exists(path):
        continue  # reported by the guest script (snapshot-of-cut-n)
    files = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            if m.isfile():
                files["/" + m.name] = tar.extractfile(m).read()
    per_run = collections.defaultdict(dict)
    exits = {}
    counts = collections.Counter()
    for name, data in files.items():
        base = os.path.basename(name)
        if base.startswith("."):
            counts["temp files"] += 1
        elif name.startswith(state + "/runs/"):
            rid = name[len(state) + 6:].split("/")[0]
            per_run[rid][base] = data
        elif name.startswith(state + "/exits/"):
            exits[base[:-5]] = parse(data)
        elif name.startswith(spool + "/status/") and base.endswith(".progress.json"):
            # Progress records are not fsynced: a cut may leave them empty (restored at start).
            s = parse(data)
            if s is None:
                counts["empty progress records" if not data else "unparsable progress records"] += 1
            else:
                counts["progress records"] += 1
        elif name.startswith(spool + "/status/") and base != "inventory.json":
            s = parse(data)
            if s is None:
                counts["empty status files" if not data else "unparsable status files"] += 1
                broken_statuses.append(f"{base[:-5]} at cut {n} ({len(data)} bytes)")
            elif s.get("message") == "in_progress":
                counts["in-progress statuses"] += 1
                in_progress_in_status.append(f"{base[:-5]}: {s.get('phase')}, left by cut {n}")
        elif name.startswith(spool + "/requests/"):
            counts["request files"] += 1
            if parse(data) is None:
                counts["empty request files" if not data else "half-written request files"] += 1
        if base == "inventory.json" and parse(data) is None:
            counts[f"unreadable {name}"] += 1
    for rid, recs in per_run.items():
        present = {k for k, v in recs.items() if k in ("launched", "lock", "monitor.pid") or parse(v) is not None}
        launched_no_exit = "launched" in present and rid not in exits and "final.json" not in present
        if launched_no_exit:
            counts["scripts cut while running"] += 1
        at_cut[rid].append((n, present, exits.get(rid), parse(recs["final.json"]) if "final.json" in present else None))
    for rid in exits:
        if rid not in per_run:
            at_cut[rid].append((n, set(), exits[rid], None))
    snap_notes.append(f"cut {n} left: " + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing outstanding"))
for line in snap_notes:
    note(line)

# ---- per request --------------------------------------------------------------------------

ids = set(submitted) | set(statuses) | set(runs) | ledger_ids | set(at_cut)
lost, not_final, refused_accepted, wrong_code, wrong_outcome = [], [], [], [], []
no_ledger, interrupted_wrongly, not_interrupted, exit_ignored, final_changed = [], [], [], [], []
answer_changed, half_lost = [], []
stats = collections.Counter()


def expected_code(rid, s):
    """The exit code the request asked for: an update's version is 1.<cycle>.<code>, a health
    check's id ends in -x<code>."""
    if rid in submitted:
        return submitted[rid]["code"]
    if s.get("action") == "update" and s.get("version"):
        return int(s["version"].rsplit(".", 1)[1])
    return int(rid.rsplit("-x", 1)[1])


def summary(s):
    return (s.get("code") or "-", str(s.get("exit_code", "-")), str(s.get("success")))


for rid in sorted(ids):
    s = statuses.get(rid)
    sub = submitted.get(rid, {})
    # Accepted: a client saw it in progress (the queued status comes after the record), or a
    # cut left a record the coordinator can read back, or it ran, or it has a record now.
    readable_record = any(ex is not None or present & {"request.json", "run.json", "launched", "final.json"}
                          for _, present, ex, _ in at_cut.get(rid, []))
    accepted = (rid in runs or rid in ledger_ids or readable_record
                or first_seen.get(rid) not in (None, "final"))
    if s is None:
        if accepted or rid in half:
            lost.append(f"{rid}: accepted{' (half written on disk)' if rid in half else ''}, no status")
        elif os.path.exists(os.path.join(live_spool, "requests", rid + ".json")):
            lost.append(f"{rid}: request file still there, no status")
        else:
            # The client's in-place write was never synced: the power cut took the file before
            # the coordinator saw it. Nobody ever knew of it; nothing to answer.
            stats["lost with the client's unsynced write (never accepted)"] += 1
        continue
    if s.get("message") == "in_progress":
        not_final.append(f"{rid}: still {s.get('phase')}")
        continue
    code = s.get("code")
    if rid in answers_seen and (len(answers_seen[rid]) > 1 or summary(s) not in answers_seen[rid]):
        answer_changed.append(f"{rid}: seen {sorted(answers_seen[rid])}, now {summary(s)}")
    if code in REFUSALS:
        if accepted:
            refused_accepted.append(f"{rid}: accepted, then answered {code}")
        elif rid in half and rid not in whole:
            stats[f"half-written by a stalled writer, answered {code}"] += 1
        else:
            stats[f"data lost with the client's unsynced write, answered {code}"] += 1
        continue
    if rid not in runs:
        lost.append(f"{rid}: answered {code} but no run record")
    action = s.get("action")
    snaps = at_cut.get(rid, [])
    launched_at_cut = [n for n, present, ex, fin in snaps if "launched" in present and ex is None and fin is None]
    exit_records = [(n, ex) for n, present, ex, fin in snaps if ex is not None]
    recorded_finals = [(n, fin) for n, present, ex, fin in snaps if fin is not None]
    for n, fin in recorded_finals:
        if summary(fin) != summary(s):
            final_changed.append(f"{rid}: final.json at cut {n} said {summary(fin)}, the answer is {summary(s)}")
    for n, ex in exit_records:
        if code == "interrupted" or s.get("exit_code") != ex.get("exit_code"):
            exit_ignored.append(f"{rid}: exit record at cut {n} (exit {ex.get('exit_code')}), answered {summary(s)}")
    if code == "interrupted":
        stats["interrupted (the cut stopped the script)"] += 1
        if not launched_at_cut:
            interrupted_wrongly.append(f"{rid}: interrupted, but no cut found it launched ({[sorted(x[1]) for x in snaps]})")
        continue
    if launched_at_cut and not exit_records:
        not_interrupted.append(f"{rid}: launched and cut at cut {launched_at_cut}, answered {summary(s)}")
    # A run's answer: the script's true exit code, and the ledger shows it ran exactly then.
    want = expected_code(rid, s)
    stats["answered with the script's exit code"] += 1
    if s.get("exit_code") != want or s.get("success") != (want == 0):
        wrong_code.append(f"{rid}: exit_code {s.get('exit_code')} success {s.get('success')}, the script exits {want}")
    if starts[(action, rid)] != 1 or ends[(action, rid)] != [want]:
        no_ledger.append(f"{rid}: ledger has {starts[(action, rid)]} start(s), ends {ends[(action, rid)]}")
    if s.get("component") == "pcb" and action == "update":
        outcome = "updated" if want == 0 else "rollback_failed"
        if s.get("outcome") != outcome:
            wrong_outcome.append(f"{rid}: outcome {s.get('outcome')}, expected {outcome}")

twice = [f"{rid}: {action}.sh started {k} times" for (action, rid), k in starts.items() if k > 1]
half_written = [rid for rid in half if rid not in whole]

check("every-accepted-request-answered", lost)
check("answers-are-final", not_final)
check("status-files-readable", unreadable_statuses, "files")
check("accepted-requests-answered-by-their-run", refused_accepted)
check("no-script-ran-twice", twice)
check("true-exit-codes", wrong_code)
check("ledger-matches-answers", no_ledger)
check("health-gated-outcomes", wrong_outcome)
check("interrupted-only-when-cut-while-launched", interrupted_wrongly)
check("launched-and-cut-answered-interrupted", not_interrupted)
check("exit-records-honoured", exit_ignored)
check("recorded-finals-kept", final_changed)
check("answers-never-change", answer_changed)
# The default layout: status/<id>.json is created once, with the answer; progress is beside it.
check("status-files-only-ever-answers", in_progress_in_status)
if broken_statuses:
    # What a client polling between the reboot and the service's start finds: an answer is
    # shown first and made durable right after (its exit record is durable before), so a cut
    # in between can leave it empty; the service writes it again when it starts, which is
    # checked at each boot (statuses-readable-once-ready-after-cut-<n>).
    note("status files the cuts left unreadable: " + "; ".join(sorted(broken_statuses)))

# ---- nothing left behind (as tests/integration/crash.rs checks) ------------------------------------------

leftovers = []
for top in (status_dir, live_state):
    for d, _, names in os.walk(top):
        leftovers += [os.path.join(d, n) for n in names if n.startswith(".")]
check("no-temp-files-left", leftovers, "files")
check("progress-records-removed-once-answered", progress_left, "files")
pending = [n for n in os.listdir(os.path.join(live_spool, "requests")) if not n.startswith(".")]
check("request-files-answered-and-removed", pending, "files")
client_temps = [n for n in os.listdir(os.path.join(live_spool, "requests")) if n.startswith(".")]
if client_temps:
    # The coordinator never touches dot-files in requests/ (docs/protocol.md): a client cut
    # half-way through its temp-file write leaves its temp file for itself to remove.
    note(f"client temp files left in requests/ (theirs to remove): {' '.join(sorted(client_temps))}")
check("exit-records-consumed", os.listdir(os.path.join(live_state, "exits")), "files")
check("all-records-finished", [f"{rid}: {sorted(r)}" for rid, r in runs.items() if parse(r.get("final.json") or b"") is None])
inventory = parse(read(os.path.join(live_state, "inventory.json")) or b"")
check("inventory-readable", [] if isinstance(inventory, dict) else ["state/inventory.json"], "files")

for what, k in sorted(stats.items()):
    note(f"{k} {what}")
note(f"{len(submitted)} requests submitted, {len(ids)} ids in all, {sum(starts.values())} script runs "
     f"in the ledger, {len(half_written)} slow writers cut during their stall")
sys.exit(1 if failed else 0)
