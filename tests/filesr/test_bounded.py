"""Bounded trees: 1,000 snapshot / revert / delete-oldest-snapshot cycles.

In process (the same xapi-shaped XML through smlib.protocol.smapi.handle) to keep
the suite fast; the executables are covered elsewhere. Data is written
between steps so bases hold blocks and GC's coalesce really copies.
"""

from __future__ import annotations

import os
import random

import pytest
from helpers.filesr_helpers import FileSRHarness, pattern

from smlib import vhd

CYCLES = 1000
MAX_DEPTH_SEEN = 3
MAX_FILES = 6  # .sm, T, one snapshot, at most three bases under them


def depth(sr: FileSRHarness, uuid: str) -> int:
    return vhd.depth(sr.path(uuid))


@pytest.mark.slow
def test_thousand_cycles_stay_bounded(filesr):
    sr = filesr
    call = sr.inproc
    rng = random.Random(4)
    t = sr.create(call=call)
    model = {t: bytes(4096)}
    snaps: list[str] = []
    worst_depth = worst_files = 0
    for cycle in range(CYCLES):
        data = pattern(f"{cycle:04d}", 4096)
        if cycle % 3 == 0:
            with vhd.open_image(sr.path(t), writable=True) as img:  # T is detached
                img.write(0, data)
            model[t] = data
        s = call("vdi_snapshot", vdi_uuid=t)["uuid"]
        snaps.append(s)
        model[s] = model[t]
        target = snaps[rng.randrange(len(snaps))]
        call("vdi_revert", vdi_uuid=target, args=[t])
        model[t] = model[target]
        if len(snaps) > 1:
            old = snaps.pop(0)
            call("vdi_delete", vdi_uuid=old)
            del model[old]
        worst_depth = max(worst_depth, depth(sr, t), *(depth(sr, u) for u in snaps))
        worst_files = max(worst_files, len(sr.files()))
        if cycle % 100 == 99:
            for uuid, want in model.items():
                assert sr.read(uuid, 0, 4096) == want, (cycle, uuid)
    assert worst_depth <= MAX_DEPTH_SEEN
    assert worst_files <= MAX_FILES
    listing = sr.vdis(call=call)
    assert sorted(u for u, v in listing.items() if not v["hidden"]) == sorted(model)
    # Every volume on disk is in the metadata and vice versa: nothing leaked.
    assert sorted(f[:-4] for f in sr.files() if f.endswith(".vhd")) == sorted(listing)
    for uuid, want in model.items():
        assert sr.read(uuid, 0, 4096) == want
    sr.check_all()
    assert os.listdir(os.path.join(sr.location, ".sm", "journal")) == []


def test_snapshots_of_an_idle_disk_do_not_deepen_it(filesr):
    sr = filesr
    t = sr.create(call=sr.inproc)
    sr.write(t, 0, pattern("A", 4096), call=sr.inproc)
    snaps = [sr.inproc("vdi_snapshot", vdi_uuid=t)["uuid"] for _ in range(40)]
    assert depth(sr, t) == 2
    listing = sr.check_consistent(call=sr.inproc)
    assert sum(v["hidden"] for v in listing.values()) == 1  # one base, holding "A"
    for uuid in [t, *snaps]:
        assert sr.read(uuid, 0, 4096) == pattern("A", 4096)
