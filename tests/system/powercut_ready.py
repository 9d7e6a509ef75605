#!/usr/bin/env python3
"""Power-cut test: what a polling client finds right after the service said READY.

    powercut_ready.py SPOOL STATE     prints one line per problem; nothing when all is right

Run by powercut_guest.sh's ready unit after every power cut. For every request the journal
knows (journal_view.py): status/<id>.json only ever holds the answer, so it is absent or a
readable answer, never empty (docs/protocol.md: "a reader never sees a partly written file";
the DuneBugger client takes any status file as final and deletes it); a finished request's
answer is there and is the one recorded (nobody collects answers in this test); a request in
flight has a readable progress record (status/<id>.progress.json) or, by the time we look
again, its answer. Neither file is fsynced (the journal is the record), so a cut may have left
them empty: the service must have written them again before READY. One process, not a jq per
file: the check runs at every boot of an emulated guest, over every request of the test.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import journal_view  # noqa: E402


def load(path):
    """(exists, size, parsed or None)"""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return False, 0, None
    try:
        return True, len(data), json.loads(data)
    except ValueError:
        return True, len(data), None


def problems(spool, state):
    latest = journal_view.load(os.path.join(state, "journal.jsonl")).latest()
    status = {rid: os.path.join(spool, "status", rid + ".json") for rid in latest}
    progress = {rid: os.path.join(spool, "status", rid + ".progress.json") for rid in latest}
    bad = []
    # Empty files first (while the queue has not moved yet), then the rest parsed.
    for rid, (kind, _) in sorted(latest.items()):
        if load(status[rid])[:2] == (True, 0):
            bad.append(f"{rid} ({kind}, empty status file)")
        if kind != "finished" and load(progress[rid])[:2] == (True, 0):
            bad.append(f"{rid} ({kind}, empty progress record)")
    look_again = []
    for rid, (kind, body) in sorted(latest.items()):
        exists, size, s = load(status[rid])
        if size and (s is None or s.get("message") == "in_progress"):
            bad.append(f"{rid} ({kind}, status file unparsable or in progress)")
        elif kind == "finished":
            if not exists:
                look_again.append(rid)  # a request file still waiting may have it written again
            elif s is not None and journal_view.summary(s) != journal_view.summary(body["status"]):
                bad.append(f"{rid} (finished as {journal_view.summary(body['status'])}, status file: {journal_view.summary(s)})")
        else:
            # The answer may come while we look (the queue moves): then the progress record goes.
            p_exists, p_size, p = load(progress[rid])
            if p_size and (p is None or p.get("message") != "in_progress"):
                bad.append(f"{rid} ({kind}, progress record unparsable)")
            elif not p_exists and not size:
                look_again.append(rid)
    if look_again:
        time.sleep(2)
    for rid in look_again:
        exists, size, _ = load(status[rid])
        if not size:
            kind = latest[rid][0]
            why = "no status file" if kind == "finished" else "in flight, no progress record: not restored"
            bad.append(f"{rid} ({kind}, {why})")
    return bad


if __name__ == "__main__":
    for line in problems(sys.argv[1], sys.argv[2]):
        print(line)
