"""The fast in-process tier: LVMStore and LVMSR under pyfakefs with a fake
lvm2 (fakelvm.FakeLVM) that enforces lvm2's rules.

The activation used here is the production one (``lvchange -ay`` and
``/dev/<vg>/<lv>``): the fake makes that node a symlink to the LV's bytes.
The rules the fake enforces are pinned by RULES below, which the real-lvm2
tier (test_rules_real.py) checks against real lvm2 with the same table.
"""

from __future__ import annotations

import os
import uuid
import xmlrpc.client

import pytest
from helpers.crashes import guard_mutations
from helpers.fakelvm import EXTENT, FakeLVM
from helpers.lvm_rules import RULES, apply_rules

from smlib import faults, vhd
from smlib.drivers.lvm import LVMSR
from smlib.protocol import errors
from smlib.protocol.errors import SRError
from smlib.stores.lvm import mgt
from smlib.stores.lvm import store as lvmstore
from smlib.stores.lvm.activation import LVChangeActivation
from smlib.stores.lvm.store import LVMStore

MiB = 1024 * 1024
GiB = 1024 * MiB


@pytest.fixture
def fake(fs, monkeypatch):
    """A FakeLVM with two 4 GiB disks, wired in as the store's lvm2."""
    fs.add_real_file(errors.ERRORCODES_FILE)
    monkeypatch.delenv("SMLIB_LVM_ACTIVATION", raising=False)
    monkeypatch.delenv("SMLIB_LVM_CONFIG", raising=False)
    monkeypatch.setenv("SMLIB_LVM_LOCK_DIR", "/run/lock/smlib")
    monkeypatch.delenv("SM_LOG", raising=False)
    monkeypatch.setenv("SM_LOG", "/var/log/SMlog")
    os.makedirs("/var/log", exist_ok=True)
    lvm = FakeLVM(fs)
    lvm.add_disk("/dev/sdb", 4 * GiB)
    lvm.add_disk("/dev/sdc", 4 * GiB)
    monkeypatch.setattr(lvmstore, "lvm_module", lvm)
    yield lvm
    lvm.check_sizes()


def new_store(sr_uuid: str, device: str = "/dev/sdb") -> LVMStore:
    return LVMStore({"device": device}, sr_uuid)


@pytest.fixture
def store(fake):
    s = new_store(str(uuid.uuid4()))
    s.sr_create()
    yield s
    s.close()


# ------------------------------------------------------------ the rules

def test_fake_follows_the_lvm2_rule_table(fake):
    """Same table as the real-lvm2 tier: error names and final LVs agree."""
    fake.vgcreate("VG_rules", ["/dev/sdb"])
    results, final = apply_rules(fake, "VG_rules", "/dev/sdb")
    assert results == [expected for _, expected in RULES]
    assert final == {"a": 1 * EXTENT, "b": 3 * EXTENT}


def test_store_rename_moves_the_node_and_the_bytes(store, fake):
    """The store's rename through the production activation: the LV's node
    follows it (the fake makes /dev/<vg>/<lv> as lvchange -ay does), the
    bytes come along, the old name is gone from the store and from lvm2."""
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    store.create_vhd(a, 8 * MiB)
    with vhd.open_image(store.activate(a), writable=True) as img:
        img.write(0, b"R" * 4096)
    store.rename(a, b)
    assert store.list_volumes() == [b] and not store.exists(a)
    assert not os.path.exists(f"/dev/{store.vg}/VHD-{a}")
    assert "VHD-" + b in fake.layout(store.vg).lvs and "VHD-" + a not in fake.layout(store.vg).lvs
    with vhd.open_image(store.activate(b)) as img:
        assert img.read(0, 4096) == b"R" * 4096


# ------------------------------------------------------------ the store

