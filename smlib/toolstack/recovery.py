"""Finish what a killed smctl left half done.

VM snapshot, VDI revert (clone fallback), VM revert and smctl's VDI import
(its rollback snapshot) record their progress
in the database's `pending` table while they run. The next smctl command
that changes anything calls recover_pending() first, under the operation
lock: an operation killed before its point of no return is undone, one
killed after it is completed. Each handler is safe to run again if it is
itself interrupted.
"""

from typing import Callable

from smlib.toolstack.db import (
    PENDING_VDI_IMPORT,
    PENDING_VDI_REVERT,
    PENDING_VM_REVERT,
    PENDING_VM_SNAPSHOT,
    VDIRecord,
    VMRecord,
)
from smlib.toolstack.ops import Toolstack
from smlib.toolstack.revert import finish_vdi_revert, finish_vm_revert
from smlib.toolstack.runner import ToolstackError
from smlib.toolstack.transfer import finish_vdi_import


def _vm_snapshot(ts: Toolstack, pending_id: int, body: dict) -> str:
    made = [ts.db.get(VDIRecord, ref) for ref in body.get("taken", [])]
    failed = ts.discard([v for v in made if v is not None])
    if failed:
        return "an interrupted vm-snapshot could not be undone yet: " + "; ".join(failed)
    ts.db.pending_remove(pending_id)
    return f"an interrupted vm-snapshot was undone ({len(made)} disk snapshot(s) removed)"


def _one_disk(ts: Toolstack, pending_id: int, body: dict, key: str, what: str,
              finish: Callable[[Toolstack, dict], str]) -> str:
    """Finish an operation on the disk body[key] names; the note for the user."""
    disk = ts.db.get(VDIRecord, body.get(key) or "")  # read first: finishing may destroy it
    # The body names the disk by uuid too: its driver forgets the record on delete.
    name = disk.uuid if disk else (body.get(key + "_uuid") or "a disk")
    outcome = finish(ts, body)
    ts.db.pending_remove(pending_id)
    return f"an interrupted {what} {name}: {outcome}"


def _vdi_revert(ts: Toolstack, pending_id: int, body: dict) -> str:
    return _one_disk(ts, pending_id, body, "target", "vdi-revert of", finish_vdi_revert)


def _vdi_import(ts: Toolstack, pending_id: int, body: dict) -> str:
    return _one_disk(ts, pending_id, body, "disk", "vdi-import into", finish_vdi_import)


def _vm_revert(ts: Toolstack, pending_id: int, body: dict) -> str:
    vm = ts.db.get(VMRecord, body.get("vm") or "")
    what = f"an interrupted vm-revert of VM {vm.uuid if vm else '(gone)'}"
    return f"{what}: {finish_vm_revert(ts, pending_id, body)}"


HANDLERS: "dict[str, Callable[[Toolstack, int, dict], str]]" = {
    PENDING_VM_SNAPSHOT: _vm_snapshot,
    PENDING_VDI_REVERT: _vdi_revert,
    PENDING_VM_REVERT: _vm_revert,
    PENDING_VDI_IMPORT: _vdi_import,
}


def recover_pending(ts: Toolstack) -> "list[str]":
    """Handle every pending operation; one line per operation, for the user."""
    notes = []
    for pending_id, kind, body in ts.db.pending():
        handler = HANDLERS.get(kind)
        if handler is None:
            notes.append(f"pending operation {pending_id} of unknown kind {kind!r} left alone")
            continue
        try:
            notes.append(handler(ts, pending_id, body))
        except ToolstackError as exc:
            notes.append(f"an interrupted {kind.replace('_', '-')} could not be finished yet: "
                         f"{exc} (it will be tried again)")
    return notes
