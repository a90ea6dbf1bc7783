"""smctl: an xe-style command line over the toolstack.

    smctl sr-create type=file device-config:location=/srv/sr name-label=local
    smctl vdi-create sr-uuid=... name-label=disk virtual-size=64MiB
    smctl vdi-revert snapshot-uuid=...

Exit status: 0 done, 1 the operation failed (stderr names the error, with
the SR code and name for a driver error), 2 the command line is wrong.
The database is $SMCTL_DB (default ~/.local/share/smctl/state.db); the
drivers are found in $SMCTL_DRIVER_DIR (default: the checkout's drivers/,
else /opt/xensource/sm).
"""

import json
import re
import sqlite3
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TextIO, Tuple

from smlib.toolstack.db import Database, SchemaError, SRRecord, VBDRecord, VDIRecord, VMRecord
from smlib.toolstack.ops import Toolstack
from smlib.toolstack.recovery import recover_pending
from smlib.toolstack.runner import DriverFault, ToolstackError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


# Sizes ------------------------------------------------------------------

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
    "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
}


def parse_size(text: str) -> int:
    """Bytes, or a number with a unit: 64MiB, 1G (binary), 500MB (decimal)."""
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise UsageError(f"not a size: {text!r} (bytes, or a number with KiB/MiB/GiB/TiB)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("true", "yes", "1"):
        return True
    if low in ("false", "no", "0"):
        return False
    raise UsageError(f"not a boolean: {text!r} (true or false)")


# Commands ---------------------------------------------------------------


@dataclass
class Args:
    values: "dict[str, str]" = field(default_factory=dict)
    maps: "dict[str, dict[str, str]]" = field(default_factory=dict)
    json: bool = False
    minimal: bool = False

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        return self.values.get(key, default)

    def __getitem__(self, key: str) -> str:
        return self.values[key]

    def map(self, name: str) -> "dict[str, str]":
        return self.maps.get(name, {})


@dataclass
class Command:
    name: str
    summary: str
    run: Callable[[Toolstack, Args, TextIO], None]
    required: "tuple[str, ...]" = ()
    optional: "tuple[str, ...]" = ()
    maps: "tuple[str, ...]" = ()
    filters: bool = False  # list commands accept field=value filters
    changes: bool = True  # False for read-only commands, which skip the operation lock

    def usage(self) -> str:
        parts = [f"{k}=<{k}>" for k in self.required]
        parts += [f"[{k}=<{k}>]" for k in self.optional]
        parts += [f"[{m}:<key>=<value>]" for m in self.maps]
        if self.filters:
            parts.append("[<field>=<value> ...] [params=<field>,...|all] [--minimal]")
        return f"usage: smctl {self.name} {' '.join(parts)} [--json]".rstrip()


COMMANDS: "dict[str, Command]" = {}


def command(name: str, summary: str, **kw: Any) -> Callable:
    def register(fn: Callable) -> Callable:
        COMMANDS[name] = Command(name, summary, fn, **kw)
        return fn
    return register


def parse_args(cmd: Command, tokens: "list[str]") -> Args:
    args = Args()
    for token in tokens:
        if token == "--json":
            args.json = True
            continue
        if token == "--minimal" and cmd.filters:
            args.minimal = True
            continue
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise UsageError(f"expected key=value, got {token!r}")
        if ":" in key:
            map_name, _, map_key = key.partition(":")
            if map_name not in cmd.maps or not map_key:
                raise UsageError(f"unknown parameter {key!r}")
            args.maps.setdefault(map_name, {})[map_key] = value
            continue
        if key not in cmd.required + cmd.optional and not cmd.filters:
            raise UsageError(f"unknown parameter {key!r}")
        args.values[key] = value
    missing = [k for k in cmd.required if k not in args.values]
    if missing:
        raise UsageError(f"missing parameter {', '.join(missing)}")
    return args


# Output: records with xe's field names -------------------------------------

# (field name, read-write?) in print order, and how to get each value.
Field = Tuple[str, bool, Callable[[Toolstack, Any], Any]]


def _uuid_of(ts: Toolstack, cls: type, ref: Optional[str]) -> str:
    if not ref:
        return "<not in database>"
    rec = ts.db.get(cls, ref)
    return rec.uuid if rec else "<not in database>"


def _sr_uuid(ts: Toolstack, v: VDIRecord) -> str:
    return _uuid_of(ts, SRRecord, v.sr_ref)


def _vdi_vbds(ts: Toolstack, v: VDIRecord) -> "list[str]":
    return [b.uuid for b in ts.db.select(VBDRecord, vdi_ref=v.ref)]


def _vm_disks(ts: Toolstack, vm: VMRecord) -> "list[str]":
    return [
        f"{b.device}{'(cd)' if b.type == 'cd' else ''}={_uuid_of(ts, VDIRecord, b.vdi_ref)}"
        for b in ts.vbds(vm)
    ]


SR_FIELDS: "list[Field]" = [
    ("uuid", False, lambda ts, r: r.uuid),
    ("name-label", True, lambda ts, r: r.name_label),
    ("name-description", True, lambda ts, r: r.name_description),
    ("type", False, lambda ts, r: r.type),
    ("device-config", False, lambda ts, r: dict(r.device_config)),
    ("capabilities", False, lambda ts, r: list(r.capabilities)),
]

VDI_FIELDS: "list[Field]" = [
    ("uuid", False, lambda ts, r: r.uuid),
    ("name-label", True, lambda ts, r: r.name_label),
    ("name-description", True, lambda ts, r: r.name_description),
    ("sr-uuid", False, _sr_uuid),
    ("virtual-size", False, lambda ts, r: r.virtual_size),
    ("type", False, lambda ts, r: r.type),
    ("location", False, lambda ts, r: r.location),
    ("read-only", False, lambda ts, r: r.read_only),
    ("managed", False, lambda ts, r: r.managed),
    ("is-a-snapshot", False, lambda ts, r: r.is_a_snapshot),
    ("snapshot-of", False, lambda ts, r: _uuid_of(ts, VDIRecord, r.snapshot_of)
        if r.snapshot_of else ""),
    ("snapshot-time", False, lambda ts, r: r.snapshot_time),
    ("vbd-uuids", False, _vdi_vbds),
]

VM_FIELDS: "list[Field]" = [
    ("uuid", False, lambda ts, r: r.uuid),
    ("name-label", True, lambda ts, r: r.name_label),
    ("name-description", True, lambda ts, r: r.name_description),
    ("is-a-snapshot", False, lambda ts, r: r.is_a_snapshot),
    ("snapshot-of", False, lambda ts, r: _uuid_of(ts, VMRecord, r.snapshot_of)
        if r.snapshot_of else ""),
    ("snapshot-time", False, lambda ts, r: r.snapshot_time),
    ("suspend-VDI-uuid", False, lambda ts, r: _uuid_of(ts, VDIRecord, r.suspend_vdi)
        if r.suspend_vdi else ""),
    ("disks", False, _vm_disks),
]

VBD_FIELDS: "list[Field]" = [
    ("uuid", False, lambda ts, r: r.uuid),
    ("vm-uuid", False, lambda ts, r: _uuid_of(ts, VMRecord, r.vm_ref)),
    ("vdi-uuid", False, lambda ts, r: _uuid_of(ts, VDIRecord, r.vdi_ref)
        if r.vdi_ref else "<not in database>"),
    ("device", False, lambda ts, r: r.device),
    ("type", False, lambda ts, r: r.type),
    ("mode", False, lambda ts, r: r.mode),
]


def to_dict(ts: Toolstack, fields: "list[Field]", rec: Any) -> "dict[str, Any]":
    return {name: get(ts, rec) for name, _rw, get in fields}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return str(value)


def format_record(fields: "list[Field]", values: "dict[str, Any]") -> str:
    """xe's layout: 'uuid ( RO)' flush left, the other names flush right."""
    width = max(len(name) for name, _rw, _get in fields) + len(" ( RO)")
    lines = []
    for index, (name, rw, _get) in enumerate(fields):
        label = f"{name} ( {'RW' if rw else 'RO'})"
        label = label.ljust(width) if index == 0 else label.rjust(width)
        lines.append(f"{label}: {_text(values[name])}")
    return "\n".join(lines)


def emit_records(
    ts: Toolstack, fields: "list[Field]", records: list, args: Args, out: TextIO
) -> None:
    rows = [to_dict(ts, fields, r) for r in records]
    filters = {k: v for k, v in args.values.items() if k != "params"}
    known = {name for name, _rw, _get in fields}
    unknown = sorted(set(filters) - known)
    if unknown:
        raise UsageError(f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(known))})")
    rows = [r for r in rows if all(_text(r[k]) == v for k, v in filters.items())]
    if args.get("params", "all") != "all":
        # xe's params=a,b: only those fields, in the order given
        wanted = [p.strip() for p in args["params"].split(",") if p.strip()]
        unknown = [p for p in wanted if p not in known]
        if unknown or not wanted:
            raise UsageError(f"unknown field in params: {unknown[0] if unknown else '(none)'}")
        fields = [next(f for f in fields if f[0] == name) for name in wanted]
        rows = [{name: r[name] for name in wanted} for r in rows]
    if args.json:
        out.write(json.dumps(rows, indent=2) + "\n")
    elif args.minimal:
        first = fields[0][0]  # uuid, unless params= chose otherwise
        out.write(",".join(_text(r[first]) for r in rows) + "\n")
    else:
        out.write("".join(format_record(fields, r) + "\n\n\n" for r in rows))


