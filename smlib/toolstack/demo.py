"""`make demo`: revert a VM in place on a file SR, then by clone on DummySR.

Everything runs in a temporary directory with its own database; the drivers
are the real executables. Exit status 0 only if every check passed.
"""

import hashlib
import os
import sys
import tempfile
from typing import Optional, TextIO

from smlib.toolstack.db import Database, VBDRecord, VDIRecord
from smlib.toolstack.ops import Toolstack
from smlib.toolstack.record import field, record
from smlib.toolstack.revert import CLONE, IN_PLACE
from smlib.toolstack.runner import Runner, ToolstackError
from smlib.toolstack.transfer import vdi_export, vdi_import

MiB = 1 << 20
DISK_SIZE = 64 * MiB


@record
class Row:
    sr: str
    path: str = "-"
    before: str = "-"
    after: str = "-"
    content: str = "-"
    links: str = "-"
    failures: "list[str]" = field(default_factory=list)

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
        return ok


def known_data(seed: str, size: int = DISK_SIZE) -> bytes:
    """A disk image: recognisable 4 KiB blocks with every fourth 2 MiB block left zero."""
    out = bytearray()
    for block in range(size // (2 * MiB)):
        if block % 4 == 3:
            out += bytes(2 * MiB)
            continue
        head = hashlib.sha256(f"{seed}:{block}".encode()).digest()
        out += head * (2 * MiB // len(head))
    return bytes(out)


def sha256_of_disk(ts: Toolstack, vdi: VDIRecord, scratch: str) -> str:
    path = os.path.join(scratch, f"{vdi.uuid}.raw")
    vdi_export(ts, vdi, path)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    os.remove(path)
    return digest


def links_valid(ts: Toolstack) -> Optional[str]:
    """None if every snapshot_of and VBD names an existing disk; else what does not."""
    vdis = {v.ref for v in ts.db.select(VDIRecord)}
    for vdi in ts.db.select(VDIRecord):
        if vdi.snapshot_of and vdi.snapshot_of not in vdis:
            return f"snapshot {vdi.uuid} names a missing disk"
    for vbd in ts.db.select(VBDRecord):
        if vbd.vdi_ref and vbd.vdi_ref not in vdis:
            return f"VBD {vbd.uuid} names a missing disk"
    return None


def revert_scenario(ts: Toolstack, row: Row, sr_type: str, device_config: dict,
                    scratch: str, expected_path: str) -> None:
    sr = ts.sr_create(sr_type, device_config, f"demo {sr_type} SR")
    disk = ts.vdi_create(sr, DISK_SIZE, "demo disk", "64 MiB system disk")
    vm = ts.vm_create("demo VM", [disk])
    stores_data = sr_type != "dummy"
    first, second = known_data("first"), known_data("second")
    if stores_data:
        _import(ts, disk, first, scratch)
    snap = ts.vm_snapshot(vm, "demo snapshot")
    snap_disk = ts.db.get(VDIRecord, ts.vbds(snap)[0].vdi_ref)
    if stores_data:
        _import(ts, disk, second, scratch)

    result = ts.vm_revert(snap)

    step = result.disks[0]
    row.path, row.before, row.after = step.path, step.before_uuid, step.after_uuid
    row.check(step.path == expected_path, f"path taken is {step.path}, expected {expected_path}")
    if expected_path == IN_PLACE:
        row.check(step.before_uuid == step.after_uuid, "disk uuid changed by an in-place revert")
    else:
        row.check(step.before_uuid != step.after_uuid, "clone fallback kept the old uuid")
        row.check(ts.db.get(VDIRecord, disk.ref) is None, "old disk still recorded")
    now = ts.db.get(VDIRecord, ts.vbds(vm)[0].vdi_ref)
    row.check(now is not None and now.uuid == step.after_uuid, "VM's VBD is not on the disk")
    row.check(now is not None and now.name_label == "demo disk", "disk name not kept")
    if stores_data:
        got, want = sha256_of_disk(ts, now, scratch), sha256_of_disk(ts, snap_disk, scratch)
        same = row.check(got == want, "disk contents differ from the snapshot's")
        row.check(want == hashlib.sha256(first).hexdigest(), "snapshot does not hold the data")
        row.content = f"{'match' if same else 'DIFFER'} {got[:12]} vs {want[:12]}"
    else:
        row.content = "n/a (stores no data)"
    problem = links_valid(ts)
    repointed = ts.db.get(VDIRecord, snap_disk.ref).snapshot_of == now.ref if now else False
    row.check(problem is None, problem or "")
    row.check(repointed, "the snapshot's snapshot_of does not name the disk")
    ok = problem is None and repointed
    row.links = ("valid" if ok else "BROKEN") + (" (repaired)" if step.path == CLONE else "")


def _import(ts: Toolstack, vdi: VDIRecord, data: bytes, scratch: str) -> None:
    path = os.path.join(scratch, "import.raw")
    with open(path, "wb") as f:
        f.write(data)
    vdi_import(ts, ts.db.get(VDIRecord, vdi.ref), path)
    os.remove(path)


def print_table(rows: "list[Row]", out: TextIO = sys.stdout) -> None:
    header = ("SR", "path", "disk before", "disk after", "content sha256 vs snapshot", "links")
    body = [(r.sr, r.path, r.before, r.after, r.content, r.links) for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    for line in [header, tuple("-" * w for w in widths), *body]:
        out.write("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() + "\n")


def main() -> int:
    runner = Runner()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="smctl-demo-") as tmp:
        db = Database(os.path.join(tmp, "state.db"))
        ts = Toolstack(db, runner)
        scenarios = [
            ("file", {"location": os.path.join(tmp, "file-sr")}, IN_PLACE),
            ("dummy", {}, CLONE),
        ]
        for sr_type, config, expected in scenarios:
            row = Row(sr_type)
            rows.append(row)
            if sr_type not in runner.available_types():
                row.path = "unavailable"
                row.failures.append(f"no {sr_type} driver in {runner.driver_dir}")
                continue
            if "location" in config:
                os.makedirs(config["location"])
            try:
                revert_scenario(ts, row, sr_type, config, tmp, expected)
            except ToolstackError as exc:
                row.failures.append(f"{exc.name}: {exc}")
        db.close()
    print("VM revert: a 64 MiB disk, snapshot, overwrite, revert "
          f"(drivers from {runner.driver_dir})\n")
    print_table(rows)
    failures = [f"{r.sr}: {f}" for r in rows for f in r.failures]
    print()
    for failure in failures:
        print(f"FAILED {failure}")
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
