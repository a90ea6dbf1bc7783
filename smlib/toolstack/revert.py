"""VDI.revert and VM.revert: in place where the SR can, clone otherwise.

VDI.revert(snapshot) finds the disk the snapshot was taken from. When the SR
advertises VDI_REVERT the driver reverts it in place (same ref, uuid and
location). When it does not, or answers 38 (Unimplemented), the clone
fallback of DESIGN section 4 runs: clone the snapshot, destroy the old disk,
and hand the clone the old disk's name, description, VBDs and every
snapshot_of link that named it.

VM.revert does that for each disk of a VM snapshot, all or nothing: the
reversible steps (clones, in-place reverts guarded by a safety snapshot)
come first and are undone if any fails; only then are old disks destroyed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from smlib.toolstack.db import VBDRecord, VDIRecord, VMRecord
from smlib.toolstack.ops import CODE_UNIMPLEMENTED, Toolstack
from smlib.toolstack.runner import DriverFault, ToolstackError

IN_PLACE = "in-place"
CLONE = "clone"


@dataclass
class DiskRevert:
    """What happened to one disk."""

    snapshot: VDIRecord
    target: Optional[VDIRecord]  # the disk before; None when it no longer exists
    device: Optional[str] = None  # VBD device in the VM, or None (suspend / lone VDI)
    kind: str = "disk"  # disk | suspend
    path: str = ""  # IN_PLACE or CLONE once done
    result: Optional[VDIRecord] = None  # the disk after
    safety: Optional[VDIRecord] = None  # VM revert: the guard snapshot of target

    @property
    def before_uuid(self) -> Optional[str]:
        return self.target.uuid if self.target else None

    @property
    def after_uuid(self) -> Optional[str]:
        return self.result.uuid if self.result else None


@dataclass
class VMRevert:
    vm: VMRecord
    disks: list[DiskRevert]
    warnings: list[str] = field(default_factory=list)


def find_target(ts: Toolstack, snapshot: VDIRecord) -> VDIRecord:
    if not snapshot.is_a_snapshot:
        raise ToolstackError("VDI_IS_NOT_A_SNAPSHOT", f"VDI {snapshot.uuid} is not a snapshot")
    target = ts.db.get(VDIRecord, snapshot.snapshot_of) if snapshot.snapshot_of else None
    if target is None:
        raise ToolstackError(
            "VDI_MISSING",
            f"the disk snapshot {snapshot.uuid} was taken from no longer exists",
        )
    return target


def try_in_place(
    ts: Toolstack,
    snapshot: VDIRecord,
    target: VDIRecord,
    driver_params: Optional[dict[str, str]] = None,
) -> bool:
    """vdi_revert when the SR advertises it; False means "use the clone fallback"."""
    sr = ts.sr_of(target)
    if snapshot.sr_ref != target.sr_ref or not ts.can(sr, "VDI_REVERT"):
        return False
    try:
        # vdi_* describe the snapshot; args[0] names the target (by uuid here).
        ts.call_vdi(snapshot, "vdi_revert", args=[target.uuid],
                    driver_params=dict(driver_params or {}))
    except DriverFault as fault:
        if fault.code == CODE_UNIMPLEMENTED:
            return False
        raise
    ts.db.update(target, virtual_size=snapshot.virtual_size)
    return True


def clone_for(ts: Toolstack, snapshot: VDIRecord, target: Optional[VDIRecord]) -> VDIRecord:
    """The clone that will replace target, already carrying its names."""
    names = target or snapshot
    return ts.vdi_clone(
        snapshot, name_label=names.name_label, name_description=names.name_description
    )


def hand_over(ts: Toolstack, old: VDIRecord, new: VDIRecord, old_deleted: bool) -> None:
    """Give new the old disk's VBDs and snapshot_of links; forget old if it is gone."""
    with ts.db.transaction():
        ts.db.move_vbds(old.ref, new.ref)
        ts.db.repoint_snapshot_of(old.ref, new.ref)
        ts.db.conn.execute(
            "UPDATE vm SET suspend_vdi = ? WHERE suspend_vdi = ?", [new.ref, old.ref]
        )
        if old_deleted:
            ts.db.delete(old)


def revert_vdi(
    ts: Toolstack, snapshot: VDIRecord, driver_params: Optional[dict[str, str]] = None
) -> DiskRevert:
    """VDI.revert(snapshot, driver_params): the disk now holding the snapshot's contents."""
    target = find_target(ts, snapshot)
    outcome = DiskRevert(snapshot, target)
    if try_in_place(ts, snapshot, target, driver_params):
        outcome.path, outcome.result = IN_PLACE, ts.db.get(VDIRecord, target.ref)
        return outcome
    clone = clone_for(ts, snapshot, target)
    try:
        ts.call_vdi(target, "vdi_delete")
    except ToolstackError as exc:
        # Nothing changed for the user: the clone goes, the target stays.
        leftovers = ts.discard([clone])
        raise _with_notes(exc, leftovers) from None
    hand_over(ts, target, clone, old_deleted=True)
    outcome.path, outcome.result = CLONE, ts.db.get(VDIRecord, clone.ref)
    return outcome


def _with_notes(exc: ToolstackError, notes: list[str]) -> ToolstackError:
    if notes:
        exc.annotate(f"cleanup failed: {'; '.join(notes)}")
    return exc


