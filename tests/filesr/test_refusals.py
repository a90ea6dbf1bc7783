"""Refusals change nothing: the documented fault code, and every file of the
SR directory (bookkeeping included) byte-identical before and after.

The refused command runs as the real executable; the set-up uses the same
XML in process where it is long (the 30-deep chain).
"""

from __future__ import annotations

import os
import subprocess
import uuid as uuidlib

import pytest
from helpers.filesr_helpers import FileSRHarness, pattern, tree_hashes

from smlib.tree.tree import MAX_DEPTH

P = pattern("P")
EVIL = "../../etc/passwd"


@pytest.fixture
def world(filesr):
    """T written, snapshotted twice; the uuids of T, S1, S2 and a base."""
    sr = filesr
    t = sr.create()
    sr.write(t, 0, P)
    s1 = sr.ok("vdi_snapshot", vdi_uuid=t)["uuid"]
    s2 = sr.ok("vdi_snapshot", vdi_uuid=t)["uuid"]
    base = next(u for u, v in sr.vdis().items() if v["hidden"])
    return sr, {"t": t, "s1": s1, "s2": s2, "base": base}


def refused(sr: FileSRHarness, code: int, command: str, **keys) -> None:
    before = tree_hashes(sr.location)
    fault = sr.fault(command, **keys)
    assert fault.faultCode == code, fault.faultString
    assert tree_hashes(sr.location) == before


# (description, snapshot key or literal, target key or literal, code)
REVERT_REFUSALS = [
    ("unknown snapshot", "unknown", "t", 144),
    ("unknown target", "s1", "unknown", 144),
    ("path-like target", "s1", EVIL, 144),
    ("path-like snapshot", EVIL, "t", 144),
    ("snapshot is the target", "t", "t", 143),
    ("target is a hidden base", "s1", "base", 46),
    ("snapshot is a hidden base", "base", "t", 46),
]


@pytest.mark.parametrize("what,snap,target,code", REVERT_REFUSALS,
                         ids=[r[0] for r in REVERT_REFUSALS])
def test_revert_refusals(world, what, snap, target, code):
    sr, ids = world
    ids = {**ids, "unknown": str(uuidlib.uuid4())}
    s = ids.get(snap, snap)
    refused(sr, code, "vdi_revert", vdi_uuid=s, vdi_location=s, args=[ids.get(target, target)])


@pytest.mark.parametrize("state", ["vdi_attach", "vdi_activate"])
def test_revert_refuses_target_in_use(world, state):
    sr, ids = world
    sr.ok(state, vdi_uuid=ids["t"], args=["true"])
    refused(sr, 24, "vdi_revert", vdi_uuid=ids["s1"], args=[ids["t"]])
    refused(sr, 24, "vdi_delete", vdi_uuid=ids["t"])


def test_other_refusals(world):
    sr, ids = world
    refused(sr, 144, "vdi_delete", vdi_uuid=EVIL)
    refused(sr, 144, "vdi_snapshot", vdi_uuid=str(uuidlib.uuid4()))
    refused(sr, 46, "vdi_delete", vdi_uuid=ids["base"])
    refused(sr, 79, "vdi_resize", vdi_uuid=ids["t"], args=["4096"])
    refused(sr, 79, "vdi_create", args=["-5", "x"])
    refused(sr, 39, "sr_delete")
    refused(sr, 42, "sr_create")
    refused(sr, 143, "vdi_revert", vdi_uuid=ids["s1"], args=[])


# Sizes are ASCII digits only: str.isdigit() also takes superscripts and
# other scripts' digits, which int() then refuses (1200) or reads (accepted).
@pytest.mark.parametrize("size", ["\u00b2", "\u0661\u0662", "\U0001d7d7", "12G", "", " 4096"],
                         ids=["superscript-2", "arabic-indic-12", "math-9", "unit", "empty",
                              "space"])
def test_size_is_ascii_digits_or_vdisize(world, size):
    sr, ids = world
    refused(sr, 79, "vdi_create", args=[size, "x"])
    refused(sr, 79, "vdi_resize", vdi_uuid=ids["t"], args=[size])


def test_vdi_with_children_is_read_only(world):
    sr, ids = world
    single = sr.ok("vdi_snapshot", vdi_uuid=ids["t"], driver_params={"type": "single"})["uuid"]
    refused(sr, 46, "vdi_revert", vdi_uuid=ids["s1"], args=[single])
    refused(sr, 46, "vdi_attach", vdi_uuid=single, args=["true"])
    refused(sr, 46, "vdi_resize", vdi_uuid=single, args=[str(1 << 30)])
    assert sr.ok("vdi_attach", vdi_uuid=single, args=["false"])["params"] == sr.path(single)


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_damaged_snapshot_image_is_an_sr_error(world, damage):
    sr, ids = world
    path = sr.path(ids["s1"])
    if damage == "missing":
        os.unlink(path)
    else:
        with open(path, "r+b") as f:
            f.truncate(300)
    refused(sr, 46, "vdi_revert", vdi_uuid=ids["s1"], args=[ids["t"]])


def test_chain_too_long(filesr):
    sr = filesr
    t = sr.create(call=sr.inproc)
    # Each double snapshot of a written disk (every snapshot kept) deepens
    # T's chain by one. (Snapshots of an unwritten disk do not: GC bypasses
    # bases with no data.)
    for i in range(MAX_DEPTH - 1):
        sr.write(t, 0, pattern(str(i), 4096), call=sr.inproc)
        last = sr.inproc("vdi_snapshot", vdi_uuid=t)["uuid"]
    assert max(_depth(sr, u) for u in sr.vdis()) == MAX_DEPTH
    refused(sr, 109, "vdi_snapshot", vdi_uuid=t)
    refused(sr, 109, "vdi_clone", vdi_uuid=last)
    # Reverting to a written snapshot needs a new base above it: too deep.
    sr.write(last, 0, P, call=sr.inproc)
    refused(sr, 109, "vdi_revert", vdi_uuid=last, args=[t])


def _depth(sr: FileSRHarness, uuid: str) -> int:
    vdis = sr.vdis(call=sr.inproc)
    n = 0
    while uuid:
        n += 1
        uuid = vdis[uuid]["parent"]
    return n


def test_no_space(tmp_path, harness_fns):
    """A real, small filesystem (tmpfs) that is full: SRNoSpace (44)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        sr = FileSRHarness(str(mnt), harness_fns)
        sr.ok("sr_create")
        t = sr.create()
        sr.write(t, 0, P)
        s = sr.ok("vdi_snapshot", vdi_uuid=t)["uuid"]
        sr.write(s, 0, pattern("Q"))  # a written snapshot: revert needs a base
        sr.write(t, 0, pattern("R"))
        st = os.statvfs(str(mnt))
        with open(mnt / "filler", "wb") as f:
            f.write(bytes(st.f_bavail * st.f_frsize - 8192))
        refused(sr, 44, "vdi_revert", vdi_uuid=s, args=[t])
        refused(sr, 44, "vdi_snapshot", vdi_uuid=t)
        refused(sr, 44, "vdi_create", args=[str(1 << 30), "big"])
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
