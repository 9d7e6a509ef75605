"""How dunebugger-remote v1.0.0-beta.8 (branch develop, 6415518) asks the coordinator for an
update, reduced to what the coordinator sees. A replica of its behaviour for the tests in
tests/integration/client_generations.rs, written from its description in issue 14, not the client's code.

    python3 beta8.py SPOOL COMPONENT VERSION

It writes requests/<uuid4>.json in place (open, json.dump with indent=2, close), then looks
for status/<id>.json once a second and takes the FIRST file there that parses as the answer,
whatever its message: it deletes it and tells its user success and message. A status file
that does not parse ends the wait like its timeout does.

Prints one JSON object per line: {"event": "submitted", ...}, then {"event": "result", ...}.
"""

import datetime
import json
import pathlib
import sys
import time
import uuid

POLL_SECONDS = 1
TIMEOUT_SECONDS = 600


def emit(**event):
    print(json.dumps(event), flush=True)


def submit(spool, component, version):
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
    return request_id


def first_status(path):
    """The first status file that parses, deleted once read; None on timeout or bad JSON."""
    started = time.monotonic()
    while time.monotonic() - started < TIMEOUT_SECONDS:
        if path.exists():
            try:
                with open(path) as f:
                    status = json.load(f)
                path.unlink()
                return status
            except Exception:
                return None
        time.sleep(POLL_SECONDS)
    return None


def main():
    spool, component, version = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    request_id = submit(spool, component, version)
    emit(event="submitted", request_id=request_id)
    status = first_status(spool / "status" / f"{request_id}.json")
    if not status:
        success, message = False, "Update timeout - coordinator did not respond"
    elif status.get("success"):
        success, message = True, status.get("message", f"Successfully updated {component}")
    else:
        success, message = False, status.get("message", "Update failed")
    emit(event="result", request_id=request_id, success=success, message=message)


if __name__ == "__main__":
    main()
