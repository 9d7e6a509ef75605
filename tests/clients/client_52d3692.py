"""How dunebugger-remote's branch 23-remote-update (commit 52d3692) asks the coordinator for
an update, and how its new container picks up the result of its own update. A replica of its
behaviour for the tests in tests/integration/client_generations.rs, written from its description in
issue 14, not the client's code.

    python3 client_52d3692.py SPOOL update COMPONENT VERSION
    python3 client_52d3692.py SPOOL start

update: writes requests/<uuid4>.json in place (open, json.dump with indent=2, close); for
component `remote` (its own container) then also writes the id into
SPOOL/.pending_remote_request. Looks for status/<id>.json once a second; while its message is
"in_progress" it reports each new phase and keeps looking; the first other status is the
answer: it deletes the status file (not the pending file) and reports success and message.

start (the container's start-up): if SPOOL/.pending_remote_request names a request, waits up
to 10 x 1 s for status/<id>.json to exist, reads it ONCE without looking at its message,
deletes it and the pending file and reports success and message. If the status never
appeared it reports nothing and keeps the pending file for its next start.

Prints one JSON object per line: "submitted", "progress", "result"; at start-up
"found_pending" (where the client logs that it found a pending request, just before it starts
waiting), then "result", or "no_pending", "no_status" or "error".
"""

import datetime
import json
import pathlib
import sys
import time
import uuid

POLL_SECONDS = 1
TIMEOUT_SECONDS = 600
START_WAIT_TRIES = 10
PENDING_FILE = ".pending_remote_request"


def emit(**event):
    print(json.dumps(event), flush=True)


def update(spool, component, version):
    request_id = str(uuid.uuid4())
    request = {
        "component": component,
        "action": "update",
        "version": version,
        "request_id": request_id,
        "timestamp": datetime.datetime.now().isoformat(),
    }
    with open(spool / "requests" / f"{request_id}.json", "w") as f:
        json.dump(request, f, indent=2)
    if component == "remote":
        (spool / PENDING_FILE).write_text(request_id)
    emit(event="submitted", request_id=request_id)

    status = final_status(spool / "status" / f"{request_id}.json")
    if not status:
        success, message = False, "Update timeout - coordinator did not respond"
    elif status.get("success"):
        success, message = True, status.get("message", f"Successfully updated {component}")
    else:
        success, message = False, status.get("message", "Update failed")
    emit(event="result", request_id=request_id, success=success, message=message)


def final_status(path):
    """Follows in-progress records to the answer, deleted once read; None on timeout, bad
    JSON or a failed read."""
    started = time.monotonic()
    last_phase = None
    while time.monotonic() - started < TIMEOUT_SECONDS:
        if path.exists():
            try:
                with open(path) as f:
                    status = json.load(f)
                if status.get("message") == "in_progress":
                    phase = status.get("phase", "processing")
                    if phase != last_phase:
                        last_phase = phase
                        emit(event="progress", phase=phase)
                    time.sleep(POLL_SECONDS)
                    continue
                path.unlink()
                return status
            except Exception:
                return None
        time.sleep(POLL_SECONDS)
    return None


def start(spool):
    pending = spool / PENDING_FILE
    try:
        if not pending.exists():
            return emit(event="no_pending")
        request_id = pending.read_text().strip()
        if not request_id:
            pending.unlink(missing_ok=True)
            return emit(event="no_pending")
        emit(event="found_pending", request_id=request_id)
        path = spool / "status" / f"{request_id}.json"
        for _ in range(START_WAIT_TRIES):
            if path.exists():
                break
            time.sleep(POLL_SECONDS)
        if not path.exists():
            return emit(event="no_status", request_id=request_id)
        with open(path) as f:
            status = json.load(f)
        path.unlink(missing_ok=True)
        pending.unlink(missing_ok=True)
        emit(
            event="result",
            request_id=request_id,
            success=status.get("success", False),
            message=status.get("message", "Remote self-update completed"),
        )
    except Exception as e:
        emit(event="error", error=repr(e))


def main():
    spool, command = pathlib.Path(sys.argv[1]), sys.argv[2]
    if command == "update":
        update(spool, sys.argv[3], sys.argv[4])
    elif command == "start":
        start(spool)
    else:
        sys.exit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
