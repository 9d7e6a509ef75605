#!/usr/bin/env python3
"""Sign and drop an update-coordinator request: a dependency-free module and CLI for the
container client (Python 3.7+, standard library only). Copy this file into the client.

When the coordinator's config says ``[signature] required = true``, every request carries a
``signature`` field: the hex HMAC-SHA256, keyed with the shared key, of the request's canonical
JSON. The canonical JSON is the request object without ``signature``, keys sorted at every
level, no whitespace, non-ASCII characters not escaped, UTF-8 encoded; exactly what
``canonical_json`` in the coordinator's src/signature.rs produces. The request's ``timestamp``
must be within ``[signature] max_age`` (default 300 s) of the host's clock; it is written here as
naive ISO-8601 **UTC**, which the coordinator reads as UTC.

The key is a file the host gives the container read-only (see docs/security.md), for example
in docker-compose.yml::

    volumes:
      - /var/dunebugger/updates:/var/dunebugger/updates
      - /etc/dunebugger/update-coordinator.key:/run/secrets/update-coordinator.key:ro
    group_add:
      - "<numeric gid of dunebugger-updates>"

As a module::

    import sign_request
    key = sign_request.read_key("/run/secrets/update-coordinator.key")
    request = sign_request.new_request("remote", "update", "1.2.3")
    request_id = sign_request.write_request("/var/dunebugger/updates", request, key=key)

As a command (prints the request id)::

    python3 sign_request.py --key-file KEY --spool /var/dunebugger/updates \\
        --component remote --action update --version 1.2.3
"""

import argparse
import datetime
import hashlib
import hmac
import json
import os
import sys
import uuid

__all__ = ["canonical_json", "new_request", "read_key", "sign", "write_request"]

# The coordinator parses integers as 64-bit; larger ones would be re-encoded differently.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def _check_canonicalizable(value, where="request"):
    """Refuses values whose JSON text Rust's serde_json would print differently.

    Strings, booleans, null, 64-bit integers, lists and objects with string keys encode the
    same in Python and in the coordinator. Floats do not (Python prints 1e-05, serde_json
    1e-5), so they are refused rather than signed into a request that fails with
    ``bad_signature``.
    """
    if value is None or isinstance(value, (str, bool)):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValueError(f"{where}: integer {value} does not fit in 64 bits")
        return
    if isinstance(value, float):
        raise ValueError(f"{where}: floats cannot be signed portably; send {value!r} as a string")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_canonicalizable(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: object key {key!r} is not a string")
            _check_canonicalizable(item, f"{where}.{key}")
        return
    raise ValueError(f"{where}: {type(value).__name__} is not a JSON value")


def canonical_json(request):
    """The bytes that are signed: ``request`` without ``signature``, sorted, compact, UTF-8."""
    unsigned = {k: v for k, v in request.items() if k != "signature"}
    _check_canonicalizable(unsigned)
    text = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def sign(request, key):
    """Returns a copy of ``request`` with ``signature`` = hex HMAC-SHA256 over its canonical
    JSON (any ``signature`` already present is left out of the signed bytes and replaced)."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    signed = {k: v for k, v in request.items() if k != "signature"}
    signed["signature"] = hmac.new(key, canonical_json(signed), hashlib.sha256).hexdigest()
    return signed


def read_key(path):
    """Reads the shared key as the coordinator does: raw bytes, one trailing newline dropped."""
    with open(path, "rb") as f:
        key = f.read()
    if key.endswith(b"\n"):
        key = key[:-1]
    if not key:
        raise ValueError(f"the key file {path} is empty")
    return key


def utc_timestamp(now=None):
    """Naive ISO-8601 in UTC with microseconds, like the existing client's field but in UTC."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.astimezone(datetime.timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")


def new_request(component, action, version=None, request_id=None, timestamp=None):
    """A request in the existing client's shape, with a fresh uuid4 id and a UTC timestamp.
    ``version`` is required for ``update`` and must be absent for ``rollback``/``health``."""
    request = {"component": component, "action": action}
    if version is not None:
        request["version"] = version
    request["request_id"] = request_id or str(uuid.uuid4())
    request["timestamp"] = timestamp or utc_timestamp()
    return request


def write_request(spool_root, request, key=None, in_place=False):
    """Signs ``request`` (when ``key`` is given) and writes ``requests/<request_id>.json``.

    ``in_place=False`` (recommended): write ``.<request_id>.tmp`` and rename it into place, so
    the coordinator only ever sees a complete file. ``in_place=True``: what the existing client
    does, open ``<request_id>.json``, write everything, close; the coordinator reads it on close.
    Either way the file is created exclusively (an existing name is an error, never replaced)
    and with mode 0600. Returns the request id.
    """
    request_id = request["request_id"]
    if not isinstance(request_id, str) or "/" in request_id or request_id.startswith("."):
        raise ValueError(f"request_id {request_id!r} cannot be a file name")
    if key is not None:
        request = sign(request, key)
    data = (json.dumps(request, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    requests_dir = os.path.join(spool_root, "requests")
    final = os.path.join(requests_dir, request_id + ".json")
    path = final if in_place else os.path.join(requests_dir, "." + request_id + ".tmp")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:  # one close after the whole document
            f.write(data)
        if not in_place:
            if os.path.lexists(final):
                raise FileExistsError(f"{final} already exists")
            os.rename(path, final)
    except BaseException:
        if not in_place:
            try:
                os.unlink(path)  # in a 1730 requests/ nobody else can remove our temp file
            except OSError:
                pass
        raise
    return request_id


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Write a (signed) update-coordinator request and print its id."
    )
    parser.add_argument("--spool", required=True, help="spool root holding requests/ and status/")
    parser.add_argument("--key-file", help="shared HMAC key; without it the request is unsigned")
    parser.add_argument("--component", required=True)
    parser.add_argument("--action", required=True, choices=["update", "rollback", "health"])
    parser.add_argument("--version", help="version to install (update only), e.g. 1.2.3")
    parser.add_argument("--request-id", help="default: a fresh uuid4")
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="open, write, close the final name like the existing client (default: temp + rename)",
    )
    args = parser.parse_args(argv)
    if args.action == "update" and args.version is None:
        parser.error("--action update needs --version")
    try:
        key = read_key(args.key_file) if args.key_file else None
        request = new_request(args.component, args.action, args.version, args.request_id)
        request_id = write_request(args.spool, request, key=key, in_place=args.in_place)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(request_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
