"""In-place revert, the fallback and failure handling on a real FileSR.

Every driver call is a real drivers/FileSR process on a real temporary
directory; contents go in and out through attach + the VHD library, as
vdi-import / vdi-export do.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from typing import Optional

import pytest
from helpers.xapi_standin import without_storage_facts

from smlib.toolstack.db import VBDRecord, VDIRecord
from smlib.toolstack.revert import CLONE, IN_PLACE
from smlib.toolstack.runner import DriverFault, ToolstackError
from smlib.toolstack.transfer import vdi_export, vdi_import

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.skipif(
    not os.access(os.path.join(REPO_ROOT, "drivers", "FileSR"), os.X_OK),
    reason="drivers/FileSR is not there",
)

MiB = 1 << 20


@pytest.fixture
def sr(file_sr):
    return file_sr


def pattern(seed: int, size: int = 6 * MiB) -> bytes:
    """Distinct, reproducible data; 4 KiB-aligned regions, some left zero."""
    block = hashlib.sha256(str(seed).encode()).digest() * 128  # 4 KiB
    return (block * (size // len(block) // 2)) + bytes(size // 2)


def put(ts, vdi, data: bytes, tmp_path) -> None:
    src = tmp_path / "in.raw"
    src.write_bytes(data)
    vdi_import(ts, ts.db.get(VDIRecord, vdi.ref), str(src))


def content(ts, vdi, tmp_path, length: int = 6 * MiB) -> bytes:
    out = tmp_path / "out.raw"
    vdi_export(ts, ts.db.get(VDIRecord, vdi.ref), str(out), force=True)
    data = out.read_bytes()
    assert len(data) == ts.db.get(VDIRecord, vdi.ref).virtual_size
    return data[:length]


def without_revert(ts, sr):
    """The SR as a toolstack sees it when the driver withholds VDI_REVERT."""
    return ts.db.update(sr, capabilities=[c for c in sr.capabilities if c != "VDI_REVERT"])


def vm_with_snapshot(ts, sr, tmp_path, count: int, seed: Optional[int] = None):
    """A VM of ``count`` 16 MiB disks holding pattern(seed + i), snapshotted,
    then overwritten with pattern(seed + 10 + i); with no seed the disks
    are left empty. Returns (disks, vm, snap)."""
    disks = [ts.vdi_create(sr, 16 * MiB, f"d{i}") for i in range(count)]
    vm = ts.vm_create("vm", disks)
    for i, d in enumerate(disks if seed is not None else ()):
        put(ts, d, pattern(seed + i), tmp_path)
    snap = ts.vm_snapshot(vm)
    for i, d in enumerate(disks if seed is not None else ()):
        put(ts, d, pattern(seed + 10 + i), tmp_path)
    return disks, vm, snap


def disk_with_snapshot(ts, sr, tmp_path, seed: int):
    """A VM's 16 MiB disk "root" holding pattern(seed), snapshotted, then
    pattern(seed + 1). Returns (disk, vm, snap)."""
    disk = ts.vdi_create(sr, 16 * MiB, "root")
    vm = ts.vm_create("vm", [disk])
    put(ts, disk, pattern(seed), tmp_path)
    snap = ts.vdi_snapshot(disk)
    put(ts, disk, pattern(seed + 1), tmp_path)
    return disk, vm, snap


def root_with_two_snapshots(ts, sr, tmp_path):
    """A VM's 64 MiB disk "root" snapshotted holding pattern(1) and again
    holding pattern(2). Returns (disk, vm, snap1, snap2)."""
    disk = ts.vdi_create(sr, 64 * MiB, "root", "root fs")
    vm = ts.vm_create("vm", [disk])
    put(ts, disk, pattern(1), tmp_path)
    snap1 = ts.vdi_snapshot(disk)
    put(ts, disk, pattern(2), tmp_path)
    snap2 = ts.vdi_snapshot(disk)
    return disk, vm, snap1, snap2


def managed(ts, sr) -> dict:
    """The disks' records, less the storage facts their driver refreshes."""
    return {v.uuid: without_storage_facts(v)
            for v in ts.db.select(VDIRecord, sr_ref=sr.ref, managed=True)}


def assert_db_matches_sr(ts, sr) -> None:
    """sr-scan finds nothing to change among the disks the records describe."""
    before = managed(ts, sr)
    ts.sr_scan(ts.db.get(type(sr), sr.ref))
    assert managed(ts, sr) == before
    on_sr = {v["uuid"] for v in ts.call_sr(sr, "vdi_list") if not v["hidden"]}
    assert on_sr == set(before)


