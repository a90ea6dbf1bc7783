"""Crash safety: kill the real executable at each mutation point in turn.

``SMLIB_CRASH_AT=N`` makes the driver ``os._exit`` at its Nth mutation point
(smlib.faults), as a power cut would end it: no cleanup, no unlock. For
each N, on a fresh copy of the same SR: run the operation, then the next
command (vdi_list) replays; every VDI must show its old or its new
contents, the snapshots theirs; then sr_scan (GC) must leave no volume
that the metadata does not know, no journal and every image valid. Each
crash prints the name of its point, and a failed check names it.
"""

from __future__ import annotations

import pytest
from helpers.crashes import after_crash, crash_env, crash_point
from helpers.filesr_helpers import FileSRHarness, pattern
from helpers.revert_scenarios import read_version, write_both

from smlib.faults import CRASH_ENV, CRASH_STATUS
from smlib.tree import gc as gcmod

P0, P1, P2, P3 = (pattern(t) for t in ("P0", "P1", "P2", "P3"))
LEN = len(P1)


def build(sr: FileSRHarness, written_snapshot: bool = False) -> dict:
    """T holds P3; snapshots S1 (P1) and S2 (P2) of it; each version in two
    far-apart regions."""
    call = sr.inproc
    t = sr.create(call=call)
    write_both(sr, t, P1, call=sr.inproc)
    s1 = call("vdi_snapshot", vdi_uuid=t)["uuid"]
    write_both(sr, t, P2, call=sr.inproc)
    s2 = call("vdi_snapshot", vdi_uuid=t)["uuid"]
    write_both(sr, t, P3, call=sr.inproc)
    if written_snapshot:
        write_both(sr, s1, P0, call=sr.inproc)
    return {"t": t, "s1": s1, "s2": s2}


def run_crashes(tmp_path, sr: FileSRHarness, command: str, keys: dict, check) -> list[str]:
    """Crash ``command`` at point 1, 2, ... until it completes; returns
    the names of the points it crashed at, in order. ``check(copy,
    listing, crashed)`` judges each copy after replay."""
    names = []
    while True:
        n = len(names) + 1
        copy = sr.copy_to(str(tmp_path / f"crash{n}"))
        r = copy.run(command, env=crash_env(n, "smlib.stores.file.FileStore"), **keys)
        crashed = r.returncode == CRASH_STATUS
        assert crashed or r.returncode == 0, r.stderr
        name = crash_point(r.stderr)
        assert (name is not None) == crashed, r.stderr
        if not crashed:
            r.ok()
        with after_crash(n, name):
            listing = copy.vdis()  # the next command: replays
            check(copy, listing, crashed)
            copy.ok("sr_scan")
            copy.check_consistent()
        if not crashed:
            return names
        names.append(name)
        assert n < 60, "mutation points never ran out"


def content(sr, uuid):
    """The version a VDI holds, the same in both regions (read_version)."""
    return read_version(sr, uuid, LEN)


def new_vdis(listing, ids):
    return [u for u, v in listing.items() if not v["hidden"] and u not in ids.values()]


@pytest.mark.parametrize("command", ["vdi_snapshot", "vdi_clone"])
def test_crash_snapshot_and_clone(tmp_path, filesr, command):
    ids = build(filesr)

    def check(copy, listing, crashed):
        assert content(copy, ids["t"]) == P3
        assert content(copy, ids["s1"]) == P1
        assert content(copy, ids["s2"]) == P2
        extra = new_vdis(listing, ids)
        assert len(extra) <= 1 and (extra or crashed)
        for u in extra:
            assert content(copy, u) == P3
            assert listing[u]["is_a_snapshot"] == (command == "vdi_snapshot")

    points = run_crashes(tmp_path, filesr, command, {"vdi_uuid": ids["t"]}, check)
    assert len(points) >= 5
    assert points[:3] == ["journal.begin", "split.rename-leaf", "split.hide-base"]
    assert points[-1] == "journal.end"


