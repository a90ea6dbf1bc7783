"""Hypothesis properties: chains behave like an in-memory model."""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smlib import vhd

MiB = 1024 * 1024
SIZE = 6 * MiB

write_op = st.tuples(st.just("write"), st.integers(0, SIZE - 1), st.integers(1, 5 * MiB // 2),
                     st.integers(0, 2 ** 16))
snap_op = st.tuples(st.just("snapshot"), st.just(0), st.just(0), st.just(0))
grow_op = st.tuples(st.just("grow"), st.integers(1, 2), st.just(0), st.just(0))
ops = st.lists(st.one_of(write_op, write_op, snap_op, grow_op), min_size=1, max_size=14)

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def build(directory, program):
    """Run the program; return [(path, expected contents)] leaf last."""
    os.makedirs(directory)
    leaf = os.path.join(directory, "img0.vhd")
    vhd.create(leaf, SIZE)
    model = bytearray(SIZE)
    frozen = []
    for kind, a, b, seed in program:
        if kind == "write":
            n = min(b, len(model) - a)
            data = random.Random(seed).randbytes(n)
            with vhd.open_image(leaf, writable=True) as img:
                img.write(a, data)
            model[a:a + n] = data
        elif kind == "snapshot":
            frozen.append((leaf, bytes(model)))
            leaf = os.path.join(directory, f"img{len(frozen)}.vhd")
            vhd.snapshot(leaf, frozen[-1][0])
        else:
            with vhd.open_image(leaf, writable=True) as img:
                img.resize(img.virtual_size + a * 2 * MiB + 4096)
                model += bytes(img.virtual_size - len(model))
    return frozen + [(leaf, bytes(model))]


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
