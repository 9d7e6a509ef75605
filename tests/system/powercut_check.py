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
The snapshot unit also writes "cut <n>" into the ledger and into seen at that moment: a line
above it happened before cut n, a line below it after.

The truth is the ledger (what ran) and, at each cut, the coordinator's journal as the cut left
it (journal_view.py reads it as the coordinator does: up to the first torn line, the latest
record per request deciding), plus any readable exits/<id>.json the monitors left. At a cut a
request is unknown, queued (accepted, unstarted), started with no exit known, with an exit
known (exited, a readable exit record, or finished with a run's status), or finished.

Prints "PASS name", "FAIL name: why" (with the request ids concerned) and "NOTE ..." lines;
exits 1 if any check failed.
"""

import collections
import json
import os
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import journal_view  # noqa: E402  (beside this script, in the guest and on the host)

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
    """The words of each line of one of P's logs. A line appended but not yet flushed when the
    power went can come back as zeros (the file's new size reached the disk, its data did
    not): a line nobody finished writing, read as a line break."""
    try:
        with open(os.path.join(p, name), errors="replace") as f:
            text = f.read().replace("\0", "\n")
    except OSError:
        return []
    return [line.split() for line in text.splitlines() if line.strip()]


def with_epochs(name):
    """The lines of a log the snapshot unit marks, each with its epoch: how many cuts came
    before it (so the line happened before cut n exactly when its epoch is below n)."""
    epoch = 0
    for f in lines(name):
        if f[0] == "cut" and len(f) == 2 and f[1].isdigit():
            epoch = int(f[1])
        else:
            yield epoch, f


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


def listdir(path):
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def summary(s):
    """What a client takes from an answer: (code, exit code, success)."""
    return (s.get("code") or "-", str(s.get("exit_code", "-")), str(s.get("success")))


def run_exit_code(s):
    """The exit code a final status carries from a run, or None (refused, interrupted...)."""
    code = s.get("exit_code")
    return code if isinstance(code, int) and s.get("code") != "interrupted" else None


# ---- what the test did and saw ------------------------------------------------------------

submitted = {}
for f in lines("submitted"):
    if len(f) >= 7:
        submitted[f[0]] = {"component": f[1], "action": f[2], "version": f[3], "code": int(f[4]),
                           "how": f[5], "cycle": f[6]}
half = {f[1] for f in lines("writes") if f[0] == "half"}
whole = {f[1] for f in lines("writes") if f[0] == "whole"}
first_seen = {}  # id -> (epoch, phase or "final")
answers_seen = collections.defaultdict(set)
answer_seen_epoch = {}  # id -> the epoch a client first saw its final answer in
# status/<id>.json holding an in-progress record: seen by the watcher, or left by a cut.
in_progress_in_status = []
for epoch, f in with_epochs("seen"):
    if f[0] == "seen" and len(f) == 3:
        first_seen.setdefault(f[1], (epoch, f[2]))
    elif f[0] == "fin" and len(f) == 5:
        answers_seen[f[1]].add(tuple(f[2:]))
        answer_seen_epoch.setdefault(f[1], epoch)
    elif f[0] == "inprog" and len(f) == 3:
        in_progress_in_status.append(f"{f[1]}: {f[2]}, seen by a client")
starts = collections.defaultdict(list)  # (action, id) -> epochs of its starts
ends = collections.defaultdict(list)
ledger_ids = set()
for epoch, f in with_epochs("ledger"):
    if f[0] == "start" and len(f) == 3:
        starts[(f[1], f[2])].append(epoch)
        ledger_ids.add(f[2])
    elif f[0] == "end" and len(f) == 4:
        ends[(f[1], f[2])].append(int(f[3]))
starts_of = collections.defaultdict(list)  # id -> [(action, epoch)], every script of its run
for (action, rid), epochs in starts.items():
    starts_of[rid] += [(action, e) for e in epochs]

# ---- the final state -----------------------------------------------------------------------

status_dir = os.path.join(live_spool, "status")
statuses, unreadable_statuses, progress_left = {}, [], []
for name in listdir(status_dir):
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
final_journal = journal_view.load(os.path.join(live_state, "journal.jsonl"))
final_latest = final_journal.latest()

# Every finished record ever seen per id (each cut's journal and the last one): one answer.
finished_records = collections.defaultdict(set)


def collect_finished(journal, where):
    for rid, bodies in journal.all_of("finished").items():
        for body in bodies:
            finished_records[rid].add((summary(body.get("status") or {}), where))


collect_finished(final_journal, "the final journal")

# ---- the snapshots: each request's records as each power cut left them ------------------------

# per id: [(cut, what the coordinator finds: "queued" | "started" | "exit" | "finished",
#          the exit code known or None, the finished status or None)]
at_cut = collections.defaultdict(list)
state_at = {}  # (id, cut) -> the same "queued" | ... for the cuts that had a snapshot
snapshots = set()
broken_statuses = []
for n in range(1, cuts + 1):
    path = os.path.join(p, "snap", f"cut-{n}.tar")
    if not os.path.exists(path):
        continue  # reported by the guest script (snapshot-of-cut-n)
    snapshots.add(n)
    files = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            if m.isfile():
                files["/" + m.name] = tar.extractfile(m).read()
    journal = journal_view.Journal(files.get(state + "/journal.jsonl", b""))
    collect_finished(journal, f"cut {n}")
    exit_files, run_dirs = {}, set()
    counts = collections.Counter()
    for name, data in files.items():
        base = os.path.basename(name)
        if base.startswith("."):
            counts["temp files"] += 1
        elif name.startswith(state + "/runs/"):
            run_dirs.add(name[len(state) + 6:].split("/")[0])
        elif name.startswith(state + "/exits/"):
            # Written by the monitor without fsync: after a cut, readable or not at all.
            ex = parse(data)
            if isinstance(ex, dict):
                exit_files[base[:-5]] = ex
                counts["readable exit records"] += 1
            else:
                counts["empty exit records" if not data else "unparsable exit records"] += 1
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
    counts["run directories"] = len(run_dirs)
    latest = journal.latest()
    for rid in set(latest) | set(exit_files):
        kind, body = latest.get(rid, (None, {}))
        fin = body.get("status") if kind == "finished" else None
        if kind == "exited":
            exit_code = (body.get("record") or {}).get("exit_code")
        elif rid in exit_files:
            exit_code = exit_files[rid].get("exit_code")
        elif fin is not None:
            exit_code = run_exit_code(fin)
        else:
            exit_code = None
        if fin is not None:
            what = "finished"
        elif kind == "exited" or rid in exit_files:
            what = "exit"
        elif kind == "started":
            what = "started"
        elif kind in ("accepted", "unstarted"):
            what = "queued"
        else:
            what = "exit without a record"  # an exit record the journal knows nothing of
        counts[what] += 1
        at_cut[rid].append((n, what, exit_code, fin))
        state_at[(rid, n)] = what
    torn = f" (torn: {journal.torn})" if journal.torn else ""
    note(f"cut {n} left: a journal of {len(journal.records)} records{torn}; "
         + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))

# ---- per request --------------------------------------------------------------------------

ids = set(submitted) | set(statuses) | set(final_latest) | ledger_ids | set(at_cut)
lost, not_final, refused_accepted, wrong_code, wrong_outcome = [], [], [], [], []
no_ledger, interrupted_wrongly, not_interrupted, exit_ignored, final_changed = [], [], [], [], []
answer_changed, queued_not_run, ran_before_durable, run_after_interrupt = [], [], [], []
shown_before_accepted, answer_before_durable, unrecorded_answers = [], [], []
stats = collections.Counter()


def expected_code(rid, s):
    """The exit code the request asked for: an update's version is 1.<cycle>.<code>, a health
    check's id ends in -x<code>."""
    if rid in submitted:
        return submitted[rid]["code"]
    if s.get("action") == "update" and s.get("version"):
        return int(s["version"].rsplit(".", 1)[1])
    return int(rid.rsplit("-x", 1)[1])


for rid in sorted(ids):
    snaps = at_cut.get(rid, [])
    # Every script of a run starts only once the journal holds its started record durably: a
    # cut after a script started finds the run started (or further), never queued or unknown.
    for action, epoch in starts_of.get(rid, []):
        for n in sorted(snapshots):
            if epoch < n and state_at.get((rid, n)) in (None, "queued"):
                ran_before_durable.append(f"{rid}: {action}.sh started before cut {n}, which found the request {state_at.get((rid, n)) or 'unknown to the journal'}")
    # The queued status is shown only once the acceptance is durable.
    if rid in first_seen and first_seen[rid][1] != "final":
        epoch, phase = first_seen[rid]
        for n in sorted(snapshots):
            if epoch < n and (rid, n) not in state_at:
                shown_before_accepted.append(f"{rid}: a client saw it {phase} before cut {n}, which found no record of it")
    # An answer is shown only once it is durable: its exit (or, without one, its finished
    # record) is in the journal before anyone can read the status.
    if rid in answer_seen_epoch and answer_seen_epoch[rid] + 1 in snapshots:
        n = answer_seen_epoch[rid] + 1
        seen = sorted(answers_seen[rid])
        if not any(c in REFUSALS for c, _, _ in seen) and state_at.get((rid, n)) not in ("exit", "finished"):
            answer_before_durable.append(f"{rid}: a client saw {seen} before cut {n}, which found the request {state_at.get((rid, n)) or 'unknown to the journal'}")

    s = statuses.get(rid)
    # Accepted: the journal knew it at a cut or knows it now, or it ran, or a client saw it in
    # progress (the queued status is shown only once the acceptance is durable).
    accepted = (rid in final_latest or rid in ledger_ids or bool(snaps)
                or first_seen.get(rid, (0, None))[1] not in (None, "final"))
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
    # One answer: the status file, the journal's finished record now and at every cut agree.
    if final_latest.get(rid, (None,))[0] != "finished":
        unrecorded_answers.append(f"{rid}: answered {summary(s)}, the journal's latest record is {final_latest.get(rid, ('none',))[0]}")
    records = finished_records.get(rid, set())
    if {rec for rec, _ in records} - {summary(s)}:
        final_changed.append(f"{rid}: answered {summary(s)}, finished records say {sorted(records)}")
    action = s.get("action")
    started_no_exit = [n for n, what, _, _ in snaps if what == "started"]
    exits_known = [(n, ex) for n, _, ex, _ in snaps if ex is not None]
    for n, ex in exits_known:
        if code == "interrupted" or s.get("exit_code") != ex:
            exit_ignored.append(f"{rid}: exit {ex} known at cut {n}, answered {summary(s)}")
    # Found started with no exit known: the script is gone with the power, never run again.
    for n in started_no_exit:
        if code != "interrupted":
            not_interrupted.append(f"{rid}: started, no exit known at cut {n}, answered {summary(s)}")
        later = [f"{a}.sh after cut {e}" for a, e in starts_of.get(rid, []) if e >= n]
        if later:
            run_after_interrupt.append(f"{rid}: started with no exit known at cut {n}, then ran {later}")
    if code == "interrupted":
        stats["interrupted (a cut found it started, no exit known)"] += 1
        if not started_no_exit:
            interrupted_wrongly.append(f"{rid}: interrupted, but no cut found it started without an exit ({[(n, w) for n, w, _, _ in snaps]})")
        continue
    # Queued at a cut (and not stopped by a later one): it really ran after that cut.
    for n in [n for n, what, _, _ in snaps if what == "queued"]:
        if any(m > n for m in started_no_exit):
            continue
        after = [e for a, e in starts_of.get(rid, []) if a == action and e >= n]
        if len(after) != 1:
            queued_not_run.append(f"{rid}: queued at cut {n}, then {len(after)} start(s) of {action}.sh after it")
    # A run's answer: the script's true exit code, and the ledger shows it ran exactly once.
    want = expected_code(rid, s)
    stats["answered with the script's exit code"] += 1
    if s.get("exit_code") != want or s.get("success") != (want == 0):
        wrong_code.append(f"{rid}: exit_code {s.get('exit_code')} success {s.get('success')}, the script exits {want}")
    if len(starts[(action, rid)]) != 1 or ends[(action, rid)] != [want]:
        no_ledger.append(f"{rid}: ledger has {len(starts[(action, rid)])} start(s), ends {ends[(action, rid)]}")
    if s.get("component") == "pcb" and action == "update":
        outcome = "updated" if want == 0 else "rollback_failed"
        if s.get("outcome") != outcome:
            wrong_outcome.append(f"{rid}: outcome {s.get('outcome')}, expected {outcome}")

twice = [f"{rid}: {action}.sh started {len(e)} times" for (action, rid), e in starts.items() if len(e) > 1]
half_written = [rid for rid in half if rid not in whole]

check("every-accepted-request-answered", lost)
check("answers-are-final", not_final)
check("status-files-readable", unreadable_statuses, "files")
check("accepted-requests-answered-by-their-run", refused_accepted)
check("no-script-ran-twice", twice)
check("true-exit-codes", wrong_code)
check("ledger-matches-answers", no_ledger)
check("health-gated-outcomes", wrong_outcome)
check("scripts-start-only-once-their-start-is-durable", ran_before_durable)
check("queued-status-shown-only-once-accepted-durably", shown_before_accepted)
check("answers-shown-only-once-durable", answer_before_durable)
check("exit-known-at-a-cut-honoured", exit_ignored)
check("started-without-exit-at-a-cut-answered-interrupted", not_interrupted)
check("started-without-exit-at-a-cut-never-run-again", run_after_interrupt)
check("interrupted-only-when-a-cut-found-it-started-without-exit", interrupted_wrongly)
check("queued-at-a-cut-run-once-after-it", queued_not_run)
check("finished-records-agree-with-the-answer", final_changed)
check("answers-recorded-finished-in-the-journal", unrecorded_answers)
check("answers-never-change", answer_changed)
# The default layout: status/<id>.json is created once, with the answer; progress is beside it.
check("status-files-only-ever-answers", in_progress_in_status)
if broken_statuses:
    # What a client polling between the reboot and the service's start finds: statuses are
    # not fsynced (the journal is the record), so a cut can leave an answer empty; the service
    # writes it again before READY, which is checked at each boot
    # (statuses-readable-once-ready-after-cut-<n>).
    note("status files the cuts left unreadable: " + "; ".join(sorted(broken_statuses)))

# ---- nothing left behind (as tests/integration/crash.rs checks) ------------------------------------------

leftovers = []
for top in (status_dir, live_state):
    for d, _, names in os.walk(top):
        leftovers += [os.path.join(d, n) for n in names if n.startswith(".")]
check("no-temp-files-left", leftovers, "files")
check("progress-records-removed-once-answered", progress_left, "files")
pending = [n for n in listdir(os.path.join(live_spool, "requests")) if not n.startswith(".")]
check("request-files-answered-and-removed", pending, "files")
client_temps = [n for n in listdir(os.path.join(live_spool, "requests")) if n.startswith(".")]
if client_temps:
    # The coordinator never touches dot-files in requests/ (docs/protocol.md): a client cut
    # half-way through its temp-file write leaves its temp file for itself to remove.
    note(f"client temp files left in requests/ (theirs to remove): {' '.join(sorted(client_temps))}")
check("exit-records-consumed", listdir(os.path.join(live_state, "exits")), "files")
check("run-directories-removed", listdir(os.path.join(live_state, "runs")), "directories")
check("journal-intact", [final_journal.torn] if final_journal.torn else [], "tails")
check("all-records-finished", [f"{rid}: {kind}" for rid, (kind, _) in final_latest.items() if kind != "finished"])
inventory = parse(read(os.path.join(live_state, "inventory.json")) or b"")
check("inventory-readable", [] if isinstance(inventory, dict) else ["state/inventory.json"], "files")

for what, k in sorted(stats.items()):
    note(f"{k} {what}")
note(f"{len(submitted)} requests submitted, {len(ids)} ids in all, {sum(len(e) for e in starts.values())} script runs "
     f"in the ledger, {len(half_written)} slow writers cut during their stall, "
     f"{len(final_journal.records)} records in the final journal")
sys.exit(1 if failed else 0)
