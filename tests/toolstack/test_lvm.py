"""The toolstack over a real LVMSR: in-place VM revert, contents through attach.

Real lvm2 on a loop device, metadata only (this kernel has no
device-mapper): the driver reaches LV bytes through loop windows
($SMLIB_LVM_ACTIVATION=loop), as the LVM tests do.
"""

from __future__ import annotations

import hashlib

import pytest
from helpers.loop_pvs import LVM_ENV, LoopPVs
from helpers.lvmsr_helpers import LVMSRHarness

from smlib.toolstack.db import VDIRecord
from smlib.toolstack.revert import IN_PLACE
from smlib.toolstack.transfer import vdi_export, vdi_import

pytestmark = pytest.mark.lvm

MiB = 1 << 20


@pytest.fixture
def pv(tmp_path, monkeypatch):
    """A loop-device PV (tests/lvm's LoopPVs): whatever happens, its loop
    windows are detached and its VG and PV removed afterwards, and a
    missing lvm2 or loop device fails the test under SMLIB_REQUIRE_LVM=1."""
    for key, value in LVM_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SMLIB_LVM_LOCK_DIR", str(tmp_path / "locks"))
    pvs = LoopPVs(tmp_path)
    try:
        yield pvs()
    finally:
        pvs.destroy_all()


def sha256(data: bytes) -> str:
    # Compared as hashes: a failed comparison of 16 MiB of bytes would make
    # pytest diff them for minutes.
    return hashlib.sha256(data).hexdigest()


def test_vm_revert_in_place_on_lvm(ts, pv, tmp_path, run_driver, xapi_params, dispatch):
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
    assert sha256(out.read_bytes()) == sha256(first + bytes(16 * MiB - len(first)))
    snap = ts.vm_snapshot(vm)
    # After the snapshot the guest writes other data, in two blocks, as the
    # LVM tests' harness writes (attach, activate, whole sectors into the leaf).
    guest = LVMSRHarness(pv, (run_driver, xapi_params, dispatch), sr.uuid)
    later = b"\x22" * (64 * 1024)
    guest.write(disk.uuid, 0, later)
    guest.write(disk.uuid, 9 * MiB, later)
    assert guest.read(disk.uuid, 0, len(later)) == later

    result = ts.vm_revert(snap)

    assert [d.path for d in result.disks] == [IN_PLACE]
    assert result.disks[0].after_uuid == disk.uuid
    assert ts.db.get(VDIRecord, ts.vbds(snap)[0].vdi_ref).snapshot_of == disk.ref
    # The snapshot's data is back, read through the chain by pyvhdi from
    # bytes copied out of the LVs (lvmsr_helpers), not by the driver.
    assert guest.read(disk.uuid, 0, len(later)) == first[:len(later)]
    assert guest.read(disk.uuid, 9 * MiB, len(later)) == bytes(len(later))
    assert sha256(guest.read(disk.uuid, 0, 16 * MiB)) == \
        sha256(first + bytes(16 * MiB - len(first)))
    before = {v.uuid for v in ts.db.select(VDIRecord, managed=True)}
    ts.sr_scan(sr)
    assert {v.uuid for v in ts.db.select(VDIRecord, managed=True)} == before
