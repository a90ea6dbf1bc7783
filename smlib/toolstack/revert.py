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

from typing import Optional

from smlib.toolstack.db import (
    PENDING_VDI_REVERT,
    PENDING_VM_REVERT,
    Database,
    VBDRecord,
    VDIRecord,
    VMRecord,
)
from smlib.toolstack.record import field, record
from smlib.toolstack.runner import CODE_UNIMPLEMENTED, CODE_VDI_MISSING, DriverFault, ToolstackError

IN_PLACE = "in-place"
CLONE = "clone"


@record
class DiskRevert:
    """What happened to one disk."""

    snapshot: VDIRecord
    target: Optional[VDIRecord]  # the disk before; None when it no longer exists
    device: Optional[str] = None  # VBD device in the VM, or None (suspend / lone VDI)
    kind: str = "disk"  # disk | suspend
    path: str = ""  # IN_PLACE or CLONE once done
    result: Optional[VDIRecord] = None  # the disk after
    safety: Optional[VDIRecord] = None  # VM revert: the guard snapshot of target
    # VM revert, no target left: the disk now in the VBD slot being replaced
    # (an earlier revert's clone), dropped when the new clone takes the slot.
    replaces: Optional[VDIRecord] = None
    old_ref: Optional[str] = None  # recovery: the dropped disk's ref, record gone

    @property
    def old(self) -> Optional[VDIRecord]:
        """The disk this step's result takes the place of."""
        return self.target or self.replaces

    @property
    def before_uuid(self) -> Optional[str]:
        return self.old.uuid if self.old else None

    @property
    def after_uuid(self) -> Optional[str]:
        return self.result.uuid if self.result else None


@record
class VMRevert:
    vm: VMRecord
    disks: "list[DiskRevert]"
    warnings: "list[str]" = field(default_factory=list)


class Reverts:
    """VDI.revert and VM.revert, mixed into ``ops.Toolstack``. They are built
    on its SR/VDI operations (``vdi_clone``, ``call_vdi``, ...), so the
    functions below take the toolstack as ``ts``; this module imports
    nothing of ops.py (ops imports it)."""

    db: Database

    def VDI_revert(self, snapshot_ref: str,
                   driver_params: "Optional[dict[str, str]]" = None) -> str:
        """xapi's shape: VDI.revert(snapshot, driver_params) -> the ref of the reverted disk
        (the target's own ref in place, the clone's after the fallback)."""
        return self.vdi_revert(self.vdi_by_ref(snapshot_ref), driver_params).result.ref

    def vdi_revert(
        self, snapshot: VDIRecord, driver_params: "Optional[dict[str, str]]" = None
    ) -> "DiskRevert":
        return revert_vdi(self, snapshot, driver_params)

    def vm_revert(self, snapshot: VMRecord) -> "VMRevert":
        return revert_vm(self, snapshot)


def find_target(ts: "Reverts", snapshot: VDIRecord) -> VDIRecord:
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
    ts: "Reverts",
    snapshot: VDIRecord,
    target: VDIRecord,
    driver_params: "Optional[dict[str, str]]" = None,
) -> bool:
    """vdi_revert when the SR advertises it; False means "use the clone fallback"."""
    sr = ts.sr_of(target)
    if snapshot.sr_ref != target.sr_ref or not ts.can(sr, "VDI_REVERT"):
        return False
    try:
        # As xapi: vdi_* describe the snapshot; args[0] is the target's
        # OpaqueRef (the driver resolves it with VDI.get_uuid, and records
        # the target's new size itself).
        ts.call_vdi(snapshot, "vdi_revert", args=[target.ref],
                    driver_params=dict(driver_params or {}))
    except DriverFault as fault:
        if fault.code == CODE_UNIMPLEMENTED:
            return False
        raise
    return True


def clone_for(ts: "Reverts", snapshot: VDIRecord, target: Optional[VDIRecord]) -> VDIRecord:
    """The clone that will replace target, already carrying its names."""
    names = target or snapshot
    return ts.vdi_clone(
        snapshot, name_label=names.name_label, name_description=names.name_description
    )


