"""The hostile corpus (tests/helpers/hostile_corpus.py) against the library: every
damaged image is refused when opened for writing, before any byte is
written, and a coalesce through a damaged parent writes nothing.
"""

from __future__ import annotations

import hashlib
import os
import time
import tracemalloc

import pytest
from helpers.hostile_corpus import CORPUS, DIFF_ONLY, Where, edit_header, read_at, set_bat, write_at

from smlib import vhd
from smlib.vhd import format as fmt

MiB = 1 << 20


def sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def two_blocks(tmp_path, diff: bool) -> str:
    """An image with blocks 0 and 2 written; a differencing one when asked."""
    base = str(tmp_path / "base.vhd")
    vhd.create(base, 8 * MiB)
    path = base
    if diff:
        path = str(tmp_path / "leaf.vhd")
        vhd.snapshot(path, base)
    with vhd.open_image(path, writable=True) as img:
        img.write(0, b"a" * 65536)
        img.write(4 * MiB, b"b" * 65536)
    return path


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_damaged_image_refused_at_writable_open(tmp_path, case):
    path = two_blocks(tmp_path, diff=case in DIFF_ONLY)
    CORPUS[case](path)
    before = sha(path)
    with pytest.raises(vhd.VHDError):
        with vhd.open_image(path, writable=True) as img:
            img.parent()          # a differencing image's parent is part of it
    assert sha(path) == before


def test_coalesce_into_a_parent_whose_bat_points_at_its_header_writes_nothing(tmp_path):
    """Issue 10 item 2: the parent's BAT[2] says sector 0; copying the child's
    block 2 up would overwrite the parent's footer copy, header and BAT."""
    leaf = two_blocks(tmp_path, diff=True)
    parent = str(tmp_path / "base.vhd")
    with vhd.open_image(parent, writable=True) as img:
        img.write(4 * MiB, b"p" * 65536)
    set_bat(parent, 2, 0)
    before = sha(parent)
    with pytest.raises(vhd.VHDError, match="overlaps the footer copy"):
        vhd.coalesce(leaf)
    assert sha(parent) == before


def test_absurd_table_refused_in_constant_memory(tmp_path):
    """Issue 10 item 8: 2^29 BAT entries in a 2 GiB sparse file (the table
    "fits"): refused at open, in well under a second and a MiB."""
    path = str(tmp_path / "big.vhd")
    vhd.create(path, 16 * MiB)
    edit_header(path, fmt.H_MAX_BAT, (1 << 29).to_bytes(4, "big"))
    footer = read_at(path, 0, fmt.FOOTER_SIZE)
    end = fmt.TABLE_OFFSET + 4 * (1 << 29) + 4096
    with open(path, "r+b") as f:
        f.truncate(end)
    write_at(path, end, footer)
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(vhd.VHDError, match="cannot belong to a disk"):
            vhd.open_image(path, writable=True).close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 1.0
    assert peak < 1 * MiB, peak


def test_overlap_check_accepts_real_images(tmp_path):
    """The stricter open keeps every image this library writes: a chain
    written, grown past its BAT room (metadata after the data) and coalesced."""
    leaf = two_blocks(tmp_path, diff=True)
    with vhd.open_image(leaf, writable=True) as img:
        img.resize(600 * MiB)
        img.write(500 * MiB, b"c" * 65536)
    vhd.coalesce(leaf)
    for path in (leaf, str(tmp_path / "base.vhd")):
        vhd.check(path)
        assert len(Where(path).allocated) >= 2
    assert os.path.getsize(leaf) > 4 * MiB
