"""The vdi_revert scenario steps that FileSR and LVMSR must both pass.

Each step takes a harness (tests/helpers/sr_harness.py: FileSRHarness or
LVMSRHarness); set-up runs the harness's way (``sr.setup``), every
vdi_revert under test runs the driver as a program (``sr.ok``). Contents
are judged by pyvhdi through ``sr.read``.
"""

from __future__ import annotations

from helpers.sr_harness import DISK, MiB, SRHarness, pattern

P1, P2, P3 = pattern("P1"), pattern("P2"), pattern("P3")
FAR = 5 * MiB  # a second written region, in another VHD block
# What a revert keeps of the target's record.
IDENTITY = ("uuid", "location", "name_label", "virtual_size", "hidden", "snapshot_of")


def write_both(sr: SRHarness, uuid: str, data: bytes, call=None) -> None:
    """data at 0 and at FAR, in two VHD blocks (``call``: how the attach
    and detach run, as ``sr.write`` takes it)."""
    sr.write(uuid, 0, data, call=call)
    sr.write(uuid, FAR, data, call=call)


def read_version(sr: SRHarness, uuid: str, length: int = len(P1)) -> bytes:
    """The data at 0 and at FAR, which the crash tests always write together
    (``write_both``): both must come from the same version, else a replay
    left one block new and another old. Returns that data."""
    first, far = sr.read(uuid, 0, length), sr.read(uuid, FAR, length)
    assert first == far, f"{uuid}: block 0 and the block at {FAR} hold different versions"
    return first


def assert_holds(sr: SRHarness, uuid: str, data: bytes) -> None:
    assert sr.read(uuid, 0, len(data)) == data
    assert sr.read(uuid, FAR, len(data)) == data


def two_snapshots(sr: SRHarness) -> tuple[str, str, str]:
    """t written P1, snapshot s1, P2, snapshot s2, then P3 (current)."""
    t = sr.create(name="system disk")
    write_both(sr, t, P1)
    s1 = sr.snapshot(t)
    write_both(sr, t, P2)
    s2 = sr.snapshot(t)
    write_both(sr, t, P3)
    return t, s1, s2


def first_revert(sr: SRHarness) -> tuple[str, str, str, dict, dict]:
    """two_snapshots, then t reverted to s1 (the driver as a program, the
    snapshot named by uuid and location): t holds P1 and keeps its identity,
    both snapshots keep their contents. Returns (t, s1, s2, vdi_list
    before, vdi_list after)."""
    t, s1, s2 = two_snapshots(sr)
    before = sr.vdis()
    assert sr.ok("vdi_revert", vdi_uuid=s1, vdi_location=s1, args=[t]) is None
    assert_holds(sr, t, P1)
    assert_holds(sr, s1, P1)
    assert_holds(sr, s2, P2)
    after = sr.vdis()
    for key in IDENTITY:
        assert after[t][key] == before[t][key]
    return t, s1, s2, before, after


def assert_repeat_changes_nothing(sr: SRHarness, snapshot: str, target: str) -> None:
    """The revert just done, again, changes nothing, down to every byte."""
    fingerprint = sr.fingerprint()
    sr.ok("vdi_revert", vdi_uuid=snapshot, args=[target])
    assert sr.fingerprint() == fingerprint


def assert_reverted_disk_is_ordinary(sr: SRHarness, t: str, s1: str) -> None:
    """t, reverted to s1 (P1), is an ordinary leaf: written, snapshotted,
    read back; s1 unchanged; the whole SR passes its checks."""
    write_both(sr, t, P3)
    s3 = sr.snapshot(t)
    assert_holds(sr, s3, P3)
    assert_holds(sr, s1, P1)
    sr.check_all()


def revert_across_resize(sr: SRHarness) -> tuple[str, str]:
    """A DISK-sized t written P1 and snapshotted, grown to 3 * DISK and
    written (P2 beyond DISK, P3 over P1), reverted: back at DISK bytes and
    P1. Returns (t, snapshot)."""
    t = sr.create(DISK)
    sr.write(t, 0, P1)
    s = sr.snapshot(t)
    grown = sr.setup("vdi_resize", vdi_uuid=t, args=[str(3 * DISK)])
    assert grown["virtual_size"] == str(3 * DISK)
    sr.write(t, 2 * DISK, P2)
    sr.write(t, 0, P3)
    sr.ok("vdi_revert", vdi_uuid=s, args=[t])
    assert sr.vdis()[t]["virtual_size"] == str(DISK)
    assert sr.read(t, 0, len(P1)) == P1
    return t, s


def revert_to_empty_single_and_written(sr: SRHarness) -> tuple[str, str, str]:
    """Reverts to three kinds of snapshot: one of a never-written disk (empty,
    its base an empty dynamic image); a driver_params type=single one (the
    visible base itself); and a snapshot written to (non-empty: frozen into
    a base first). Returns (t, the empty-then-written snapshot, single)."""
    t = sr.create()
    s0 = sr.snapshot(t)
    sr.write(t, 0, P1)
    sr.ok("vdi_revert", vdi_uuid=s0, args=[t])
    assert sr.read(t, 0, len(P1)) == bytes(len(P1))
    sr.write(t, 0, P2)
    single = sr.snapshot(t, driver_params={"type": "single"})
    listing = sr.vdis()
    assert listing[single]["hidden"] is False and listing[t]["parent"] == single
    sr.write(t, 0, P3)
    sr.ok("vdi_revert", vdi_uuid=single, args=[t])
    assert sr.read(t, 0, len(P2)) == P2
    assert sr.read(single, 0, len(P2)) == P2
    sr.write(s0, 0, P3)
    sr.ok("vdi_revert", vdi_uuid=s0, args=[t])
    assert sr.read(t, 0, len(P3)) == P3
    assert sr.read(s0, 0, len(P3)) == P3
    return t, s0, single
