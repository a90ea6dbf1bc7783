"""Damaged images: each gives VHDError, never a hang, a raw traceback or a write."""

from __future__ import annotations

import hashlib
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smlib import vhd
from smlib.vhd import format as fmt

MiB = 1024 * 1024


def digest(directory) -> dict:
    return {name: hashlib.sha256(open(os.path.join(directory, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(directory))}


def exercise(path: str, **kw) -> None:
    """Everything a reader does: open, query, read the whole disk, chain, check."""
    with vhd.open_image(path, **kw) as img:
        _ = (img.virtual_size, img.physical_size, img.uuid, img.hidden, img.parent_uuid)
        img.allocated_blocks()
        img.read(0, img.virtual_size)
        img.parent_path()
    vhd.chain(path, **kw)
    vhd.check(path, **kw)


def refused(path: str, what: str = "", **kw) -> vhd.VHDError:
    directory = os.path.dirname(path)
    before = digest(directory)
    with pytest.raises(vhd.VHDError) as err:
        exercise(path, **kw)
    assert what in err.value.what, err.value
    assert digest(directory) == before
    return err.value


def poke(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def written(tmp_path, name="a.vhd", blocks=2) -> str:
    path = str(tmp_path / name)
    vhd.create(path, blocks * 2 * MiB)
    with vhd.open_image(path, writable=True) as img:
        for b in range(blocks):
            img.write(b * 2 * MiB + 4096, b"d" * 8192)
    exercise(path)     # sanity: the undamaged image passes everything
    return path


def test_truncated(tmp_path):
    path = written(tmp_path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 3 * MiB)
    refused(path, "past the end")


def test_truncated_below_footer(tmp_path):
    path = str(tmp_path / "a.vhd")
    with open(path, "wb") as f:
        f.write(b"conectix")
    refused(path, "too small")


@pytest.mark.parametrize("offset,what", [
    (0, "cookie"),                                    # footer copy
    (fmt.HEADER_OFFSET, "header cookie"),
])
def test_bad_cookie(tmp_path, offset, what):
    path = written(tmp_path)
    poke(path, offset, b"XXXXXXXX")
    refused(path, what)


def test_bad_trailing_footer_cookie(tmp_path):
    path = written(tmp_path)
    poke(path, os.path.getsize(path) - fmt.FOOTER_SIZE, b"XXXXXXXX")
    refused(path, "trailing footer")


@pytest.mark.parametrize("offset,what", [
    (fmt.F_CURR_SIZE + 5, "footer checksum"),
    (fmt.HEADER_OFFSET + fmt.H_MAX_BAT + 3, "header checksum"),
])
def test_bad_checksum(tmp_path, offset, what):
    path = written(tmp_path)
    with open(path, "rb") as f:
        f.seek(offset)
        byte = f.read(1)[0]
    poke(path, offset, bytes([byte ^ 0x10]))
    if offset < fmt.FOOTER_SIZE:     # both footer copies damaged
        poke(path, os.path.getsize(path) - fmt.FOOTER_SIZE + offset, bytes([byte ^ 0x10]))
    refused(path, what)


def test_bad_batmap_checksum(tmp_path):
    path = written(tmp_path)
    with vhd.open_image(path) as img:
        at = img.batmap_header_offset + fmt.B_CHECKSUM
    poke(path, at, b"\x00\x00\x00\x01")
    refused(path, "batmap checksum")


def test_bat_entry_past_end(tmp_path):
    path = written(tmp_path)
    poke(path, fmt.TABLE_OFFSET + 4, struct.pack(">I", 0x00FFFFF0))
    refused(path, "past the end")


def test_overlapping_blocks(tmp_path):
    path = written(tmp_path)
    with open(path, "rb") as f:
        f.seek(fmt.TABLE_OFFSET)
        first = struct.unpack(">I", f.read(4))[0]
    poke(path, fmt.TABLE_OFFSET + 4, struct.pack(">I", first + 8))
    refused(path, "overlap")


def test_block_over_metadata(tmp_path):
    path = written(tmp_path)
    poke(path, fmt.TABLE_OFFSET + 4, struct.pack(">I", 2))
    refused(path, "overlaps")


def chain3(tmp_path):
    base, mid, leaf = (str(tmp_path / f"{n}.vhd") for n in ("base", "mid", "leaf"))
    vhd.create(base, 4 * MiB)
    vhd.snapshot(mid, base)
    vhd.snapshot(leaf, mid)
    return base, mid, leaf


def test_missing_parent(tmp_path):
    base, mid, leaf = chain3(tmp_path)
    os.unlink(base)
    refused(leaf, "missing")


def test_parent_uuid_mismatch(tmp_path):
    base, mid, leaf = chain3(tmp_path)
    os.unlink(base)
    vhd.create(base, 4 * MiB)          # same name, another image
    refused(leaf, "uuid mismatch")


def test_parent_loop(tmp_path):
    base, mid, leaf = chain3(tmp_path)
    with vhd.open_image(mid, writable=True) as img:
        img.reparent(leaf)              # mid -> leaf -> mid -> ...
    refused(leaf, "loop")


def test_locator_outside_directory(tmp_path):
    sr = tmp_path / "sr"
    sr.mkdir()
    outside = str(tmp_path / "outside.vhd")
    vhd.create(outside, 4 * MiB)
    leaf = str(sr / "leaf.vhd")
    vhd.create(str(sr / "p.vhd"), 4 * MiB)
    vhd.snapshot(leaf, str(sr / "p.vhd"))
    with vhd.open_image(leaf, writable=True) as img:
        img.reparent(outside, parent_locator="../outside.vhd")
    refused(leaf, "outside")
    with pytest.raises(vhd.VHDError):
        vhd.snapshot(str(sr / "x.vhd"), outside)     # default locator would escape
    assert not os.path.exists(str(sr / "x.vhd"))


def test_unreadable_path(tmp_path):
    refused(str(tmp_path / "nope.vhd"), "cannot open")


def block_map(path: str) -> tuple[dict[int, int], int, int]:
    """({file offset of an allocated block's bitmap: block index}, BAT
    offset, BAT entries), parsed here with struct from the dynamic header
    (at 512: BAT offset at +16, entries at +28, block size at +32), not
    through the library."""
    with open(path, "rb") as f:
        raw = f.read()
    table, _version, entries, block = struct.unpack_from(">QIII", raw, 512 + 16)
    assert block == 2 * MiB
    bat = struct.unpack_from(f">{entries}I", raw, table)
    return {e * 512: b for b, e in enumerate(bat) if e != 0xFFFFFFFF}, table, entries


def may_change(path: str, pokes: list[int]) -> set[int]:
    """The virtual sectors whose bytes damage at these file offsets may
    change without any checksum noticing: a BAT entry or a block's bitmap
    moves or hides its whole block; a data byte changes its own sector.
    Footers and header are checksummed: damage there changes nothing read."""
    blocks, table, entries = block_map(path)
    sectors = set()
    for offset in pokes:
        if table <= offset < table + 4 * entries:
            b = (offset - table) // 4
            sectors.update(range(b * 4096, (b + 1) * 4096))
        for start, b in blocks.items():
            if start <= offset < start + 512:                     # bitmap
                sectors.update(range(b * 4096, (b + 1) * 4096))
            elif start + 512 <= offset < start + 512 + 2 * MiB:   # data
                sectors.add(b * 4096 + (offset - start - 512) // 512)
    return sectors


# The fields that steer a read (VHD spec offsets): footer data offset (16),
# current size (48), disk type (60); header (at 512) BAT offset (+16), BAT
# entries (+28), block size (+32), parent uuid (+40). Damage there must be
# caught by the checksums, in either footer copy.
FOOTER_FIELDS = [*range(16, 24), *range(48, 56), *range(60, 64)]
HEADER_FIELDS = [512 + o for o in (*range(16, 24), *range(28, 36), *range(40, 56))]
# Offsets into the whole file: those fields, the head (footer copy, header,
# BAT), the trailing footer (negative: from the end) and anywhere.
damage_offsets = st.one_of(
    st.sampled_from(FOOTER_FIELDS + HEADER_FIELDS + [o - 512 for o in FOOTER_FIELDS]),
    st.integers(0, 3 * 512 + 4096 - 1), st.integers(-512, -1), st.integers(0, 1 << 24))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(damage_offsets, st.integers(0, 255)), min_size=1, max_size=6),
       st.booleans())
def test_random_damage_is_refused_or_reads_what_was_written(tmp_path, pokes, diff):
    """Random bytes anywhere in the file, both footers included: a VHDError,
    or a read that equals the undamaged image's except in the sectors the
    damage may change unnoticed (see may_change); never another exception,
    never a write."""
    d = tmp_path / f"fuzz{len(os.listdir(tmp_path))}"
    d.mkdir()
    base = str(d / "base.vhd")
    vhd.create(base, 4 * MiB)
    with vhd.open_image(base, writable=True) as img:
        img.write(MiB, b"b" * 4096)
    path, expect = base, bytearray(4 * MiB)
    expect[MiB:MiB + 4096] = b"b" * 4096
    if diff:
        path = str(d / "leaf.vhd")
        vhd.snapshot(path, base)
        with vhd.open_image(path, writable=True) as img:
            img.write(3 * MiB, b"l" * 1000)
        expect[3 * MiB:3 * MiB + 1000] = b"l" * 1000
    size = os.path.getsize(path)
    offsets = [o % size for o, _ in pokes]
    changeable = may_change(path, offsets)
    for offset, (_, value) in zip(offsets, pokes):
        poke(path, offset, bytes([value]))
    before = digest(d)
    try:
        exercise(path)
        with vhd.open_image(path) as img:
            got = img.read(0, 4 * MiB)
    except vhd.VHDError:
        got = None
    assert digest(d) == before
    if got is not None:
        assert len(got) == len(expect)
        for s in range(0, len(expect), 512):
            if s // 512 not in changeable:
                assert got[s:s + 512] == expect[s:s + 512], f"sector {s // 512} changed"
