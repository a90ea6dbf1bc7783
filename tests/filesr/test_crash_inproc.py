"""Crash injection in process, for the changes test_crash.py does not run
as executables: create, resize, hiding a single snapshot that still has
children, a clone of such a VDI, revert to a never-written root snapshot.

The Nth mutation point raises instead of calling os._exit (a BaseException
nothing in the driver catches, so no cleanup code runs after it; the lock
is dropped as a dead process's would be). Then, as in test_crash.py: the
next command replays, contents are old or new, sr_scan leaves no leaks.
"""

from __future__ import annotations

import pytest
from helpers.crashes import after_crash, guard_mutations
from helpers.filesr_helpers import DISK, FileSRHarness, pattern
from helpers.revert_scenarios import read_version, write_both

from smlib import faults

P1, P2 = pattern("P1"), pattern("P2")


class Crash(BaseException):
    pass


@pytest.fixture(autouse=True)
def every_store_mutation_follows_a_point(monkeypatch):
    """While armed, each FileStore mutation must follow a fresh mutation
    point (helpers.crashes.guard_mutations); and the guard saw some."""
    from smlib.stores.file import FileStore

    seen = guard_mutations(monkeypatch, FileStore)
    yield
    assert seen, "no store mutation ran while armed"


@pytest.fixture
def crash_at(monkeypatch):
    """crash_at(n): arm the Nth mutation point of what runs next."""

    def die(status: int) -> None:
        raise Crash(status)

    monkeypatch.setattr(faults.os, "_exit", die)

    def arm(n: int) -> None:
        faults.reset_points()
        monkeypatch.setenv(faults.CRASH_ENV, str(n))

    yield arm
    monkeypatch.delenv(faults.CRASH_ENV, raising=False)


def crash_each_point(tmp_path, sr: FileSRHarness, crash_at, command: str, keys: dict,
                     check) -> int:
    n = 0
    while True:
        n += 1
        copy = sr.copy_to(str(tmp_path / f"c{n}"))
        crash_at(n)
        try:
            copy.inproc(command, **keys)
            crashed = False
        except Crash:
            crashed = True
        name = faults.last_point() if crashed else None
        crash_at(0)  # disarmed: 0 never matches
        with after_crash(n, name):
            check(copy, copy.vdis(call=copy.inproc), crashed)
            copy.inproc("sr_scan")
            copy.check_consistent(call=copy.inproc)
        if not crashed:
            return n - 1
        assert n < 60


def setup(sr: FileSRHarness) -> str:
    t = sr.create(call=sr.inproc)
    write_both(sr, t, P1, call=sr.inproc)
    return t


def test_create(tmp_path, filesr, crash_at):
    t = setup(filesr)

    def check(copy, listing, crashed):
        assert read_version(copy, t) == P1
        assert len(listing) in ((1, 2) if crashed else (2,))

    assert crash_each_point(tmp_path, filesr, crash_at, "vdi_create",
                            {"args": [str(DISK), "new"]}, check) >= 3


def test_resize(tmp_path, filesr, crash_at):
    t = setup(filesr)

    def check(copy, listing, crashed):
        assert read_version(copy, t) == P1
        sizes = (str(DISK), str(2 * DISK)) if crashed else (str(2 * DISK),)
        assert listing[t]["virtual_size"] in sizes

    assert crash_each_point(tmp_path, filesr, crash_at, "vdi_resize",
                            {"vdi_uuid": t, "args": [str(2 * DISK)]}, check) >= 3


def test_delete_of_single_snapshot_with_children(tmp_path, filesr, crash_at):
    t = setup(filesr)
    single = filesr.inproc("vdi_snapshot", vdi_uuid=t, driver_params={"type": "single"})["uuid"]
    write_both(filesr, t, P2, call=filesr.inproc)

    def check(copy, listing, crashed):
        assert read_version(copy, t) == P2
        assert listing[single]["hidden"] or crashed
        if not listing[single]["hidden"]:
            assert read_version(copy, single) == P1

    assert crash_each_point(tmp_path, filesr, crash_at, "vdi_delete",
                            {"vdi_uuid": single}, check) >= 3


def test_clone_of_single_snapshot(tmp_path, filesr, crash_at):
    t = setup(filesr)
    single = filesr.inproc("vdi_snapshot", vdi_uuid=t, driver_params={"type": "single"})["uuid"]

    def check(copy, listing, crashed):
        assert read_version(copy, single) == P1 and read_version(copy, t) == P1
        new = [u for u in listing if u not in (t, single)]
        assert len(new) <= 1 and (crashed or len(new) == 1)
        for u in new:
            assert read_version(copy, u) == P1

    assert crash_each_point(tmp_path, filesr, crash_at, "vdi_clone",
                            {"vdi_uuid": single}, check) >= 3


def test_revert_to_a_root_snapshot(tmp_path, filesr, crash_at):
    t = filesr.create(call=filesr.inproc)
    s = filesr.inproc("vdi_snapshot", vdi_uuid=t)["uuid"]  # of a never-written disk
    write_both(filesr, t, P1, call=filesr.inproc)

    def check(copy, listing, crashed):
        assert read_version(copy, t) in ((P1, bytes(len(P1))) if crashed else (bytes(len(P1)),))
        assert read_version(copy, s) == bytes(len(P1))

    assert crash_each_point(tmp_path, filesr, crash_at, "vdi_revert",
                            {"vdi_uuid": s, "args": [t]}, check) >= 4


def test_snapshot_of_an_idle_disk_with_gc_bypass(tmp_path, filesr, crash_at):
    t = setup(filesr)
    s1 = filesr.inproc("vdi_snapshot", vdi_uuid=t)["uuid"]  # T is now an empty child

    def check(copy, listing, crashed):
        assert read_version(copy, t) == P1 and read_version(copy, s1) == P1
        new = [u for u, v in listing.items() if not v["hidden"] and u not in (t, s1)]
        assert len(new) <= 1 and (crashed or len(new) == 1)
        for u in new:
            assert read_version(copy, u) == P1
        if not crashed:  # the empty base was bypassed: one base for all three
            assert sum(v["hidden"] for v in listing.values()) == 1

    # snapshot (begin, rename, hide, 2 creates, save, end) then the bypass
    # (begin, 2 reparents, remove, save, end)
    assert crash_each_point(tmp_path, filesr, crash_at, "vdi_snapshot",
                            {"vdi_uuid": t}, check) >= 12
