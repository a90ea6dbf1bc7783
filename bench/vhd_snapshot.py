"""Snapshot cost against disk size: a 2 TiB parent vs a 1 GiB parent (goal <= 1.5x).

Both are measured in one run, alternating, as a whole process per snapshot
(the way a driver pays for it: start, open the parent, write the child) and
in-process (the library call alone).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from smlib import vhd

GiB = 1024 ** 3
TiB = 1024 * GiB
SNAP = ("import sys; from smlib import vhd; "
        "vhd.snapshot(sys.argv[1], sys.argv[2])")


def _in_process(child: str, parent: str) -> float:
    if os.path.exists(child):
        os.unlink(child)
    start = time.perf_counter()
    vhd.snapshot(child, parent)
    return time.perf_counter() - start


def _as_process(child: str, parent: str) -> float:
    if os.path.exists(child):
        os.unlink(child)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", SNAP, child, parent], check=True)
    return time.perf_counter() - start


def main(reps: int = 15) -> None:
    print(f"VHD snapshot benchmark (median of {reps}, alternating)")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        parents = {}
        for label, size in (("1 GiB", GiB), ("2 TiB", 2 * TiB)):
            parents[label] = os.path.join(d, f"p{size}.vhd")
            vhd.create(parents[label], size)
            with vhd.open_image(parents[label], writable=True) as img:
                img.write(0, b"x" * 4096)      # a parent with data, like a real base
        for name, fn in (("in-process", _in_process), ("process", _as_process)):
            times = {label: [] for label in parents}
            for _ in range(reps):
                for label, parent in parents.items():
                    times[label].append(fn(os.path.join(d, "child.vhd"), parent))
            small = statistics.median(times["1 GiB"])
            big = statistics.median(times["2 TiB"])
            print(f"  snapshot {name:<11} 1 GiB {small * 1000:7.2f} ms   2 TiB {big * 1000:7.2f} ms"
                  f"   ratio 2TiB/1GiB {big / small:5.2f}  (goal <= 1.5)")


if __name__ == "__main__":
    main()
