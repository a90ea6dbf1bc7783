"""The tapdisk backend (Xen hosts, where blktap's ``tap-ctl`` is installed).

The same tap-ctl sequence as sm's blktap2 module, so a host's tools see
our disks exactly as they see stock ones:

activate: ``list -f <leaf>`` (a tapdisk already serving it is reused),
``allocate`` (prints ``.../tapdisk-<minor>``), ``spawn`` (prints the pid),
``attach -p <pid> -m <minor>``, ``open -p <pid> -m <minor> -a vhd:<leaf>``
(``-R`` read-only), ``list -m <minor>``; then the NBD link
``<nbd dir>/<sr>/<vdi>`` -> ``/run/blktap-control/nbd<pid>.<minor>``, the
socket tapdisk serves. A failed step undoes the ones before it (close,
detach, kill the spawned tapdisk, free the minor).

deactivate: the minor from the link's target, ``list -m <minor>`` for the
pid, ``close -p <pid> -m <minor> -t 120``, ``detach -p <pid> -m <minor>``,
``free -m <minor>``, then the link is removed.

Around a change of the tree (a snapshot renames the leaf): ``list -m``,
``pause -p -m``, and afterwards ``unpause -p -m -a vhd:<leaf>``.
"""

import os
import re
import signal
from typing import Dict, List, Optional

from smlib import config
from smlib.protocol.errors import SRError

from . import paths

_MINOR = re.compile(r"/tapdisk-(\d+)$")
_LINK_MINOR = re.compile(r".*/nbd\d+.(\d+)$")


def binary() -> "Optional[str]":
    import shutil

    return config.tapctl() or shutil.which("tap-ctl")


class TapCtlError(Exception):
    pass


def _call(args: "List[object]") -> str:
    """Run tap-ctl with ``args``; its output (TapCtlError when it fails)."""
    import subprocess  # deferred: keep driver start-up light

    argv = [binary() or "tap-ctl"] + [str(a) for a in args]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True,
                          close_fds=True, check=False, timeout=180)
    if proc.returncode != 0:
        raise TapCtlError(f"{' '.join(argv)} failed ({proc.returncode}): "
                          f"{proc.stderr.strip()}")
    return proc.stdout


def _run(*args: object) -> str:
    """Run one tap-ctl command; its first output line."""
    lines = _call(list(args)).splitlines()
    return lines[0].strip() if lines else ""


def _list(*args: object) -> "List[Dict[str, str]]":
    """``tap-ctl list`` rows: pid, minor, state, args."""
    rows = []
    for line in _call(["list", *args]).splitlines():
        row = {}
        for field in line.strip().split(" ", 3):
            key, sep, value = field.partition("=")
            if sep:
                row[key] = value
        if "pid" in row and "minor" in row:
            rows.append(row)
    return rows


def _find(**query: object) -> "Optional[Dict[str, str]]":
    args: List[object] = []
    for opt, key in (("-m", "minor"), ("-p", "pid"), ("-f", "path")):
        if key in query:
            args += [opt, query[key]]
    rows = _list(*args)
    if len(rows) > 1:
        raise SRError.from_name("VDIUnavailable", f"several tapdisks match {query}")
    return rows[0] if rows else None


def socket_of(pid: "object", minor: "object") -> str:
    return os.path.join(paths.blktap_dir(), f"nbd{pid}.{minor}")


def start(link: str, leaf: str, readonly: bool) -> None:
    """Serve ``leaf`` with a tapdisk and link it at ``link`` (sm's sequence)."""
    try:
        found = _find(path=leaf)
        if found is None:
            found = _launch(leaf, readonly)
    except TapCtlError as exc:
        raise SRError.from_name("VDIUnavailable", str(exc)) from None
    paths.make_link(link, socket_of(found["pid"], found["minor"]))


def _launch(leaf: str, readonly: bool) -> "Dict[str, str]":
    devname = _run("allocate")
    match = _MINOR.search(devname)
    if not match:
        raise TapCtlError(f"tap-ctl allocate printed {devname!r}")
    minor = int(match.group(1))
    try:
        if _find(path=leaf) is not None:
            raise TapCtlError("a tapdisk already serves " + leaf)
        pid = int(_run("spawn"))
        try:
            _run("attach", "-p", pid, "-m", minor)
            try:
                args: List[object] = ["open", "-p", pid, "-m", minor, "-a", "vhd:" + leaf]
                if readonly:
                    args.append("-R")
                _run(*args)
                try:
                    row = _find(minor=minor)
                    if row is None:
                        raise TapCtlError(f"tapdisk {pid} minor {minor} vanished")
                    return row
                except BaseException:
                    _run("close", "-p", pid, "-m", minor, "-t", 120)
                    raise
            except BaseException:
                _run("detach", "-p", pid, "-m", minor)
                raise
        except BaseException:
            try:
                os.kill(pid, signal.SIGTERM)   # sm's shutdown of a spawned tapdisk
            except OSError:
                pass
            raise
    except BaseException:
        _run("free", "-m", minor)
        raise


def _minor_of(link: str) -> "Optional[int]":
    try:
        match = _LINK_MINOR.match(os.readlink(link))
    except OSError:
        return None
    return int(match.group(1)) if match else None


def pause(link: str) -> "Optional[tuple]":
    """sm's tap_pause: ``pause -p <pid> -m <minor>``; None when nothing serves."""
    minor = _minor_of(link)
    try:
        row = _find(minor=minor) if minor is not None else None
        if row is None:
            return None
        _run("pause", "-p", row["pid"], "-m", minor)
    except TapCtlError as exc:
        raise SRError.from_name("VDIUnavailable", str(exc)) from None
    return (row["pid"], minor)


def unpause(handle: tuple, leaf: str) -> None:
    """sm's tap_unpause: ``unpause -p <pid> -m <minor> -a vhd:<leaf>`` (the leaf
    may be a new image under the same name after a snapshot)."""
    pid, minor = handle
    try:
        _run("unpause", "-p", pid, "-m", minor, "-a", "vhd:" + leaf)
    except TapCtlError as exc:
        raise SRError.from_name("VDIUnavailable", str(exc)) from None


def stop(link: str) -> None:
    """Shut down the tapdisk the link points at, then remove the link."""
    if not os.path.lexists(link):
        return
    minor = _minor_of(link)
    if minor is not None:
        try:
            row = _find(minor=minor)
            if row is not None:
                _run("close", "-p", row["pid"], "-m", minor, "-t", 120)
                _run("detach", "-p", row["pid"], "-m", minor)
                _run("free", "-m", minor)
        except TapCtlError as exc:
            raise SRError.from_name("VDIUnavailable", str(exc)) from None
    paths.remove(link)
