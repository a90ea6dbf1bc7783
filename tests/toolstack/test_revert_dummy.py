"""The clone fallback, exactly, on DummySR (real driver processes; it stores nothing)."""

from __future__ import annotations

import pytest

from smlib.toolstack.db import VBDRecord, VDIRecord, VMRecord
from smlib.toolstack.ops import Toolstack
from smlib.toolstack.revert import CLONE
from smlib.toolstack.runner import DriverFault, Runner, ToolstackError

MiB = 1 << 20


@pytest.fixture
def sr(ts):
    return ts.sr_create("dummy", {}, "dummy")


def refs(db, cls):
    return {r.ref for r in db.select(cls)}


def assert_links_valid(db):
    vdis = refs(db, VDIRecord)
    for vdi in db.select(VDIRecord):
        assert vdi.snapshot_of is None or vdi.snapshot_of in vdis, vdi
    for vbd in db.select(VBDRecord):
        assert vbd.vdi_ref is None or vbd.vdi_ref in vdis, vbd


def test_vdi_revert_falls_back_to_clone_and_repairs_everything(ts, sr):
    disk = ts.vdi_create(sr, 64 * MiB, "system disk", "the root fs")
    other = ts.vdi_create(sr, 8 * MiB, "unrelated")
    vm = ts.vm_create("vm", [disk])
    snap1 = ts.vdi_snapshot(disk)
    snap2 = ts.vdi_snapshot(disk)
    other_snap = ts.vdi_snapshot(other)

    outcome = ts.vdi_revert(snap1)

    new = outcome.result
    assert outcome.path == CLONE and outcome.before_uuid == disk.uuid
    assert new.uuid != disk.uuid
    assert ts.db.get(VDIRecord, disk.ref) is None  # the old disk is gone
    assert (new.name_label, new.name_description) == ("system disk", "the root fs")
    assert not new.is_a_snapshot and new.snapshot_of is None
    # Every former snapshot_of link now names the new disk, including the
    # snapshot reverted to, which is itself untouched.
    assert ts.db.get(VDIRecord, snap1.ref).snapshot_of == new.ref
    assert ts.db.get(VDIRecord, snap2.ref).snapshot_of == new.ref
    assert ts.db.get(VDIRecord, snap1.ref).is_a_snapshot
    assert [v.vdi_ref for v in ts.vbds(vm)] == [new.ref]
    # Unrelated records stay as they were.
    assert ts.db.get(VDIRecord, other.ref) == other
    assert ts.db.get(VDIRecord, other_snap.ref) == other_snap
    assert_links_valid(ts.db)


def test_fault_38_from_an_advertised_revert_also_falls_back(ts, sr):
    # DummySR answers vdi_revert with 38; pretend it advertised VDI_REVERT so
    # the toolstack takes the in-place path first and must fall back on 38.
    sr = ts.db.update(sr, capabilities=sr.capabilities + ["VDI_REVERT"])
    disk = ts.vdi_create(sr, 64 * MiB, "d")
    snap = ts.vdi_snapshot(disk)
    outcome = ts.vdi_revert(snap)
    assert outcome.path == CLONE
    assert ts.db.get(VDIRecord, disk.ref) is None
    assert ts.db.get(VDIRecord, snap.ref).snapshot_of == outcome.result.ref


def test_vm_revert_clones_every_disk_and_keeps_cds(ts, sr):
    a = ts.vdi_create(sr, 64 * MiB, "a")
    b = ts.vdi_create(sr, 32 * MiB, "b")
    iso = ts.vdi_create(sr, 4 * MiB, "install.iso", read_only=True)
    vm = ts.vm_create("vm", [a, b], cds=[iso])
    snap = ts.vm_snapshot(vm, "before upgrade")
    snap_vbds = ts.vbds(snap)
    # A disk added after the snapshot is unplugged by the revert (and kept).
    late = ts.vdi_create(sr, 4 * MiB, "late")
    ts.add_vbd(vm, late.ref, "5", "disk", "RW")

    result = ts.vm_revert(snap)

    assert [d.path for d in result.disks] == [CLONE, CLONE]
    by_device = {v.device: v for v in ts.vbds(vm)}
    assert sorted(by_device) == ["0", "1", "3"]
    for step, old in zip(result.disks, (a, b)):
        assert step.before_uuid == old.uuid and step.after_uuid != old.uuid
        assert ts.db.get(VDIRecord, old.ref) is None
        assert by_device[step.device].vdi_ref == step.result.ref
        assert step.result.name_label == old.name_label
        assert ts.db.get(VDIRecord, step.snapshot.ref).snapshot_of == step.result.ref
    assert by_device["3"].vdi_ref == iso.ref and by_device["3"].type == "cd"
    assert ts.db.get(VDIRecord, late.ref) is not None
    assert ts.vbds(snap) == snap_vbds  # the snapshot is untouched
    assert_links_valid(ts.db)


