"""`make demo` (python -m smlib.toolstack.demo): passes, and fails when a check fails."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from smlib.toolstack.demo import known_data


def run_demo(drivers_dir: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SMCTL_DRIVER_DIR=drivers_dir)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return subprocess.run([sys.executable, "-m", "smlib.toolstack.demo"], capture_output=True,
                          text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)


def row(stdout: str, sr: str) -> list[str]:
    return next(line.split() for line in stdout.splitlines() if line.startswith(sr + " "))


def test_demo_passes(drivers_dir):
    result = run_demo(drivers_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    file_row, dummy_row = row(result.stdout, "file"), row(result.stdout, "dummy")
    assert file_row[1] == "in-place" and file_row[2] == file_row[3]
    # The content column: both hashes are the data written before the
    # snapshot, as this test computes it.
    first = hashlib.sha256(known_data("first")).hexdigest()[:12]
    assert file_row[4] == "match" and file_row[5] == file_row[7] == first
    assert dummy_row[1] == "clone" and dummy_row[2] != dummy_row[3]
    assert dummy_row[-2:] == ["valid", "(repaired)"]
    assert "all checks passed" in result.stdout


@pytest.mark.slow
def test_demo_fails_without_filesr(tmp_path, drivers_dir):
    os.symlink(os.path.join(drivers_dir, "DummySR"), tmp_path / "DummySR")
    result = run_demo(str(tmp_path))
    assert result.returncode == 1
    assert row(result.stdout, "file")[1] == "unavailable"
    assert row(result.stdout, "dummy")[1] == "clone"
    assert "FAILED file: no file driver" in result.stdout


@pytest.mark.slow
def test_demo_fails_when_the_in_place_path_is_not_taken(tmp_path, drivers_dir, write_driver):
    # A FileSR whose vdi_revert says "not implemented": the revert falls back
    # to clone, which the demo must flag for a file SR.
    real = os.path.join(drivers_dir, "FileSR")
    write_driver(str(tmp_path), "FileSR", f"""
import os, sys, xmlrpc.client
(params,), method = xmlrpc.client.loads(sys.argv[1])
if method == "vdi_revert":
    print(xmlrpc.client.dumps(xmlrpc.client.Fault(38, "no"), methodresponse=True))
    sys.exit(0)
os.execv({real!r}, [{real!r}] + sys.argv[1:])
""")
    os.symlink(os.path.join(drivers_dir, "DummySR"), tmp_path / "DummySR")
    result = run_demo(str(tmp_path))
    assert result.returncode == 1
    assert row(result.stdout, "file")[1] == "clone"
    assert "path taken is clone, expected in-place" in result.stdout


def test_demo_scenario_leaves_the_snapshot_data_on_disk(tmp_path, drivers_dir, monkeypatch):
    """The demo's file scenario, in process: afterwards the VM's disk, read
    from the SR directory by pyvhdi (not by the demo's own export), holds
    the data written before the snapshot, and the snapshot too."""
    from helpers.filesr_helpers import pyvhdi_read

    from smlib.toolstack import demo
    from smlib.toolstack.db import Database, VDIRecord
    from smlib.toolstack.ops import Toolstack
    from smlib.toolstack.revert import IN_PLACE
    from smlib.toolstack.runner import Runner

    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    location = tmp_path / "file-sr"
    location.mkdir()
    db = Database(str(tmp_path / "state.db"))
    ts = Toolstack(db, Runner(drivers_dir, timeout=120))
    row = demo.Row("file")
    demo.revert_scenario(ts, row, "file", {"location": str(location)}, str(tmp_path), IN_PLACE)
    assert row.failures == []
    first = known_data("first")
    disks = {v.uuid: v for v in ts.db.select(VDIRecord)}
    assert row.after in disks
    snapshots = [u for u, v in disks.items() if v.is_a_snapshot]
    assert len(snapshots) == 1
    for uuid in (row.after, snapshots[0]):
        got = pyvhdi_read(str(location / f"{uuid}.vhd"), 0, len(first))
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(first).hexdigest(), uuid
    db.close()


def test_known_data_differs_and_has_holes():
    a, b = known_data("a", 16 << 20), known_data("b", 16 << 20)
    assert len(a) == 16 << 20 and a != b
    assert a[6 << 20: 8 << 20] == bytes(2 << 20) and a[:4096] != bytes(4096)