def emit_one(ts: Toolstack, fields: "list[Field]", record: Any, args: Args, out: TextIO) -> None:
    values = to_dict(ts, fields, record)
    if args.json:
        out.write(json.dumps(values, indent=2) + "\n")
    else:
        out.write(format_record(fields, values) + "\n\n\n")


def emit_uuid(uuid: str, args: Args, out: TextIO, **extra: Any) -> None:
    if args.json:
        out.write(json.dumps({"uuid": uuid, **extra}) + "\n")
    else:
        out.write(uuid + "\n")


# Progress ---------------------------------------------------------------


def progress_bar(stream: TextIO) -> Optional[Callable[[int, int], None]]:
    """A bar on a terminal; nothing otherwise (pipes and logs stay clean)."""
    if not stream.isatty():
        return None

    def show(done: int, total: int) -> None:
        share = done / total if total else 1.0
        bar = "#" * int(share * 40)
        stream.write(f"\r[{bar:<40}] {share * 100:5.1f}%")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show


# The commands --------------------------------------------------------------


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


# Entry point ----------------------------------------------------------------


def general_help() -> str:
    lines = ["usage: smctl <command> [key=value ...] [--json]", "", "commands:"]
    width = max(len(n) for n in COMMANDS)
    lines += [f"  {name.ljust(width)}  {cmd.summary}" for name, cmd in sorted(COMMANDS.items())]
    lines += ["", "smctl <command> --help shows a command's parameters."]
    return "\n".join(lines)


