"""Interrupted writes: a process killed mid-operation leaves an image that opens,
and repeating the operation (what journal replay does) completes it.

The kill is simulated in-process: after the k-th raw write every further
write and truncate fails, as if the process had died there (nothing after
that point reaches the file). k runs over every raw write the operation
makes, counted in a dry run. Expected contents come from a bytearray
model of what was written, never from the library's own reads.
"""

from __future__ import annotations

import os
import random
import tempfile

import pytest
from helpers.vhd_kill import Died, die_after

from smlib import vhd
from smlib.vhd import rawio

MiB = 1024 * 1024
SIZE = 12 * MiB
SECTOR = 512


def build(directory: str) -> tuple[str, str, bytes, bytes]:
    """base (written 1..4 MiB) and leaf (two more regions); returns
    (base, leaf, base contents, leaf contents) as the model says."""
    base, leaf = os.path.join(directory, "base.vhd"), os.path.join(directory, "leaf.vhd")
    rng = random.Random(5)
    model = bytearray(SIZE)
    vhd.create(base, SIZE)
    with vhd.open_image(base, writable=True) as img:
        data = rng.randbytes(3 * MiB)
        img.write(MiB, data)
        model[MiB:4 * MiB] = data
    base_model = bytes(model)
    vhd.snapshot(leaf, base)
    with vhd.open_image(leaf, writable=True) as img:
        for offset, n in ((0, MiB + 7), (5 * MiB, 6 * MiB)):
            data = rng.randbytes(n)
            img.write(offset, data)
            model[offset:offset + n] = data
    return base, leaf, base_model, bytes(model)


NEW_AT = 3 * MiB + 512
NEW = random.Random(9).randbytes(5 * MiB)


def write_new(leaf: str) -> None:
    with vhd.open_image(leaf, writable=True) as img:
        img.write(NEW_AT, NEW)


def raw_writes(operation) -> int:
    """How many raw writes ``operation(leaf)`` makes on a fresh build (a dry run)."""
    count = {"n": 0}
    real = rawio.RawFile.write_at

    def counted(self, offset, data):
        count["n"] += 1
        return real(self, offset, data)
    with tempfile.TemporaryDirectory() as d:
        _, leaf, _, _ = build(d)
        rawio.RawFile.write_at = counted
        try:
            operation(leaf)
        finally:
            rawio.RawFile.write_at = real
    return count["n"]


COALESCE_WRITES = raw_writes(vhd.coalesce)
WRITE_WRITES = raw_writes(write_new)


def sectors_each_old_or_new(got: bytes, old: bytes, new: bytes, where: str) -> None:
    for s in range(0, len(got), SECTOR):
        sector = got[s:s + SECTOR]
        assert sector in (old[s:s + SECTOR], new[s:s + SECTOR]), f"{where}: sector {s // SECTOR}"


def test_the_dry_runs_count_writes():
    # Enough that the crash points below cover more than the trivial cases.
    assert COALESCE_WRITES >= 5 and WRITE_WRITES >= 3


@pytest.mark.parametrize("k", range(COALESCE_WRITES))
def test_coalesce_repeated_after_crash(tmp_path, monkeypatch, k):
    base, leaf, base_model, leaf_model = build(str(tmp_path))
    with monkeypatch.context() as m:
        die_after(m.setattr, k)
        with pytest.raises(Died):
            vhd.coalesce(leaf)
    # The half-done parent opens; each sector holds its own old bytes or the
    # child's (coalesce copies the child's sectors in); the leaf reads as before.
    with vhd.open_image(base) as img:
        sectors_each_old_or_new(img.read(0, SIZE), base_model, leaf_model, "parent")
    with vhd.open_image(leaf) as img:
        assert img.read(0, SIZE) == leaf_model
    vhd.coalesce(leaf)
    with vhd.open_image(base) as img:
        assert img.read(0, SIZE) == leaf_model
    vhd.check(leaf)


@pytest.mark.parametrize("k", range(WRITE_WRITES))
def test_write_interrupted_keeps_old_or_new_per_sector(tmp_path, monkeypatch, k):
    base, leaf, _, before = build(str(tmp_path))
    after = before[:NEW_AT] + NEW + before[NEW_AT + len(NEW):]
    with monkeypatch.context() as m:
        die_after(m.setattr, k)
        with pytest.raises(Died):
            write_new(leaf)
    with vhd.open_image(leaf) as img:
        got = img.read(0, SIZE)
    assert got[:NEW_AT] == before[:NEW_AT]
    assert got[NEW_AT + len(NEW):] == before[NEW_AT + len(NEW):]
    sectors_each_old_or_new(got, before, after, "leaf")
    write_new(leaf)                       # writing again repairs it
    with vhd.open_image(leaf) as img:
        assert img.read(0, SIZE) == after
    vhd.check(leaf)
