"""The nbdkit backend: one detached ``nbdkit python`` server per active VDI.

Used where blktap's tap-ctl is not installed. The server listens on
``<state base>.sock``, runs smlib/datapath/plugin.py over the VDI's chain,
and is owned by the SR, not by the driver process that started it: its
pid and socket are recorded (record.py) and the NBD link points at the
socket. nbdkit binds the socket and opens the chain (the plugin's
get_ready) before it forks into the background, so when the command we
run exits 0 the disk is served; a chain it cannot open fails the start.
"""

import os
import signal
import time
from typing import Dict, List, Optional

from smlib import config
from smlib.protocol.errors import SRError

from . import paths, record

STOP_SECONDS = 30.0


def plugin_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugin.py")


def binary() -> "Optional[str]":
    import shutil

    return config.nbdkit() or shutil.which("nbdkit")


def alive(rec: "Dict[str, str]") -> bool:
    """The recorded server still runs: its pid is an nbdkit on our socket."""
    try:
        pid = int(rec.get("pid", ""))
    except ValueError:
        return False
    return record.pid_alive(pid) and rec.get("socket", "\0") in record.cmdline(pid)


def start(base: str, export: str, chain: "List[str]", readonly: bool) -> "Dict[str, str]":
    """Start a server for ``chain`` (leaf first); returns its record."""
    import subprocess  # deferred: keep driver start-up light

    exe = binary()
    if exe is None:
        raise SRError.from_name("VDIUnavailable", "no nbdkit to serve the disk "
                                "(install nbdkit and nbdkit-plugin-python)")
    sock, pidfile = base + ".sock", base + ".pid"
    os.makedirs(os.path.dirname(base), exist_ok=True)
    for stale in (sock, pidfile):
        paths.remove(stale)
    _write_control(base + ".ctl", 1, chain)
    args = [exe, "--unix", sock, "--pidfile", pidfile, "--log=stderr"]
    if readonly:
        args.append("--readonly")
    args += ["python", plugin_path(), "control=" + base + ".ctl", "export=" + export,
             "readonly=" + ("1" if readonly else "0")]
    with open(base + ".log", "ab") as log:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                              close_fds=True, start_new_session=True, check=False,
                              timeout=60)
    if proc.returncode != 0:
        raise SRError.from_name("VDIUnavailable", f"nbdkit failed to serve {chain[0]} "
                                f"(exit {proc.returncode}): {_log_tail(base)}")
    pid = _wait_pidfile(pidfile)
    return {"backend": "nbdkit", "pid": str(pid), "socket": sock, "leaf": chain[0],
            "readonly": "1" if readonly else "0"}


# The control file ``<base>.ctl`` tells the plugin which chain to serve:
# ``gen=<n>``, ``leaf=<path>``, then ``parent=<path>`` lines, leaf first.
# The plugin holds a shared flock on it during every request and rereads
# it first; a driver holding the exclusive lock has the server quiescent
# between requests, and a new generation makes it reopen the chain.

def _control_text(gen: int, chain: "List[str]") -> bytes:
    lines = [f"gen={gen}", "leaf=" + chain[0]] + ["parent=" + p for p in chain[1:]]
    return ("\n".join(lines) + "\n").encode()


def _write_control(path: str, gen: int, chain: "List[str]") -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _rewrite(fd, gen, chain)
    finally:
        os.close(fd)


def _rewrite(fd: int, gen: int, chain: "List[str]") -> None:
    data = _control_text(gen, chain)
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


def _generation(fd: int) -> int:
    head = os.pread(fd, 64, 0).split(b"\n", 1)[0]
    return int(head[4:]) if head.startswith(b"gen=") and head[4:].isdigit() else 0


def pause(base: str) -> "tuple":
    """Wait for the server's request in flight, then hold it off (exclusive flock)."""
    import fcntl

    fd = os.open(base + ".ctl", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return (fd,)


def resume(handle: "tuple", chain: "Optional[List[str]]") -> None:
    """Let the server go on, reopening ``chain`` (leaf first) when given."""
    import fcntl

    fd = handle[0]
    try:
        if chain:
            _rewrite(fd, _generation(fd) + 1, chain)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _wait_pidfile(pidfile: str) -> int:
    """The forked server writes its pid just after the fork."""
    deadline = time.monotonic() + 10.0
    while True:
        try:
            with open(pidfile) as f:
                text = f.read().strip()
            if text:
                return int(text)
        except (FileNotFoundError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise SRError.from_name("VDIUnavailable", "nbdkit wrote no pid file " + pidfile)
        time.sleep(0.002)


def _log_tail(base: str) -> str:
    try:
        with open(base + ".log", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 600))
            return f.read().decode("utf-8", "replace").strip().replace("\n", " | ")
    except OSError:
        return ""


def stop(base: str, rec: "Dict[str, str]") -> None:
    """Stop the recorded server: SIGTERM lets nbdkit finish its requests and
    close the chain (fsync); a server that will not go is killed. The
    caller fsyncs the leaf afterwards either way."""
    if alive(rec):
        pid = int(rec["pid"])
        _signal(pid, signal.SIGTERM)
        if not _gone(pid, STOP_SECONDS):
            _signal(pid, signal.SIGKILL)
            _gone(pid, 5.0)
    for suffix in (".sock", ".pid"):
        paths.remove(base + suffix)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while record.pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True
