"""Byte compatibility with images made by blktap's vhd-util (../shared/vhd-golden).

Per-run fields are masked as the golden README lists: footer uuid,
timestamp and checksum in every footer copy, the header checksum and, in
differencing images, the parent uuid and parent timestamp.
"""

from __future__ import annotations

import os

import pytest

from smlib import vhd
from smlib.vhd import format as fmt

MiB = 1024 * 1024


def mask(data: bytes, diff: bool, extra_footers=()) -> bytes:
    buf = bytearray(data)
    for at in (0, len(buf) - fmt.FOOTER_SIZE, *extra_footers):
        for lo, hi in ((fmt.F_TIMESTAMP, fmt.F_TIMESTAMP + 4),
                       (fmt.F_CHECKSUM, fmt.F_UUID + 16)):
            buf[at + lo:at + hi] = bytes(hi - lo)
    h = fmt.HEADER_OFFSET
    buf[h + fmt.H_CHECKSUM:h + fmt.H_CHECKSUM + 4] = bytes(4)
    if diff:
        buf[h + fmt.H_PARENT_UUID:h + fmt.H_PARENT_TIMESTAMP + 4] = bytes(20)
    return bytes(buf)


def same_as(path: str, golden_path: str, diff: bool = False, extra_footers=()) -> None:
    with open(path, "rb") as a, open(golden_path, "rb") as b:
        mine, ref = a.read(), b.read()
    assert len(mine) == len(ref)
    mine, ref = mask(mine, diff, extra_footers), mask(ref, diff, extra_footers)
    if mine != ref:
        first = next(i for i, (x, y) in enumerate(zip(mine, ref)) if x != y)
        pytest.fail(f"{path} differs from {golden_path} first at byte {first}")


@pytest.mark.parametrize("name,size,prealloc", [
    ("dyn-1M.vhd", 1 * MiB, None),
    ("dyn-4M.vhd", 4 * MiB, None),
    ("dyn-100M.vhd", 100 * MiB, None),
    ("dyn-20G.vhd", 20480 * MiB, None),
    ("dyn-100M-prealloc2G.vhd", 100 * MiB, 2048 * MiB),
])
def test_create_matches_vhd_util(tmp_path, golden, name, size, prealloc):
    path = str(tmp_path / name)
    vhd.create(path, size, prealloc_size=prealloc)
    same_as(path, golden(name))


def test_set_hidden_matches(tmp_path, golden):
    path = str(tmp_path / "dyn-100M.vhd")
    vhd.create(path, 100 * MiB)
    with vhd.open_image(path, writable=True) as img:
        img.set_hidden(True)
    same_as(path, golden("dyn-100M-hidden.vhd"))


def test_filled_matches(tmp_path, golden):
    """vhd-util fill: every block allocated with zeros. Each allocation moves the
    trailing footer; the stale copies stay in the alignment padding (0xC00, 0x201000)."""
    path = str(tmp_path / "dyn-4M.vhd")
    vhd.create(path, 4 * MiB)
    with vhd.open_image(path, writable=True) as img:
        img.write(0, bytes(2 * MiB))
        img.write(2 * MiB, bytes(2 * MiB))
    same_as(path, golden("dyn-4M-filled.vhd"), extra_footers=(0xC00, 0x201000))


def test_snapshot_matches(golden_copy, golden):
    parent = golden_copy("dyn-100M.vhd")
    child = os.path.join(os.path.dirname(parent), "diff-100M.vhd")
    vhd.snapshot(child, parent)
    same_as(child, golden("diff-100M.vhd"), diff=True)
    with vhd.open_image(child) as img, vhd.open_image(parent) as par:
        assert img.parent_uuid == par.uuid
        assert img.parent_locator == "dyn-100M.vhd"
        assert img.parent_path() == parent
        assert img.header.parent_timestamp == fmt.vhd_time(os.stat(parent).st_mtime)


def test_snapshot_hidden_matches(golden_copy, golden):
    parent = golden_copy("dyn-100M.vhd")
    child = os.path.join(os.path.dirname(parent), "diff-100M.vhd")
    vhd.snapshot(child, parent)
    with vhd.open_image(child, writable=True) as img:
        img.set_hidden(True)
    same_as(child, golden("diff-100M-hidden.vhd"), diff=True)


def test_snapshot_of_snapshot_matches(golden_copy, golden):
    golden_copy("dyn-100M.vhd")
    mid = golden_copy("diff-100M.vhd")
    child = os.path.join(os.path.dirname(mid), "diff2-100M.vhd")
    vhd.snapshot(child, mid)
    same_as(child, golden("diff2-100M.vhd"), diff=True)
    assert vhd.depth(child) == 3
    assert [os.path.basename(p) for p in vhd.chain(child)] == [
        "diff2-100M.vhd", "diff-100M.vhd", "dyn-100M.vhd"]


def test_reparent_matches(golden_copy, golden):
    golden_copy("dyn-100M.vhd")
    other = golden_copy("other-100M.vhd")
    child = golden_copy("diff-100M.vhd")
    with vhd.open_image(child, writable=True) as img:
        img.reparent(other)
    same_as(child, golden("diff-100M-reparented.vhd"), diff=True)
    with vhd.open_image(child) as img, vhd.open_image(other) as par:
        assert img.parent_uuid == par.uuid
        assert img.parent_path() == other


@pytest.mark.parametrize("name,vmib,phys,hidden,depth", [
    ("dyn-1M.vhd", 2, 3584, False, 1),
    ("dyn-4M-filled.vhd", 4, 4203008, False, 1),
    ("dyn-20G.vhd", 20480, 45056, False, 1),
    ("dyn-100M-hidden.vhd", 100, 3584, True, 1),
    ("dyn-100M-prealloc2G.vhd", 100, 7168, False, 1),
    ("diff-100M-hidden.vhd", 100, 5120, True, 2),
    ("diff2-100M.vhd", 100, 5120, False, 3),
])
def test_query_golden(golden, name, vmib, phys, hidden, depth):
    """Properties read from vhd-util's files equal what `vhd-util query` reports."""
    with vhd.open_image(golden(name)) as img:
        assert img.virtual_size == vmib * MiB
        assert img.physical_size == phys
        assert img.hidden is hidden
    assert vhd.depth(golden(name)) == depth
    vhd.check(golden(name))