def test_vm_revert_clones_the_suspend_disk(ts, sr):
    disk = ts.vdi_create(sr, 64 * MiB, "d")
    suspend = ts.vdi_create(sr, 8 * MiB, "suspend image", vdi_type="suspend")
    vm = ts.vm_create("vm", [disk])
    vm = ts.db.update(vm, suspend_vdi=suspend.ref)
    snap = ts.vm_snapshot(vm)
    assert snap.suspend_vdi and snap.suspend_vdi != suspend.ref
    result = ts.vm_revert(snap)
    kinds = {d.kind: d for d in result.disks}
    assert kinds["suspend"].path == CLONE
    assert result.vm.suspend_vdi == kinds["suspend"].result.ref
    assert ts.db.get(VDIRecord, suspend.ref) is None
    assert_links_valid(ts.db)


def test_revert_refuses_what_is_not_a_reachable_snapshot(ts, sr):
    disk = ts.vdi_create(sr, 64 * MiB, "d")
    with pytest.raises(ToolstackError) as caught:
        ts.vdi_revert(disk)
    assert caught.value.name == "VDI_IS_NOT_A_SNAPSHOT"
    snap = ts.vdi_snapshot(disk)
    ts.vdi_destroy(disk)
    before = ts.db.select(VDIRecord)
    with pytest.raises(ToolstackError) as caught:
        ts.vdi_revert(snap)
    assert caught.value.name == "VDI_MISSING"
    assert ts.db.select(VDIRecord) == before
    vm = ts.vm_create("vm", [])
    with pytest.raises(ToolstackError, match="not a snapshot"):
        ts.vm_revert(vm)


def test_failed_delete_of_the_old_disk_changes_nothing(ts, sr, flaky):
    disk = ts.vdi_create(sr, 64 * MiB, "d")
    vm = ts.vm_create("vm", [disk])
    snap = ts.vdi_snapshot(disk)
    before = (ts.db.select(VDIRecord), ts.db.select(VBDRecord))
    with pytest.raises(DriverFault) as caught:
        flaky("vdi_delete", code=24).vdi_revert(snap)
    assert caught.value.code == 24
    assert (ts.db.select(VDIRecord), ts.db.select(VBDRecord)) == before  # clone discarded
    assert ts.vbds(vm)[0].vdi_ref == disk.ref


def test_vm_revert_failing_part_way_undoes_its_clones(ts, sr, flaky):
    disks = [ts.vdi_create(sr, 16 * MiB, f"d{i}") for i in range(3)]
    vm = ts.vm_create("vm", disks)
    snap = ts.vm_snapshot(vm)
    before = (ts.db.select(VDIRecord), ts.db.select(VBDRecord), ts.db.select(VMRecord))
    with pytest.raises(DriverFault):
        flaky("vdi_clone", at=3, code=44).vm_revert(snap)
    after = (ts.db.select(VDIRecord), ts.db.select(VBDRecord), ts.db.select(VMRecord))
    assert after == before


def test_vm_snapshot_failing_part_way_leaves_no_snapshot(ts, sr, flaky):
    disks = [ts.vdi_create(sr, 16 * MiB, f"d{i}") for i in range(3)]
    vm = ts.vm_create("vm", disks)
    before = (ts.db.select(VDIRecord), ts.db.select(VMRecord))
    with pytest.raises(DriverFault):
        flaky("vdi_snapshot", at=2).vm_snapshot(vm)
    assert (ts.db.select(VDIRecord), ts.db.select(VMRecord)) == before


class InterruptingRunner(Runner):
    """The real runner, but Ctrl-C arrives before the n-th call of one command."""

    def __init__(self, directory: str, command: str, at: int) -> None:
        super().__init__(directory)
        self.command, self.at, self.seen = command, at, 0

    def call(self, sr_type, call):
        if call.command == self.command:
            self.seen += 1
            if self.seen == self.at:
                raise KeyboardInterrupt
        return super().call(sr_type, call)


def test_interrupted_vm_revert_rolls_back(ts, sr, drivers_dir):
    disks = [ts.vdi_create(sr, 16 * MiB, f"d{i}") for i in range(3)]
    vm = ts.vm_create("vm", disks)
    snap = ts.vm_snapshot(vm)
    before = (ts.db.select(VDIRecord), ts.db.select(VBDRecord), ts.db.select(VMRecord))
    interrupted = Toolstack(ts.db, InterruptingRunner(drivers_dir, "vdi_clone", 3))
    with pytest.raises(KeyboardInterrupt):
        interrupted.vm_revert(snap)
    assert (ts.db.select(VDIRecord), ts.db.select(VBDRecord), ts.db.select(VMRecord)) == before
