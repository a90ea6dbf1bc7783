"""The vdi_revert scenarios of the FileSR issue, against LVMSR on real lvm2.

Set-up runs in process (same XML through smlib.protocol.smapi); every vdi_revert
under test runs drivers/LVMSR as a program. Contents are judged by pyvhdi.
"""

from __future__ import annotations

import pytest
from helpers import revert_scenarios as scenario
from helpers.revert_scenarios import P1, P2, assert_holds

from smlib.stores.lvm import lvm2 as lvm

pytestmark = pytest.mark.lvm


def test_revert_to_either_snapshot(lvmsr):
    sr = lvmsr
    t, s1, s2, before, after = scenario.first_revert(sr)
    for s in (s1, s2):
        assert after[s] == before[s]                       # snapshots untouched
    assert "VHD-" + t in sr.lvs()

    sr.ok("vdi_revert", vdi_uuid=s2, args=[t])
    assert_holds(sr, t, P2)
    assert_holds(sr, s1, P1)
    sr.ok("vdi_revert", vdi_uuid=s1, args=[t])
    assert_holds(sr, t, P1)
    assert_holds(sr, s2, P2)

    scenario.assert_repeat_changes_nothing(sr, s1, t)
    scenario.assert_reverted_disk_is_ordinary(sr, t, s1)


def test_revert_restores_virtual_size(lvmsr):
    sr = lvmsr
    scenario.revert_across_resize(sr)
    sr.check_all()


def test_revert_to_written_snapshot_and_single_snapshot(lvmsr):
    sr = lvmsr
    scenario.revert_to_empty_single_and_written(sr)
    sr.check_all()


def test_refusals_change_nothing(lvmsr):
    sr = lvmsr
    t, s1, _ = scenario.two_snapshots(sr)
    other = sr.create(name="other")
    base = next(u for u, v in sr.vdis().items() if v["hidden"])
    hashes = sr.hashes()
    cases = [
        (dict(vdi_uuid=s1, args=["00000000-0000-0000-0000-000000000000"]), 144),  # no target
        (dict(vdi_uuid="00000000-0000-0000-0000-000000000000", vdi_location="x",
              args=[t]), 144),                                                    # no snapshot
        (dict(vdi_uuid=t, args=[t]), None),                                       # same VDI
        (dict(vdi_uuid=s1, args=[base]), None),                                   # hidden base
    ]
    for keys, code in cases:
        fault = sr.fault("vdi_revert", **keys)
        if code is not None:
            assert fault.faultCode == code, fault
        assert sr.hashes() == hashes, keys
    # A full VG: no room for the new target.
    layout = lvm.layout(sr.vg)
    gap = max(layout.free, key=lambda g: g.count)
    for g in layout.free:                                 # fill every free extent
        lvm.lvcreate(sr.vg, f"filler{g.start}", g.count, where=[g])
    fillers = tuple(f"filler{g.start}" for g in layout.free)
    assert lvm.layout(sr.vg).free_extents() == 0 and gap.count > 0
    hashes = sr.hashes(skip=fillers)
    assert sr.fault("vdi_revert", vdi_uuid=s1, args=[t]).faultCode == 44
    assert sr.hashes(skip=fillers) == hashes
    lvm.lvremove(sr.vg, list(fillers))
    # An attached target is in use.
    sr.inproc("vdi_attach", vdi_uuid=other, args=["true"])
    hashes = sr.hashes()
    assert sr.fault("vdi_revert", vdi_uuid=s1, args=[other]).faultCode == 24
    assert sr.hashes() == hashes
    sr.inproc("vdi_detach", vdi_uuid=other)


# Crash tests (revert, snapshot, clone, delete, resize, create, GC): test_crash_real.py.
