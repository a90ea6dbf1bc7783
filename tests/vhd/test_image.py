"""Read/write, chains and metadata operations of the VHD library."""

from __future__ import annotations

import os
import random

import pytest

from smlib import vhd
from smlib.vhd import format as fmt

MiB = 1024 * 1024


def pattern(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def test_create_rounds_and_queries(tmp_path):
    path = str(tmp_path / "a.vhd")
    vhd.create(path, 5 * MiB + 1)
    with vhd.open_image(path) as img:
        assert img.virtual_size == 6 * MiB
        assert img.disk_type == fmt.DISK_DYNAMIC
        assert img.parent_uuid is None and img.parent_path() is None
        assert img.is_empty() and img.allocated_blocks() == []
        assert img.physical_size == os.path.getsize(path)
        assert img.max_bat_entries == 3
        assert not img.hidden
        assert img.read(0, 6 * MiB) == bytes(6 * MiB)


def test_unaligned_write_read(tmp_path):
    path = str(tmp_path / "a.vhd")
    vhd.create(path, 8 * MiB)
    model = bytearray(8 * MiB)
    with vhd.open_image(path, writable=True) as img:
        for off, n in ((1, 10), (2 * MiB - 300, 700), (511, 1), (5 * MiB + 17, 3 * MiB - 17)):
            data = pattern(n, off)
            img.write(off, data)
            model[off:off + n] = data
        assert img.read(0, 8 * MiB) == bytes(model)
        assert img.allocated_blocks() == [0, 1, 2, 3]
    with vhd.open_image(path) as img:
        assert img.read(0, 8 * MiB) == bytes(model)
        assert img.read(2 * MiB - 301, 702) == bytes(model[2 * MiB - 301:2 * MiB + 401])
        assert img.physical_size == os.path.getsize(path)
    vhd.check(path)


def test_chain_reads_and_snapshot_isolation(tmp_path):
    base = str(tmp_path / "base.vhd")
    mid = str(tmp_path / "mid.vhd")
    leaf = str(tmp_path / "leaf.vhd")
    vhd.create(base, 4 * MiB)
    with vhd.open_image(base, writable=True) as img:
        img.write(0, b"A" * 4 * MiB)
    vhd.snapshot(mid, base)
    with vhd.open_image(mid, writable=True) as img:
        assert img.is_empty()
        img.write(1000, b"B" * 5000)
    vhd.snapshot(leaf, mid, hidden=True)
    with vhd.open_image(leaf, writable=True) as img:
        assert img.hidden
        img.write(3 * MiB, b"C" * 10)
        expect = bytearray(b"A" * 4 * MiB)
        expect[1000:6000] = b"B" * 5000
        expect[3 * MiB:3 * MiB + 10] = b"C" * 10
        assert img.read(0, 4 * MiB) == bytes(expect)
    with vhd.open_image(mid) as img:
        assert img.read(3 * MiB, 10) == b"A" * 10
    assert vhd.chain(leaf) == [leaf, mid, base]
    assert vhd.depth(leaf) == 3
    vhd.check(leaf)


def test_read_only_refuses_write(tmp_path):
    path = str(tmp_path / "a.vhd")
    vhd.create(path, 2 * MiB)
    before = open(path, "rb").read()
    with vhd.open_image(path) as img, pytest.raises(vhd.VHDError):
        img.write(0, b"x")
    with vhd.open_image(path, writable=True) as img, pytest.raises(vhd.VHDError):
        img.write(2 * MiB - 1, b"xy")
    assert open(path, "rb").read() == before


def test_set_hidden_roundtrip(tmp_path):
    path = str(tmp_path / "a.vhd")
    vhd.create(path, 2 * MiB, hidden=True)
    with vhd.open_image(path, writable=True) as img:
        assert img.hidden
        img.set_hidden(False)
    with vhd.open_image(path) as img:
        assert not img.hidden
    vhd.check(path)


def test_image_inside_larger_container(tmp_path):
    """An LV-like container: the image's trailing footer sits at the end of data."""
    path = str(tmp_path / "lv")
    vhd.create(path, 4 * MiB)
    with vhd.open_image(path, writable=True) as img:
        img.write(MiB, b"z" * 4096)
        phys = img.physical_size
    data = open(path, "rb").read()
    # Simulate a bigger container: garbage after the image's footer.
    with open(path, "ab") as f:
        f.write(b"\xaa" * 3 * MiB)
    with vhd.open_image(path) as img:
        assert img.read(MiB, 4096) == b"z" * 4096
        assert img.physical_size == phys
    assert open(path, "rb").read(len(data)) == data


def test_snapshot_onto_its_parent_refused(tmp_path):
    path = str(tmp_path / "a.vhd")
    vhd.create(path, 2 * MiB)
    before = open(path, "rb").read()
    with pytest.raises(vhd.VHDError, match="own parent"):
        vhd.snapshot(path, path)
    assert open(path, "rb").read() == before


def test_create_refuses_bad_sizes(tmp_path):
    for size in (0, -5, 2 * 1024 ** 4 + 1):
        with pytest.raises(vhd.VHDError, match="out of range"):
            vhd.create(str(tmp_path / "x.vhd"), size)
    assert not os.path.exists(str(tmp_path / "x.vhd"))
