"""LVMSR disks served over NBD by nbdkit (real lvm2, loop-device activation).

The LVMSR executable attaches and activates; nbdkit serves the LV's VHD
with its parent LVs; qemu-io writes and reads over the socket. Parents are
counted by the leaves that use them: deactivating one leaf never unmaps a
base another served leaf reads.
"""

from __future__ import annotations

import os

import pytest
from helpers.nbd_clients import info, kill_servers, need_tools, qemu_io

MiB = 1024 * 1024
DISK = 16 * MiB


@pytest.fixture
def served_lvmsr(lvmsr, monkeypatch):
    need_tools()
    monkeypatch.setenv("SMLIB_DATAPATH", "nbdkit")
    yield lvmsr
    kill_servers(os.environ["SMLIB_DATAPATH_DIR"])   # before the loop devices go


def up(sr, uuid: str, writable: bool = True) -> str:
    flag = "true" if writable else "false"
    nbd = sr.ok("vdi_attach", vdi_uuid=uuid, args=[flag])["params_nbd"]
    sr.ok("vdi_activate", vdi_uuid=uuid, args=[flag])
    return nbd


def down(sr, uuid: str) -> None:
    sr.ok("vdi_deactivate", vdi_uuid=uuid)
    sr.ok("vdi_detach", vdi_uuid=uuid)


def mapped(sr, uuid: str) -> bool:
    """Whether a loop device maps the VDI's LV (loop activation)."""
    store = sr.store()
    try:
        pv, offset, size = store.activation._window(store, store.lv_name(uuid))
    finally:
        store.close()
    return any(True for _ in store.activation._windows(pv, offset, size))


def test_lvm_disk_served_snapshot_shared_parent_and_revert(served_lvmsr):
    sr = served_lvmsr
    a = sr.create(DISK, call=sr.ok)
    nbd_a = up(sr, a)
    assert info(nbd_a)["export-size"] == DISK
    assert sr.ok("vdi_attach", vdi_uuid=a, args=["true"])["xenstore_data"]["storage-type"] \
        == "lvm"
    qemu_io(nbd_a, "write -P 0x31 0 4M", "flush")
    snap = sr.snapshot(a, call=sr.ok)                      # while served
    base = sr.vdis(call=sr.ok)[a]["parent"]
    qemu_io(nbd_a, "write -P 0x32 1M 1M", "flush")
    qemu_io(nbd_a, "read -P 0x31 0 1M", "read -P 0x32 1M 1M", "read -P 0x31 2M 2M")
    nbd_s = up(sr, snap, writable=False)                   # a second leaf on the base
    qemu_io(nbd_s, "read -P 0x31 0 4M", readonly=True)
    down(sr, a)                                            # base still read by snap
    assert mapped(sr, base) and not mapped(sr, a)
    qemu_io(nbd_s, "read -P 0x31 0 4M", readonly=True)
    nbd_a = up(sr, a)
    fault = sr.fault("vdi_revert", vdi_uuid=snap, args=[a])
    assert fault.faultCode == 24, fault
    qemu_io(nbd_a, "read -P 0x32 1M 1M")
    down(sr, a)
    down(sr, snap)
    assert not mapped(sr, base)                # last user gone
    sr.ok("vdi_revert", vdi_uuid=snap, args=[a])
    nbd_a = up(sr, a)
    qemu_io(nbd_a, "read -P 0x31 0 4M", "read -P 0 4M 12M")
    down(sr, a)
    sr.check_all()
    assert sr.read(a, 0, 4 * MiB) == b"\x31" * (4 * MiB)