def test_in_place_keeps_identity_and_restores_contents(ts, sr, tmp_path):
    disk, vm, snap1, snap2 = root_with_two_snapshots(ts, sr, tmp_path)
    put(ts, disk, pattern(3), tmp_path)

    outcome = ts.vdi_revert(snap1)

    assert outcome.path == IN_PLACE
    after = ts.db.get(VDIRecord, disk.ref)
    assert (after.ref, after.uuid, after.location, after.name_label) == (
        disk.ref, disk.uuid, disk.location, "root")
    assert content(ts, disk, tmp_path) == pattern(1)
    # The snapshots are untouched and still snapshots of the same disk.
    assert content(ts, snap1, tmp_path) == pattern(1)
    assert content(ts, snap2, tmp_path) == pattern(2)
    for snap in (snap1, snap2):
        assert ts.db.get(VDIRecord, snap.ref).snapshot_of == disk.ref
    assert [v.vdi_ref for v in ts.vbds(vm)] == [disk.ref]
    # Reverting to the other snapshot, and again (idempotent).
    ts.vdi_revert(snap2)
    ts.vdi_revert(snap2)
    assert content(ts, disk, tmp_path) == pattern(2)
    assert_db_matches_sr(ts, sr)


def test_withheld_capability_takes_the_fallback(ts, sr, tmp_path):
    sr = without_revert(ts, sr)
    disk, vm, snap1, snap2 = root_with_two_snapshots(ts, sr, tmp_path)

    outcome = ts.vdi_revert(snap1)

    new = outcome.result
    assert outcome.path == CLONE and new.uuid != disk.uuid
    assert ts.db.get(VDIRecord, disk.ref) is None
    assert not os.path.exists(os.path.join(sr.device_config["location"], disk.uuid + ".vhd"))
    assert (new.name_label, new.name_description) == ("root", "root fs")
    assert [v.vdi_ref for v in ts.vbds(vm)] == [new.ref]
    for snap in (snap1, snap2):
        assert ts.db.get(VDIRecord, snap.ref).snapshot_of == new.ref
    assert content(ts, new, tmp_path) == pattern(1)
    assert content(ts, snap2, tmp_path) == pattern(2)
    assert_db_matches_sr(ts, sr)


def test_vm_revert_in_place_on_every_disk(ts, sr, tmp_path):
    disks, vm, snap = vm_with_snapshot(ts, sr, tmp_path, 2, 10)

    result = ts.vm_revert(snap)

    assert [d.path for d in result.disks] == [IN_PLACE, IN_PLACE]
    assert [v.vdi_ref for v in ts.vbds(vm)] == [d.ref for d in disks]
    for i, d in enumerate(disks):
        assert content(ts, d, tmp_path) == pattern(10 + i)
    # The guard snapshots taken for all-or-nothing are gone again.
    snaps = ts.db.select(VDIRecord, is_a_snapshot=True)
    assert sorted(s.ref for s in snaps) == sorted(
        v.vdi_ref for v in ts.db.select(VBDRecord, vm_ref=snap.ref))
    assert_db_matches_sr(ts, sr)


def test_vm_revert_failure_part_way_puts_every_disk_back(ts, sr, tmp_path, flaky):
    disks, vm, snap = vm_with_snapshot(ts, sr, tmp_path, 3, 30)
    before = managed(ts, sr)

    # The second disk's in-place revert fails with no space: the first,
    # already reverted, must be put back.
    with pytest.raises(DriverFault) as caught:
        flaky("vdi_revert", at=2, code=44).vm_revert(snap)
    assert caught.value.code == 44

    assert managed(ts, sr) == before
    for i, d in enumerate(disks):
        assert content(ts, d, tmp_path) == pattern(40 + i)
    assert [v.vdi_ref for v in ts.vbds(vm)] == [d.ref for d in disks]
    assert_db_matches_sr(ts, sr)


