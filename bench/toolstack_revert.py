"""VM revert through the toolstack on FileSR: in place vs the clone fallback,
and in place with little vs much data written. Rounds are interleaved so
that both sides of each ratio see the same machine load.

Goals: in place costs about the same however much data the disk holds
(ratio ~1), and no more than the clone fallback (ratio <= 1).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from smlib.toolstack.db import Database, VDIRecord
from smlib.toolstack.ops import Toolstack
from smlib.toolstack.runner import Runner
from smlib.toolstack.transfer import vdi_import

MiB = 1 << 20
ROUNDS = 5


def _setup(ts: Toolstack, scratch: str, data_mib: int, withhold: bool):
    location = tempfile.mkdtemp(dir=scratch)
    sr = ts.sr_create("file", {"location": location}, "bench")
    if withhold:
        sr = ts.db.update(sr, capabilities=[c for c in sr.capabilities if c != "VDI_REVERT"])
    disk = ts.vdi_create(sr, 128 * MiB, "bench disk")
    vm = ts.vm_create("bench", [disk])
    _write(ts, disk, os.urandom(data_mib * MiB), scratch)
    return vm, ts.vm_snapshot(vm)


def _write(ts: Toolstack, disk: VDIRecord, data: bytes, scratch: str) -> None:
    path = os.path.join(scratch, "data.raw")
    with open(path, "wb") as f:
        f.write(data)
    vdi_import(ts, ts.db.get(VDIRecord, disk.ref), path)


def _one_revert(ts: Toolstack, vm, snap, scratch: str) -> float:
    current = ts.db.get(VDIRecord, ts.vbds(vm)[0].vdi_ref)
    _write(ts, current, os.urandom(MiB), scratch)  # dirty it (not timed)
    started = time.perf_counter()
    ts.vm_revert(snap)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-toolstack-") as scratch:
        ts = Toolstack(Database(os.path.join(scratch, "state.db")), Runner())
        cases = {
            "in place, 8 MiB written": _setup(ts, scratch, 8, withhold=False),
            "in place, 64 MiB written": _setup(ts, scratch, 64, withhold=False),
            "clone fallback, 8 MiB written": _setup(ts, scratch, 8, withhold=True),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(ROUNDS):
            for name, (vm, snap) in cases.items():
                times[name].append(_one_revert(ts, vm, snap, scratch))
        ts.db.close()
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, value in median.items():
        print(f"  {name:32s} median {value * 1000:7.1f} ms over {ROUNDS} rounds")
    size_ratio = median["in place, 64 MiB written"] / median["in place, 8 MiB written"]
    path_ratio = median["in place, 8 MiB written"] / median["clone fallback, 8 MiB written"]
    print(f"  in place 64 MiB / 8 MiB: {size_ratio:.2f}x (goal ~1: independent of data)")
    print(f"  in place / clone fallback: {path_ratio:.2f}x (goal <= 1)")


if __name__ == "__main__":
    main()
