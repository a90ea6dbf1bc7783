"""LVMStore against real lvm2 on a loop device (DESIGN tier 4).

Every assertion about LVs is checked with a fresh ``pvs`` report from lvm2
itself, not with the store's own picture of the VG.
"""

from __future__ import annotations

import os
import uuid

import pytest

from smlib import vhd
from smlib.protocol.errors import SRError
from smlib.stores.lvm import lvm2 as lvm
from smlib.stores.lvm.store import LVMStore

pytestmark = pytest.mark.lvm
MiB = 1024 * 1024


def lvs_now(store: LVMStore) -> dict[str, lvm.LVInfo]:
    return lvm.layout(store.vg).lvs


def test_sr_create_makes_vg_and_mgt(lvm_store):
    found = lvs_now(lvm_store)
    assert set(found) == {"MGT"}
    assert lvm_store.sr_exists()
    assert lvm_store.list_volumes() == []
    assert lvm_store.read_metadata() is None
    assert lvm_store.total_space() >= 15 * 1024 * MiB
    assert lvm_store.free_space() == lvm_store.total_space() - found["MGT"].size


def test_sr_create_refuses_a_device_of_another_vg(lvm_store, sr_uuid):
    dev = next(iter(lvm_store.layout().pvs))
    with pytest.raises(SRError) as err:
        LVMStore({"device": dev}, str(uuid.uuid4())).sr_create()
    assert err.value.name == "LVMPartInUse"
    with pytest.raises(SRError) as err:
        LVMStore({"device": dev}, sr_uuid).sr_create()
    assert err.value.name == "SRExists"
    assert set(lvs_now(lvm_store)) == {"MGT"}


def test_missing_device_config_and_bad_device():
    with pytest.raises(SRError) as err:
        LVMStore({}, str(uuid.uuid4()))
    assert err.value.name == "ConfigDeviceMissing"
    with pytest.raises(SRError) as err:
        LVMStore({"device": "/dev/does-not-exist"}, str(uuid.uuid4())).sr_create()
    assert err.value.name == "ConfigDeviceInvalid"