def test_failures_in_the_fallback_leave_records_matching_the_sr(ts, sr, tmp_path, flaky):
    sr = without_revert(ts, sr)
    disks, vm, snap = vm_with_snapshot(ts, sr, tmp_path, 2)
    before = managed(ts, sr)

    with pytest.raises(DriverFault):
        flaky("vdi_clone", at=2).vm_revert(snap)
    assert managed(ts, sr) == before
    assert_db_matches_sr(ts, sr)

    # The old disk cannot be destroyed after the clones are made: the revert
    # stands (VBDs on the clones), the old disk stays recorded, unplugged.
    os.remove(os.environ["FAIL_COUNTER"])
    result = flaky("vdi_delete", at=1).vm_revert(snap)
    assert len(result.warnings) == 1
    kept = [d for d in disks if ts.db.get(VDIRecord, d.ref) is not None]
    assert len(kept) == 1 and not ts.db.select(VBDRecord, vdi_ref=kept[0].ref)
    assert [v.vdi_ref for v in ts.vbds(vm)] == [d.result.ref for d in result.disks]
    assert_db_matches_sr(ts, sr)


def test_import_refuses_an_image_bigger_than_the_disk(ts, sr, tmp_path):
    disk = ts.vdi_create(sr, 4 * MiB, "small")
    src = tmp_path / "big.raw"
    src.write_bytes(bytes(4 * MiB + 512))
    with pytest.raises(ToolstackError) as caught:
        vdi_import(ts, disk, str(src))
    assert caught.value.name == "VDI_TOO_SMALL"


def test_a_refusal_is_not_a_reason_to_clone(ts, sr, tmp_path):
    disk = ts.vdi_create(sr, 16 * MiB, "busy")
    put(ts, disk, pattern(5), tmp_path)
    snap = ts.vdi_snapshot(disk)
    put(ts, disk, pattern(6), tmp_path)
    ts.call_vdi(disk, "vdi_attach", args=["true"])  # as if a VM were running on it
    before = ts.db.select(VDIRecord)
    with pytest.raises(DriverFault) as caught:
        ts.vdi_revert(snap)
    assert (caught.value.code, caught.value.name, caught.value.xapi_name) == (
        24, "VDIInUse", "VDI_IN_USE")
    assert ts.db.select(VDIRecord) == before
    ts.call_vdi(disk, "vdi_detach")
    assert content(ts, disk, tmp_path) == pattern(6)
    assert_db_matches_sr(ts, sr)


def test_scan_adopts_and_forgets_what_changed_behind_the_records(ts, sr):
    """What an interrupted smctl leaves (a driver change never recorded) is
    put right by sr-scan: new volumes are adopted, vanished ones forgotten."""
    disk = ts.vdi_create(sr, 16 * MiB, "kept")
    gone = ts.vdi_create(sr, 16 * MiB, "gone")
    vm = ts.vm_create("vm", [disk, gone])
    unrecorded = ts.call_vdi(disk, "vdi_clone")  # the driver did it; no record yet
    ts.call_vdi(gone, "vdi_delete")  # deleted on the SR, still recorded
    ts.sr_scan(sr)
    adopted = ts.db.by_uuid(VDIRecord, unrecorded["uuid"])
    assert adopted is not None and adopted.managed and adopted.sr_ref == sr.ref
    assert adopted.virtual_size == 16 * MiB
    assert ts.db.get(VDIRecord, gone.ref) is None
    assert [v.vdi_ref for v in ts.vbds(vm)] == [disk.ref]
    assert_db_matches_sr(ts, sr)


def test_suspend_disk_clone_failing_undoes_the_in_place_disk(ts, sr, tmp_path, flaky):
    disk = ts.vdi_create(sr, 16 * MiB, "root")
    suspend = ts.vdi_create(sr, 8 * MiB, "suspend image", vdi_type="suspend")
    vm = ts.db.update(ts.vm_create("vm", [disk]), suspend_vdi=suspend.ref)
    put(ts, disk, pattern(50), tmp_path)
    snap = ts.vm_snapshot(vm)
    put(ts, disk, pattern(51), tmp_path)
    before = managed(ts, sr)

    with pytest.raises(DriverFault):
        flaky("vdi_clone", at=1, code=44).vm_revert(snap)  # the suspend disk's clone

    assert managed(ts, sr) == before
    assert content(ts, disk, tmp_path) == pattern(51)  # put back after its in-place revert
    assert ts.db.get(type(vm), vm.ref).suspend_vdi == suspend.ref
    assert_db_matches_sr(ts, sr)

    result = ts.vm_revert(snap)  # and without the failure, both are reverted
    paths = {d.kind: d.path for d in result.disks}
    assert paths == {"disk": IN_PLACE, "suspend": CLONE}
    assert content(ts, disk, tmp_path) == pattern(50)
    new_suspend = next(d.result for d in result.disks if d.kind == "suspend")
    assert result.vm.suspend_vdi == new_suspend.ref != suspend.ref
    assert ts.db.get(VDIRecord, suspend.ref) is None
    assert_db_matches_sr(ts, sr)


