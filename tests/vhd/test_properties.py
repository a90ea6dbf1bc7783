"""Hypothesis properties: chains behave like an in-memory model.

Write offsets and lengths lean on the places where a VHD implementation
goes wrong: sector (512 B) and block (2 MiB) boundaries, +-1 around them,
and the disk's end (which moves as the disk grows). Expected contents and
sizes come from the model alone; the base image (dynamic, which qemu
reads) is also compared with the model by ``qemu-img compare``, an
independent reader (qemu reads no differencing VHD, and ``qemu-img check``
supports no VHD at all). A 2 TiB disk has its last sector written and read
back, also by pyvhdi.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess

import pytest
from helpers.sr_harness import pyvhdi_chain_read
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smlib import vhd

MiB = 1024 * 1024
BLOCK = 2 * MiB
SIZE = 6 * MiB
TiB = 1 << 40

# A boundary: k blocks, and -512, -1, 0, +1 or +511 bytes around it.
near_boundary = st.builds(lambda k, d: k * BLOCK + d, st.integers(0, SIZE // BLOCK),
                          st.sampled_from([-512, -1, 0, 1, 511]))
# Non-negative: an offset from the start; negative: from the disk's end.
offsets = st.one_of(st.integers(0, SIZE - 1), near_boundary,
                    st.integers(-BLOCK - 512, -1))
lengths = st.one_of(st.integers(1, 5 * MiB // 2),
                    st.sampled_from([1, 511, 512, 513, 4096, BLOCK - 1, BLOCK, BLOCK + 1]))
write_op = st.tuples(st.just("write"), offsets, lengths, st.integers(0, 2 ** 16))
snap_op = st.tuples(st.just("snapshot"), st.just(0), st.just(0), st.just(0))
grow_op = st.tuples(st.just("grow"), st.integers(1, 2), st.just(0), st.just(0))
ops = st.lists(st.one_of(write_op, write_op, snap_op, grow_op), min_size=1, max_size=14)

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
needs_qemu = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-utils missing")


def build(directory, program):
    """Run the program; return [(path, expected contents)] leaf last."""
    os.makedirs(directory)
    leaf = os.path.join(directory, "img0.vhd")
    vhd.create(leaf, SIZE)
    model = bytearray(SIZE)
    frozen = []
    for kind, a, b, seed in program:
        if kind == "write":
            start = a if a >= 0 else max(0, len(model) + a)
            start = min(start, len(model) - 1)
            n = min(b, len(model) - start)
            data = random.Random(seed).randbytes(n)
            with vhd.open_image(leaf, writable=True) as img:
                img.write(start, data)
            model[start:start + n] = data
        elif kind == "snapshot":
            frozen.append((leaf, bytes(model)))
            leaf = os.path.join(directory, f"img{len(frozen)}.vhd")
            vhd.snapshot(leaf, frozen[-1][0])
        else:
            # Grown by a blocks and 4 KiB: the size rounds up to whole blocks.
            want = -(-(len(model) + a * BLOCK + 4096) // BLOCK) * BLOCK
            with vhd.open_image(leaf, writable=True) as img:
                img.resize(len(model) + a * BLOCK + 4096)
            model += bytes(want - len(model))
    return frozen + [(leaf, bytes(model))]


def qemu_matches(path: str, expect: bytes) -> None:
    """qemu-img compare of a dynamic image with the model's bytes."""
    if shutil.which("qemu-img") is None:
        return
    raw = path + ".raw"
    with open(raw, "wb") as f:
        f.write(expect)
    run = subprocess.run(["qemu-img", "compare", "-f", "vpc", "-F", "raw", path, raw],
                         capture_output=True, text=True)
    os.unlink(raw)
    assert run.returncode == 0, run.stdout + run.stderr


@SETTINGS
@given(ops)
def test_random_writes_through_chains_match_model(tmp_path, program):
    images = build(str(tmp_path / f"run{len(os.listdir(tmp_path))}"), program)
    for path, expect in images:
        with vhd.open_image(path) as img:
            assert img.virtual_size == len(expect)
            assert img.read(0, len(expect)) == expect
            # A few unaligned windows, too.
            rng = random.Random(len(expect))
            for _ in range(3):
                off = rng.randrange(len(expect))
                n = rng.randrange(len(expect) - off + 1)
                assert img.read(off, n) == expect[off:off + n]
        vhd.check(path)                  # check accepts every image we write
    qemu_matches(*images[0])
    assert vhd.depth(images[-1][0]) == len(images)


@SETTINGS
@given(ops)
def test_coalesce_keeps_child_contents(tmp_path, program):
    images = build(str(tmp_path / f"run{len(os.listdir(tmp_path))}"), program + [
        ("snapshot", 0, 0, 0), ("write", 12345, 3 * MiB, 9)])
    leaf, expect = images[-1]
    vhd.coalesce(leaf)
    with vhd.open_image(leaf) as img:
        assert img.read(0, len(expect)) == expect
        parent = img.parent_path()
    with vhd.open_image(parent) as img:
        assert img.read(0, len(expect)) == expect
    vhd.check(leaf)
    if len(images) == 2:                 # the parent is the dynamic base
        qemu_matches(parent, expect)


def test_2_tib_disk_last_sector(tmp_path):
    """The largest disk: its last sector and the 4 KiB ending it are written
    and read back (the library, and pyvhdi through a child), as is the
    sector before; a write past the end is refused."""
    path = str(tmp_path / "big.vhd")
    vhd.create(path, 2 * TiB)
    last4k = bytes(random.Random(3).randbytes(4096))
    with vhd.open_image(path, writable=True) as img:
        assert img.virtual_size == 2 * TiB
        img.write(2 * TiB - 4096, last4k)
        img.write(2 * TiB - 512, b"\x5a" * 512)
        with pytest.raises(vhd.VHDError):
            img.write(2 * TiB - 511, b"\x01" * 512)
    want = last4k[:-512] + b"\x5a" * 512
    child = str(tmp_path / "child.vhd")
    vhd.snapshot(child, path)
    for p in (path, child):
        with vhd.open_image(p) as img:
            assert img.read(2 * TiB - 4096, 4096) == want
            assert img.read(2 * TiB - 8192, 4096) == bytes(4096)
        assert pyvhdi_chain_read(str(tmp_path), os.path.basename(p), 2 * TiB - 4096, 4096) == want
    vhd.check(child)
