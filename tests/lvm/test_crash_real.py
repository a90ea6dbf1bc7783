"""Crash safety of LVMSR on real lvm2: every changing command killed at
each of its mutation points in turn, as tests/filesr/test_crash.py does for
FileSR.

``SMLIB_CRASH_AT=N`` makes drivers/LVMSR ``os._exit`` at its Nth mutation
point (smlib.faults). Every attempt starts from a byte copy of one prepared
PV (VG, LVs and all). After the crash the next command (vdi_list, in
process) replays; each VDI holds its old or new version, the same in two
far-apart blocks (revert_scenarios.read_version); then sr_scan, and the SR
must be consistent: every LV known to the metadata and the reverse, no
leaked base, parents / hidden / sizes as the images say, no transient LV,
no journal, bases and detached leaves deflated (check_consistent).
"""

from __future__ import annotations

import pytest
from helpers.crashes import after_crash, crash_env, crash_point
from helpers.lvmsr_helpers import DISK, LVMSRHarness
from helpers.revert_scenarios import P1, P2, P3, read_version, write_both

from smlib.faults import CRASH_STATUS
from smlib.tree import gc as gcmod

pytestmark = [pytest.mark.lvm, pytest.mark.slow]

P0 = P3[::-1]  # a fourth version (written into a snapshot)


def build(sr: LVMSRHarness, written_snapshot: bool = False) -> dict:
    """T holds P3; snapshots S1 (P1) and S2 (P2) of it (S1 then P0 when
    written_snapshot); each version in two far-apart blocks."""
    t = sr.create()
    write_both(sr, t, P1)
    s1 = sr.snapshot(t)
    write_both(sr, t, P2)
    s2 = sr.snapshot(t)
    write_both(sr, t, P3)
    if written_snapshot:
        write_both(sr, s1, P0)
    return {"t": t, "s1": s1, "s2": s2}


def crash_each_point(make_lvmsr, harness_fns, tmp_path, sr: LVMSRHarness, command: str,
                     keys: dict, check) -> list[str]:
    """Run ``command`` as a program, crashed at point 1, 2, ... until it
    completes, each time on a fresh copy of sr's PV; returns the names of
    the points it crashed at. ``check(copy, listing, crashed)`` judges each
    copy after replay; the consistency check follows an sr_scan."""
    template = str(tmp_path / "prepared.img")
    make_lvmsr.pvs.save(sr.device, template)
    names: list[str] = []
    while True:
        n = len(names) + 1
        copy = LVMSRHarness(make_lvmsr.pvs.restore(template), harness_fns, sr.sr_uuid)
        run = copy.run(command, env=crash_env(n, "smlib.stores.lvm.store.LVMStore"), **keys)
        crashed = run.returncode == CRASH_STATUS
        assert crashed or run.returncode == 0, run.stderr
        name = crash_point(run.stderr)
        assert (name is not None) == crashed, run.stderr
        if not crashed:
            run.ok()
        with after_crash(n, name):
            listing = copy.vdis()                 # any command replays first
            check(copy, listing, crashed)
            copy.inproc("sr_scan")
            copy.check_consistent()
        make_lvmsr.pvs.release(copy.device)
        if not crashed:
            return names
        names.append(name)
        assert n < 60, "mutation points never ran out"


def new_vdis(listing: dict, ids: dict) -> list[str]:
    return [u for u, v in listing.items() if not v["hidden"] and u not in ids.values()]


@pytest.mark.parametrize("command", ["vdi_snapshot", "vdi_clone"])
def test_crash_snapshot_and_clone(make_lvmsr, harness_fns, tmp_path, command):
    sr = make_lvmsr()
    ids = build(sr)

    def check(copy, listing, crashed):
        assert read_version(copy, ids["t"]) == P3
        assert read_version(copy, ids["s1"]) == P1
        assert read_version(copy, ids["s2"]) == P2
        extra = new_vdis(listing, ids)
        assert len(extra) <= 1 and (extra or crashed)
        for u in extra:
            assert read_version(copy, u) == P3
            assert listing[u]["is_a_snapshot"] == (command == "vdi_snapshot")

    points = crash_each_point(make_lvmsr, harness_fns, tmp_path, sr, command,
                              {"vdi_uuid": ids["t"]}, check)
    assert len(points) >= 5 and points[-1] == "journal.end"


