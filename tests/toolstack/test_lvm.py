"""The toolstack over a real LVMSR: in-place VM revert, contents through attach.

Real lvm2 on a loop device, metadata only (this kernel has no
device-mapper): the driver reaches LV bytes through loop windows
($SMLIB_LVM_ACTIVATION=loop), as the LVM tests do.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from smlib.toolstack.db import VDIRecord
from smlib.toolstack.revert import IN_PLACE
from smlib.toolstack.transfer import vdi_export, vdi_import

pytestmark = pytest.mark.lvm

MiB = 1 << 20
LVM_CONFIG = "global{activation=0}"


def _lvm(*args: str) -> None:
    subprocess.run(["lvm", args[0], "--config", LVM_CONFIG, *args[1:]], capture_output=True,
                   timeout=120, check=False)


def _loops_over(device: str) -> list[str]:
    out = subprocess.run(["losetup", "-j", device, "-O", "NAME", "-n"], capture_output=True,
                         text=True, check=False).stdout
    return out.split()


@pytest.fixture
def pv(tmp_path, monkeypatch):
    if not os.access(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), "drivers", "LVMSR"), os.X_OK):
        pytest.skip("drivers/LVMSR is not there")
    if os.geteuid() != 0 or shutil.which("losetup") is None or shutil.which("lvm") is None:
        pytest.skip("needs root, losetup and lvm2")
    monkeypatch.setenv("SMLIB_LVM_CONFIG", LVM_CONFIG)
    monkeypatch.setenv("SMLIB_LVM_ACTIVATION", "loop")
    monkeypatch.setenv("SMLIB_LVM_LOCK_DIR", str(tmp_path / "locks"))
    backing = tmp_path / "pv.img"
    with open(backing, "wb") as f:
        f.truncate(4 << 30)  # sparse
    proc = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"no loop device: {proc.stderr.strip()}")
    device = proc.stdout.strip()
    try:
        yield device
    finally:
        for window in _loops_over(device):
            subprocess.run(["losetup", "-d", window], capture_output=True, check=False)
        out = subprocess.run(["lvm", "pvs", "--config", LVM_CONFIG, "--noheadings", "-o",
                              "vg_name", device], capture_output=True, text=True, check=False)
        for vg in out.stdout.split():
            _lvm("vgremove", "-f", vg)
        _lvm("pvremove", "-ff", "-y", device)
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


def test_vm_revert_in_place_on_lvm(ts, pv, tmp_path):
    sr = ts.sr_create("lvm", {"device": pv}, "lvm")
    assert "VDI_REVERT" in sr.capabilities
    disk = ts.vdi_create(sr, 16 * MiB, "root")
    vm = ts.vm_create("vm", [disk])
    # Contents in and out through attach work for a disk with no parent; a
    # differencing leaf's parents cannot be found by locator here, because
    # loop windows are not named /dev/<VG>/VHD-<uuid> as activated LVs are.
    first = (b"\x11" * 4096) * 1024 + bytes(4 * MiB)
    raw, out = tmp_path / "in.raw", tmp_path / "out.raw"
    raw.write_bytes(first)
    vdi_import(ts, disk, str(raw))
    vdi_export(ts, ts.db.get(VDIRecord, disk.ref), str(out))
    assert out.read_bytes() == first + bytes(16 * MiB - len(first))
    snap = ts.vm_snapshot(vm)

    result = ts.vm_revert(snap)

    assert [d.path for d in result.disks] == [IN_PLACE]
    assert result.disks[0].after_uuid == disk.uuid
    assert ts.db.get(VDIRecord, ts.vbds(snap)[0].vdi_ref).snapshot_of == disk.ref
    before = {v.uuid for v in ts.db.select(VDIRecord, managed=True)}
    ts.sr_scan(sr)
    assert {v.uuid for v in ts.db.select(VDIRecord, managed=True)} == before
