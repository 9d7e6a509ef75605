#!/usr/bin/env python3
"""The coordinator's record journal (<state>/journal.jsonl), read the way the coordinator reads
it after a power cut, for the system tests (powercut_check.py, powercut_guest.sh, compose.sh).

    journal_view.py JOURNAL ids          one "<id> <kind>" line per request: its latest record
                                         (finished: "<id> finished <code>|<exit_code>|<success>")
    journal_view.py JOURNAL finished ID  the final status of ID's latest finished record (JSON)

One JSON object per line, externally tagged with exactly one key (accepted, started, unstarted,
exited, finished). A reader stops at the first line that is not a newline-terminated valid
JSON object of that shape: a power cut can tear the tail, and nothing after a torn line was
ever meant to be read (docs/durability.md). Per request the latest record decides.
"""

import json
import sys

KINDS = ("accepted", "started", "unstarted", "exited", "finished")


def request_id(kind, body):
    """The request a record is about: `started` holds the accepted request inside its run spec."""
    if kind == "started" and "request_id" not in body:
        return (body.get("accepted") or {}).get("request_id")
    return body.get("request_id")


def parse_line(line):
    """(kind, id, body) for a well-formed record line (without its newline), else None."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or len(record) != 1:
        return None
    (kind, body), = record.items()
    if kind not in KINDS or not isinstance(body, dict):
        return None
    rid = request_id(kind, body)
    return (kind, rid, body) if isinstance(rid, str) else None


class Journal:
    """A journal's valid prefix: every record in order, and where (if anywhere) it was torn."""

    def __init__(self, data):
        self.records = []  # (kind, id, body), in the order written
        self.torn = None  # None, or a description of the first line that is not a record
        offset = 0
        while offset < len(data):
            end = data.find(b"\n", offset)
            if end < 0:
                self.torn = f"unterminated tail of {len(data) - offset} bytes at byte {offset}"
                break
            record = parse_line(data[offset:end])
            if record is None:
                self.torn = f"invalid line at byte {offset} ({end - offset} bytes), {len(data) - offset} bytes not read"
                break
            self.records.append(record)
            offset = end + 1

    def latest(self):
        """id -> (kind, body) of its latest record."""
        out = {}
        for kind, rid, body in self.records:
            out[rid] = (kind, body)
        return out

    def all_of(self, kind):
        """id -> [body, ...] of every record of this kind, in order."""
        out = {}
        for k, rid, body in self.records:
            if k == kind:
                out.setdefault(rid, []).append(body)
        return out


def summary(status):
    """What a client takes from an answer, as `jq -r '"\\(.code // "-")|\\(.exit_code // "-")|\\(.success)"'`
    prints it from a status file."""
    code, exit_code = status.get("code"), status.get("exit_code")
    return f"{code or '-'}|{'-' if exit_code is None else exit_code}|{json.dumps(status.get('success'))}"


def load(path):
    """The journal at `path`; an absent one is empty (nothing was ever accepted)."""
    try:
        with open(path, "rb") as f:
            return Journal(f.read())
    except FileNotFoundError:
        return Journal(b"")


def main(argv):
    if len(argv) == 3 and argv[2] == "ids":
        for rid, (kind, body) in sorted(load(argv[1]).latest().items()):
            print(rid, kind, summary(body.get("status") or {})) if kind == "finished" else print(rid, kind)
        return 0
    if len(argv) == 4 and argv[2] == "finished":
        found = load(argv[1]).all_of("finished").get(argv[3])
        if not found:
            return 1
        print(json.dumps(found[-1]["status"], indent=2))
        return 0
    print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