def report_error(exc: Exception, err: TextIO) -> None:
    """xe's shape: the error code, then its parameters."""
    if not isinstance(exc, ToolstackError):
        err.write(f"Error: {exc}\n")
        return
    err.write(f"Error code: {exc.xapi_name}\n")
    detail = exc.description if isinstance(exc, DriverFault) else str(exc)
    if exc.code is not None:
        err.write(f"Error parameters: {exc.code}, {exc.name}, {detail}\n")
    else:
        err.write(f"Error parameters: {detail}\n")


def main(argv: "Optional[list[str]]" = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out, err = sys.stdout, sys.stderr
    if not argv or argv[0] in ("help", "--help", "-h"):
        if len(argv) > 1 and argv[1] in COMMANDS:
            out.write(_command_help(COMMANDS[argv[1]]) + "\n")
            return EXIT_OK
        (out if argv else err).write(general_help() + "\n")
        return EXIT_OK if argv else EXIT_USAGE
    cmd = COMMANDS.get(argv[0])
    if cmd is None:
        err.write(f"smctl: unknown command {argv[0]!r}; `smctl help` lists them\n")
        return EXIT_USAGE
    if "--help" in argv[1:] or "-h" in argv[1:]:
        out.write(_command_help(cmd) + "\n")
        return EXIT_OK
    try:
        args = parse_args(cmd, argv[1:])
        db = Database()
    except UsageError as exc:
        err.write(f"smctl {cmd.name}: {exc}\n{cmd.usage()}\n")
        return EXIT_USAGE
    except (SchemaError, OSError, sqlite3.Error) as exc:
        err.write(f"smctl: cannot open the database: {exc}\n")
        return EXIT_FAILED
    try:
        if cmd.changes:
            with db.operation_lock():
                ts = Toolstack(db)
                for note in recover_pending(ts):
                    err.write(f"smctl: {note}\n")
                cmd.run(ts, args, out)
        else:
            cmd.run(Toolstack(db), args, out)
    except UsageError as exc:
        err.write(f"smctl {cmd.name}: {exc}\n{cmd.usage()}\n")
        return EXIT_USAGE
    except ToolstackError as exc:
        report_error(exc, err)
        return EXIT_FAILED
    except OSError as exc:  # a local file: the image to import, the export target
        err.write(f"smctl {cmd.name}: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.write(f"smctl {cmd.name}: interrupted\n")
        return 130  # the shell's code for death by SIGINT
    finally:
        db.close()
    return EXIT_OK


def _command_help(cmd: Command) -> str:
    return f"{cmd.usage()}\n\n{cmd.summary}"


if __name__ == "__main__":
    sys.exit(main())
