"""drivers/LVMSR run as a program with xapi-shaped XML, over real lvm2."""

from __future__ import annotations

import os

import pytest

from smlib import vhd
from smlib.stores.lvm import lvm2 as lvm

pytestmark = pytest.mark.lvm
MiB = 1024 * 1024


@pytest.fixture
def sr(loop_pv, sr_uuid, tmp_path, monkeypatch, run_driver, xapi_params):
    """call(command, **keys) -> DriverRun on a fresh LVMSR (sr_create done)."""
    monkeypatch.setenv("SMLIB_LVM_LOCK_DIR", str(tmp_path / "locks"))
    dev = loop_pv()

    def call(command: str, **keys):
        keys.setdefault("device_config", {"device": dev})
        if command not in ("sr_probe", "sr_get_driver_info"):
            keys.setdefault("sr_uuid", sr_uuid)
        return run_driver("LVMSR", xapi_params(command, **keys))

    call("sr_create").ok()
    call.device = dev
    call.vg = "VG_XenStorage-" + sr_uuid
    return call


def test_driver_info_advertises_revert(run_driver, xapi_params):
    info = run_driver("LVMSR", xapi_params("sr_get_driver_info")).ok()
    assert info["name"] == "LVM"
    assert "VDI_REVERT" in info["capabilities"]
    assert {"key": "device", "description": "local device path(s), comma-separated"} \
        in info["configuration"]


def test_missing_device_is_the_real_config_error(run_driver, xapi_params):
    run = run_driver("LVMSR", xapi_params("sr_attach", device_config={}))
    assert run.fault is not None and run.fault.faultCode == 90


def test_create_write_snapshot_revert_delete(sr):
    vdi = sr("vdi_create", args=[str(16 * MiB), "disk", "", "", "false", "", "", "false"]).ok()
    assert vdi["location"] == vdi["uuid"]
    lv = "VHD-" + vdi["uuid"]
    assert lvm.layout(sr.vg).lvs[lv].size == 4 * MiB              # deflated when detached
    path = sr("vdi_attach", vdi_uuid=vdi["uuid"], args=["true"]).ok()["params"]
    assert lvm.layout(sr.vg).lvs[lv].size >= vhd.required_size(16 * MiB)   # inflated
    old = os.urandom(2 * MiB)
    with vhd.open_image(path, writable=True) as img:
        img.write(0, old)
    sr("vdi_detach", vdi_uuid=vdi["uuid"]).ok()
    snap = sr("vdi_snapshot", vdi_uuid=vdi["uuid"]).ok()
    path = sr("vdi_attach", vdi_uuid=vdi["uuid"], args=["true"]).ok()["params"]
    with vhd.open_image(path, writable=True) as img:
        img.write(0, os.urandom(2 * MiB))
    sr("vdi_detach", vdi_uuid=vdi["uuid"]).ok()

    assert sr("vdi_revert", vdi_uuid=snap["uuid"], args=[vdi["uuid"]]).ok() is None

    listing = {v["uuid"]: v for v in sr("vdi_list").ok()}
    assert listing[vdi["uuid"]]["hidden"] is False
    path = sr("vdi_attach", vdi_uuid=vdi["uuid"], args=["false"]).ok()["params"]
    from smlib.stores.lvm.store import LVMStore

    store = LVMStore({"device": sr.device}, sr.vg[len("VG_XenStorage-"):])
    try:
        with vhd.open_image(path, resolver=store.resolver) as img:
            assert img.read(0, len(old)) == old
    finally:
        store.close()
    sr("vdi_detach", vdi_uuid=vdi["uuid"]).ok()
    run = sr("sr_delete")
    assert run.fault is not None and run.fault.faultCode == 39    # SRNotEmpty
    sr("vdi_delete", vdi_uuid=vdi["uuid"]).ok()
    sr("vdi_delete", vdi_uuid=snap["uuid"]).ok()
    sr("sr_delete").ok()
    assert lvm.layout(sr.vg) is None


def test_probe_finds_the_sr(sr, sr_uuid):
    run = sr("sr_probe")
    assert f"<UUID>{sr_uuid}</UUID>" in run.ok()


def test_sr_detach_unmaps_everything_and_clone_is_independent(sr, windows_of):
    vdi = sr("vdi_create", args=[str(8 * MiB), "d", "", "", "false", "", "", "false"]).ok()
    path = sr("vdi_attach", vdi_uuid=vdi["uuid"], args=["true"]).ok()["params"]
    with vhd.open_image(path, writable=True) as img:
        img.write(0, b"1" * 4096)
    sr("vdi_detach", vdi_uuid=vdi["uuid"]).ok()
    clone = sr("vdi_clone", vdi_uuid=vdi["uuid"]).ok()
    for uuid_, data in ((clone["uuid"], b"2"), (vdi["uuid"], b"3")):
        path = sr("vdi_attach", vdi_uuid=uuid_, args=["true"]).ok()["params"]
        with vhd.open_image(path, writable=True) as img:
            img.write(0, data * 4096)
        sr("vdi_detach", vdi_uuid=uuid_).ok()
    from smlib.stores.lvm.store import LVMStore

    store = LVMStore({"device": sr.device}, sr.vg[len("VG_XenStorage-"):])
    try:
        for uuid_, data in ((clone["uuid"], b"2"), (vdi["uuid"], b"3")):
            with vhd.open_image(store.activate(uuid_), resolver=store.resolver) as img:
                assert img.read(0, 4096) == data * 4096
    finally:
        store.close()
    assert windows_of(sr.device) != []                   # kept: MGT and the chains
    sr("sr_detach").ok()
    assert windows_of(sr.device) == []


def test_concurrent_drivers_serialise_on_the_sr_lock(sr):
    """Three driver processes snapshot three VDIs at once: the host-local
    SR lock serialises them; every VDI gets its snapshot, nothing is torn."""
    import threading

    from helpers.lvmsr_helpers import LVMSRHarness

    vdis = [sr("vdi_create", args=[str(8 * MiB), f"d{i}", "", "", "false", "", "", "false"])
            .ok()["uuid"] for i in range(3)]
    results: dict = {}

    def snap(v: str) -> None:
        results[v] = sr("vdi_snapshot", vdi_uuid=v)

    threads = [threading.Thread(target=snap, args=(v,)) for v in vdis]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    snaps = {v: results[v].ok()["uuid"] for v in vdis}
    listing = {v["uuid"]: v for v in sr("vdi_list").ok()}
    for v, s in snaps.items():
        assert listing[s]["snapshot_of"] == v and listing[s]["is_a_snapshot"] is True
    assert sum(1 for v in listing.values() if v["hidden"]) == 3
    LVMSRHarness(sr.device, (None, None, None), sr.vg[len("VG_XenStorage-"):]).check_all()