def test_store_sr_lifecycle(fake):
    sr = str(uuid.uuid4())
    s = new_store(sr, "/dev/sdb,/dev/sdc")
    assert not s.sr_exists()
    s.sr_create()
    assert s.sr_exists()
    assert s.total_space() == 2 * ((4 * GiB - MiB) // EXTENT) * EXTENT
    assert LVMStore({"device": "/dev/sdc"}, None).probe() == [{"uuid": sr}]
    with pytest.raises(SRError) as err:
        new_store(str(uuid.uuid4()), "/dev/sdc").sr_create()
    assert err.value.name == "LVMPartInUse"
    runs = sum(fake.RUNS.values())
    s.sr_delete()
    assert sum(fake.RUNS.values()) == runs + 2            # vgremove + pvremove
    assert fake.vgs == {} and fake.pv_vg == {}
    assert LVMStore({"device": "/dev/sdc"}, None).probe() == []


def test_sr_create_on_a_missing_device_changes_nothing(fake):
    with pytest.raises(SRError) as err:
        new_store(str(uuid.uuid4()), "/dev/sdb,/dev/nope").sr_create()
    assert err.value.name == "ConfigDeviceInvalid"
    assert fake.pv_vg == {} and fake.vgs == {}


def test_volumes_and_container_sizes(store, fake):
    a = str(uuid.uuid4())
    store.create_vhd(a, 100 * MiB)
    assert store.utilisation(a) == EXTENT                 # deflated: one extent
    store.set_container_size(a, vhd.required_size(100 * MiB))
    assert store.utilisation(a) >= vhd.required_size(100 * MiB)
    assert store.utilisation(a) % EXTENT == 0
    path = store.activate(a)
    assert path == f"/dev/{store.vg}/VHD-{a}"
    with vhd.open_image(path, writable=True) as img:
        img.write(50 * MiB, b"x" * 4096)
        used = img.physical_size
    store.set_container_size(a, used)
    assert store.utilisation(a) == -(-used // EXTENT) * EXTENT
    with vhd.open_image(store.activate(a)) as img:
        assert img.read(50 * MiB, 4096) == b"x" * 4096
    b = str(uuid.uuid4())
    store.create_child(b, a, hidden=True)
    with vhd.open_image(store.activate(b), resolver=store.resolver) as img:
        assert img.hidden and img.parent_locator == f"VHD-{a}"
        assert img.read(50 * MiB, 4096) == b"x" * 4096
    # the store's picture of the VG is what the (fake) lvm2 reports (with
    # production activation it does not track extents: lvm2 placed them)
    fresh = fake.layout(store.vg)
    assert {k: v.size for k, v in store.layout().lvs.items()} == \
        {k: v.size for k, v in fresh.lvs.items()}
    assert store.free_space() == fresh.free_extents() * EXTENT


def test_replace_is_resumable_and_costs_two_runs(store, fake):
    t, new = str(uuid.uuid4()), str(uuid.uuid4()) + ".new"
    store.create_vhd(t, 8 * MiB)
    store.create_vhd(new, 16 * MiB)
    runs = dict(fake.RUNS)
    store.replace(new, t)
    assert fake.RUNS["lvremove"] == runs.get("lvremove", 0) + 1
    assert fake.RUNS["lvrename"] == runs.get("lvrename", 0) + 1
    assert store.list_volumes() == [t]
    with vhd.open_image(store.activate(t)) as img:
        assert img.virtual_size == 16 * MiB
    # a crash after the removal: only src is left; replace finishes it
    store.create_vhd(new, 32 * MiB)
    fake.lvremove(store.vg, ["VHD-" + t])
    again = new_store(store.sr_uuid)
    again.replace(new, t)
    assert again.list_volumes() == [t]
    again.replace(new, t)                                 # done already: no-op
    with vhd.open_image(again.activate(t)) as img:
        assert img.virtual_size == 32 * MiB
    again.close()


def test_store_refuses_bad_names_and_sizes(store, fake):
    for bad in ("../x", "VHD-x", "", "ABC"):
        with pytest.raises(SRError):
            store.create_vhd(bad, MiB)
    with pytest.raises(SRError) as err:
        store.create_vhd(str(uuid.uuid4()), 3 * 1024 ** 4)
    assert err.value.name == "VDISize"
    a = str(uuid.uuid4())
    store.create_vhd(a, 16 * MiB)
    size = store.utilisation(a)
    with pytest.raises(SRError) as err:
        store.set_container_size(a, 64 * GiB)
    assert err.value.name == "SRNoSpace"
    assert list(fake.vgs[store.vg].lvs) == ["MGT", "VHD-" + a]
    assert store.utilisation(a) == size == fake.layout(store.vg).lvs["VHD-" + a].size


def test_mgt_torn_write_keeps_the_previous_state(store):
    store.write_metadata(b"<one/>")
    store.journal_put("k", b"v")
    path, size = store._mgt_path()
    state = mgt.load(path, size, store.sr_uuid)
    newest = state.generation % mgt.SLOTS
    with open(path, "r+b") as f:                          # tear the newest slot
        f.seek(newest * (size // mgt.SLOTS) + mgt.PAYLOAD_OFFSET)
        f.write(b"\0" * 16)
    older = new_store(store.sr_uuid)
    assert older.read_metadata() == b"<one/>"
    assert older.journal_items() == {}
    # and another SR's bookkeeping never validates for this SR
    assert mgt.load(path, size, str(uuid.uuid4())).metadata is None
    older.close()


def test_production_activation_deactivates_what_it_activated(store, fake):
    a = str(uuid.uuid4())
    store.create_vhd(a, 8 * MiB)
    fake.lvchange_activate(store.vg, ["VHD-" + a], False)
    s = new_store(store.sr_uuid)
    assert isinstance(s.activation, LVChangeActivation)
    path = s.activate(a)
    assert os.path.exists(path)
    s.close()                                             # keep=False: undone
    assert not os.path.exists(path)
    s.activate(a, keep=True)
    s.close()                                             # keep=True: stays
    assert os.path.exists(path)
    s.deactivate(a)
    assert not os.path.exists(path)


# ------------------------------------------------------------ the driver

class InProc:
    def __init__(self, dispatch, sr_uuid: str) -> None:
        self.dispatch, self.sr_uuid = dispatch, sr_uuid

    def __call__(self, command: str, **keys):
        keys.setdefault("device_config", {"device": "/dev/sdb"})
        return self.dispatch(LVMSR, command, sr_uuid=self.sr_uuid, **keys)


def test_driver_revert_in_process(fake, dispatch):
    call = InProc(dispatch, str(uuid.uuid4()))
    call("sr_create")
    t = call("vdi_create", args=[str(64 * MiB), "d", "", "", "false", "", "", "false"])["uuid"]
    path = call("vdi_attach", vdi_uuid=t, args=["true"])["params"]
    lv = fake.vgs["VG_XenStorage-" + call.sr_uuid].lvs
    assert lv["VHD-" + t].extents() * EXTENT >= vhd.required_size(64 * MiB)   # inflated
    with vhd.open_image(path, writable=True) as img:
        img.write(0, b"A" * 4096)
    call("vdi_detach", vdi_uuid=t)
    assert lv["VHD-" + t].extents() == 1                                       # deflated
    s = call("vdi_snapshot", vdi_uuid=t)["uuid"]
    path = call("vdi_attach", vdi_uuid=t, args=["true"])["params"]
    with vhd.open_image(path, writable=True, resolver=new_store(call.sr_uuid).resolver) as img:
        img.write(0, b"B" * 4096)
    call("vdi_detach", vdi_uuid=t)
    runs = sum(fake.RUNS.values())
    assert call("vdi_revert", vdi_uuid=s, args=[t]) is None
    revert_runs = sum(fake.RUNS.values()) - runs
    assert revert_runs <= 4, f"vdi_revert made {revert_runs} lvm2 runs"
    st = new_store(call.sr_uuid)
    with vhd.open_image(st.activate(t), resolver=st.resolver) as img:
        assert img.read(0, 4096) == b"A" * 4096
    hidden = [v for v in call("vdi_list") if v["hidden"]]
    assert len(hidden) == 1
    with vhd.open_image(st.activate(hidden[0]["uuid"])) as img:
        assert img.hidden                                  # the VHD flag, not just metadata
    st.close()
    # sr_delete refuses while visible VDIs exist, and then changes nothing
    before = sorted(lv)
    with pytest.raises(xmlrpc.client.Fault) as fault:
        call("sr_delete")
    assert fault.value.faultCode == 39
    assert sorted(lv) == before
    call("vdi_delete", vdi_uuid=t)
    call("vdi_delete", vdi_uuid=s)
    call("sr_delete")
    assert fake.vgs == {}


def test_driver_errors(fake, dispatch):
    call = InProc(dispatch, str(uuid.uuid4()))
    with pytest.raises(xmlrpc.client.Fault) as fault:
        call("sr_create", device_config={})
    assert fault.value.faultCode == 90                    # ConfigDeviceMissing
    with pytest.raises(xmlrpc.client.Fault) as fault:
        call("sr_attach")
    assert fault.value.faultCode == 47                    # SRUnavailable: no VG
    call("sr_create")
    with pytest.raises(xmlrpc.client.Fault) as fault:
        call("sr_create")
    assert fault.value.faultCode == 42                    # SRExists
    # Thin: a detached leaf is deflated, so a 64 GiB VDI fits in 4 GiB ...
    big = call("vdi_create", args=[str(64 * GiB), "big", "", "", "false", "", "", "false"])
    lvs = fake.vgs["VG_XenStorage-" + call.sr_uuid].lvs
    assert lvs["VHD-" + big["uuid"]].extents() == 1
    # ... until it is attached for writing: then it must inflate, and cannot.
    with pytest.raises(xmlrpc.client.Fault) as fault:
        call("vdi_attach", vdi_uuid=big["uuid"], args=["true"])
    assert fault.value.faultCode == 44                    # SRNoSpace
    assert lvs["VHD-" + big["uuid"]].extents() == 1
    assert [v["attached"] for v in call("vdi_list")] == [False]
    # read-only attach needs no inflation
    assert call("vdi_attach", vdi_uuid=big["uuid"], args=["false"])["params"]


def test_attach_makes_the_whole_chain_reachable(fake, dispatch):
    """In production a reader outside the driver (tapdisk) opens the leaf's
    node and finds each parent beside it in /dev/<vg>/ by its locator."""
    call = InProc(dispatch, str(uuid.uuid4()))
    call("sr_create")
    t = call("vdi_create", args=[str(16 * MiB), "d", "", "", "false", "", "", "false"])["uuid"]
    path = call("vdi_attach", vdi_uuid=t, args=["true"])["params"]
    with vhd.open_image(path, writable=True) as img:
        img.write(0, b"C" * 4096)
    call("vdi_detach", vdi_uuid=t)
    call("vdi_snapshot", vdi_uuid=t)
    vg = "VG_XenStorage-" + call.sr_uuid
    fake.lvchange_activate(vg, [n for n, lv in fake.vgs[vg].lvs.items() if lv.active], False)
    path = call("vdi_attach", vdi_uuid=t, args=["false"])["params"]
    assert path == f"/dev/{vg}/VHD-{t}"
    with vhd.open_image(path) as img:                     # the default resolver
        assert img.parent_locator.startswith("VHD-")
        assert img.read(0, 4096) == b"C" * 4096


def test_sr_scan_follows_the_lvs(fake, dispatch):
    call = InProc(dispatch, str(uuid.uuid4()))
    call("sr_create")
    a = call("vdi_create", args=[str(16 * MiB), "a", "", "", "false", "", "", "false"])["uuid"]
    b = call("vdi_create", args=[str(16 * MiB), "b", "", "", "false", "", "", "false"])["uuid"]
    st = new_store(call.sr_uuid)
    st.remove(b)                                          # an LV gone behind our back
    c = str(uuid.uuid4())
    st.create_vhd(c, 32 * MiB)                            # and one made behind our back
    st.close()
    call("sr_scan")
    listing = {v["uuid"]: v for v in call("vdi_list")}
    assert set(listing) == {a, c}
    assert listing[c]["virtual_size"] == str(32 * MiB)
    assert listing[a]["name_label"] == "a"                # known records are kept
    assert listing[a]["physical_utilisation"] == str(EXTENT)


def test_vg_gone_behind_the_srs_back_is_sr_unavailable(fake, dispatch):
    """sr_exists answers from a host-local marker; the real check happens
    under the SR lock and gives the same SRUnavailable."""
    call = InProc(dispatch, str(uuid.uuid4()))
    call("sr_create")
    assert new_store(call.sr_uuid).sr_exists()
    runs = sum(fake.RUNS.values())
    assert new_store(call.sr_uuid).sr_exists()
    assert sum(fake.RUNS.values()) == runs                # no lvm2 run for the answer
    fake.vgremove("VG_XenStorage-" + call.sr_uuid)
    with pytest.raises(xmlrpc.client.Fault) as fault:
        call("vdi_list")
    assert fault.value.faultCode == 47
    os.unlink(new_store(call.sr_uuid)._marker())
    assert not new_store(call.sr_uuid).sr_exists()


def test_resize_while_attached_and_introduce(fake, dispatch):
    call = InProc(dispatch, str(uuid.uuid4()))
    call("sr_create")
    t = call("vdi_create", args=[str(16 * MiB), "d", "", "", "false", "", "", "false"])["uuid"]
    call("vdi_attach", vdi_uuid=t, args=["true"])
    lvs = fake.vgs["VG_XenStorage-" + call.sr_uuid].lvs
    grown = call("vdi_resize", vdi_uuid=t, args=[str(200 * MiB)])
    assert grown["virtual_size"] == str(200 * MiB)
    assert lvs["VHD-" + t].extents() * EXTENT >= vhd.required_size(200 * MiB)  # still inflated
    path = call("vdi_attach", vdi_uuid=t, args=["true"])["params"]
    with vhd.open_image(path, writable=True) as img:      # the whole new size is writable
        img.write(200 * MiB - 4096, b"E" * 4096)
    call("vdi_detach", vdi_uuid=t)
    assert lvs["VHD-" + t].extents() == 1                 # deflated again
    # vdi_introduce: an LV holding a VHD that the metadata does not know
    st = new_store(call.sr_uuid)
    other = str(uuid.uuid4())
    st.create_vhd(other, 8 * MiB)
    st.close()
    rec = call("vdi_introduce", vdi_location=other, new_uuid=other,
               vdi_sm_config={"name_label": "found"})
    assert rec["uuid"] == other and rec["location"] == other
    assert {v["uuid"]: v["name_label"] for v in call("vdi_list")}[other] == "found"


class Stop(BaseException):
    """A crash at a mutation point, in process (os._exit would end pytest)."""


def test_every_lvm_store_mutation_follows_a_point(fake, dispatch, monkeypatch):
    """Every command, and the replay after a crash, with crash injection
    armed at a point that never comes (so points are counted): each
    LVMStore mutation must follow a point passed since the previous one
    (helpers.crashes.guard_mutations), so a crash test can stop between any
    two. Runs on the fake lvm2: the real tier runs the same code as programs."""
    call = InProc(dispatch, str(uuid.uuid4()))
    call("sr_create")
    seen = guard_mutations(monkeypatch, LVMStore)
    monkeypatch.setenv(faults.CRASH_ENV, "no.such-point")
    faults.reset_points()

    def write(vdi: str, byte: bytes) -> None:
        path = call("vdi_attach", vdi_uuid=vdi, args=["true"])["params"]
        with vhd.open_image(path, writable=True,
                            resolver=new_store(call.sr_uuid).resolver) as img:
            img.write(0, byte * 4096)
        call("vdi_detach", vdi_uuid=vdi)

    t = call("vdi_create", args=[str(16 * MiB), "d", "", "", "false", "", "", "false"])["uuid"]
    write(t, b"A")
    s1 = call("vdi_snapshot", vdi_uuid=t)["uuid"]
    write(t, b"B")
    clone = call("vdi_clone", vdi_uuid=t)["uuid"]
    single = call("vdi_snapshot", vdi_uuid=clone, driver_params={"type": "single"})["uuid"]
    call("vdi_revert", vdi_uuid=s1, args=[t])                 # an empty snapshot
    write(s1, b"C")
    call("vdi_revert", vdi_uuid=s1, args=[t])                 # a written one: frozen first
    call("vdi_resize", vdi_uuid=t, args=[str(32 * MiB)])
    call("vdi_delete", vdi_uuid=single)
    # A crash in the middle of a delete; the next command replays it.
    monkeypatch.setattr(faults.os, "_exit", lambda status: (_ for _ in ()).throw(Stop()))
    monkeypatch.setenv(faults.CRASH_ENV, "delete.remove")
    with pytest.raises(Stop):
        call("vdi_delete", vdi_uuid=clone)
    monkeypatch.setenv(faults.CRASH_ENV, "no.such-point")
    faults.reset_points()
    call("sr_scan")
    assert clone not in {v["uuid"] for v in call("vdi_list")}
    assert {"create_vhd", "create_child", "rename", "replace", "remove", "write_metadata",
            "journal_put", "journal_remove", "remove_garbage",
            "set_container_size"} <= set(seen)