def hand_over(ts: "Reverts", old_ref: str, new_ref: str) -> None:
    """Give new the old disk's VBDs and snapshot_of links. By refs: the driver
    that deleted the old disk has forgotten its record already, as under xapi."""
    with ts.db.transaction():
        ts.db.move_vbds(old_ref, new_ref)
        ts.db.repoint_snapshot_of(old_ref, new_ref)
        ts.db.conn.execute(
            "UPDATE vm SET suspend_vdi = ? WHERE suspend_vdi = ?", [new_ref, old_ref]
        )


def revert_vdi(
    ts: "Reverts", snapshot: VDIRecord, driver_params: "Optional[dict[str, str]]" = None
) -> DiskRevert:
    """VDI.revert(snapshot, driver_params): the disk now holding the snapshot's contents."""
    target = find_target(ts, snapshot)
    outcome = DiskRevert(snapshot, target)
    if try_in_place(ts, snapshot, target, driver_params):
        outcome.path, outcome.result = IN_PLACE, ts.vdi_by_ref(target.ref)
        return outcome
    # Recorded while it runs, so that a killed smctl's revert is finished by
    # the next one: undone before the old disk's delete, completed after.
    body = {"phase": "prepare", "target": target.ref, "target_uuid": target.uuid, "clone": None}
    pending = ts.db.pending_add(PENDING_VDI_REVERT, body)
    clone = clone_for(ts, snapshot, target)
    ts.db.pending_set(pending, {**body, "clone": clone.ref, "phase": "commit"})
    try:
        ts.call_vdi(target, "vdi_delete")
    except ToolstackError as exc:
        # Nothing changed for the user: the clone goes, the target stays.
        leftovers = ts.discard([clone])
        ts.db.pending_remove(pending)
        raise _with_notes(exc, leftovers) from None
    with ts.db.transaction():
        hand_over(ts, target.ref, clone.ref)
        ts.db.pending_remove(pending)
    outcome.path, outcome.result = CLONE, ts.db.get(VDIRecord, clone.ref)
    return outcome


def finish_vdi_revert(ts: "Reverts", body: dict) -> str:
    """Recovery of a killed revert_vdi fallback (its `pending` body)."""
    target = ts.db.get(VDIRecord, body["target"])
    clone = ts.db.get(VDIRecord, body["clone"]) if body.get("clone") else None
    if clone is None:
        return "nothing was left to do"  # not cloned yet: nothing to undo
    if body.get("phase") != "commit":
        ts.vdi_destroy(clone)
        return "rolled back"
    if target is not None:
        try:
            ts.call_vdi(target, "vdi_delete")
        except DriverFault as fault:
            if fault.code != CODE_VDI_MISSING:  # the old disk is still there: undo
                ts.vdi_destroy(clone)
                return f"rolled back (the old disk could not be destroyed: {fault})"
    # The old disk is deleted (its driver forgot the record): hand over.
    hand_over(ts, body["target"], clone.ref)
    return f"completed: disk {clone.uuid} replaces {body.get('target_uuid') or body['target']}"


def _with_notes(exc: ToolstackError, notes: "list[str]") -> ToolstackError:
    if notes:
        exc.annotate(f"cleanup failed: {'; '.join(notes)}")
    return exc


# VM.revert -------------------------------------------------------------
#
# The plan is kept in the database's `pending` table while the revert runs
# (phase "prepare", then "commit"), so that a revert whose smctl was killed
# is finished by the next one: a prepare is rolled back, a commit rolled
# forward (recover_pending). Steps are written so that doing one twice is
# harmless.

IN_PLACE_STARTED = "in-place-started"  # vdi_revert sent; done or not is unknown


