"""Interrupted writes: a process killed mid-operation leaves an image that opens,
and repeating the operation (what journal replay does) completes it.

The kill is simulated in-process: after the k-th raw write every further
write and truncate fails, as if the process had died there (nothing after
that point reaches the file).
"""

from __future__ import annotations

import random

import pytest

from smlib import vhd
from smlib.vhd import rawio

MiB = 1024 * 1024


class Died(vhd.VHDError):
    pass


def die_after(monkeypatch, k: int) -> None:
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
    monkeypatch.setattr(rawio.RawFile, "write_at", write_at)
    monkeypatch.setattr(rawio.RawFile, "truncate", truncate)


def build(tmp_path):
    base, leaf = str(tmp_path / "base.vhd"), str(tmp_path / "leaf.vhd")
    vhd.create(base, 12 * MiB)
    rng = random.Random(5)
    with vhd.open_image(base, writable=True) as img:
        img.write(MiB, rng.randbytes(3 * MiB))
    vhd.snapshot(leaf, base)
    with vhd.open_image(leaf, writable=True) as img:
        img.write(0, rng.randbytes(MiB + 7))
        img.write(5 * MiB, rng.randbytes(6 * MiB))
        expect = img.read(0, 12 * MiB)
    return base, leaf, expect


@pytest.mark.parametrize("k", range(14))      # coalesce here makes 14 raw writes
def test_coalesce_repeated_after_crash(tmp_path, monkeypatch, k):
    base, leaf, expect = build(tmp_path)
    with monkeypatch.context() as m:
        die_after(m, k)
        with pytest.raises(Died):
            vhd.coalesce(leaf)
    with vhd.open_image(base) as img:       # the half-done parent still opens
        img.read(0, img.virtual_size)
    vhd.coalesce(leaf)
    with vhd.open_image(base) as img:
        assert img.read(0, 12 * MiB) == expect
    vhd.check(leaf)


@pytest.mark.parametrize("k", range(10))      # this write makes 10 raw writes
def test_write_interrupted_keeps_old_or_new_per_sector(tmp_path, monkeypatch, k):
    base, leaf, before = build(tmp_path)
    new = random.Random(9).randbytes(5 * MiB)
    with monkeypatch.context() as m:
        die_after(m, k)
        with pytest.raises(Died), vhd.open_image(leaf, writable=True) as img:
            img.write(3 * MiB + 512, new)
    with vhd.open_image(leaf) as img:
        got = img.read(0, 12 * MiB)
    lo = 3 * MiB + 512
    assert got[:lo] == before[:lo] and got[lo + len(new):] == before[lo + len(new):]
    for s in range(lo, lo + len(new), 512):
        sector = got[s:s + 512]
        assert sector in (before[s:s + 512], new[s - lo:s - lo + 512]), s
    with vhd.open_image(leaf, writable=True) as img:   # writing again repairs it
        img.write(lo, new)
    vhd.check(leaf)