# VM.revert -------------------------------------------------------------


def _plan(ts: Toolstack, snap: VMRecord, vm: VMRecord) -> list[DiskRevert]:
    plan = []
    for vbd in ts.vbds(snap):
        if vbd.type != "disk" or not vbd.vdi_ref:
            continue
        disk = ts.vdi_by_ref(vbd.vdi_ref)
        target = ts.db.get(VDIRecord, disk.snapshot_of) if disk.snapshot_of else None
        plan.append(DiskRevert(disk, target, device=vbd.device))
    if snap.suspend_vdi:
        disk = ts.vdi_by_ref(snap.suspend_vdi)
        target = ts.db.get(VDIRecord, vm.suspend_vdi) if vm.suspend_vdi else None
        plan.append(DiskRevert(disk, target, kind="suspend"))
    return plan


def _rollback(ts: Toolstack, plan: list[DiskRevert]) -> list[str]:
    """Undo the reversible steps taken so far; returns what could not be undone."""
    problems = []
    for step in plan:
        if step.path == CLONE and step.result is not None:
            problems += ts.discard([step.result])
            step.result = None
        if step.path == IN_PLACE and step.safety is not None:
            try:
                if not try_in_place(ts, step.safety, step.target):
                    raise ToolstackError("VDI_REVERT", "the SR no longer reverts in place")
            except ToolstackError as exc:
                problems.append(
                    f"{step.target.uuid} could not be put back; its state before the revert "
                    f"is kept in snapshot {step.safety.uuid}: {exc}"
                )
                continue
        if step.safety is not None:
            problems += ts.discard([step.safety])
            step.safety = None
    return problems


def _reversible_steps(ts: Toolstack, plan: list[DiskRevert]) -> None:
    # A guard snapshot is only needed when a later step could fail.
    guard = len(plan) > 1
    for step in plan:
        if step.kind == "disk" and step.target is not None:
            if guard and ts.can(ts.sr_of(step.target), "VDI_REVERT"):
                step.safety = ts.vdi_snapshot(step.target)
            if try_in_place(ts, step.snapshot, step.target):
                step.path, step.result = IN_PLACE, ts.db.get(VDIRecord, step.target.ref)
                continue
            if step.safety is not None:
                ts.discard([step.safety])
                step.safety = None
        # CD images are never reverted; suspend disks and disks that lost
        # their original are always cloned.
        step.result = clone_for(ts, step.snapshot, step.target)
        step.path = CLONE


def _commit(ts: Toolstack, vm: VMRecord, snap: VMRecord, plan: list[DiskRevert]) -> list[str]:
    warnings = []
    for step in plan:
        if step.safety is not None:
            warnings += ts.discard([step.safety])
            step.safety = None
    for step in plan:
        if step.path != CLONE or step.target is None:
            continue
        try:
            ts.call_vdi(step.target, "vdi_delete")
            deleted = True
        except ToolstackError as exc:
            # The revert stands; the old disk stays, recorded, unplugged.
            warnings.append(f"old disk {step.target.uuid} could not be destroyed: {exc}")
            deleted = False
        hand_over(ts, step.target, step.result, old_deleted=deleted)
    _match_layout(ts, vm, snap, plan)
    return warnings


def _match_layout(ts: Toolstack, vm: VMRecord, snap: VMRecord, plan: list[DiskRevert]) -> None:
    """Make the VM's VBDs the snapshot's, with each disk replaced by its reverted one."""
    final = {step.device: step.result.ref for step in plan if step.kind == "disk"}
    wanted = {v.device: v for v in ts.vbds(snap)}
    suspend = next((s.result.ref for s in plan if s.kind == "suspend"), None)
    with ts.db.transaction():
        current = {v.device: v for v in ts.vbds(vm)}
        for device, vbd in current.items():
            if device not in wanted:
                ts.db.delete(vbd)
        for device, want in wanted.items():
            vdi_ref = final.get(device, want.vdi_ref)
            have: Optional[VBDRecord] = current.get(device)
            if have is None:
                ts.add_vbd(vm, vdi_ref, device, want.type, want.mode)
            elif (have.vdi_ref, have.type, have.mode) != (vdi_ref, want.type, want.mode):
                ts.db.update(have, vdi_ref=vdi_ref, type=want.type, mode=want.mode)
        ts.db.update(ts.db.get(VMRecord, vm.ref), suspend_vdi=suspend)


def revert_vm(ts: Toolstack, snap: VMRecord) -> VMRevert:
    if not snap.is_a_snapshot:
        raise ToolstackError("VM_IS_NOT_A_SNAPSHOT", f"VM {snap.uuid} is not a snapshot")
    vm = ts.db.get(VMRecord, snap.snapshot_of) if snap.snapshot_of else None
    if vm is None:
        raise ToolstackError("VM_MISSING", f"the VM snapshot {snap.uuid} was taken of is gone")
    plan = _plan(ts, snap, vm)
    try:
        _reversible_steps(ts, plan)
    except ToolstackError as exc:
        raise _with_notes(exc, _rollback(ts, plan)) from None
    except KeyboardInterrupt:
        # Interrupted between driver calls: still leave all or nothing.
        _rollback(ts, plan)
        raise
    warnings = _commit(ts, vm, snap, plan)
    return VMRevert(ts.db.get(VMRecord, vm.ref), plan, warnings)
