#!/usr/bin/env python3
"""The power-cut checker judged on made-up evidence: a story the design allows passes, and each
broken promise fails the check named for it (a checker that cannot fail proves nothing).

    python3 tests/system/powercut_check_test.py     (runs in a second; CI runs it)

Each scenario writes what powercut_guest.sh would have left (the ledger and the client's log
with their cut marks, each cut's snapshot, the final state) and runs powercut_check.py on it.
"""

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SPOOL, STATE = "/var/dunebugger/updates", "/var/lib/update-coordinator"


def accepted(rid, action="update"):
    return {"accepted": {"request_id": rid, "component": "pca", "action": action}}


def started(rid):
    return {"started": {"boot_id": "b", "accepted": {"request_id": rid}}}


def exited(rid, code):
    return {"exited": {"request_id": rid, "record": {"exit_code": code}}}


def finished(rid, status):
    return {"finished": {"request_id": rid, "at_ns": 1, "status": status}}


def answer(rid, action, code):
    """The final status of a run of `action` that exited with `code`."""
    s = {"request_id": rid, "component": "pca", "action": action, "message": "done",
         "success": code == 0, "exit_code": code}
    if action == "update":
        s["version"] = f"1.1.{code}"
    if code:
        s["code"] = "script_failed"
    return s


def interrupted(rid, action):
    return {"request_id": rid, "component": "pca", "action": action, "message": "interrupted",
            "success": False, "code": "interrupted"}


def refused(rid, code):
    return {"request_id": rid, "message": "refused", "success": False, "code": code}


def journal(records, torn=b""):
    return b"".join(json.dumps(r).encode() + b"\n" for r in records) + torn


class Story:
    """The evidence of one power-cut run, as a list of what happened, editable per scenario.

    r1  ran and was answered before cut 1 (a client saw the answer)
    r2  running at cut 1, no exit record: interrupted, never run again
    r3  accepted only at cut 1 (its started record came after a torn line): ran after it
    r4  ran before cut 1, whose exit record (unsynced, but readable) was not yet in the journal
    r5  accepted at cut 2, started and answered after it
    r6  the client's unsynced in-place write was lost with cut 1: nobody knew of it
    r7  the client's write came back empty: refused, nothing recorded
    """

    def __init__(self):
        self.answers = {"r1": answer("r1", "update", 0), "r2": interrupted("r2", "health"),
                        "r3": answer("r3", "update", 1), "r4": answer("r4", "update", 3),
                        "r5": answer("r5", "update", 2), "r7": refused("r7", "invalid_json")}
        self.submitted = ["r1 pca update 1.1.0 0 inplace 1", "r2 pca health - 2 inplace 1",
                          "r3 pca update 1.1.1 1 client 1", "r4 pca update 1.1.3 3 inplace 1",
                          "r5 pca update 1.1.2 2 inplace 2", "r6 pca update 1.2.0 0 inplace 2",
                          "r7 pca update 1.1.0 0 inplace 1"]
        self.ledger = ["start update r1", "end update r1 0", "start health r2",
                       "start update r4", "end update r4 3", "cut 1",
                       "start update r3", "end update r3 1", "cut 2",
                       "start update r5", "end update r5 2"]
        self.seen = ["seen r1 queued", "seen r3 queued", "fin r1 - 0 True", "cut 1", "cut 2"]
        cut1 = [accepted("r1"), started("r1"), exited("r1", 0), finished("r1", self.answers["r1"]),
                accepted("r2", "health"), started("r2"), accepted("r3"), accepted("r4"), started("r4")]
        self.cuts = [
            {STATE + "/journal.jsonl": journal(cut1, b'{"started": {"boot_id": "b", "acc\n'
                                               + journal([started("r3")])),
             STATE + "/exits/r4.json": json.dumps({"exit_code": 3}).encode(),
             STATE + "/runs/r2/run.json": b"",
             SPOOL + "/requests/r3.json": b"{}", SPOOL + "/status/r1.json": b""},
            {STATE + "/journal.jsonl": journal(cut1 + [
                finished("r2", self.answers["r2"]), started("r3"), exited("r3", 1),
                finished("r3", self.answers["r3"]), exited("r4", 3),
                finished("r4", self.answers["r4"]), accepted("r5")])},
        ]
        self.final_journal = None  # default: every request's finished record
        self.final_files = {}  # extra files in the final state

    def check(self):
        """Runs the checker on this story: (exit status, names of the failed checks, output)."""
        with tempfile.TemporaryDirectory() as tmp:
            p, root = os.path.join(tmp, "P"), os.path.join(tmp, "root")
            os.makedirs(os.path.join(p, "snap"))
            for name, lines in (("submitted", self.submitted), ("ledger", self.ledger),
                                ("seen", self.seen), ("writes", [])):
                with open(os.path.join(p, name), "w") as f:
                    f.write("".join(line + "\n" for line in lines))
            for n, files in enumerate(self.cuts, 1):
                with tarfile.open(os.path.join(p, "snap", f"cut-{n}.tar"), "w") as tar:
                    for name, data in files.items():
                        info = tarfile.TarInfo(name.lstrip("/"))
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
            records = self.final_journal
            if records is None:
                records = [finished(rid, s) for rid, s in self.answers.items() if rid != "r7"]
            files = {STATE + "/journal.jsonl": journal(records), STATE + "/inventory.json": b"{}"}
            files.update({f"{SPOOL}/status/{rid}.json": json.dumps(s).encode()
                          for rid, s in self.answers.items()})
            files.update(self.final_files)
            for d in (SPOOL + "/requests", SPOOL + "/status", STATE + "/exits", STATE + "/runs"):
                os.makedirs(root + d, exist_ok=True)
            for name, data in files.items():
                os.makedirs(os.path.dirname(root + name), exist_ok=True)
                with open(root + name, "wb") as f:
                    f.write(data)
            out = subprocess.run([sys.executable, os.path.join(HERE, "powercut_check.py"), p, SPOOL,
                                  STATE, str(len(self.cuts)), root], capture_output=True, text=True)
        failed = {line[5:].split(":")[0] for line in out.stdout.splitlines() if line.startswith("FAIL ")}
        return out.returncode, failed, out.stdout + out.stderr


