"""A damaged or hostile LVMSR on real lvm2 (issue 10): the shared steps of
tests/helpers/hostile_scenarios.py, and what only an LVM SR can suffer (another
SR's VG named through sr_uuid, MGT slots zeroed, the VG vanishing, lvm2
missing). Set-up runs in process; every call under test runs drivers/LVMSR
as a program.
"""

from __future__ import annotations

import os

import pytest
from helpers import hostile_scenarios as hs
from helpers.hostile_corpus import CORPUS, FILE_ONLY

from smlib.stores.lvm import mgt
from smlib.stores.lvm.store import MGT_LV

pytestmark = pytest.mark.lvm


def test_bad_sr_uuid_refused(lvmsr):
    hs.bad_sr_uuid_refused(lvmsr)


def test_non_ascii_sizes_refused(lvmsr):
    hs.non_ascii_sizes_refused(lvmsr)


@pytest.mark.parametrize("case", sorted(set(CORPUS) - FILE_ONLY))
def test_damaged_leaf_does_not_wedge(lvmsr, case):
    hs.damaged_leaf_does_not_wedge(lvmsr, case)


def test_gc_never_writes_through_a_damaged_parent(lvmsr):
    hs.gc_never_writes_through_a_damaged_parent(lvmsr)


def _zero_slots(sr, length: int) -> None:
    """The first ``length`` bytes of both MGT slots zeroed."""
    store = sr.store()
    try:
        path = store._activate_lv(MGT_LV)
        size = store.layout().lvs[MGT_LV].size
        with open(path, "r+b") as f:
            for slot in range(mgt.SLOTS):
                f.seek(slot * (size // mgt.SLOTS))
                f.write(bytes(length))
            f.flush()
            os.fsync(f.fileno())
    finally:
        store.close()


LOSSES = {
    "emptied": lambda sr: sr.edit_metadata(lambda _: b""),
    "foreign document": lambda sr: sr.edit_metadata(lambda _: b"<foo/>"),
    # As a freshly formatted MGT: no state at all.
    "MGT slot headers zeroed": lambda sr: _zero_slots(sr, mgt.SLOT_HEADER.size),
}


@pytest.mark.parametrize("how", sorted(LOSSES))
def test_sr_delete_decides_from_volumes(lvmsr, how):
    hs.sr_delete_decides_from_volumes(lvmsr, LOSSES[how])


def test_sr_delete_with_mgt_magics_zeroed(lvmsr):
    """The issue's own reproduction: only the magics zeroed. The rest of each
    slot is data smlib did not write, so the store refuses the SR (181) rather
    than guess; sr_delete removes nothing."""
    hs.sr_delete_decides_from_volumes(lvmsr, lambda sr: _zero_slots(sr, len(mgt.MAGIC)),
                                      codes=(39, 181), recovers=False)


def test_gc_confirms_from_images(lvmsr):
    hs.gc_confirms_from_images(lvmsr)


@pytest.mark.parametrize("name", sorted(hs.BAD_RECORDS))
def test_bad_journal_record_is_181(lvmsr, name):
    hs.bad_journal_record_is_181(lvmsr, name)


def test_failing_replay_is_set_aside(lvmsr):
    hs.failing_replay_is_set_aside(lvmsr)


def test_metadata_record_without_volume(lvmsr):
    hs.metadata_record_without_volume(lvmsr)


def test_resize_past_limit_refused(lvmsr):
    hs.resize_past_limit_refused(lvmsr)


# ------------------------------------------------------------ LVM only

def test_sr_uuid_cannot_reach_another_sr(make_lvmsr, tmp_path):
    """Item 5: sr_uuid text that would select another SR's VG in a pvs
    --select expression, or lead the lock file out of its directory: 143,
    and the other SR keeps every byte."""
    mine, other = make_lvmsr(), make_lvmsr()
    disk = other.create(name="theirs")
    before = other.hashes()
    pwn = tmp_path / "pwn"
    for bad in (f"x || vg_name={other.vg}", f"x/../../../../{pwn} || vg_name={other.vg}"):
        for command, keys in (("vdi_list", {}), ("sr_scan", {}), ("sr_attach", {}),
                              ("vdi_create", {"args": [str(hs.DISK), "x"]})):
            hs.assert_fault(mine.run(command, sr_uuid=bad, **keys), 143)
    assert other.hashes() == before
    assert disk in other.vdis()
    assert not os.path.exists(str(pwn)) and not os.path.exists(str(pwn) + ".lock")


def test_lvm_binary_missing_is_a_coded_fault(lvmsr, tmp_path):
    """Item 11: SMLIB_LVM_BIN naming nothing: a fault with a code (not 1200)."""
    run = lvmsr.run("sr_scan", env={"SMLIB_LVM_BIN": str(tmp_path / "no-lvm")})
    assert run.fault is not None and run.fault.faultCode not in (1200,), run.fault
    run = lvmsr.run("sr_probe", env={"SMLIB_LVM_BIN": str(tmp_path / "no-lvm")})
    assert run.fault is not None and run.fault.faultCode != 1200, run.fault


def test_sr_detach_after_the_vg_vanished_releases_windows(lvmsr, windows_of, monkeypatch):
    """Item 12: the VG removed behind the SR's back while attached: sr_detach
    detaches the loop windows it left (no 1200) instead of keeping them.
    No NBD server here: one would hold the windows open past the test's
    loop-device teardown (this is about the store's windows, not serving)."""
    monkeypatch.setenv("SMLIB_DATAPATH", "none")
    sr = lvmsr
    sr.ok("sr_attach")
    t = sr.create()
    sr.ok("vdi_attach", vdi_uuid=t, args=["true"])
    sr.ok("vdi_activate", vdi_uuid=t, args=["true"])
    assert windows_of(sr.device)
    from helpers.loop_pvs import _lvm

    assert _lvm("vgremove", "-f", sr.vg).returncode == 0
    run = sr.run("sr_detach")
    assert run.fault is None or run.fault.faultCode == 47, run.fault
    assert windows_of(sr.device) == []


def test_gc_skips_without_space(lvmsr):
    """Item 10 on a VG: a filler LV takes all but one extent."""
    from helpers.loop_pvs import _lvm

    from smlib.stores.lvm import lvm2 as lvm

    def fill(sr):
        free = lvm.layout(sr.vg).free_extents()
        assert _lvm("lvcreate", "-Zn", "-Wn", "-l", str(free - 1), "-n", "filler",
                    sr.vg).returncode == 0

    def unfill(sr):
        assert _lvm("lvremove", "-f", f"{sr.vg}/filler").returncode == 0

    hs.gc_skips_without_space(lvmsr, fill, unfill)
