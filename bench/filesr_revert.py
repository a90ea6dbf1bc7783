"""vdi_revert cost: independent of disk size and of data written.

Each figure times the real drivers/FileSR process (what a toolstack pays
per call), rounds interleaved across the SRs so machine load hits all
alike; the ratio of medians is the figure. Every timed call is a real
revert: each SR alternates between two snapshots with different parents
(a repeated identical revert would be a no-op). So that the parents
differ, "nothing written" means one 4 KiB block written before each
snapshot (snapshots of an unwritten disk share one parent after GC).

  2 TiB vs 1 GiB virtual disk, nothing written          goal <= 1.2x
  1 GiB written (in both snapshots' bases) vs nothing    goal <= 1.2x
  1 GiB written since the snapshot (discarded) vs none   goal <= 1.2x
  one vdi_revert vs `python -c pass`                     goal <= 3x
"""

from __future__ import annotations

import os
import tempfile
import time

from bench._filesr_util import BenchSR, GiB, TiB, python_pass, report

SMALL = 4096  # "nothing written": one 4 KiB block before each snapshot


def free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def wait_for_free(path: str, want: int, timeout: float = 60.0) -> None:
    """Until ``path``'s file system has ``want`` bytes free (or the timeout)."""
    deadline = time.monotonic() + timeout
    while free_bytes(path) < want and time.monotonic() < deadline:
        time.sleep(0.05)
    if free_bytes(path) < want:
        print(f"  (space not back after {timeout:.0f} s: baseline timed anyway)")


class RevertCase:
    """T with snapshots S1, S2 taken with ``written`` bytes written before each."""

    def __init__(self, root: str, size: int, written: int) -> None:
        self.sr = BenchSR(root)
        self.t = self.sr.create(size)
        self.snaps = []
        for tag in (1, 2):
            self.sr.fill(self.t, written or SMALL, tag)
            self.snaps.append(self.sr.snapshot(self.t))
        self.times: list[float] = []
        self.round = 0

    def revert(self) -> None:
        snap = self.snaps[self.round % 2]
        self.round += 1
        self.times.append(self.sr.timed("vdi_revert", snap, (self.t,)))


def main(rounds: int = 15, discard_rounds: int = 5) -> dict:
    with tempfile.TemporaryDirectory(prefix="filesr-bench-") as tmp:
        small = RevertCase(f"{tmp}/small", GiB, 0)
        big = RevertCase(f"{tmp}/big", 2 * TiB, 0)
        full = RevertCase(f"{tmp}/full", GiB, GiB)
        bare: list[float] = []
        for case in (small, big, full):
            case.revert()  # warm-up: .pyc files, page cache
            case.times.clear()
        for _ in range(rounds):
            for case in (small, big, full):
                case.revert()
            bare.append(python_pass(small.sr.env))
        # Discarding what was written since the snapshot: refill T each round.
        dirty = RevertCase(f"{tmp}/dirty", GiB, 0)
        clean_times: list[float] = []
        for i in range(discard_rounds):
            free = free_bytes(tmp)
            dirty.sr.fill(dirty.t, GiB, i)
            dirty.revert()
            # The revert hands the discarded 1 GiB to a background release:
            # the baseline is timed once that space is back, not while the
            # kernel is still freeing it.
            wait_for_free(tmp, free - 64 * 2 ** 20)
            small.revert()
            clean_times.append(small.times.pop())
        print("vdi_revert, 2 TiB vs 1 GiB virtual size (nothing written):")
        r_size = report("1 GiB disk", small.times, "2 TiB disk", big.times, 1.2)
        print("vdi_revert, 1 GiB written in the snapshots' bases vs nothing:")
        r_data = report("nothing written", small.times, "1 GiB written", full.times, 1.2)
        print("vdi_revert, 1 GiB written since the snapshot (discarded) vs nothing:")
        r_dirty = report("nothing written", clean_times, "1 GiB discarded", dirty.times, 1.2)
        print("one vdi_revert invocation vs python -c pass:")
        r_start = report("python -c pass", bare, "vdi_revert (1 GiB)", small.times, 3.0)
    return {"size": r_size, "data": r_data, "discard": r_dirty, "startup": r_start}


if __name__ == "__main__":
    main()
