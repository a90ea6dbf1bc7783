"""Independent readers: qemu-img / qemu-io (Debian qemu-utils) and pyvhdi (libvhdi).

qemu reads dynamic VHDs but not differencing ones; pyvhdi reads chains but
mis-decodes sub-4-KiB bitmaps, so its data stays 4 KiB-aligned.
"""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest

from smlib import vhd

MiB = 1024 * 1024

needs_qemu = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-utils missing")


@needs_qemu
def test_qemu_img_compare_scattered_unaligned_writes(tmp_path):
    size = 20 * MiB
    path, raw = str(tmp_path / "a.vhd"), str(tmp_path / "a.raw")
    vhd.create(path, size)
    model = bytearray(size)
    rng = random.Random(7)
    with vhd.open_image(path, writable=True) as img:
        for _ in range(40):
            off = rng.randrange(size - 1)
            n = rng.randrange(1, min(size - off, 3 * MiB))
            data = rng.randbytes(n)
            img.write(off, data)
            model[off:off + n] = data
    with open(raw, "wb") as f:
        f.write(model)
    run = subprocess.run(["qemu-img", "compare", "-f", "vpc", "-F", "raw", path, raw],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    # A one-byte difference must be seen (the comparison is not vacuous).
    model[size // 2] ^= 0xFF
    with open(raw, "wb") as f:
        f.write(model)
    run = subprocess.run(["qemu-img", "compare", "-f", "vpc", "-F", "raw", path, raw],
                         capture_output=True, text=True)
    assert run.returncode == 1


@needs_qemu
def test_reads_qemu_written_image(tmp_path):
    path = str(tmp_path / "q.vhd")
    subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic",
                    path, "16M"], check=True)
    subprocess.run(["qemu-io", "-f", "vpc", "-c", "write -P 0x5a 1M 3M", path],
                   check=True, capture_output=True)
    subprocess.run(["qemu-io", "-f", "vpc", "-c", "write -P 0x33 9000 1000", path],
                   check=True, capture_output=True)
    with vhd.open_image(path) as img:
        size = img.virtual_size
        data = img.read(0, size)
    expect = bytearray(size)
    expect[MiB:4 * MiB] = b"\x5a" * (3 * MiB)
    expect[9000:10000] = b"\x33" * 1000
    assert data == bytes(expect)
    # And our writes into qemu's image read back through qemu.
    with vhd.open_image(path, writable=True) as img:
        img.write(8 * MiB + 3, b"\x77" * 5000)
    out = subprocess.run(["qemu-io", "-f", "vpc", "-c", f"read -P 0x77 {8 * MiB + 3} 5000",
                          path], capture_output=True, text=True)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout


def test_pyvhdi_reads_three_deep_chain(tmp_path):
    pyvhdi = pytest.importorskip("pyvhdi")
    size = 12 * MiB
    paths = [str(tmp_path / f"{n}.vhd") for n in ("base", "mid", "leaf")]
    vhd.create(paths[0], size)
    rng = random.Random(3)
    model = bytearray(size)
    for i, path in enumerate(paths):
        if i:
            vhd.snapshot(path, paths[i - 1])
        with vhd.open_image(path, writable=True) as img:
            for _ in range(6):
                off = rng.randrange(size // 4096) * 4096
                n = min(rng.randrange(1, 700) * 4096, size - off)
                data = rng.randbytes(n)
                img.write(off, data)
                model[off:off + n] = data
    files = []
    for path in paths:             # base first: each opens with its parent set
        f = pyvhdi.file()
        f.open(path)
        if files:
            f.set_parent(files[-1])
        files.append(f)
    leaf = files[-1]
    assert leaf.get_media_size() == size
    assert leaf.read_buffer_at_offset(size, 0) == bytes(model)
    with vhd.open_image(paths[2]) as img:
        assert img.read(0, size) == bytes(model)
    for f in reversed(files):
        f.close()


@needs_qemu
def test_qemu_reads_grown_image_with_moved_bat(tmp_path):
    """resize past the BAT room writes a new BAT behind the data; qemu sees the same disk."""
    path, raw = str(tmp_path / "g.vhd"), str(tmp_path / "g.raw")
    vhd.create(path, 4 * MiB)
    rng = random.Random(11)
    first = rng.randbytes(4 * MiB)
    late = rng.randbytes(3 * MiB + 5)
    with vhd.open_image(path, writable=True) as img:
        img.write(0, first)
        img.resize(1024 * MiB)           # 512 BAT entries: the BAT outgrows its sector
        img.write(700 * MiB + 1, late)
    with open(raw, "wb") as f:
        f.truncate(1024 * MiB)
        f.write(first)
        f.seek(700 * MiB + 1)
        f.write(late)
    run = subprocess.run(["qemu-img", "compare", "-f", "vpc", "-F", "raw", path, raw],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    vhd.check(path)


def test_pyvhdi_reads_grown_differencing_child(tmp_path):
    """A child whose BAT moved behind its data (resize) still reads through pyvhdi.

    libvhdi takes the media size from the footer's original size, which
    blktap leaves at the creation size on resize, so pyvhdi is asked only
    about the first 4 MiB; the blocks there are found through the moved BAT.
    """
    pyvhdi = pytest.importorskip("pyvhdi")
    base, leaf = str(tmp_path / "base.vhd"), str(tmp_path / "leaf.vhd")
    vhd.create(base, 4 * MiB)
    rng = random.Random(4)
    a, b, c = rng.randbytes(8192), rng.randbytes(4096), rng.randbytes(3 * 4096)
    with vhd.open_image(base, writable=True) as img:
        img.write(0, a)
    vhd.snapshot(leaf, base)
    with vhd.open_image(leaf, writable=True) as img:
        img.write(4096, b)
        img.resize(600 * MiB)               # 300 entries: new BAT after the data
        assert img.header.table_offset > 1536
        img.write(2 * MiB + 4096, c)        # a block allocated after the move
    parent, child = pyvhdi.file(), pyvhdi.file()
    parent.open(base)
    child.open(leaf)
    child.set_parent(parent)
    assert child.read_buffer_at_offset(8192, 0) == a[:4096] + b
    assert child.read_buffer_at_offset(len(c) + 4096, 2 * MiB) == bytes(4096) + c
    child.close()
    parent.close()
