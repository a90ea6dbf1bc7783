"""The library under pyfakefs (tier 1 of DESIGN section 7): the tree's tests run so."""

from __future__ import annotations

import io
import os

from smlib import vhd

MiB = 1024 * 1024


def test_whole_lifecycle_in_fake_fs(fs):
    os.makedirs("/sr")
    base, leaf = "/sr/base.vhd", "/sr/leaf.vhd"
    vhd.create(base, 4 * MiB)
    with vhd.open_image(base, writable=True) as img:
        img.write(100, b"base" * 1000)
    vhd.snapshot(leaf, base)
    with vhd.open_image(leaf, writable=True) as img:
        img.write(3 * MiB - 7, b"leaf" * 10)
        img.set_hidden(True)
        assert img.physical_size == os.path.getsize(leaf)
    expect = bytearray(4 * MiB)               # the model of what was written
    expect[100:4100] = b"base" * 1000
    expect[3 * MiB - 7:3 * MiB + 33] = b"leaf" * 10
    assert vhd.chain(leaf) == [leaf, base]
    vhd.check(leaf)
    out = io.BytesIO()
    vhd.export_raw(leaf, out)
    assert out.getvalue() == expect
    vhd.coalesce(leaf)
    with vhd.open_image(base) as img:
        assert img.read(0, 4 * MiB) == expect
    # Nothing reached the real disk: with the fake paused, /sr is not there.
    fs.pause()
    try:
        assert not os.path.exists(base)
    finally:
        fs.resume()
    assert os.path.exists(base)