# A FileSR that kills the smctl running it (SIGKILL: no cleanup of any kind)
# at the $KILL_AT-th call of $KILL_COMMAND, after the real driver did the
# work ($KILL_WHEN=after) or before it ran (before).
KILLER = """
import os, signal, subprocess, sys, xmlrpc.client
(params,), method = xmlrpc.client.loads(sys.argv[1])
hit = False
if method == os.environ["KILL_COMMAND"]:
    counter = os.environ["KILL_COUNTER"]
    seen = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
    open(counter, "w").write(str(seen))
    hit = seen == int(os.environ["KILL_AT"])
if hit and os.environ["KILL_WHEN"] == "before":
    os.kill(os.getppid(), signal.SIGKILL)
    sys.exit(0)
proc = subprocess.run([REAL] + sys.argv[1:], capture_output=True, text=True)
if hit:
    os.kill(os.getppid(), signal.SIGKILL)
sys.stdout.write(proc.stdout)
sys.exit(proc.returncode)
"""


@pytest.fixture
def killed_smctl(tmp_path, db, drivers_dir, write_driver):
    """killed_smctl(command, at, when, *argv): run smctl on the test's database
    with the killing FileSR; returns the finished process (killed by then).
    killed_smctl.scan(sr): the next smctl, an sr-scan that kills nothing."""
    kdir = tmp_path / "killer"
    kdir.mkdir()
    write_driver(str(kdir), "FileSR",
                 f"REAL = {os.path.join(drivers_dir, 'FileSR')!r}\n" + KILLER)
    exe = os.path.join(os.path.dirname(sys.executable), "smctl")

    def run(command: str, at: int, when: str, *argv: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, SMCTL_DB=db.path, SMCTL_DRIVER_DIR=str(kdir),
                   KILL_COMMAND=command, KILL_AT=str(at), KILL_WHEN=when,
                   KILL_COUNTER=str(tmp_path / f"kill-{command}-{at}-{when}"))
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
        return subprocess.run([exe, *argv], capture_output=True, text=True, env=env,
                              timeout=300, stdin=subprocess.DEVNULL)

    # The next smctl after a kill: an sr-scan, with no driver killed.
    run.scan = lambda sr: run("none", 1, "after", "sr-scan", f"uuid={sr.uuid}")
    return run


def test_killed_during_in_place_reverts_is_rolled_back_by_the_next_smctl(
        ts, sr, tmp_path, killed_smctl):
    disks, vm, snap = vm_with_snapshot(ts, sr, tmp_path, 3, 60)
    before = managed(ts, sr)

    # Two of three disks reverted in place, then smctl dies.
    dead = killed_smctl("vdi_revert", 2, "after", "vm-revert", f"snapshot-uuid={snap.uuid}")
    assert dead.returncode == -9
    assert ts.db.pending()  # the interrupted revert is on record

    nxt = killed_smctl.scan(sr)
    assert nxt.returncode == 0, nxt.stderr
    assert f"an interrupted vm-revert of VM {vm.uuid}: rolled back" in nxt.stderr
    assert ts.db.pending() == []
    assert managed(ts, sr) == before  # same disks, no guard snapshots left
    for i, d in enumerate(disks):
        assert content(ts, d, tmp_path) == pattern(70 + i)
    assert_db_matches_sr(ts, sr)


