"""smctl's output: records with xe's field names, as text, JSON or --minimal."""

import json
from typing import Any, Callable, Optional, TextIO, Tuple

from smlib.toolstack.cli.args import Args, UsageError
from smlib.toolstack.db import SRRecord, VBDRecord, VDIRecord, VMRecord
from smlib.toolstack.ops import Toolstack

# (field name, read-write?) in print order, and how to get each value.
Field = Tuple[str, bool, Callable[[Toolstack, Any], Any]]


DANGLING = "<not in database>"  # how text shows a link to a record that is gone (JSON: null)


def _uuid_of(ts: Toolstack, cls: type, ref: Optional[str]) -> Optional[str]:
    """The uuid a link names; None when it names nothing recorded (a dangling link)."""
    rec = ts.db.get(cls, ref) if ref else None
    return rec.uuid if rec else None


def _sr_uuid(ts: Toolstack, v: VDIRecord) -> str:
    return _uuid_of(ts, SRRecord, v.sr_ref)


def _vdi_vbds(ts: Toolstack, v: VDIRecord) -> "list[str]":
    return [b.uuid for b in ts.db.select(VBDRecord, vdi_ref=v.ref)]


def _vm_disks(ts: Toolstack, vm: VMRecord) -> "list[str]":
    return [
        f"{b.device}{'(cd)' if b.type == 'cd' else ''}="
        f"{_uuid_of(ts, VDIRecord, b.vdi_ref) or DANGLING}"
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
    ("vdi-uuid", False, lambda ts, r: _uuid_of(ts, VDIRecord, r.vdi_ref)),
    ("device", False, lambda ts, r: r.device),
    ("type", False, lambda ts, r: r.type),
    ("mode", False, lambda ts, r: r.mode),
]


def to_dict(ts: Toolstack, fields: "list[Field]", rec: Any) -> "dict[str, Any]":
    return {name: get(ts, rec) for name, _rw, get in fields}


def text_value(value: Any) -> str:
    if value is None:
        return DANGLING
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
        lines.append(f"{label}: {text_value(values[name])}")
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
    rows = [r for r in rows if all(text_value(r[k]) == v for k, v in filters.items())]
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
        out.write(",".join(text_value(r[first]) for r in rows) + "\n")
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