class PowercutCheck(unittest.TestCase):
    def assertFails(self, story, *names):
        rc, failed, out = story.check()
        self.assertEqual(rc, 1, out)
        self.assertEqual(failed, set(names), out)

    def test_a_story_the_design_allows_passes(self):
        rc, failed, out = Story().check()
        self.assertEqual((rc, failed), (0, set()), out)

    def test_a_ledger_line_the_cut_left_as_zeros_does_not_hide_the_cut_mark(self):
        # The power went between a script's append and its flush: the size reached the disk,
        # the data did not, and the snapshot unit's mark follows the zeros.
        story = Story()
        story.ledger[5] = "\0" * 32 + "cut 1"
        rc, failed, out = story.check()
        self.assertEqual((rc, failed), (0, set()), out)

    def test_an_answer_that_ignores_an_exit_record_readable_at_a_cut_fails(self):
        story = Story()
        story.answers["r4"] = interrupted("r4", "update")
        self.assertFails(story, "exit-known-at-a-cut-honoured", "finished-records-agree-with-the-answer",
                         "interrupted-only-when-a-cut-found-it-started-without-exit")

    def test_a_run_cut_without_an_exit_answered_with_an_exit_code_fails(self):
        story = Story()
        story.answers["r2"] = answer("r2", "health", 2)
        story.ledger.insert(3, "end health r2 2")
        self.assertFails(story, "started-without-exit-at-a-cut-answered-interrupted",
                         "finished-records-agree-with-the-answer")

    def test_a_script_run_again_after_the_cut_that_found_it_started_fails(self):
        story = Story()
        story.ledger.insert(6, "start health r2")
        self.assertFails(story, "no-script-ran-twice", "started-without-exit-at-a-cut-never-run-again")

    def test_a_script_started_before_its_start_was_durable_fails(self):
        story = Story()
        story.ledger.remove("start update r3")
        story.ledger.insert(0, "start update r3")
        self.assertFails(story, "scripts-start-only-once-their-start-is-durable",
                         "queued-at-a-cut-run-once-after-it")

    def test_an_answer_shown_before_its_exit_was_durable_fails(self):
        story = Story()
        story.seen.insert(0, "fin r3 script_failed 1 False")
        self.assertFails(story, "answers-shown-only-once-durable")

    def test_a_queued_status_shown_before_the_acceptance_was_durable_fails(self):
        story = Story()
        story.seen.insert(0, "seen r5 queued")
        self.assertFails(story, "queued-status-shown-only-once-accepted-durably")

    def test_a_finished_answer_that_changes_fails(self):
        story = Story()
        story.answers["r1"] = answer("r1", "update", 0) | {"exit_code": 4, "success": False}
        self.assertFails(story, "answers-never-change", "finished-records-agree-with-the-answer",
                         "exit-known-at-a-cut-honoured", "true-exit-codes")

    def test_a_lost_request_fails(self):
        story = Story()
        del story.answers["r3"]
        self.assertFails(story, "every-accepted-request-answered")

    def test_leftovers_and_a_torn_final_journal_fail(self):
        story = Story()
        story.final_files = {STATE + "/exits/r5.json": b"{}", STATE + "/runs/r5/lock": b"",
                             STATE + "/.journal.jsonl.1f2e.tmp": b""}
        story.final_journal = [finished(rid, s) for rid, s in story.answers.items() if rid != "r7"]
        story.final_journal.append(accepted("r8"))
        self.assertFails(story, "exit-records-consumed", "run-directories-removed",
                         "no-temp-files-left", "all-records-finished", "every-accepted-request-answered")


if __name__ == "__main__":
    unittest.main()
