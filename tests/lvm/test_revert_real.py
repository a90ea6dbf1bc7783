"""The vdi_revert scenarios of the FileSR issue, against LVMSR on real lvm2.

Set-up runs in process (same XML through smlib.protocol.smapi); every vdi_revert
under test runs drivers/LVMSR as a program. Contents are judged by pyvhdi.
"""

from __future__ import annotations

import pytest
from helpers import revert_scenarios as scenario
from helpers.crashes import after_crash, crash_point
from helpers.lvmsr_helpers import LVMSRHarness
from helpers.revert_scenarios import P1, P2, P3, assert_holds

from smlib.faults import CRASH_ENV, CRASH_STATUS
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


@pytest.mark.slow
@pytest.mark.parametrize("snapshot_written", [False, True], ids=["empty-snap", "written-snap"])
def test_crash_at_each_mutation_point_then_replay(make_lvmsr, harness_fns, tmp_path,
                                                  snapshot_written):
    """Kill vdi_revert at each mutation point in turn; the next command
    replays; the target is then old or new, never neither, no stray LV;
    the snapshot is unchanged; reverting again gives the new contents.
    An empty snapshot reverts by a new child of its base; a written one is
    first frozen into a base (more mutation points). Every attempt starts
    from a byte copy of one prepared PV (VG, LVs and all)."""
    sr = make_lvmsr()
    t = sr.create()
    sr.write(t, 0, P1)
    s = sr.inproc("vdi_snapshot", vdi_uuid=t)["uuid"]
    if snapshot_written:
        sr.write(s, 0, P2)
    new = P2 if snapshot_written else P1
    sr.write(t, 0, P3)
    snap_before = sr.vdis()[s]
    template = str(tmp_path / "prepared.img")
    make_lvmsr.pvs.save(sr.device, template)

    point, finished = 1, False
    while not finished:
        sr = LVMSRHarness(make_lvmsr.pvs.restore(template), harness_fns, sr.sr_uuid)
        run = sr.run("vdi_revert", vdi_uuid=s, args=[t], env={CRASH_ENV: str(point)})
        assert run.returncode in (0, CRASH_STATUS), run.stderr
        finished = run.returncode == 0
        with after_crash(point, crash_point(run.stderr)):
            listing = sr.vdis()                      # any command replays first
            sr.check_all()
            assert listing[t]["hidden"] is False
            got = sr.read(t, 0, len(P1))
            assert got in (new, P3), "target is neither old nor new"
            if finished:
                assert got == new
            # A written snapshot is frozen into a new base: only its parent moves.
            assert {k: v for k, v in listing[s].items() if k != "parent"} == \
                {k: v for k, v in snap_before.items() if k != "parent"}
            assert sr.read(s, 0, len(new)) == new
            sr.ok("vdi_revert", vdi_uuid=s, args=[t])
            assert sr.read(t, 0, len(new)) == new
            sr.check_all()
        make_lvmsr.pvs.release(sr.device)
        point += 1
    print(f"vdi_revert crashed at {point - 2} mutation points")
    assert point > 4, "vdi_revert passed fewer mutation points than expected"


@pytest.mark.slow
def test_snapshot_crash_at_each_mutation_point_then_replay(make_lvmsr, harness_fns, tmp_path):
    """vdi_snapshot killed at each mutation point (LV rename, creates, hidden
    flag, deflate): after replay the leaf keeps its contents under its uuid,
    no transient or stray LV is left, and a snapshot either exists whole or
    not at all (replay rolls forward from the rename on)."""
    sr = make_lvmsr()
    t = sr.create()
    sr.write(t, 0, P1)
    template = str(tmp_path / "prepared.img")
    make_lvmsr.pvs.save(sr.device, template)
    point, finished = 1, False
    while not finished:
        sr = LVMSRHarness(make_lvmsr.pvs.restore(template), harness_fns, sr.sr_uuid)
        run = sr.run("vdi_snapshot", vdi_uuid=t, env={CRASH_ENV: str(point)})
        assert run.returncode in (0, CRASH_STATUS), run.stderr
        finished = run.returncode == 0
        with after_crash(point, crash_point(run.stderr)):
            listing = sr.vdis()
            sr.check_all()
            assert sr.read(t, 0, len(P1)) == P1
            snaps = [u for u, v in listing.items() if v["is_a_snapshot"]]
            assert len(snaps) <= 1
            if finished:
                assert len(snaps) == 1
            for s in snaps:
                assert sr.read(s, 0, len(P1)) == P1
        make_lvmsr.pvs.release(sr.device)
        point += 1
    assert point > 3, "vdi_snapshot passed fewer mutation points than expected"
