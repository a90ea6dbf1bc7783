"""vdi_revert vs reverting by copying: the generic path other systems use.

Without an in-place revert a storage system reverts by copying the
snapshot's contents into the disk (or into a new disk): cost grows with
the data. Here the copy reads the snapshot's 1 GiB through its chain and
writes it into a fresh image that then replaces the target (fsynced, as
the driver's own writes are). vdi_revert is timed as the whole driver
process; the copy in process (so the ratio, if anything, flatters the
copy). Rounds interleaved; ratio of medians reported (no goal).
"""

from __future__ import annotations

import os
import tempfile
import time

from bench._filesr_util import BLOCK, BenchSR, GiB, report


def copy_revert(sr: BenchSR, snap: str, target: str) -> float:
    from smlib import vhd

    start = time.perf_counter()
    tmp = sr.path(target) + ".copy"
    with vhd.open_image(sr.path(snap)) as src:
        size = src.virtual_size
        vhd.create(tmp, size)
        with vhd.open_image(tmp, writable=True) as dst:
            for off in range(0, size, BLOCK):
                dst.write(off, src.read(off, BLOCK))
    fd = os.open(tmp, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    os.replace(tmp, sr.path(target))
    return time.perf_counter() - start


def main(rounds: int = 5) -> float:
    with tempfile.TemporaryDirectory(prefix="filesr-bench-") as tmp:
        sr = BenchSR(f"{tmp}/a")
        t = sr.create(GiB)
        snaps = []
        for tag in (1, 2):
            sr.fill(t, GiB, tag)
            snaps.append(sr.snapshot(t))
        # A second target for the copy path, so the revert's SR stays untouched.
        c = sr.call("vdi_clone", vdi=t)["uuid"]
        sr.timed("vdi_revert", snaps[0], (t,))  # warm-up
        revert_times, copy_times = [], []
        for i in range(rounds):
            revert_times.append(sr.timed("vdi_revert", snaps[(i + 1) % 2], (t,)))
            copy_times.append(copy_revert(sr, snaps[i % 2], c))
            os.sync()
        print("reverting a 1 GiB disk whose snapshot holds 1 GiB of data:")
        return report("vdi_revert (in place, whole process)", revert_times,
                      "copy the snapshot's 1 GiB into the target", copy_times)


if __name__ == "__main__":
    main()
