"""smctl's command table: one entry per command, registered by ``@command``."""

import json
import sys
from typing import Any, Callable, Optional, TextIO

from smlib.toolstack.cli.args import Args, Command, UsageError, parse_bool, parse_size
from smlib.toolstack.cli.output import (
    SR_FIELDS,
    VBD_FIELDS,
    VDI_FIELDS,
    VM_FIELDS,
    Field,
    emit_one,
    emit_records,
    emit_uuid,
    progress_bar,
)
from smlib.toolstack.db import SRRecord, VBDRecord, VDIRecord, VMRecord
from smlib.toolstack.ops import Toolstack
from smlib.toolstack.runner import ToolstackError

COMMANDS: "dict[str, Command]" = {}


def command(name: str, summary: str, **kw: Any) -> Callable:
    def register(fn: Callable) -> Callable:
        COMMANDS[name] = Command(name, summary, fn, **kw)
        return fn
    return register


def _size(args: Args, key: str) -> int:
    value = args.get(key)
    return parse_size(value) if value is not None else 0


def _record_commands(noun: str, fields: "list[Field]", cls: type, list_summary: str,
                     one_summary: str = "",
                     lookup: Optional[Callable[[Toolstack, str], Any]] = None) -> None:
    """The read-only record commands of one kind: ``<noun>-list`` (field
    filters, params=, --minimal) and, given a lookup by uuid,
    ``<noun>-param-list uuid=...``."""

    def list_records(ts: Toolstack, args: Args, out: TextIO) -> None:
        emit_records(ts, fields, ts.db.select(cls), args, out)

    command(f"{noun}-list", list_summary, filters=True, changes=False)(list_records)
    if lookup is not None:
        def show_one(ts: Toolstack, args: Args, out: TextIO) -> None:
            emit_one(ts, fields, lookup(ts, args["uuid"]), args, out)

        command(f"{noun}-param-list", one_summary, required=("uuid",),
                changes=False)(show_one)


@command("sr-create", "Create an SR and record it; prints its uuid.",
         required=("type", "name-label"), optional=("name-description", "physical-size"),
         maps=("device-config",))
def _sr_create(ts: Toolstack, args: Args, out: TextIO) -> None:
    sr = ts.sr_create(
        args["type"], args.map("device-config"), args["name-label"],
        args.get("name-description", ""), _size(args, "physical-size"),
    )
    emit_uuid(sr.uuid, args, out)


@command("sr-introduce", "Record an existing SR (attach and scan it); prints its uuid.",
         required=("type", "uuid", "name-label"), optional=("name-description",),
         maps=("device-config",))
def _sr_introduce(ts: Toolstack, args: Args, out: TextIO) -> None:
    sr = ts.sr_introduce(
        args["type"], args["uuid"], args.map("device-config"), args["name-label"],
        args.get("name-description", ""),
    )
    emit_uuid(sr.uuid, args, out)


@command("sr-forget", "Detach an SR and forget its records; its data stays.", required=("uuid",))
def _sr_forget(ts: Toolstack, args: Args, out: TextIO) -> None:
    ts.sr_forget(ts.sr(args["uuid"]))


@command("sr-destroy", "Delete an SR (sr_delete) and forget it.", required=("uuid",))
def _sr_destroy(ts: Toolstack, args: Args, out: TextIO) -> None:
    ts.sr_destroy(ts.sr(args["uuid"]))


@command("sr-scan", "Scan an SR and make the records match what is on it.", required=("uuid",))
def _sr_scan(ts: Toolstack, args: Args, out: TextIO) -> None:
    ts.sr_scan(ts.sr(args["uuid"]))


_record_commands("sr", SR_FIELDS, SRRecord, "List SRs.", "Show one SR.", Toolstack.sr)


@command("vdi-create", "Create a disk; prints its uuid.",
         required=("sr-uuid", "name-label", "virtual-size"),
         optional=("name-description", "read-only", "type"), maps=("sm-config",))
def _vdi_create(ts: Toolstack, args: Args, out: TextIO) -> None:
    kind = args.get("type", "user")
    if kind not in ("user", "suspend", "system"):
        raise UsageError(f"type must be user, suspend or system, not {kind!r}")
    read_only = parse_bool(args.get("read-only", "false"))
    size = parse_size(args["virtual-size"])
    sr = ts.sr(args["sr-uuid"])
    vdi = ts.vdi_create(
        sr, size, args["name-label"], args.get("name-description", ""),
        read_only=read_only, vdi_type=kind, sm_config=args.map("sm-config"),
    )
    emit_uuid(vdi.uuid, args, out)


@command("vdi-destroy", "Destroy a disk.", required=("uuid",))
def _vdi_destroy(ts: Toolstack, args: Args, out: TextIO) -> None:
    ts.vdi_destroy(ts.vdi(args["uuid"]))


@command("vdi-snapshot", "Snapshot a disk; prints the snapshot's uuid.",
         required=("uuid",), maps=("driver-params",))
def _vdi_snapshot(ts: Toolstack, args: Args, out: TextIO) -> None:
    emit_uuid(ts.vdi_snapshot(ts.vdi(args["uuid"]), args.map("driver-params")).uuid, args, out)


@command("vdi-clone", "Clone a disk; prints the clone's uuid.",
         required=("uuid",), optional=("new-name-label",), maps=("driver-params",))
