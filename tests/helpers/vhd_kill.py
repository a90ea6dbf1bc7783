"""A process killed mid-write, simulated in process (tests/vhd/test_crash.py,
tests/datapath/test_live_image.py): after the k-th raw write every further
write and truncate fails, as if the process had died there (nothing after
that point reaches the file)."""

from __future__ import annotations

from smlib import vhd
from smlib.vhd import rawio


class Died(vhd.VHDError):
    pass


def die_after(patch, k: int) -> None:
    """After k raw writes, every write and truncate fails. ``patch`` is
    monkeypatch.setattr (or any setattr-like callable)."""
    count = {"n": 0}
    real_write, real_truncate = rawio.RawFile.write_at, rawio.RawFile.truncate

    def write_at(self, offset, data):
        count["n"] += 1
        if count["n"] > k:
            raise Died(self.path, offset, "simulated crash")
        return real_write(self, offset, data)

    def truncate(self, size):
        if count["n"] >= k:
            raise Died(self.path, size, "simulated crash")
        return real_truncate(self, size)
    patch(rawio.RawFile, "write_at", write_at)
    patch(rawio.RawFile, "truncate", truncate)