@pytest.mark.parametrize("written", [False, True], ids=["empty-snapshot", "written-snapshot"])
def test_crash_revert(make_lvmsr, harness_fns, tmp_path, written):
    """An empty snapshot reverts by a new child of its base; a written one
    is first frozen into a base (more points). Reverting again after the
    replay gives the new contents."""
    sr = make_lvmsr()
    ids = build(sr, written_snapshot=written)
    new = P0 if written else P1
    snap_before = sr.vdis()[ids["s1"]]

    def check(copy, listing, crashed):
        # A written snapshot is frozen into a new base: only its parent (and
        # so its own LV's size: its data moved into the base) change.
        moved = ("parent", "physical_utilisation")
        assert {k: v for k, v in listing[ids["s1"]].items() if k not in moved} == \
            {k: v for k, v in snap_before.items() if k not in moved}
        assert read_version(copy, ids["t"]) in ((P3, new) if crashed else (new,))
        assert read_version(copy, ids["s1"]) == new
        assert read_version(copy, ids["s2"]) == P2
        assert new_vdis(listing, ids) == []
        assert listing[ids["t"]]["hidden"] is False
        copy.inproc("vdi_revert", vdi_uuid=ids["s1"], args=[ids["t"]])
        assert read_version(copy, ids["t"]) == new

    points = crash_each_point(make_lvmsr, harness_fns, tmp_path, sr, "vdi_revert",
                              {"vdi_uuid": ids["s1"], "args": [ids["t"]]}, check)
    assert len(points) >= (7 if written else 4)
    assert "revert.swap" in points


def test_crash_delete(make_lvmsr, harness_fns, tmp_path):
    """Deleting S1 leaves S2's base the only child of S1's: GC coalesces."""
    sr = make_lvmsr()
    ids = build(sr)

    def check(copy, listing, crashed):
        assert read_version(copy, ids["t"]) == P3
        assert read_version(copy, ids["s2"]) == P2
        if ids["s1"] in listing:
            assert crashed and read_version(copy, ids["s1"]) == P1

    points = crash_each_point(make_lvmsr, harness_fns, tmp_path, sr, "vdi_delete",
                              {"vdi_uuid": ids["s1"]}, check)
    assert "delete.remove" in points and "coalesce.copy" in points


def test_crash_resize_and_create(make_lvmsr, harness_fns, tmp_path):
    """vdi_resize of T to twice its size, then (on the SR it left) a
    vdi_create: each old or new, nothing leaked."""
    sr = make_lvmsr()
    t = sr.create()
    write_both(sr, t, P1)

    def grown(copy, listing, crashed):
        assert read_version(copy, t) == P1
        sizes = (str(DISK), str(2 * DISK)) if crashed else (str(2 * DISK),)
        assert listing[t]["virtual_size"] in sizes

    points = crash_each_point(make_lvmsr, harness_fns, tmp_path, sr, "vdi_resize",
                              {"vdi_uuid": t, "args": [str(2 * DISK)]}, grown)
    assert len(points) >= 3

    sr = make_lvmsr()
    t = sr.create()
    write_both(sr, t, P1)

    def created(copy, listing, crashed):
        assert read_version(copy, t) == P1
        others = [u for u in listing if u != t]
        assert len(others) in ((0, 1) if crashed else (1,))
        for u in others:
            assert read_version(copy, u) == bytes(len(P1))

    points = crash_each_point(make_lvmsr, harness_fns, tmp_path, sr, "vdi_create",
                              {"args": [str(DISK), "new"]}, created)
    assert len(points) >= 3


def test_crash_gc(make_lvmsr, harness_fns, tmp_path, monkeypatch):
    """sr_scan collecting the garbage of deletes made with GC switched off:
    a childless base to prune, a base to coalesce into its parent."""
    sr = make_lvmsr()
    with monkeypatch.context() as m:        # (undo() would drop the lvm2 settings too)
        m.setattr(gcmod.GC, "collect", lambda self: 0)
        ids = build(sr)
        write_both(sr, ids["t"], P0)
        s3 = sr.snapshot(ids["t"])
        sr.inproc("vdi_delete", vdi_uuid=ids["s1"])
        sr.inproc("vdi_delete", vdi_uuid=s3)
        other = sr.create()
        other_snap = sr.snapshot(other)
        sr.inproc("vdi_delete", vdi_uuid=other)
        sr.inproc("vdi_delete", vdi_uuid=other_snap)
    assert sum(v["hidden"] for v in sr.vdis().values()) == 4

    def check(copy, listing, crashed):
        assert read_version(copy, ids["t"]) == P0
        assert read_version(copy, ids["s2"]) == P2

    points = crash_each_point(make_lvmsr, harness_fns, tmp_path, sr, "sr_scan", {}, check)
    assert "delete.remove" in points and "coalesce.reparent" in points
