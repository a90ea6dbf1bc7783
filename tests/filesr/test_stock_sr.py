"""FileSR adopts a stock file SR: every disk and chain listed, read the same,
snapshot and revert work.

A stock file SR (sm's FileSR) is a directory of ``<uuid>.vhd`` files and
nothing else: a snapshot renames the disk's image to a new uuid, marks it
hidden in its footer (``vhd-util set -f hidden``) and puts two empty
children on it (``vhd-util snapshot``, parent locator ``<uuid>.vhd``
relative to the SR directory). The SR here is built that way with the
library's create / snapshot / set_hidden, which write what vhd-util writes
(tests/vhd/test_golden.py compares them byte for byte with vhd-util's
images). Contents are read with pyvhdi, an independent reader.
"""

import os
import uuid as uuidlib

import pytest
from helpers.filesr_helpers import FileSRHarness, pattern, pyvhdi_read, tree_hashes

from smlib import vhd

MiB = 1 << 20
SIZE = 16 * MiB


def _new() -> str:
    return str(uuidlib.uuid4())


def _write(path: str, offset: int, data: bytes) -> None:
    with vhd.open_image(path, writable=True) as img:
        img.write(offset, data)


class StockSR:
    """Builds chains the way stock FileSR does, in ``location``."""

    def __init__(self, location: str) -> None:
        self.dir = location
        os.makedirs(location)
        self.parent = {}   # uuid -> parent uuid ("" for none), refreshed from the images
        self.hidden = set()

    def path(self, uuid: str) -> str:
        return os.path.join(self.dir, uuid + ".vhd")

    def disk(self, data: bytes, offset: int = 0) -> str:
        uuid = _new()
        vhd.create(self.path(uuid), SIZE)
        _write(self.path(uuid), offset, data)
        self.parent[uuid] = ""
        return uuid

    def snapshot(self, disk: str) -> str:
        """sm's FileVDI._snapshot (double): the disk's image becomes a hidden
        base; the disk and its snapshot are new empty children of it."""
        base = _new()
        os.rename(self.path(disk), self.path(base))
        with vhd.open_image(self.path(base), writable=True) as img:
            img.set_hidden(True)
        snap = _new()
        for child in (disk, snap):
            vhd.snapshot(self.path(child), self.path(base), parent_locator=base + ".vhd")
            self.parent[child] = base
        self.hidden.add(base)
        return snap


@pytest.fixture
def stock(tmp_path, harness_fns):
    """A stock SR: D (data, snapshot S, then more data) on hidden base B;
    E alone; F and G on hidden C2 on hidden C1, which also carries H."""
    h = FileSRHarness(str(tmp_path), harness_fns)
    sr = StockSR(h.location)
    d = sr.disk(pattern("d0", 256 * 1024))
    s = sr.snapshot(d)
    _write(sr.path(d), 1 * MiB, pattern("d1", 128 * 1024))
    e = sr.disk(pattern("e0"), 4 * MiB)
    f = sr.disk(pattern("c1"))
    h_ = sr.snapshot(f)           # f's old image is C1; h is its snapshot
    _write(sr.path(f), 2 * MiB, pattern("c2"))
    g = sr.snapshot(f)            # f's image now is C2 (on C1); g its snapshot
    _write(sr.path(f), 3 * MiB, pattern("f0"))
    _write(sr.path(h_), 5 * MiB, pattern("h0"))
    sr.parent = {u: _parent_of(sr.path(u)) for u in _uuids(sr.dir)}
    return h, sr, {"D": d, "S": s, "E": e, "F": f, "G": g, "H": h_}


def _uuids(directory: str) -> "list[str]":
    return sorted(n[:-4] for n in os.listdir(directory) if n.endswith(".vhd"))


def _parent_of(path: str) -> str:
    with vhd.open_image(path) as img:
        loc = img.parent_locator
    return os.path.basename(loc)[:-4] if loc else ""


def _contents(h: FileSRHarness, disks: dict) -> dict:
    """Each visible disk's first 6 MiB as pyvhdi reads it."""
    return {name: pyvhdi_read(h.path(uuid), 0, 6 * MiB) for name, uuid in disks.items()}


@pytest.mark.parametrize("first", ["sr_attach", "sr_scan"])
def test_stock_sr_is_adopted_as_it_is(stock, first):
    h, sr, disks = stock
    images = tree_hashes(h.location)
    before = _contents(h, disks)
    assert not os.path.exists(os.path.join(h.location, ".sm"))

    h.ok(first)
    listed = h.vdis(call=h.ok)
    assert set(listed) == set(sr.parent), "every image listed, bases included"
    for uuid, parent in sr.parent.items():
        assert listed[uuid]["parent"] == parent, uuid
        assert listed[uuid]["hidden"] == (uuid not in disks.values()), uuid
        assert listed[uuid]["virtual_size"] == str(SIZE)
    assert _contents(h, disks) == before
    # Adopting changed no image: only the bookkeeping directory is new.
    after = tree_hashes(h.location)
    assert {k: v for k, v in after.items() if not k.startswith(".sm/")} == images
    h.ok("sr_scan")  # and a second look changes nothing
    assert {k: v for k, v in tree_hashes(h.location).items()
            if not k.startswith(".sm/")} == images


def test_adopted_disks_snapshot_and_revert(stock):
    h, _, disks = stock
    h.ok("sr_attach")
    before = _contents(h, disks)
    d = disks["D"]
    snap = h.snapshot(d, call=h.ok)
    h.write(d, 0, pattern("new", 512 * 1024))
    assert h.read(d, 0, 512 * 1024) == pattern("new", 512 * 1024)
    h.ok("vdi_revert", vdi_uuid=snap, args=[d])
    assert pyvhdi_read(h.path(d), 0, 6 * MiB) == before["D"]
    # The stock snapshot S (taken by sm) is a revert point too.
    h.ok("vdi_revert", vdi_uuid=disks["S"], args=[d])
    assert pyvhdi_read(h.path(d), 0, 6 * MiB) == before["S"]
    # Every other disk reads as before.
    others = {k: v for k, v in disks.items() if k != "D"}
    assert _contents(h, others) == {k: before[k] for k in others}
    h.check_all()


def test_a_directory_without_images_is_not_adopted(tmp_path, harness_fns):
    h = FileSRHarness(str(tmp_path), harness_fns)
    os.makedirs(h.location)
    with open(os.path.join(h.location, "notes.txt"), "w") as f:
        f.write("not an SR")
    fault = h.fault("sr_attach")
    assert fault.faultCode == 47  # SRUnavailable
    assert sorted(os.listdir(h.location)) == ["notes.txt"]
