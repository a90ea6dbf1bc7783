"""The tapdisk path, against a recording stand-in for tap-ctl.

This machine has no blktap, so ``tap-ctl`` here is a stand-in
(tapctl_standin.py) that records every call and keeps blktap's state; no
tapdisk runs. What is checked: with tap-ctl on PATH the FileSR executable
drives it with sm's blktap2 sequence, exact arguments and order, and puts
the NBD link where sm puts it, pointing at tapdisk's socket name.
"""

from __future__ import annotations

import os
import signal

import pytest
from helpers import tapctl_standin
from helpers.filesr_helpers import FileSRHarness, MiB


@pytest.fixture
def tap(tmp_path, monkeypatch, run_driver, xapi_params, dispatch):
    bindir = str(tmp_path / "blktap-bin")
    tapctl_standin.install(bindir)
    monkeypatch.setenv("PATH", bindir + os.pathsep + os.environ["PATH"])
    monkeypatch.delenv("SMLIB_DATAPATH", raising=False)     # detected, not forced
    sr = FileSRHarness(str(tmp_path), (run_driver, xapi_params, dispatch))
    sr.ok("sr_create")
    yield sr, bindir
    for pid in tapctl_standin.spawned(bindir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def launch(leaf: str, pid: str, minor: int, readonly: bool = False) -> list[list[str]]:
    """sm's _tap_activate + Tapdisk.launch_on_tap, as tap-ctl calls."""
    opened = ["open", "-p", pid, "-m", str(minor), "-a", f"vhd:{leaf}"] + (
        ["-R"] if readonly else [])
    return [["list", "-f", leaf], ["allocate"], ["list", "-f", leaf], ["spawn"],
            ["attach", "-p", pid, "-m", str(minor)], opened, ["list", "-m", str(minor)]]


def shutdown(pid: str, minor: int) -> list[list[str]]:
    """sm's _deactivate: Tapdisk.from_minor, then shutdown."""
    m = str(minor)
    return [["list", "-m", m], ["close", "-p", pid, "-m", m, "-t", "120"],
            ["detach", "-p", pid, "-m", m], ["free", "-m", m]]


def test_sm_sequence_and_nbd_link(tap):
    sr, bindir = tap
    uuid = sr.create(16 * MiB)
    leaf = sr.path(uuid)
    nbd = sr.ok("vdi_attach", vdi_uuid=uuid, args=["true"])["params_nbd"]
    link = os.path.join(os.environ["SMLIB_NBD_DIR"], sr.sr_uuid, uuid)
    assert nbd == f"nbd:unix:{link}:exportname={uuid}"
    assert tapctl_standin.calls(bindir) == []          # attach starts nothing
    sr.ok("vdi_activate", vdi_uuid=uuid, args=["true"])
    calls = tapctl_standin.calls(bindir)
    pid = calls[3:4] and str(tapctl_standin.spawned(bindir)[0])
    assert calls == launch(leaf, pid, 0)
    blktap = os.path.dirname(os.environ["SMLIB_NBD_DIR"])
    assert os.readlink(link) == os.path.join(blktap, f"nbd{pid}.0")
    sr.ok("vdi_activate", vdi_uuid=uuid, args=["true"])  # found by path: reused
    assert tapctl_standin.calls(bindir)[len(calls):] == [["list", "-f", leaf]]
    done = len(tapctl_standin.calls(bindir))
    sr.ok("vdi_deactivate", vdi_uuid=uuid)
    assert tapctl_standin.calls(bindir)[done:] == shutdown(pid, 0)
    assert not os.path.lexists(link)
    done = len(tapctl_standin.calls(bindir))
    sr.ok("vdi_deactivate", vdi_uuid=uuid)               # nothing left to stop
    sr.ok("vdi_detach", vdi_uuid=uuid)
    assert tapctl_standin.calls(bindir)[done:] == []


def test_snapshot_pauses_and_unpauses_the_tapdisk(tap):
    """sm pauses the tapdisk while the leaf becomes a base, and unpauses it
    on the new leaf (same path)."""
    sr, bindir = tap
    uuid = sr.create(16 * MiB)
    leaf = sr.path(uuid)
    sr.ok("vdi_attach", vdi_uuid=uuid, args=["true"])
    sr.ok("vdi_activate", vdi_uuid=uuid, args=["true"])
    pid = str(tapctl_standin.spawned(bindir)[0])
    done = len(tapctl_standin.calls(bindir))
    sr.snapshot(uuid)
    assert tapctl_standin.calls(bindir)[done:] == [
        ["list", "-m", "0"], ["pause", "-p", pid, "-m", "0"],
        ["unpause", "-p", pid, "-m", "0", "-a", f"vhd:{leaf}"]]
    sr.ok("vdi_deactivate", vdi_uuid=uuid)
    sr.ok("vdi_detach", vdi_uuid=uuid)


def test_read_only_opens_with_R(tap):
    sr, bindir = tap
    uuid = sr.create(16 * MiB)
    sr.ok("vdi_attach", vdi_uuid=uuid, args=["false"])
    sr.ok("vdi_activate", vdi_uuid=uuid, args=["false"])
    pid = str(tapctl_standin.spawned(bindir)[0])
    assert tapctl_standin.calls(bindir) == launch(sr.path(uuid), pid, 0, readonly=True)
    sr.ok("vdi_deactivate", vdi_uuid=uuid)
    sr.ok("vdi_detach", vdi_uuid=uuid)


def test_failed_open_is_unwound(tap, monkeypatch):
    sr, bindir = tap
    uuid = sr.create(16 * MiB)
    leaf = sr.path(uuid)
    sr.ok("vdi_attach", vdi_uuid=uuid, args=["true"])
    fault = sr.fault("vdi_activate", vdi_uuid=uuid, args=["true"],
                     env={"TAPCTL_FAIL": "open"})
    assert fault.faultCode == 46, fault
    calls = tapctl_standin.calls(bindir)
    pid = calls[4][2]                                   # attach -p <pid>
    assert calls == launch(leaf, pid, 0)[:6] + [["detach", "-p", pid, "-m", "0"],
                                                ["free", "-m", "0"]]
    assert not os.path.lexists(os.path.join(os.environ["SMLIB_NBD_DIR"], sr.sr_uuid, uuid))
    sr.ok("vdi_detach", vdi_uuid=uuid)
