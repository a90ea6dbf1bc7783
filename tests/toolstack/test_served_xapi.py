"""The toolstack is xapi-shaped: it serves XenAPI to its drivers, which keep
its records themselves; it passes a revert's target as an OpaqueRef; and
vm-revert's clone path leaves no orphaned disk.

Real drivers (drivers/FileSR, drivers/DummySR) as processes; the records
they keep are the toolstack's SQLite database, reached through the
toolstack's XenAPI server over a real Unix socket (smlib/toolstack/server.py).
"""

from __future__ import annotations

import json
import os

import pytest

from smlib.toolstack.db import VDIRecord

MiB = 1 << 20


def test_records_come_from_the_drivers_callbacks(ts, file_sr):
    disk = ts.vdi_create(file_sr, 16 * MiB, "data")
    calls = ts.server.api.calls
    assert "VDI.db_introduce" in calls  # the driver wrote it, not ops.py
    assert disk.virtual_size == 16 * MiB and disk.physical_utilisation > 0
    snap = ts.vdi_snapshot(disk)
    base = ts.db.get(VDIRecord, disk.ref).sm_config["vhd-parent"]
    base_rec = ts.db.by_uuid(VDIRecord, base)
    assert base_rec is not None and not base_rec.managed  # sm's "base copy"
    assert (snap.is_a_snapshot, snap.snapshot_of, snap.name_label) == (True, disk.ref, "data")
    assert ts.vdi_resize(disk, 32 * MiB).virtual_size == 32 * MiB
    ts.vdi_destroy(snap)
    assert ts.db.get(VDIRecord, snap.ref) is None


def test_revert_target_goes_as_an_opaque_ref(ts, file_sr):
    disk = ts.vdi_create(file_sr, 16 * MiB, "data")
    snap = ts.vdi_snapshot(disk)
    ts.vdi_resize(disk, 32 * MiB)
    before = len(ts.server.api.calls)
    assert ts.VDI_revert(snap.ref) == disk.ref  # in place: the target's own ref
    served = ts.server.api.calls[before:]
    # The driver resolved the OpaqueRef and recorded the target's new size itself.
    assert "VDI.get_uuid" in served and "VDI.set_virtual_size" in served
    assert ts.db.get(VDIRecord, disk.ref).virtual_size == 16 * MiB


def test_scan_forgets_what_vanished_and_unplugs_it(ts, file_sr, tmp_path):
    disks = [ts.vdi_create(file_sr, 16 * MiB, f"d{i}") for i in range(2)]
    vm = ts.vm_create("vm", disks)
    os.unlink(tmp_path / "sr" / f"{disks[1].uuid}.vhd")
    ts.sr_scan(file_sr)
    assert ts.db.get(VDIRecord, disks[1].ref) is None
    assert [v.vdi_ref for v in ts.vbds(vm)] == [disks[0].ref]


def _ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("sr_type", ["dummy", "file"])
def test_vm_revert_after_the_disk_was_destroyed_leaves_no_orphan(smctl, tmp_path, sr_type):
    """The issue's reproduction, as a new user would type it."""
    config = []
    if sr_type == "file":
        (tmp_path / "sr").mkdir()
        config = [f"device-config:location={tmp_path / 'sr'}"]
    sr = _ok(smctl("sr-create", f"type={sr_type}", "name-label=s", *config)).strip()
    vm = _ok(smctl("vm-create", "name-label=vm", f"sr-uuid={sr}",
                   "disk-sizes=16MiB")).strip()
    vm_snap = _ok(smctl("vm-snapshot", f"uuid={vm}", "new-name-label=s1")).strip()
    disk = json.loads(_ok(smctl("vm-param-list", f"uuid={vm}", "--json")))["disks"][0]
    _ok(smctl("vdi-destroy", f"uuid={disk.split('=')[1]}", "force=true"))
    previous = []
    for _ in range(3):
        out = json.loads(_ok(smctl("vm-revert", f"snapshot-uuid={vm_snap}", "--json")))
        (step,) = out["disks"]
        assert step["path"] == "clone"
        previous.append((step["previous-uuid"], step["uuid"]))
    # Each revert replaced the disk the one before it plugged in.
    assert previous[0][0] is None
    assert previous[1][0] == previous[0][1] and previous[2][0] == previous[1][1]
    disks = json.loads(_ok(smctl("vdi-list", "is-a-snapshot=false", "managed=true",
                                 "--json")))
    assert [d["uuid"] for d in disks] == [previous[2][1]]  # the VM's disk, nothing else
    vm_rec = json.loads(_ok(smctl("vm-param-list", f"uuid={vm}", "--json")))
    assert vm_rec["disks"] == [f"0={previous[2][1]}"]
    if sr_type == "file":
        _ok(smctl("sr-scan", f"uuid={sr}"))
        on_disk = {n[:-4] for n in os.listdir(tmp_path / "sr") if n.endswith(".vhd")}
        snaps = json.loads(_ok(smctl("vdi-list", "is-a-snapshot=true", "--json")))
        assert previous[2][1] in on_disk and previous[1][1] not in on_disk
        assert previous[0][1] not in on_disk and snaps[0]["uuid"] in on_disk