def _plan(ts: "Reverts", snap: VMRecord, vm: VMRecord) -> "list[DiskRevert]":
    plan = []
    slots = {v.device: v for v in ts.vbds(vm)}
    for vbd in ts.vbds(snap):
        if vbd.type != "disk" or not vbd.vdi_ref:
            continue
        disk = ts.vdi_by_ref(vbd.vdi_ref)
        target = ts.db.get(VDIRecord, disk.snapshot_of) if disk.snapshot_of else None
        step = DiskRevert(disk, target, device=vbd.device)
        slot = slots.get(vbd.device)
        if target is None and slot is not None and slot.type == "disk" and slot.vdi_ref:
            # The snapshot's disk is gone: whatever fills its slot now (an
            # earlier revert's clone) is what this revert replaces and drops.
            step.replaces = ts.db.get(VDIRecord, slot.vdi_ref)
        plan.append(step)
    if snap.suspend_vdi:
        disk = ts.vdi_by_ref(snap.suspend_vdi)
        target = ts.db.get(VDIRecord, vm.suspend_vdi) if vm.suspend_vdi else None
        plan.append(DiskRevert(disk, target, kind="suspend"))
    return plan


class _Journal:
    """The plan as a `pending` record, rewritten after every step."""

    def __init__(self, ts: "Reverts", vm: VMRecord, snap: VMRecord,
                 plan: "list[DiskRevert]", pending_id: Optional[int] = None) -> None:
        self.ts, self.vm, self.snap, self.plan = ts, vm, snap, plan
        self.phase = "prepare"
        if pending_id is None:
            pending_id = ts.db.pending_add(PENDING_VM_REVERT, self.body())
        self.id = pending_id

    def body(self) -> dict:
        def ref(rec: Optional[VDIRecord]) -> Optional[str]:
            return rec.ref if rec else None

        return {"phase": self.phase, "vm": self.vm.ref, "snapshot": self.snap.ref, "steps": [
            {"snapshot": s.snapshot.ref, "target": ref(s.target), "device": s.device,
             "kind": s.kind, "path": s.path, "result": ref(s.result), "safety": ref(s.safety),
             "replaces": ref(s.replaces)}
            for s in self.plan]}

    def save(self, phase: Optional[str] = None) -> None:
        self.phase = phase or self.phase
        self.ts.db.pending_set(self.id, self.body())

    def done(self) -> None:
        self.ts.db.pending_remove(self.id)


def _rollback(ts: "Reverts", journal: _Journal) -> "list[str]":
    """Undo the reversible steps taken so far; returns what could not be undone."""
    problems = []
    for step in journal.plan:
        if step.path == CLONE and step.result is not None:
            problems += ts.discard([step.result])
            step.result = None
            journal.save()
        if step.path in (IN_PLACE, IN_PLACE_STARTED) and step.safety is not None:
            try:
                if not try_in_place(ts, step.safety, step.target):
                    raise ToolstackError("VDI_REVERT", "the SR no longer reverts in place")
            except ToolstackError as exc:
                problems.append(
                    f"{step.target.uuid} could not be put back; its state before the revert "
                    f"is kept in snapshot {step.safety.uuid}: {exc}"
                )
                continue
            step.path = ""
            journal.save()
        if step.safety is not None:
            problems += ts.discard([step.safety])
            step.safety = None
            journal.save()
    if not problems:
        journal.done()
    return problems


def _reversible_steps(ts: "Reverts", journal: _Journal) -> None:
    # A guard snapshot is only needed when a later step could fail.
    guard = len(journal.plan) > 1
    for step in journal.plan:
        if step.kind == "disk" and step.target is not None:
            if guard and ts.can(ts.sr_of(step.target), "VDI_REVERT"):
                step.safety = ts.vdi_snapshot(step.target)
            step.path = IN_PLACE_STARTED
            journal.save()
            try:
                reverted = try_in_place(ts, step.snapshot, step.target)
            except ToolstackError:
                # A driver that answers with an error has changed nothing. (On
                # Ctrl-C the driver was interrupted too: done or not is unknown.)
                step.path = ""
                raise
            if reverted:
                step.path, step.result = IN_PLACE, ts.db.get(VDIRecord, step.target.ref)
                journal.save()
                continue
            step.path = ""
            if step.safety is not None:
                ts.discard([step.safety])
                step.safety = None
            journal.save()
        # CD images are never reverted; suspend disks and disks that lost
        # their original are always cloned.
        step.result = clone_for(ts, step.snapshot, step.target)
        step.path = CLONE
        journal.save()


