"""Reparent, resize, coalesce, raw export/import and required_size."""

from __future__ import annotations

import io
import os
import random

import pytest

from smlib import vhd
from smlib.vhd import format as fmt
from smlib.vhd import geometry

MiB = 1024 * 1024


def pattern(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def make_chain(tmp_path):
    base, leaf = str(tmp_path / "base.vhd"), str(tmp_path / "leaf.vhd")
    vhd.create(base, 6 * MiB)
    with vhd.open_image(base, writable=True) as img:
        img.write(0, pattern(6 * MiB, 3))
    vhd.snapshot(leaf, base)
    with vhd.open_image(leaf, writable=True) as img:
        img.write(MiB + 5, b"L" * (2 * MiB))
        img.write(5 * MiB, b"M" * 512)
    # The leaf's contents as a model says (never the library's own read).
    expect = bytearray(pattern(6 * MiB, 3))
    expect[MiB + 5:3 * MiB + 5] = b"L" * (2 * MiB)
    expect[5 * MiB:5 * MiB + 512] = b"M" * 512
    return base, leaf, bytes(expect)


def test_reparent_to_copy_keeps_contents(tmp_path):
    base, leaf, expect = make_chain(tmp_path)
    other = str(tmp_path / "other.vhd")
    with open(base, "rb") as src, open(other, "wb") as dst:
        dst.write(src.read())
    with vhd.open_image(leaf, writable=True) as img:
        img.reparent(other)
        assert img.parent_path() == other
        assert img.read(0, 6 * MiB) == expect
    assert vhd.chain(leaf) == [leaf, other]
    vhd.check(leaf)


def test_reparent_custom_locator_and_resolver(tmp_path):
    base, leaf, expect = make_chain(tmp_path)
    os.rename(base, str(tmp_path / "VHD-base"))
    with vhd.open_image(leaf, writable=True) as img:
        img.reparent(str(tmp_path / "VHD-base"), parent_locator="VHD-base")
        assert img.parent_locator == "VHD-base"
        assert img.header.parent_name == "VHD-base"
    seen = []

    def resolver(child, name):
        seen.append(name)
        return str(tmp_path / name)
    assert vhd.chain(leaf, resolver=resolver) == [leaf, str(tmp_path / "VHD-base")]
    assert seen == ["VHD-base"]
    with vhd.open_image(leaf, resolver=resolver) as img:
        assert img.read(0, 6 * MiB) == expect


def test_reparent_refuses_long_locator(tmp_path):
    base, leaf, _ = make_chain(tmp_path)
    long_name = "p" * 255 + ".vhd"
    before = open(leaf, "rb").read()
    with vhd.open_image(leaf, writable=True) as img, pytest.raises(vhd.VHDError) as err:
        img.reparent(base, parent_locator=long_name)
    assert "locator space" in err.value.what
    assert open(leaf, "rb").read() == before


def test_reparent_dynamic_refused(tmp_path):
    base, _, _ = make_chain(tmp_path)
    with vhd.open_image(base, writable=True) as img, pytest.raises(vhd.VHDError):
        img.reparent(base)


def test_resize_within_prealloc(tmp_path):
    path = str(tmp_path / "a.vhd")
    vhd.create(path, 4 * MiB, prealloc_size=64 * MiB)
    with vhd.open_image(path, writable=True) as img:
        img.write(3 * MiB, b"x" * 100)
        before_phys = img.physical_size
        img.resize(40 * MiB)
        assert img.physical_size == before_phys
        img.write(39 * MiB, b"y" * 100)
    with vhd.open_image(path) as img:
        assert img.virtual_size == 40 * MiB
        assert img.read(3 * MiB, 100) == b"x" * 100
        assert img.read(39 * MiB, 100) == b"y" * 100
        assert img.footer.geometry == geometry.chs(40 * MiB)
    vhd.check(path)


def test_resize_moves_bat_behind_data(tmp_path):
    path = str(tmp_path / "a.vhd")
    vhd.create(path, 4 * MiB)
    with vhd.open_image(path, writable=True) as img:
        img.write(0, pattern(4 * MiB))
        img.resize(3000 * MiB)      # 1500 entries cannot fit before the first block
        assert img.max_bat_entries == 1500
        assert img.header.table_offset > img.bat[1] * fmt.SECTOR
        img.write(2999 * MiB, b"q" * 4096)
    with vhd.open_image(path) as img:
        assert img.virtual_size == 3000 * MiB
        assert img.read(0, 4 * MiB) == pattern(4 * MiB)
        assert img.read(2999 * MiB, 4096) == b"q" * 4096
        assert img.read(100 * MiB, 4096) == bytes(4096)
    vhd.check(path)


def test_resize_differencing_and_shrink_refused(tmp_path):
    base, leaf, expect = make_chain(tmp_path)
    with vhd.open_image(leaf, writable=True) as img:
        img.resize(600 * MiB)
        assert img.read(0, 6 * MiB) == expect
        assert img.read(6 * MiB, MiB) == bytes(MiB)   # past the parent's end
        with pytest.raises(vhd.VHDError):
            img.resize(8 * MiB)
    vhd.check(leaf)


def test_coalesce_keeps_visible_contents(tmp_path):
    base, leaf, expect = make_chain(tmp_path)
    vhd.coalesce(leaf)
    with vhd.open_image(base) as img:
        assert img.read(0, 6 * MiB) == expect
    with vhd.open_image(leaf) as img:
        assert img.read(0, 6 * MiB) == expect
    vhd.check(leaf)


def test_coalesce_into_smaller_parent_grows_it(tmp_path):
    base, leaf, expect = make_chain(tmp_path)
    with vhd.open_image(leaf, writable=True) as img:
        img.resize(10 * MiB)
        img.write(9 * MiB, b"T" * 700)
    expect += bytes(9 * MiB - len(expect)) + b"T" * 700 + bytes(MiB - 700)
    vhd.coalesce(leaf)
    with vhd.open_image(base) as img:
        assert img.virtual_size == 10 * MiB
        assert img.read(0, 10 * MiB) == expect
    vhd.check(base)


def test_coalesce_dynamic_refused(tmp_path):
    base, _, _ = make_chain(tmp_path)
    with pytest.raises(vhd.VHDError):
        vhd.coalesce(base)


def test_export_import_roundtrip(tmp_path):
    base, leaf, expect = make_chain(tmp_path)
    out = io.BytesIO()
    vhd.export_raw(leaf, out)
    assert out.getvalue() == expect
    fresh = str(tmp_path / "fresh.vhd")
    vhd.create(fresh, 6 * MiB)
    raw = bytearray(6 * MiB)
    raw[2 * MiB + 1] = 1     # only block 1 has data
    vhd.import_raw(fresh, io.BytesIO(bytes(raw)))
    with vhd.open_image(fresh) as img:
        assert img.allocated_blocks() == [1]
        assert img.read(0, 6 * MiB) == bytes(raw)


def test_import_zeros_over_parent_data(tmp_path):
    """Zero blocks stay unallocated only where nothing below shows through."""
    base, leaf, _ = make_chain(tmp_path)
    vhd.import_raw(leaf, io.BytesIO(bytes(6 * MiB)))
    with vhd.open_image(leaf) as img:
        assert img.read(0, 6 * MiB) == bytes(6 * MiB)


def test_import_too_long_stream(tmp_path):
    path = str(tmp_path / "a.vhd")
    vhd.create(path, 2 * MiB)
    with pytest.raises(vhd.VHDError):
        vhd.import_raw(path, io.BytesIO(bytes(2 * MiB + 1)))


def test_required_size_bounds_full_image(tmp_path):
    path = str(tmp_path / "a.vhd")
    vhd.create(path, 10 * MiB)
    vhd.import_raw(path, io.BytesIO(b"\x01" * 10 * MiB))
    with vhd.open_image(path) as img:
        assert img.physical_size <= vhd.required_size(10 * MiB)
    vhd.snapshot(str(tmp_path / "c.vhd"), path)
    vhd.import_raw(str(tmp_path / "c.vhd"), io.BytesIO(b"\x02" * 10 * MiB))
    with vhd.open_image(str(tmp_path / "c.vhd")) as img:
        assert img.physical_size <= vhd.required_size(10 * MiB)


def test_import_sparse_pattern_across_chunks(tmp_path):
    """Data and zero blocks alternate over more than one read chunk (16 blocks)."""
    size = 40 * MiB
    raw = bytearray(size)
    data_blocks = {0, 3, 4, 5, 15, 16, 19}
    for b in data_blocks:
        raw[b * 2 * MiB + 77:b * 2 * MiB + 99] = b"x" * 22
    raw[-1] = 5
    path = str(tmp_path / "a.vhd")
    vhd.create(path, size)
    vhd.import_raw(path, io.BytesIO(bytes(raw)))
    with vhd.open_image(path) as img:
        assert img.allocated_blocks() == sorted(data_blocks)
        assert img.read(0, size) == bytes(raw)
    vhd.check(path)


def test_import_short_stream_keeps_the_rest(tmp_path):
    base, leaf, expect = make_chain(tmp_path)
    vhd.import_raw(leaf, io.BytesIO(b"\x09" * (3 * MiB + 100)))
    with vhd.open_image(leaf) as img:
        assert img.read(0, 6 * MiB) == b"\x09" * (3 * MiB + 100) + expect[3 * MiB + 100:]


def test_required_size_bounds_grown_full_image(tmp_path):
    """After resize() moved the BAT behind the data, a full image still fits."""
    path = str(tmp_path / "a.vhd")
    vhd.create(path, 2 * MiB)
    with vhd.open_image(path, writable=True) as img:
        img.write(0, b"a" * 512)
        img.resize(520 * MiB)                # 260 entries: the BAT outgrows its place
        for block in range(260):
            img.write(block * 2 * MiB + 1024, b"b" * 512)
        assert img.physical_size <= vhd.required_size(520 * MiB)
    vhd.check(path)


def test_resize_switches_metadata_in_one_header_write(tmp_path, monkeypatch):
    """Killed before the header write, the image is still the old one."""
    from smlib.vhd import image as image_mod
    path = str(tmp_path / "a.vhd")
    vhd.create(path, 4 * MiB)
    with vhd.open_image(path, writable=True) as img:
        img.write(0, pattern(4 * MiB))

    def die(self):
        raise vhd.VHDError(self.path, None, "simulated crash")
    monkeypatch.setattr(image_mod.Image, "_write_header", die)
    with vhd.open_image(path, writable=True) as img, pytest.raises(vhd.VHDError):
        img.resize(3000 * MiB)
    monkeypatch.undo()
    with vhd.open_image(path) as img:
        assert img.virtual_size == 4 * MiB and img.max_bat_entries == 2
        assert img.read(0, 4 * MiB) == pattern(4 * MiB)
    with vhd.open_image(path, writable=True) as img:   # and resizing again works
        img.resize(3000 * MiB)
    vhd.check(path)


def test_resize_within_bat_padding_keeps_layout(tmp_path):
    """Growing 6 -> 200 MiB fits the BAT's own sector: the layout stays create()'s."""
    path, ref = str(tmp_path / "a.vhd"), str(tmp_path / "ref.vhd")
    vhd.create(path, 6 * MiB)
    with vhd.open_image(path, writable=True) as img:
        img.resize(200 * MiB)
        assert img.header.table_offset == fmt.TABLE_OFFSET
        assert img.max_bat_entries == 100
        img.write(199 * MiB, b"z" * 1000)
    vhd.create(ref, 200 * MiB)
    with vhd.open_image(path) as img, vhd.open_image(ref) as fresh:
        assert img.read(199 * MiB, 1000) == b"z" * 1000
        assert img.header.table_offset == fresh.header.table_offset
        assert img.batmap_header_offset == fresh.batmap_header_offset
    vhd.check(path)
