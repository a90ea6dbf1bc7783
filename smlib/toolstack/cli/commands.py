"""smctl's command table: one entry per command, registered by ``@command``."""

import contextlib
import json
import os
import sys
from typing import Any, Callable, Iterator, Optional, TextIO

from smlib.toolstack.cli.args import (
    PROGRESS_FLAGS,
    Args,
    Command,
    UsageError,
    parse_bool,
    parse_size,
    rounding_note,
)
from smlib.toolstack.cli.output import (
    SR_FIELDS,
    VBD_FIELDS,
    VDI_FIELDS,
    VM_FIELDS,
    Field,
    emit_one,
    emit_records,
    emit_uuid,
    text_value,
    to_dict,
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
         required=("type", "name-label"),
         optional=("name-description", "physical-size", "force"), maps=("device-config",))
def _sr_create(ts: Toolstack, args: Args, out: TextIO) -> None:
    location = args.map("device-config").get("location")
    if args["type"].lower() == "file" and location and not os.path.isdir(location):
        # The driver makes the whole path (as sm's FileSR does): a typo would
        # become a new directory tree. Only when asked.
        if os.path.exists(location):
            raise ToolstackError("SR_LOCATION_INVALID", f"{location} is not a directory")
        if not args.flag("force"):
            raise ToolstackError("SR_LOCATION_MISSING", f"directory {location} does not exist;"
                                 " give force=true to create it")
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
    _note_rounding(size, vdi.virtual_size)
    emit_uuid(vdi.uuid, args, out)


def _note_rounding(requested: int, size: int) -> None:
    """Say so when a disk came out bigger than asked (a size not in whole 2 MiB blocks)."""
    note = rounding_note(requested, size)
    if note:
        sys.stderr.write(f"smctl: note: {note}\n")


@command("vdi-destroy", "Destroy a disk (force=true also when a VM uses it).",
         required=("uuid",), optional=("force",))
def _vdi_destroy(ts: Toolstack, args: Args, out: TextIO) -> None:
    vdi = ts.vdi(args["uuid"])
    plugged = ts.db.select(VBDRecord, vdi_ref=vdi.ref)
    if plugged and not args.flag("force"):
        users = ", ".join(sorted({to_dict(ts, VBD_FIELDS, b)["vm-uuid"] or "?" for b in plugged}))
        raise ToolstackError("VDI_IN_USE", f"VDI {vdi.uuid} is plugged into VM {users};"
                             " give force=true to destroy it and unplug it")
    ts.vdi_destroy(vdi)


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
    _note_rounding(size, ts.vdi_resize(ts.vdi(args["uuid"]), size).virtual_size)


_record_commands("vdi", VDI_FIELDS, VDIRecord, "List disks.", "Show one disk.", Toolstack.vdi)


@command("vdi-param-set", "Rename a disk.", required=("uuid",),
         optional=("name-label", "name-description"))
def _vdi_param_set(ts: Toolstack, args: Args, out: TextIO) -> None:
    changes = {k.replace("-", "_"): v for k, v in args.values.items() if k != "uuid"}
    if not changes:
        raise UsageError("nothing to set: give name-label= or name-description=")
    ts.vdi_set(ts.vdi(args["uuid"]), **changes)


@contextlib.contextmanager
def _progress(args: Args, label: str) -> Iterator[Any]:
    """The progress meter a transfer reports to (None: quiet), ended cleanly on error."""
    from smlib.toolstack.progress import meter

    shown = meter(sys.stderr, label, args.progress)
    try:
        yield shown
    except BaseException:
        if shown is not None:
            shown.interrupted()
        raise


def _format(args: Args) -> str:
    fmt = args.get("format", "raw")
    if fmt not in ("raw", "vhd"):
        raise UsageError(f"format must be raw or vhd, not {fmt!r}")
    return fmt


@command("vdi-import", "Write a raw or VHD image into a disk (through the driver).",
         required=("uuid", "filename"), optional=("format", "exact"), flags=PROGRESS_FLAGS)
def _vdi_import(ts: Toolstack, args: Args, out: TextIO) -> None:
    from smlib.toolstack.transfer import vdi_import

    fmt, exact = _format(args), args.flag("exact")
    vdi = ts.vdi(args["uuid"])
    with _progress(args, "import") as shown:
        vdi_import(ts, vdi, args["filename"], shown, fmt=fmt, exact=exact, rollback=True)


@command("vdi-export", "Write a disk's contents (or with base=, what differs) to a raw or VHD"
         " file (through the driver).", required=("uuid", "filename"),
         optional=("format", "base", "force"), flags=PROGRESS_FLAGS)
def _vdi_export(ts: Toolstack, args: Args, out: TextIO) -> None:
    from smlib.toolstack.transfer import vdi_export

    fmt, force = _format(args), args.flag("force")
    if args.get("base") and fmt != "vhd":
        raise UsageError("base= needs format=vhd (a raw file cannot leave blocks out)")
    vdi = ts.vdi(args["uuid"])
    base = ts.vdi(args["base"]) if args.get("base") else None
    with _progress(args, "export") as shown:
        vdi_export(ts, vdi, args["filename"], shown, fmt=fmt, base=base, force=force)


@command("vdi-copy", "Copy a disk to an SR (a new disk, same name); prints its uuid.",
         required=("uuid", "sr-uuid"), flags=PROGRESS_FLAGS)
def _vdi_copy(ts: Toolstack, args: Args, out: TextIO) -> None:
    from smlib.toolstack.transfer import vdi_copy

    vdi, sr = ts.vdi(args["uuid"]), ts.sr(args["sr-uuid"])
    with _progress(args, "copy") as shown:
        emit_uuid(vdi_copy(ts, vdi, sr, shown).uuid, args, out)


@command("vdi-param-get", "Print one field of a disk.", required=("uuid", "param-name"),
         changes=False)
def _vdi_param_get(ts: Toolstack, args: Args, out: TextIO) -> None:
    values = to_dict(ts, VDI_FIELDS, ts.vdi(args["uuid"]))
    name = args["param-name"]
    if name not in values:
        raise UsageError(f"unknown param-name {name!r} (fields: {', '.join(values)})")
    out.write((json.dumps(values[name]) if args.json else text_value(values[name])) + "\n")


@command("vdi-revert", "Revert the disk a snapshot was taken of to it; says whether it was"
         " reverted in place or replaced by a clone (--minimal: the disk's uuid alone).",
         required=("snapshot-uuid",), maps=("driver-params",), flags=("--minimal",))
def _vdi_revert(ts: Toolstack, args: Args, out: TextIO) -> None:
    from smlib.toolstack.revert import IN_PLACE

    outcome = ts.vdi_revert(ts.vdi(args["snapshot-uuid"]), args.map("driver-params"))
    if args.json:
        emit_uuid(outcome.after_uuid, args, out, path=outcome.path,
                  **{"previous-uuid": outcome.before_uuid})
    elif args.minimal:
        out.write(outcome.after_uuid + "\n")
    elif outcome.path == IN_PLACE:
        out.write(f"reverted in place: {outcome.after_uuid}\n")
    else:
        out.write(f"cloned: new uuid {outcome.after_uuid} (replaces {outcome.before_uuid},"
                  " which is destroyed)\n")


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
                _note_rounding(size, made[-1].virtual_size)
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


@command("snapshot-revert", "Revert a VM to a snapshot, all disks or none (xe's name for"
         " vm-revert).", required=("snapshot-uuid",))
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