@pytest.mark.parametrize("written", [False, True], ids=["empty-snapshot", "written-snapshot"])
def test_crash_revert(tmp_path, filesr, written):
    ids = build(filesr, written_snapshot=written)
    s1_data = P0 if written else P1

    def check(copy, listing, crashed):
        assert content(copy, ids["t"]) in ((P3, s1_data) if crashed else (s1_data,))
        assert content(copy, ids["s1"]) == s1_data
        assert content(copy, ids["s2"]) == P2
        assert new_vdis(listing, ids) == []
        assert listing[ids["t"]]["name_label"] == "disk"

    points = run_crashes(tmp_path, filesr, "vdi_revert",
                         {"vdi_uuid": ids["s1"], "args": [ids["t"]]}, check)
    assert len(points) >= (7 if written else 4)
    assert "revert.create-new" in points and "revert.swap" in points
    assert ("split.rename-leaf" in points) == written  # a written snapshot is frozen first


def test_crash_delete(tmp_path, filesr):
    ids = build(filesr)
    # Deleting S1 leaves S2's base as the only child of S1's: GC coalesces.

    def check(copy, listing, crashed):
        assert content(copy, ids["t"]) == P3
        assert content(copy, ids["s2"]) == P2
        if ids["s1"] in listing:
            assert crashed and content(copy, ids["s1"]) == P1

    points = run_crashes(tmp_path, filesr, "vdi_delete", {"vdi_uuid": ids["s1"]}, check)
    assert len(points) >= 6
    assert "delete.remove" in points and "coalesce.copy" in points


def test_crash_gc(tmp_path, filesr, monkeypatch):
    """sr_scan collecting garbage left by deletes made with GC switched off."""
    monkeypatch.setattr(gcmod.GC, "collect", lambda self: 0)
    ids = build(filesr)
    write_both(filesr, ids["t"], P0, call=filesr.inproc)
    s3 = filesr.inproc("vdi_snapshot", vdi_uuid=ids["t"])["uuid"]
    filesr.inproc("vdi_delete", vdi_uuid=ids["s1"])
    filesr.inproc("vdi_delete", vdi_uuid=s3)
    other = filesr.create(call=filesr.inproc)
    other_snap = filesr.inproc("vdi_snapshot", vdi_uuid=other)["uuid"]
    filesr.inproc("vdi_delete", vdi_uuid=other)
    filesr.inproc("vdi_delete", vdi_uuid=other_snap)
    monkeypatch.undo()
    hidden = [u for u, v in filesr.vdis(call=filesr.inproc).items() if v["hidden"]]
    # other's base (childless: prune); S1's and S3's bases: S2's base is
    # the only child of S1's (coalesce); S3's base keeps T.
    assert len(hidden) == 4

    def check(copy, listing, crashed):
        assert content(copy, ids["t"]) == P0
        assert content(copy, ids["s2"]) == P2

    points = run_crashes(tmp_path, filesr, "sr_scan", {}, check)
    assert len(points) >= 10
    assert "delete.remove" in points and "coalesce.reparent" in points


def test_crash_at_a_named_point(tmp_path, filesr):
    """SMLIB_CRASH_AT=<name> stops at the first point of that name; the
    older SM_CRASH_AT=N still counts points."""
    ids = build(filesr)
    copy = filesr.copy_to(str(tmp_path / "named"))
    r = copy.run("vdi_snapshot", vdi_uuid=ids["t"], env={CRASH_ENV: "split.create-leaf"})
    assert r.returncode == CRASH_STATUS, r.stderr
    assert r.stderr.strip().endswith("crash at mutation point 4: split.create-leaf")
    assert len(new_vdis(copy.vdis(), ids)) == 1  # replay rolled the snapshot forward
    assert content(copy, ids["t"]) == P3
    copy = filesr.copy_to(str(tmp_path / "counted"))
    r = copy.run("vdi_snapshot", vdi_uuid=ids["t"], env={"SM_CRASH_AT": "2"})
    assert r.returncode == CRASH_STATUS and crash_point(r.stderr) == "split.rename-leaf"
    r = copy.run("vdi_snapshot", vdi_uuid=ids["t"], env={CRASH_ENV: "no.such-point"})
    assert r.returncode == 0 and crash_point(r.stderr) is None
