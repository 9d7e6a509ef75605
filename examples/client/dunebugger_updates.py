#!/usr/bin/env python3
"""Ask the host's update-coordinator to update, roll back or health-check a component, from
inside a container. Standard library only (Python 3.7+): copy this file into the client image.

The container needs the spool bind-mounted and its user in the group ``dunebugger-updates``
(see examples/docker-compose.yml); the protocol is in docs/protocol.md.

Basic use::

    import dunebugger_updates as updates

    request_id = updates.submit("scheduler", "update", "1.2.3")
    status = updates.wait(request_id, on_progress=lambda phase, status: print("…", phase))
    if status["success"]:
        print("updated:", status["message"])
    else:
        print("failed:", status["code"], status["message"], status.get("error", ""))

``wait`` returns the final status (a dict, see docs/protocol.md "Status fields") and deletes
its file; it raises ``TimeoutError`` if there is none within ``timeout`` seconds (the status
file is then left for a later ``wait`` or ``pending_result``).

Updating yourself
-----------------
When the container that asks is the one being updated (``remote`` asking for ``remote``),
``update.sh`` replaces it while it waits: ``wait`` never returns in the old container. The
result is picked up by the new one:

1. before submitting, save the request id in a file that survives the container (a volume);
2. submit and wait as usual (the old container is stopped at some point);
3. at start-up, look for a saved id and finish waiting for it, then forget it.

::

    PENDING = "/var/lib/dunebugger-remote/pending-update"   # on a volume

    def update_myself(version):
        request_id = updates.new_request_id()
        updates.remember(PENDING, request_id)        # 1. before the request exists
        updates.submit("remote", "update", version, request_id=request_id)
        status = updates.wait(request_id)            # 2. returns only if we survive it
        updates.forget(PENDING)
        return status

    def on_startup():
        status = updates.resume(PENDING)             # 3. None when nothing was pending
        if status is not None:
            report(status)                           # e.g. tell the user the update's outcome

``resume`` is ``wait`` on the saved id plus ``forget``. To check without blocking, use
``pending_result(request_id)``: the final status (file deleted), ``None`` while the request is
queued or running, or ``LookupError`` when there is neither a status nor a request file (the
result was already collected). The new container must run with the same uid as the old one:
the status file belongs to the uid that wrote the request.

Signed requests
---------------
When the coordinator's config says ``[signature] required = true``, pass ``key=`` (bytes, or
``read_key(path)`` of the key file mounted read-only into the container). The scheme is the one
in examples/sign_request.py: ``signature`` = hex HMAC-SHA256 over the canonical JSON of the
request without ``signature`` (keys sorted, no whitespace, non-ASCII unescaped, UTF-8), and a
``timestamp`` in naive ISO-8601 UTC, which this module always writes.

As a command (exit 0 success, 1 failure, 2 bad arguments or spool, 3 timeout)::

    python3 dunebugger_updates.py scheduler update 1.2.3
    python3 dunebugger_updates.py --pending-file /var/lib/dunebugger-remote/pending-update remote update 1.2.3
    python3 dunebugger_updates.py --resume /var/lib/dunebugger-remote/pending-update
"""

import argparse
import datetime
import hashlib
import hmac
import json
import os
import re
import sys
import time
import uuid

__all__ = [
    "SPOOL",
    "forget",
    "new_request_id",
    "pending_result",
    "read_key",
    "read_status",
    "recall",
    "remember",
    "resume",
    "submit",
    "wait",
]

#: The spool root (bind-mounted from the host); ``spool=`` overrides it per call.
SPOOL = os.environ.get("DUNEBUGGER_UPDATES_SPOOL", "/var/dunebugger/updates")

#: Long enough for a queued update whose script runs into its timeout (600 s) and kill grace
#: (10 s) by the coordinator's defaults (docs/protocol.md, "How long to wait").
DEFAULT_TIMEOUT = 1800

ACTIONS = ("update", "rollback", "health")
_ID = re.compile(r"^(?![.-])(?!.*\.\.)[A-Za-z0-9._-]{1,128}$")
_VERSION = re.compile(r"^[0-9][A-Za-z0-9.+_-]{0,63}$")
_COMPONENT = re.compile(r"^[a-z0-9_-]{1,64}$")


def new_request_id():
    """A fresh, unguessable request id (uuid4)."""
    return str(uuid.uuid4())


def _root(spool):
    return spool if spool is not None else SPOOL


def _status_path(request_id, spool=None, suffix=".json"):
    _check_id(request_id)
    return os.path.join(_root(spool), "status", request_id + suffix)