def test_killed_during_the_commit_is_completed_by_the_next_smctl(
        ts, sr, tmp_path, killed_smctl):
    sr = without_revert(ts, sr)
    disks, vm, snap = vm_with_snapshot(ts, sr, tmp_path, 2, 80)

    # Both clones made, the first old disk destroyed on the SR, then smctl dies.
    dead = killed_smctl("vdi_delete", 1, "after", "vm-revert", f"snapshot-uuid={snap.uuid}")
    assert dead.returncode == -9

    nxt = killed_smctl("none", 1, "after", "vdi-list", "--minimal")  # reads do not recover
    assert nxt.returncode == 0 and ts.db.pending()
    nxt = killed_smctl.scan(sr)
    assert nxt.returncode == 0, nxt.stderr
    assert ": completed" in nxt.stderr and ts.db.pending() == []
    now = [ts.db.get(VDIRecord, v.vdi_ref) for v in ts.vbds(vm)]
    assert [d.name_label for d in now] == ["d0", "d1"]
    for i, (old, new) in enumerate(zip(disks, now)):
        assert new.uuid != old.uuid and ts.db.get(VDIRecord, old.ref) is None
        assert content(ts, new, tmp_path) == pattern(80 + i)
    for vbd in ts.vbds(snap):
        assert ts.db.get(VDIRecord, vbd.vdi_ref).snapshot_of in {d.ref for d in now}
    assert_db_matches_sr(ts, sr)


def test_killed_before_a_clone_is_rolled_back(ts, sr, tmp_path, killed_smctl):
    sr = without_revert(ts, sr)
    disks, vm, snap = vm_with_snapshot(ts, sr, tmp_path, 2)
    before = managed(ts, sr)
    dead = killed_smctl("vdi_clone", 2, "before", "vm-revert", f"snapshot-uuid={snap.uuid}")
    assert dead.returncode == -9
    nxt = killed_smctl.scan(sr)
    assert ": rolled back" in nxt.stderr
    assert managed(ts, sr) == before
    assert [v.vdi_ref for v in ts.vbds(vm)] == [d.ref for d in disks]
    assert_db_matches_sr(ts, sr)


def test_killed_vdi_revert_fallback_is_completed(ts, sr, tmp_path, killed_smctl):
    sr = without_revert(ts, sr)
    disk, vm, snap = disk_with_snapshot(ts, sr, tmp_path, 100)
    # The old disk is destroyed on the SR, then smctl dies before recording it.
    dead = killed_smctl("vdi_delete", 1, "after", "vdi-revert", f"snapshot-uuid={snap.uuid}")
    assert dead.returncode == -9
    nxt = killed_smctl.scan(sr)
    assert f"an interrupted vdi-revert of {disk.uuid}: completed" in nxt.stderr, nxt.stderr
    new = ts.db.get(VDIRecord, ts.vbds(vm)[0].vdi_ref)
    assert new.uuid != disk.uuid and new.name_label == "root"
    assert ts.db.get(VDIRecord, disk.ref) is None
    assert ts.db.get(VDIRecord, snap.ref).snapshot_of == new.ref
    assert content(ts, new, tmp_path) == pattern(100)
    assert_db_matches_sr(ts, sr)


def test_killed_vdi_revert_just_before_the_delete_is_completed(
        ts, sr, tmp_path, killed_smctl):
    # The clone is recorded and the delete decided: past the point of no
    # return, so the next smctl deletes the old disk itself and hands over.
    sr = without_revert(ts, sr)
    disk, vm, snap = disk_with_snapshot(ts, sr, tmp_path, 110)
    dead = killed_smctl("vdi_delete", 1, "before", "vdi-revert", f"snapshot-uuid={snap.uuid}")
    assert dead.returncode == -9
    assert len(managed(ts, sr)) == 3  # old disk, snapshot, clone
    nxt = killed_smctl.scan(sr)
    assert f"an interrupted vdi-revert of {disk.uuid}: completed" in nxt.stderr, nxt.stderr
    new = ts.db.get(VDIRecord, ts.vbds(vm)[0].vdi_ref)
    assert new.uuid != disk.uuid and ts.db.get(VDIRecord, disk.ref) is None
    assert content(ts, new, tmp_path) == pattern(110)
    assert_db_matches_sr(ts, sr)


def test_killed_vm_snapshot_is_undone(ts, sr, killed_smctl):
    disks = [ts.vdi_create(sr, 16 * MiB, f"d{i}") for i in range(3)]
    vm = ts.vm_create("vm", disks)
    before = managed(ts, sr)
    dead = killed_smctl("vdi_snapshot", 3, "before", "vm-snapshot", f"uuid={vm.uuid}")
    assert dead.returncode == -9
    nxt = killed_smctl.scan(sr)
    assert "an interrupted vm-snapshot was undone (2 disk snapshot(s) removed)" in nxt.stderr
    assert managed(ts, sr) == before
    assert ts.db.select(type(vm), is_a_snapshot=True) == []
    assert_db_matches_sr(ts, sr)
