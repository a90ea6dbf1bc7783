"""Images inside a block device larger than the image (an LV stand-in: a loop device).

Real loop devices (root and /dev/loop-control needed): the container keeps
its size, the trailing footer sits at the end of data, and a write that
does not fit raises VHDError.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from smlib import vhd
from smlib.vhd import format as fmt

MiB = 1024 * 1024


@pytest.fixture
def loopdev(tmp_path):
    backing = tmp_path / "lv.img"
    with open(backing, "wb") as f:
        f.truncate(8 * MiB)
    try:
        dev = subprocess.run(["losetup", "-f", "--show", str(backing)], check=True,
                             capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no loop device: {exc}")
    yield dev
    subprocess.run(["losetup", "-d", dev], check=False)


def test_image_in_block_device(loopdev, tmp_path):
    vhd.create(loopdev, 20 * MiB)
    with vhd.open_image(loopdev, writable=True) as img:
        assert img.physical_size == 3584
        img.write(5 * MiB + 3, b"q" * 5000)
        phys = img.physical_size
        assert phys < img.container_size == 8 * MiB
    with open(loopdev, "rb") as dev:
        dev.seek(phys - fmt.FOOTER_SIZE)
        assert dev.read(8) == fmt.FOOTER_COOKIE
    with vhd.open_image(loopdev) as img:
        assert img.read(5 * MiB, 6000) == bytes(3) + b"q" * 5000 + bytes(997)
        assert img.physical_size == phys
    vhd.check(loopdev)
    # A fourth block does not fit in 8 MiB: refused, the image stays valid.
    with vhd.open_image(loopdev, writable=True) as img:
        img.write(0, b"a")
        img.write(10 * MiB, b"b")
        with pytest.raises(vhd.VHDError, match="container too small"):
            img.write(15 * MiB, b"c")
    vhd.check(loopdev)
    assert os.path.getsize(str(tmp_path / "lv.img")) == 8 * MiB


def test_snapshot_chain_across_containers(loopdev, tmp_path):
    """A child in a file whose parent is a block device reached by a resolver."""
    vhd.create(loopdev, 4 * MiB)
    with vhd.open_image(loopdev, writable=True) as img:
        img.write(0, b"P" * 8192)
    child = str(tmp_path / "child.vhd")
    vhd.snapshot(child, loopdev, parent_locator="VHD-parent")

    def resolver(child_path, name):
        assert name == "VHD-parent"
        return loopdev
    with vhd.open_image(child, writable=True, resolver=resolver) as img:
        img.write(4096, b"C" * 4096)
        assert img.read(0, 8192) == b"P" * 4096 + b"C" * 4096
    assert vhd.chain(child, resolver=resolver) == [child, loopdev]
    vhd.check(child, resolver=resolver)


def test_resize_in_block_device(loopdev):
    vhd.create(loopdev, 4 * MiB)
    with vhd.open_image(loopdev, writable=True) as img:
        img.write(0, b"r" * 4096)
        img.write(2 * MiB, b"s" * 4096)
        with pytest.raises(vhd.VHDError, match="container too small"):
            img.resize(2 * 1024 * MiB * 1024)      # 4 MiB BAT + 2 moved blocks > 8 MiB
        img.resize(3000 * MiB)                     # moves block 0 past the new BAT
    with vhd.open_image(loopdev) as img:
        assert img.virtual_size == 3000 * MiB
        assert img.read(0, 8192) == b"r" * 4096 + bytes(4096)
        assert img.read(2 * MiB, 4096) == b"s" * 4096
    vhd.check(loopdev)