def _check_id(request_id):
    if not isinstance(request_id, str) or not _ID.match(request_id):
        raise ValueError(f"invalid request id {request_id!r}")


def read_key(path):
    """The shared signing key as the coordinator reads it: raw bytes, one trailing newline
    dropped."""
    with open(path, "rb") as f:
        key = f.read()
    if key.endswith(b"\n"):
        key = key[:-1]
    if not key:
        raise ValueError(f"the key file {path} is empty")
    return key


def _utc_timestamp():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(tzinfo=None).isoformat(timespec="microseconds")


def _sign(request, key):
    if isinstance(key, str):
        key = key.encode("utf-8")
    unsigned = {k: v for k, v in request.items() if k != "signature"}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    signed = dict(unsigned)
    signed["signature"] = hmac.new(key, canonical.encode("utf-8"), hashlib.sha256).hexdigest()
    return signed


def submit(component, action, version=None, *, request_id=None, spool=None, key=None, in_place=False):
    """Writes a request and returns its id.

    ``version`` is required for ``update`` ("1.2.3", "1.0.0-beta.8"; no "v") and must be
    ``None`` otherwise. ``request_id`` defaults to a fresh uuid4 (pass one you saved first to
    update yourself). ``key`` signs the request. The file is written as ``.<id>.tmp`` and
    renamed to ``<id>.json`` (``in_place=True``: written directly under its final name, as the
    original DuneBugger client does). Raises ``ValueError`` for a request the coordinator would
    refuse, ``FileNotFoundError`` when the spool is not mounted, ``FileExistsError`` for an id
    already in use, ``PermissionError`` when the user is not in the spool's group.
    """
    if not isinstance(component, str) or not _COMPONENT.match(component):
        raise ValueError(f"invalid component {component!r}")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    if action == "update":
        if not isinstance(version, str) or not _VERSION.match(version):
            raise ValueError(f"update needs a version like 1.2.3 (no 'v'), not {version!r}")
    elif version is not None:
        raise ValueError(f"{action} takes no version")
    request_id = request_id if request_id is not None else new_request_id()
    _check_id(request_id)

    request = {"component": component, "action": action}
    if version is not None:
        request["version"] = version
    request["request_id"] = request_id
    request["timestamp"] = _utc_timestamp()
    if key is not None:
        request = _sign(request, key)
    data = (json.dumps(request, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    requests_dir = os.path.join(_root(spool), "requests")
    if not os.path.isdir(requests_dir):
        raise FileNotFoundError(
            f"{requests_dir} does not exist: is the spool bind-mounted into the container?"
        )
    final = os.path.join(requests_dir, request_id + ".json")
    path = final if in_place else os.path.join(requests_dir, "." + request_id + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:  # one close, after the whole document
            f.write(data)
        if not in_place:
            if os.path.lexists(final):
                raise FileExistsError(f"{final} already exists")
            os.rename(path, final)
    except BaseException:
        if not in_place:
            try:
                os.unlink(path)  # nobody else can remove it from a 1730 requests/
            except OSError:
                pass
        raise
    return request_id


def read_status(request_id, spool=None):
    """The current status of ``request_id`` as a dict, or ``None`` when there is none (yet).
    The final answer is ``status/<id>.json``; until then progress is in
    ``status/<id>.progress.json`` beside it (or, with the coordinator's
    ``progress_in_status``, in ``status/<id>.json`` itself). Does not delete anything."""
    return _read_json(_status_path(request_id, spool)) or _read_json(
        _status_path(request_id, spool, ".progress.json")
    )


def _read_json(path):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # statuses are renamed into place whole; treat anything else as absent


def _is_final(status):
    return status is not None and status.get("message") != "in_progress"


def _collect(request_id, status, spool):
    """Deletes a final status file; a refusal the client cannot delete (root-owned in a
    sticky status/) is left to the coordinator's retention."""
    try:
        os.remove(_status_path(request_id, spool))
    except (FileNotFoundError, PermissionError):
        pass
    return status


def wait(request_id, timeout=DEFAULT_TIMEOUT, poll=1.0, on_progress=None, spool=None):
    """Polls until the status of ``request_id`` is final, deletes its file and returns it.

    ``on_progress(phase, status)`` is called whenever the in-progress phase changes
    ("queued", "running", then the script's own phases such as "downloading"). Decides only
    on ``message``, as the protocol says. Raises ``TimeoutError`` after ``timeout`` seconds
    without a final status (the file, if any, is left in place). Time spent in phase
    "scheduled" (waiting for a maintenance window or ``not_before``, with ``scheduled_for``
    saying until when) does not count: that wait is announced, not a hang."""
    deadline = time.monotonic() + timeout
    last_phase = None
    while True:
        status = read_status(request_id, spool)
        if _is_final(status):
            return _collect(request_id, status, spool)
        if status is not None and status.get("phase") == "scheduled":
            deadline = time.monotonic() + timeout
        if status is not None and on_progress is not None:
            phase = status.get("phase")
            if phase != last_phase:
                last_phase = phase
                on_progress(phase, status)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no final status for request {request_id} within {timeout} s")
        time.sleep(poll)


def pending_result(request_id, spool=None):
    """Checks once, without waiting, on a request submitted earlier (for example before this
    container was replaced). Returns the final status (and deletes its file), or ``None`` while
    the request is waiting or running. Raises ``LookupError`` when there is neither a status
    nor a request file: the result was already collected (or the request never written)."""
    status = read_status(request_id, spool)
    if _is_final(status):
        return _collect(request_id, status, spool)
    if status is not None:
        return None
    request_file = os.path.join(_root(spool), "requests", request_id + ".json")
    if os.path.lexists(request_file):
        return None  # not taken yet (the coordinator may be down or busy)
    # The coordinator writes the status before it removes the request: look once more.
    status = read_status(request_id, spool)
    if _is_final(status):
        return _collect(request_id, status, spool)
    if status is not None:
        return None
    raise LookupError(f"no status and no request for {request_id}: already collected?")


def remember(path, request_id):
    """Saves ``request_id`` in ``path`` (atomically, durably) before submitting it."""
    _check_id(request_id)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(request_id + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recall(path):
    """The request id saved in ``path``, or ``None``."""
    try:
        with open(path, encoding="utf-8") as f:
            request_id = f.read().strip()
    except FileNotFoundError:
        return None
    return request_id or None


def forget(path):
    """Removes the saved request id."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def resume(path, timeout=DEFAULT_TIMEOUT, poll=1.0, on_progress=None, spool=None):
    """At start-up: if ``path`` holds a saved request id, waits for its final status, forgets
    the id and returns the status. Returns ``None`` when nothing was saved, or when the result
    was already collected (the id is forgotten then too). ``TimeoutError`` keeps the id."""
    request_id = recall(path)
    if request_id is None:
        return None
    try:
        status = pending_result(request_id, spool)
    except LookupError:
        forget(path)
        return None
    if status is None:
        status = wait(request_id, timeout=timeout, poll=poll, on_progress=on_progress, spool=spool)
    forget(path)
    return status


def _report(status):
    print(f"success: {str(status.get('success')).lower()}")
    print(f"message: {status.get('message')}")
    if status.get("code"):
        print(f"code: {status['code']}")
    if not status.get("success") and status.get("error"):
        sys.stdout.write("error:\n" + status["error"] + ("" if status["error"].endswith("\n") else "\n"))
    return 0 if status.get("success") else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description="Submit an update-coordinator request and wait for it.")
    parser.add_argument("component", nargs="?")
    parser.add_argument("action", nargs="?", choices=ACTIONS)
    parser.add_argument("version", nargs="?")
    parser.add_argument("--spool", default=None, help=f"spool root (default {SPOOL})")
    parser.add_argument("--key-file", help="sign the request with this key")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--in-place", action="store_true", help="write the request in place")
    parser.add_argument("--pending-file", help="save the request id here first (self-update)")
    parser.add_argument("--resume", metavar="PENDING_FILE", help="finish waiting for a saved request")
    args = parser.parse_args(argv)

    def progress(phase, status):
        print(f"phase: {phase}", flush=True)

    try:
        if args.resume:
            status = resume(args.resume, args.timeout, args.poll, progress, args.spool)
            if status is None:
                print("nothing pending")
                return 0
            return _report(status)
        if not args.component or not args.action:
            parser.error("COMPONENT and ACTION are required (or --resume)")
        key = read_key(args.key_file) if args.key_file else None
        request_id = new_request_id()
        if args.pending_file:
            remember(args.pending_file, request_id)
        submit(args.component, args.action, args.version, request_id=request_id,
               spool=args.spool, key=key, in_place=args.in_place)
        print(f"request: {request_id}", flush=True)
        status = wait(request_id, args.timeout, args.poll, progress, args.spool)
        if args.pending_file:
            forget(args.pending_file)
        return _report(status)
    except TimeoutError as e:
        print(f"timeout: {e}", file=sys.stderr)
        return 3
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
