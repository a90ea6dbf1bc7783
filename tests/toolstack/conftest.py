"""Toolstack fixtures: a private database, the real drivers, and smctl as a program.

Drivers always run as real processes from the checkout's drivers/ (or from
a per-test directory holding small wrapper scripts that inject a failure
into a real driver: the only stand-ins here, used where a real driver has
no way to fail on demand).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import NamedTuple, Optional

import pytest

from smlib.toolstack.db import Database
from smlib.toolstack.ops import Toolstack
from smlib.toolstack.runner import Runner

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVERS_DIR = os.path.join(REPO_ROOT, "drivers")


@pytest.fixture
def db(tmp_path) -> Database:
    database = Database(str(tmp_path / "state.db"))
    yield database
    database.close()


@pytest.fixture
def ts(db) -> Toolstack:
    toolstack = Toolstack(db, Runner(DRIVERS_DIR, timeout=120))
    yield toolstack
    toolstack.close()


@pytest.fixture
def file_sr(ts, tmp_path):
    """A FileSR in tmp_path/sr, made through the toolstack."""
    location = tmp_path / "sr"
    location.mkdir()
    return ts.sr_create("file", {"location": str(location)}, "local")


def write_driver(directory: str, name: str, body: str) -> str:
    """An executable script driver run by this interpreter."""
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(f"#!{sys.executable}\n" + textwrap.dedent(body))
    os.chmod(path, 0o755)
    return path


# A wrapper that fails one chosen command of a real driver: $FAIL_COMMAND
# fails with fault $FAIL_CODE on its $FAIL_AT-th call (counted in
# $FAIL_COUNTER); every other call execs the real driver with the same argv.
FLAKY_DRIVER = """
import os, sys, xmlrpc.client
(params,), method = xmlrpc.client.loads(sys.argv[1])
if method == os.environ.get("FAIL_COMMAND"):
    counter = os.environ["FAIL_COUNTER"]
    seen = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
    open(counter, "w").write(str(seen))
    if seen == int(os.environ.get("FAIL_AT", "1")):
        code = int(os.environ.get("FAIL_CODE", "200"))
        print(xmlrpc.client.dumps(xmlrpc.client.Fault(code, "injected failure"),
                                  methodresponse=True))
        sys.exit(0)
os.execv(REAL, [REAL] + sys.argv[1:])
"""


@pytest.fixture
def flaky(db, tmp_path, monkeypatch):
    """flaky(command, at=1, code=200) -> a Toolstack whose drivers fail that call."""
    ddir = tmp_path / "flaky-drivers"
    ddir.mkdir()
    for name in os.listdir(DRIVERS_DIR):
        if name.endswith("SR"):
            real = os.path.join(DRIVERS_DIR, name)
            write_driver(str(ddir), name, f"REAL = {real!r}\n" + FLAKY_DRIVER)
    monkeypatch.setenv("FAIL_COUNTER", str(tmp_path / "fail-counter"))

    def make(command: str, at: int = 1, code: int = 200) -> Toolstack:
        monkeypatch.setenv("FAIL_COMMAND", command)
        monkeypatch.setenv("FAIL_AT", str(at))
        monkeypatch.setenv("FAIL_CODE", str(code))
        return Toolstack(db, Runner(str(ddir), timeout=120))

    return make


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def smctl(tmp_path):
    """Run the installed smctl console script with a private database; in
    the dom0 tier (SMLIB_DRIVER_BIN set) smctl runs on that 3.6 too."""
    argv = [os.path.join(os.path.dirname(sys.executable), "smctl")]
    if os.environ.get("SMLIB_DRIVER_BIN"):
        argv = [os.path.join(os.environ["SMLIB_DRIVER_BIN"], "python3"), "-m",
                "smlib.toolstack.cli"]
    env = dict(os.environ)
    env["SMCTL_DB"] = str(tmp_path / "cli.db")
    env["SMCTL_DRIVER_DIR"] = DRIVERS_DIR
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")

    def run(*args: str, extra_env: Optional[dict] = None) -> Result:
        proc = subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=180,
            env={**env, **(extra_env or {})}, stdin=subprocess.DEVNULL,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture(name="write_driver")
def _write_driver_fixture():
    return write_driver


@pytest.fixture(name="drivers_dir")
def _drivers_dir_fixture() -> str:
    return DRIVERS_DIR