def _vdi_clone(ts: Toolstack, args: Args, out: TextIO) -> None:
    clone = ts.vdi_clone(
        ts.vdi(args["uuid"]), args.map("driver-params"), name_label=args.get("new-name-label")
    )
    emit_uuid(clone.uuid, args, out)


@command("vdi-resize", "Grow a disk.", required=("uuid", "disk-size"))
def _vdi_resize(ts: Toolstack, args: Args, out: TextIO) -> None:
    size = parse_size(args["disk-size"])
    ts.vdi_resize(ts.vdi(args["uuid"]), size)


_record_commands("vdi", VDI_FIELDS, VDIRecord, "List disks.", "Show one disk.", Toolstack.vdi)


@command("vdi-param-set", "Rename a disk.", required=("uuid",),
         optional=("name-label", "name-description"))
def _vdi_param_set(ts: Toolstack, args: Args, out: TextIO) -> None:
    changes = {k.replace("-", "_"): v for k, v in args.values.items() if k != "uuid"}
    if not changes:
        raise UsageError("nothing to set: give name-label= or name-description=")
    ts.vdi_set(ts.vdi(args["uuid"]), **changes)


@command("vdi-import", "Write a raw image into a disk (through the driver).",
         required=("uuid", "filename"))
def _vdi_import(ts: Toolstack, args: Args, out: TextIO) -> None:
    from smlib.toolstack.transfer import vdi_import

    vdi_import(ts, ts.vdi(args["uuid"]), args["filename"], progress_bar(sys.stderr))


@command("vdi-export", "Write a disk's contents to a raw file (through the driver).",
         required=("uuid", "filename"))
def _vdi_export(ts: Toolstack, args: Args, out: TextIO) -> None:
    from smlib.toolstack.transfer import vdi_export

    vdi_export(ts, ts.vdi(args["uuid"]), args["filename"], progress_bar(sys.stderr))


@command("vdi-revert", "Revert the disk a snapshot was taken of to it; prints the disk's uuid "
         "(the same disk when reverted in place, its replacement after the clone fallback).",
         required=("snapshot-uuid",), maps=("driver-params",))
def _vdi_revert(ts: Toolstack, args: Args, out: TextIO) -> None:
    outcome = ts.vdi_revert(ts.vdi(args["snapshot-uuid"]), args.map("driver-params"))
    emit_uuid(outcome.after_uuid, args, out, path=outcome.path,
              **{"previous-uuid": outcome.before_uuid})


@command("vm-create", "Create a VM with existing disks and/or new ones; prints its uuid.",
         required=("name-label",),
         optional=("name-description", "vdi-uuids", "sr-uuid", "disk-sizes", "cd-uuid"))
def _vm_create(ts: Toolstack, args: Args, out: TextIO) -> None:
    disks = [ts.vdi(u) for u in _split(args.get("vdi-uuids"))]
    sizes = [parse_size(s) for s in _split(args.get("disk-sizes"))]
    if sizes and not args.get("sr-uuid"):
        raise UsageError("disk-sizes= needs sr-uuid= for the new disks")
    cd = ts.vdi(args["cd-uuid"]) if args.get("cd-uuid") else None
    made: list[VDIRecord] = []
    try:
        if sizes:
            sr = ts.sr(args["sr-uuid"])
            for index, size in enumerate(sizes):
                label = f"{args['name-label']} disk {len(disks) + index}"
                made.append(ts.vdi_create(sr, size, label))
        vm = ts.vm_create(args["name-label"], disks + made, cds=[cd] if cd else None,
                          name_description=args.get("name-description", ""))
    except ToolstackError:
        ts.discard(made)
        raise
    emit_uuid(vm.uuid, args, out)


def _split(value: Optional[str]) -> "list[str]":
    return [p.strip() for p in (value or "").split(",") if p.strip()]


@command("vm-snapshot", "Snapshot every disk of a VM; prints the snapshot's uuid.",
         required=("uuid",), optional=("new-name-label",))
def _vm_snapshot(ts: Toolstack, args: Args, out: TextIO) -> None:
    snap = ts.vm_snapshot(ts.vm(args["uuid"]), args.get("new-name-label", ""))
    emit_uuid(snap.uuid, args, out)


@command("vm-revert", "Revert a VM to a snapshot, all disks or none.",
         required=("snapshot-uuid",))
def _vm_revert(ts: Toolstack, args: Args, out: TextIO) -> None:
    result = ts.vm_revert(ts.vm(args["snapshot-uuid"]))
    for warning in result.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    if args.json:
        disks = [
            {"device": d.device, "kind": d.kind, "path": d.path,
             "previous-uuid": d.before_uuid, "uuid": d.after_uuid}
            for d in result.disks
        ]
        out.write(json.dumps({"uuid": result.vm.uuid, "disks": disks}, indent=2) + "\n")


@command("vm-destroy", "Forget a VM and its VBDs (its disks stay).", required=("uuid",))
def _vm_destroy(ts: Toolstack, args: Args, out: TextIO) -> None:
    ts.vm_destroy(ts.vm(args["uuid"]))


_record_commands("vm", VM_FIELDS, VMRecord, "List VMs and VM snapshots.", "Show one VM.",
                 Toolstack.vm)
_record_commands("vbd", VBD_FIELDS, VBDRecord, "List VBDs.")
