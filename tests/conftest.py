"""Shared fixtures (framework): the helpers of tests/xapi_harness.py, as fixtures.

Put an area's own fixtures in that area's conftest.py.
"""

from __future__ import annotations

import hashlib
import os
import signal
from typing import Iterator

import pytest
from helpers.xapi_harness import dispatch, run_driver, xapi_call, xapi_params, xapi_xml

# Modules a driver command imports lazily, loaded before any test runs: a
# module first imported under pyfakefs keeps that test's fake `os` after it,
# and every later real-filesystem test using it fails ("assert None is not
# None" from pyfakefs).
import smlib.datapath.paths  # noqa: E402, F401
import smlib.datapath.record  # noqa: E402, F401
import smlib.datapath.server  # noqa: E402, F401
import smlib.xapi.db  # noqa: E402, F401
import smlib.xapi.session  # noqa: E402, F401

# Bytes longer than this are explained by length, first difference and hash:
# pytest's own diff of two disk images (under CI, in full) runs for minutes.
LONG_BYTES = 4096


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # A CI timeout stops pytest with SIGTERM: as an interrupt, fixture
    # teardowns still run (loop devices detached, VGs removed).
    signal.signal(signal.SIGTERM, _interrupt)


def pytest_assertrepr_compare(op: str, left: object, right: object):
    if op != "==" or not isinstance(left, bytes) or not isinstance(right, bytes):
        return None
    if max(len(left), len(right)) <= LONG_BYTES:
        return None
    common = min(len(left), len(right))
    chunk = next((c for c in range(0, common, LONG_BYTES)
                  if left[c:c + LONG_BYTES] != right[c:c + LONG_BYTES]), common)
    first = next((i for i in range(chunk, min(chunk + LONG_BYTES, common))
                  if left[i] != right[i]), common)
    return [
        f"bytes of {len(left)} == bytes of {len(right)}: differ from offset {first}",
        f"left  [{first}:{first + 16}]: {left[first:first + 16]!r}",
        f"right [{first}:{first + 16}]: {right[first:first + 16]!r}",
        f"sha256 {hashlib.sha256(left).hexdigest()} != {hashlib.sha256(right).hexdigest()}",
    ]


@pytest.fixture(autouse=True)
def sm_log(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test logs to its own file, never to the machine's /var/log/SMlog."""
    path = str(tmp_path_factory.mktemp("smlog") / "SMlog")
    monkeypatch.setenv("SM_LOG", path)
    return path


@pytest.fixture(autouse=True)
def datapath_dirs(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every test's NBD links and server records in its own short directory
    (a Unix socket path has at most 107 bytes), never under /run; a server
    a test left running is stopped afterwards."""
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="dp", dir="/tmp")
    monkeypatch.setenv("SMLIB_NBD_DIR", os.path.join(root, "nbd"))
    monkeypatch.setenv("SMLIB_DATAPATH_DIR", os.path.join(root, "run"))
    yield root
    from helpers.nbd_clients import kill_servers

    kill_servers(os.path.join(root, "run"))
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(name="xapi_params")
def _xapi_params_fixture():
    return xapi_params


@pytest.fixture(name="xapi_call")
def _xapi_call_fixture():
    return xapi_call


@pytest.fixture(name="xapi_xml")
def _xapi_xml_fixture():
    return xapi_xml


@pytest.fixture(name="run_driver")
def _run_driver_fixture():
    return run_driver


@pytest.fixture(name="dispatch")
def _dispatch_fixture():
    return dispatch