def test_volumes_round_trip(lvm_store, windows_of):
    s = lvm_store
    a = str(uuid.uuid4())
    s.create_vhd(a, 64 * MiB)
    info = lvs_now(s)["VHD-" + a]
    assert info.size == 4 * MiB                       # deflated: one extent
    # inflate for writing, write, read back through a fresh activation
    s.set_container_size(a, vhd.required_size(64 * MiB))
    assert lvs_now(s)["VHD-" + a].size >= vhd.required_size(64 * MiB)
    data = os.urandom(3 * MiB)
    with vhd.open_image(s.activate(a), writable=True) as img:
        img.write(MiB, data)
        used = img.physical_size
    s.close()
    assert windows_of(next(iter(s.layout().pvs))) == []   # close detached them
    s.set_container_size(a, used)                        # deflate
    assert lvs_now(s)["VHD-" + a].size == -(-used // (4 * MiB)) * 4 * MiB
    with vhd.open_image(s.activate(a)) as img:
        assert img.read(MiB, len(data)) == data
    # child, rename, replace
    b = str(uuid.uuid4())
    s.create_child(b, a)
    with vhd.open_image(s.activate(b), resolver=s.resolver) as img:
        assert img.parent_locator == "VHD-" + a
        assert img.read(MiB, len(data)) == data
    s.rename(b, b + ".new")
    c = str(uuid.uuid4())
    s.create_vhd(c, 8 * MiB)
    s.replace(b + ".new", c)
    names = set(lvs_now(s))
    assert names == {"MGT", "VHD-" + a, "VHD-" + c}
    s.replace(b + ".new", c)                              # repeated: no-op
    with vhd.open_image(s.activate(c), resolver=s.resolver) as img:
        assert img.virtual_size == 64 * MiB
    s.remove(c)
    s.remove(c)                                           # missing: not an error
    assert set(lvs_now(s)) == {"MGT", "VHD-" + a}
    assert s.list_volumes() == [a]


def test_store_picture_matches_lvm2(lvm_store):
    """After a mix of changes the store's own layout equals a fresh report."""
    s = lvm_store
    names = [str(uuid.uuid4()) for _ in range(4)]
    for n in names:
        s.create_vhd(n, 32 * MiB)
    s.set_container_size(names[1], 40 * MiB)
    s.remove(names[2])
    s.set_container_size(names[1], 4 * MiB)
    s.rename(names[3], names[2])
    fresh = lvm.layout(s.vg)
    mine = s.layout()
    assert {k: (v.size, v.segments) for k, v in mine.lvs.items()} == \
        {k: (v.size, v.segments) for k, v in fresh.lvs.items()}
    assert sorted((g.start, g.count) for g in mine.free) == \
        sorted((g.start, g.count) for g in fresh.free)


def test_create_errors_leave_nothing(lvm_store):
    s = lvm_store
    a = str(uuid.uuid4())
    s.create_vhd(a, 8 * MiB)
    with pytest.raises(SRError) as err:
        s.create_vhd(a, 8 * MiB)
    assert err.value.name == "VDIExists"
    with pytest.raises(SRError) as err:
        s.set_container_size(a, 64 * 1024 ** 3)
    assert err.value.name == "SRNoSpace"
    with pytest.raises(SRError):
        s.create_vhd(str(uuid.uuid4()), 0)                # the VHD library refuses size 0
    assert set(lvs_now(s)) == {"MGT", "VHD-" + a}
    assert lvs_now(s)["VHD-" + a].size == 4 * MiB


def test_bookkeeping_survives_a_new_store(lvm_store, sr_uuid):
    s = lvm_store
    s.write_metadata(b"<sr/>")
    s.journal_put("revert", b"one")
    s.journal_put("x", b"two")
    s.journal_remove("x")
    s.close()
    again = LVMStore(dict(s.device_config), sr_uuid)
    try:
        assert again.read_metadata() == b"<sr/>"
        assert again.journal_items() == {"revert": b"one"}
    finally:
        again.close()


def test_loop_activation_refuses_a_multi_segment_lv(lvm_store):
    s = lvm_store
    a = str(uuid.uuid4())
    s.create_vhd(a, 8 * MiB)
    run = s.layout().lvs["VHD-" + a].segments[0][1]
    # fragment it behind the store's back: grow it onto a far-away extent
    lvm.lvresize(s.vg, "VHD-" + a, 2, where=[lvm.Extents(run.pv, run.start + 100, 1)])
    fresh = LVMStore(dict(s.device_config), s.sr_uuid)
    with pytest.raises(SRError) as err:
        fresh.activate(a)
    assert err.value.name == "VDIUnavailable"
    assert "contiguous" in str(err.value)


def test_probe_and_delete(lvm_store, sr_uuid, windows_of):
    s = lvm_store
    dev = next(iter(s.layout().pvs))
    assert LVMStore({"device": dev}, None).probe() == [{"uuid": sr_uuid}]
    s.create_vhd(str(uuid.uuid4()), 8 * MiB)
    s.activate(s.list_volumes()[0])
    s.sr_delete()
    assert lvm.layout(s.vg) is None
    assert windows_of(dev) == []
    assert lvm.pv_owners().get(os.path.realpath(dev)) is None
    assert LVMStore({"device": dev}, None).probe() == []


def test_lvm_error_message_is_carried():
    with pytest.raises(SRError) as err:
        lvm.lvrename("VG_XenStorage-" + str(uuid.uuid4()), "VHD-a", "VHD-b")
    assert err.value.name == "LVMCreate"
    assert "lvrename" in err.value.opterr and "not found" in err.value.opterr.lower()


def test_two_devices_one_vg(loop_pv, sr_uuid, tmp_path, monkeypatch):
    monkeypatch.setenv("SMLIB_LVM_LOCK_DIR", str(tmp_path / "locks"))
    a, b = loop_pv(), loop_pv()
    s = LVMStore({"device": f"{a},{b}"}, sr_uuid)
    s.sr_create()
    found = lvm.layout(s.vg)
    assert set(found.pvs) == {a, b}
    assert s.total_space() == found.total_extents() * found.extent_size > 30 * 1024 ** 3
    names = [str(uuid.uuid4()) for _ in range(3)]
    for n in names:                                   # placed mid-gap, on either PV
        s.create_vhd(n, 8 * MiB)
        with vhd.open_image(s.activate(n)) as img:
            assert img.virtual_size == 8 * MiB
    assert {run.pv for lv in lvs_now(s).values() for _, run in lv.segments} == {a, b}
    s.close()
    for n in names:
        s.remove(n)
    s.sr_delete()
    owners = lvm.pv_owners()
    assert os.path.realpath(a) not in owners and os.path.realpath(b) not in owners


def test_sr_create_refuses_a_device_holding_data(loop_pv, sr_uuid):
    """lvm2 finds a signature (here: swap) and is not allowed to wipe it."""
    import shutil
    import subprocess

    if shutil.which("mkswap") is None:
        pytest.skip("no mkswap to put a signature on the device")
    dev = loop_pv()
    subprocess.run(["mkswap", dev], check=True, capture_output=True)
    with open(dev, "rb") as f:
        before = f.read(1024 * 1024)
    with pytest.raises(SRError) as err:
        LVMStore({"device": dev}, sr_uuid).sr_create()
    assert err.value.name == "LVMCreate" and "signature" in err.value.opterr
    with open(dev, "rb") as f:
        assert f.read(1024 * 1024) == before
    assert os.path.realpath(dev) not in lvm.pv_owners()