def _commit(ts: "Reverts", journal: _Journal) -> "list[str]":
    journal.save("commit")  # from here on, an interrupted revert is finished, not undone
    warnings = []
    for step in journal.plan:
        if step.safety is not None:
            warnings += ts.discard([step.safety])
    for step in journal.plan:
        old = step.old
        old_ref = old.ref if old else step.old_ref
        if step.path != CLONE or old_ref is None:
            continue
        others = [v for v in ts.db.select(VBDRecord, vdi_ref=old_ref)
                  if v.vm_ref != journal.vm.ref]
        if old is None:
            pass  # deleted by an interrupted commit: its driver forgot it
        elif step.target is None and others:
            # A replaced disk another VM uses: unplugged here, kept.
            warnings.append(f"disk {old.uuid} is kept: other VMs use it")
            continue
        else:
            try:
                ts.call_vdi(old, "vdi_delete")
            except DriverFault as exc:
                if exc.code != CODE_VDI_MISSING:  # not already gone (a second commit)
                    # The revert stands; the old disk stays, recorded, unplugged.
                    warnings.append(f"old disk {old.uuid} could not be destroyed: {exc}")
        hand_over(ts, old_ref, step.result.ref)
    _match_layout(ts, journal.vm, journal.snap, journal.plan)
    journal.done()
    return warnings


def _match_layout(ts: "Reverts", vm: VMRecord, snap: VMRecord, plan: "list[DiskRevert]") -> None:
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


def revert_vm(ts: "Reverts", snap: VMRecord) -> VMRevert:
    if not snap.is_a_snapshot:
        raise ToolstackError("VM_IS_NOT_A_SNAPSHOT", f"VM {snap.uuid} is not a snapshot")
    vm = ts.db.get(VMRecord, snap.snapshot_of) if snap.snapshot_of else None
    if vm is None:
        raise ToolstackError("VM_MISSING", f"the VM snapshot {snap.uuid} was taken of is gone")
    journal = _Journal(ts, vm, snap, _plan(ts, snap, vm))
    try:
        _reversible_steps(ts, journal)
    except ToolstackError as exc:
        raise _with_notes(exc, _rollback(ts, journal)) from None
    except KeyboardInterrupt:
        # Interrupted between driver calls: still leave all or nothing.
        _rollback(ts, journal)
        raise
    warnings = _commit(ts, journal)
    return VMRevert(ts.db.get(VMRecord, vm.ref), journal.plan, warnings)


def _load(ts: "Reverts", pending_id: int, body: dict) -> Optional[_Journal]:
    vm = ts.db.get(VMRecord, body["vm"])
    snap = ts.db.get(VMRecord, body["snapshot"])
    if vm is None or snap is None:
        return None

    def vdi(ref: Optional[str]) -> Optional[VDIRecord]:
        return ts.db.get(VDIRecord, ref) if ref else None

    plan = []
    for s in body["steps"]:
        snapshot = vdi(s["snapshot"])
        if snapshot is None:
            return None
        step = DiskRevert(snapshot, vdi(s["target"]), s["device"], s["kind"], s["path"],
                          vdi(s["result"]), vdi(s["safety"]), vdi(s.get("replaces")))
        if step.old is None:  # a commit that deleted it: only its ref is left
            step.old_ref = s["target"] or s.get("replaces")
        plan.append(step)
    journal = _Journal(ts, vm, snap, plan, pending_id)
    journal.phase = body["phase"]
    return journal


def finish_vm_revert(ts: "Reverts", pending_id: int, body: dict) -> str:
    """Recovery of a killed revert_vm: roll a prepare back, a commit forward."""
    journal = _load(ts, pending_id, body)
    if journal is None:  # its VM or disks were removed since: nothing to finish
        ts.db.pending_remove(pending_id)
        return "nothing was left to do"
    if journal.phase == "commit":
        problems = _commit(ts, journal)
        return "completed" + "".join(f"; {p}" for p in problems)
    problems = _rollback(ts, journal)
    return "rolled back" + "".join(f"; {p}" for p in problems)
