"""The served chain (smlib/datapath/disk.py) in process: reads into a
buffer through the chain, and writes whose every prefix is a valid image.

The kill is simulated as in tests/vhd/test_crash.py (helpers/vhd_kill.py):
after the k-th raw write every further write fails, as if the server had
died there (what reached the file before stays). After each k the leaf
must pass vhd.check and show, per sector, the old or the new contents.
Expected contents come from a bytearray model of what was written.
"""

from __future__ import annotations

import random

import pytest
from helpers.vhd_kill import Died, die_after

from smlib import vhd
from smlib.datapath.disk import LiveImage, chain_resolver

MiB = 1024 * 1024


def build(tmp_path):
    """A 12 MiB base written at 1..4 MiB and a child holding only block 0
    (blocks 1..5 are new to it); returns (base, leaf, contents by the model)."""
    base, leaf = str(tmp_path / "base.vhd"), str(tmp_path / "leaf.vhd")
    rng = random.Random(5)
    model = bytearray(12 * MiB)
    vhd.create(base, 12 * MiB)
    for path, at, n in ((base, MiB, 3 * MiB), (leaf, 0, MiB + 4096)):
        if path == leaf:
            vhd.snapshot(leaf, base)
        data = rng.randbytes(n)
        with vhd.open_image(path, writable=True) as img:
            img.write(at, data)
        model[at:at + n] = data
    return base, leaf, bytes(model)


def test_read_into_matches_library_read(tmp_path):
    base, leaf, expect = build(tmp_path)
    with LiveImage(leaf) as disk:
        for offset, length in ((0, 12 * MiB), (MiB - 700, 5000), (2 * MiB - 512, 1024),
                               (4 * MiB + 3, 10), (12 * MiB - 512, 512)):
            buf = bytearray(length)
            disk.read_into(offset, memoryview(buf))
            assert bytes(buf) == expect[offset:offset + length], (offset, length)


def test_explicit_chain_resolver(tmp_path):
    """The driver may name the parents itself (an LV's parent is a device)."""
    base, leaf, expect = build(tmp_path)
    with LiveImage(leaf, resolver=chain_resolver([leaf, base])) as disk:
        buf = bytearray(12 * MiB)
        disk.read_into(0, memoryview(buf))
    assert bytes(buf) == expect


@pytest.mark.parametrize("k", range(16))
def test_killed_write_leaves_a_valid_image(tmp_path, monkeypatch, k):
    base, leaf, before = build(tmp_path)
    new = random.Random(9).randbytes(5 * MiB)
    at = 3 * MiB + 512
    with monkeypatch.context() as m:
        die_after(m.setattr, k)
        disk = LiveImage(leaf, writable=True)
        try:
            disk.write(at, memoryview(new))
            disk.write(11 * MiB, memoryview(b"\x99" * 4096))
        except Died:
            pass
        disk._raw._f.close()          # the process is gone: no close-time writes
    vhd.check(leaf)
    with vhd.open_image(leaf) as img:
        after = img.read(0, 12 * MiB)
    for sector in range(0, 12 * MiB, 512):
        got = after[sector:sector + 512]
        old = before[sector:sector + 512]
        newer = new[sector - at:sector - at + 512] if at <= sector < at + len(new) else (
            b"\x99" * 512 if 11 * MiB <= sector < 11 * MiB + 4096 else old)
        assert got in (old, newer), f"sector {sector // 512} neither old nor new"


def test_zero_skips_what_the_chain_lacks(tmp_path):
    base, leaf, expect = build(tmp_path)
    with LiveImage(leaf, writable=True) as disk:
        size_before = disk.physical_size
        disk.zero(6 * MiB, 4 * MiB)          # no image holds these blocks
        assert disk.physical_size == size_before
        disk.zero(MiB, MiB)                  # the base holds it: zeros must hide it
        buf = bytearray(MiB)
        disk.read_into(MiB, memoryview(buf))
        assert bytes(buf) == bytes(MiB)
    vhd.check(leaf)
