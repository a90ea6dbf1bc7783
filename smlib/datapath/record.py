"""The record of a running server: ``<state base>.state``, key=value lines.

Written (atomically: temporary file, rename) once the server serves, read
by any later command, removed once the server is stopped.
"""

import os
from typing import Dict, Optional


def read(base: str) -> "Optional[Dict[str, str]]":
    try:
        with open(base + ".state") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    rec = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            rec[key] = value
    return rec


def write(base: str, rec: "Dict[str, str]") -> None:
    os.makedirs(os.path.dirname(base), exist_ok=True)
    tmp = base + ".state.tmp"
    with open(tmp, "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in sorted(rec.items())))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, base + ".state")


def remove(base: str) -> None:
    for suffix in (".state", ".state.tmp"):
        try:
            os.unlink(base + suffix)
        except FileNotFoundError:
            pass


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return fields[0] != "Z"


def cmdline(pid: int) -> "list":
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []
