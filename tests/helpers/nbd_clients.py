"""Real NBD clients over a served disk: qemu-io, qemu-img, nbdinfo, nbdcopy.

``uri`` turns the params_nbd vdi_attach answers (``nbd:unix:<link>:
exportname=<uuid>``, qemu's own syntax) into libnbd's URI. Missing tools
skip the test (``.ci/run`` installs them: qemu-utils, libnbd-bin, nbdkit,
nbdkit-plugin-python).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import pytest

TOOLS = ("qemu-io", "qemu-img", "nbdinfo", "nbdcopy", "nbdkit")


def need_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing NBD tools: {', '.join(missing)}")


def split(params_nbd: str) -> tuple[str, str]:
    """(socket path, export name) of sm's ``nbd:unix:<path>:exportname=<name>``."""
    assert params_nbd.startswith("nbd:unix:"), params_nbd
    sock, sep, export = params_nbd[len("nbd:unix:"):].rpartition(":exportname=")
    assert sep, params_nbd
    return sock, export


def uri(params_nbd: str) -> str:
    sock, export = split(params_nbd)
    return f"nbd+unix:///{export}?socket={sock}"


def run(argv: list[str], timeout: float = 120) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{argv[0]} failed: {proc.stdout[-800:]} {proc.stderr[-800:]}"
    return proc.stdout


def qemu_io(params_nbd: str, *commands: str, readonly: bool = False) -> str:
    """Run qemu-io commands; a pattern mismatch fails (qemu-io prints it)."""
    argv = ["qemu-io", "-f", "raw"] + (["-r"] if readonly else [])
    for c in commands:
        argv += ["-c", c]
    out = run(argv + [params_nbd])
    assert "Pattern verification failed" not in out, out
    assert "error" not in out.lower(), out
    return out


def info(params_nbd: str) -> dict:
    return json.loads(run(["nbdinfo", "--json", uri(params_nbd)]))["exports"][0]


def copy_out(params_nbd: str, dest: str) -> None:
    run(["nbdcopy", uri(params_nbd), dest])


def copy_in(src: str, params_nbd: str) -> None:
    run(["nbdcopy", "--flush", src, uri(params_nbd)])


def kill_servers(state_dir: str) -> None:
    """SIGKILL every server recorded under ``state_dir`` (a test's leftovers:
    a failed test must not leave an nbdkit holding its devices open)."""
    for dirpath, _dirs, files in os.walk(state_dir):
        for name in files:
            if name.endswith(".pid"):
                try:
                    with open(os.path.join(dirpath, name)) as f:
                        os.kill(int(f.read().strip()), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
