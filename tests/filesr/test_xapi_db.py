"""FileSR and DummySR keep xapi's database as sm does (XAPI-CONTRACT section 2).

The drivers run as programs with the keys xapi's sm_exec builds; the stand-in
xapi (tests/helpers/xapi_standin.py: the toolstack's XenAPI server, in this
process, over a real SQLite record store and a real Unix socket) holds the
records, and every command's effect on them is checked: introduced, forgotten,
updated, the SR's sizes, and sr_scan's synchronisation by location.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid as uuidlib

import pytest
from helpers.filesr_helpers import DISK, MiB, pattern
from helpers.xapi_standin import StandIn, XapiFileSR

CREATE = [str(DISK), "data", "a disk", "OpaqueRef:NULL", "false", "19700101T00:00:00Z",
          "OpaqueRef:NULL", "false"]


@pytest.fixture
def standin(tmp_path):
    s = StandIn(str(tmp_path))
    yield s
    s.close()


@pytest.fixture
def sr(tmp_path, harness_fns, standin) -> XapiFileSR:
    h = XapiFileSR(str(tmp_path), harness_fns, standin)
    h.ok("sr_create", args=["0"])
    return h


def test_create_introduces_the_vdi_xapi_looks_up(sr):
    uuid = sr.ok("vdi_create", args=CREATE)["uuid"]
    rec = sr.xapi.vdi(uuid)  # what xapi does next: Db.VDI.get_by_uuid
    assert rec is not None and rec.sr_ref == sr.record.ref
    assert (rec.location, rec.name_label, rec.name_description) == (uuid, "data", "a disk")
    assert rec.managed and not rec.read_only and not rec.is_a_snapshot
    assert rec.virtual_size == DISK
    assert rec.physical_utilisation == os.path.getsize(sr.path(uuid))
    assert rec.sm_config == {} and rec.snapshot_of is None
    srec = sr.xapi.sr(sr.sr_uuid)
    assert srec.virtual_allocation == DISK
    assert srec.physical_size > 0 and 0 < srec.physical_utilisation <= srec.physical_size


def test_snapshot_introduces_the_snapshot_and_the_base_as_sm_does(sr):
    leaf = sr.ok("vdi_create", args=CREATE)["uuid"]
    sr.write(leaf, 0, pattern("A"))
    snap = sr.ok("vdi_snapshot", vdi_uuid=leaf)
    recs = sr.records()
    assert snap["location"] in {r.location for r in recs.values()}  # xapi finds it by location
    base = recs[leaf].sm_config["vhd-parent"]
    assert set(recs) == {leaf, snap["uuid"], base}
    assert recs[snap["uuid"]].sm_config == {"vhd-parent": base}
    assert recs[snap["uuid"]].is_a_snapshot and recs[snap["uuid"]].read_only is False
    assert recs[snap["uuid"]].snapshot_of == recs[leaf].ref
    b = recs[base]
    assert (b.managed, b.read_only, b.name_label) == (False, True, "base copy")
    assert b.physical_utilisation == os.path.getsize(sr.path(base))
    # The leaf's volume is a new empty child now: its utilisation was updated.
    assert recs[leaf].physical_utilisation == os.path.getsize(sr.path(leaf))
    clone = sr.ok("vdi_clone", vdi_uuid=leaf)["uuid"]
    recs = sr.records()
    assert recs[clone].managed and not recs[clone].is_a_snapshot
    assert recs[clone].sm_config["vhd-parent"] in recs


def test_resize_updates_virtual_size(sr):
    uuid = sr.ok("vdi_create", args=CREATE)["uuid"]
    sr.ok("vdi_resize", vdi_uuid=uuid, args=[str(2 * DISK)])
    assert sr.xapi.vdi(uuid).virtual_size == 2 * DISK
    assert sr.xapi.sr(sr.sr_uuid).virtual_allocation == 2 * DISK


def test_delete_forgets_and_gc_forgets_the_bases_it_removes(sr):
    leaf = sr.ok("vdi_create", args=CREATE)["uuid"]
    snap = sr.ok("vdi_snapshot", vdi_uuid=leaf)["uuid"]
    base = sr.records()[leaf].sm_config["vhd-parent"]
    sr.ok("vdi_delete", vdi_uuid=snap)
    recs = sr.records()
    assert snap not in recs
    on_disk = {n[:-4] for n in os.listdir(sr.location) if n.endswith(".vhd")}
    assert set(recs) == on_disk  # GC's removals are forgotten too
    if base not in on_disk:
        assert recs[leaf].sm_config == {}  # no parent left


def test_introduce_makes_the_record_xapi_looks_up(sr):
    uuid = sr.ok("vdi_create", args=CREATE)["uuid"]
    with open(sr.path(uuid), "rb") as f:
        data = f.read()
    sr.ok("vdi_delete", vdi_uuid=uuid)
    assert sr.xapi.vdi(uuid) is None
    with open(sr.path(uuid), "wb") as f:
        f.write(data)
    new = str(uuidlib.uuid4())
    got = sr.ok("vdi_introduce", new_uuid=new, vdi_location=uuid,
                vdi_sm_config={"name_label": "found"})
    rec = sr.xapi.vdi(new)
    assert rec is not None and rec.location == got["location"] == new
    assert rec.name_label == "found" and rec.virtual_size == DISK


def test_revert_by_opaque_ref_updates_the_target(sr):
    t = sr.ok("vdi_create", args=CREATE)["uuid"]
    s = sr.ok("vdi_snapshot", vdi_uuid=t)["uuid"]
    sr.ok("vdi_resize", vdi_uuid=t, args=[str(3 * DISK)])
    assert sr.xapi.vdi(t).virtual_size == 3 * DISK
    target = sr.xapi.vdi(t)
    # As xapi: vdi_* name the snapshot, args[0] is the target's OpaqueRef.
    assert sr.ok("vdi_revert", vdi_uuid=s, args=[target.ref]) is None
    rec = sr.xapi.vdi(t)
    assert rec.ref == target.ref and rec.virtual_size == DISK
    assert rec.physical_utilisation == os.path.getsize(sr.path(t))
    assert rec.sm_config["vhd-parent"] in sr.records()
    assert "VDI.get_uuid" in sr.xapi.calls


def test_scan_synchronises_by_location(sr):
    keep = sr.ok("vdi_create", args=CREATE)["uuid"]
    gone = sr.ok("vdi_create", args=CREATE)["uuid"]
    os.unlink(sr.path(gone))  # only in the database now
    found = str(uuidlib.uuid4())
    from smlib import vhd

    vhd.create(sr.path(found), 2 * DISK)  # only on disk
    sr.xapi.db.update(sr.xapi.vdi(keep), virtual_size=1, read_only=True)  # differs
    kept_ref = sr.xapi.vdi(keep).ref
    sr.ok("sr_scan")
    recs = sr.records()
    assert set(recs) == {keep, found}
    assert recs[keep].ref == kept_ref  # updated, not re-introduced
    assert recs[keep].virtual_size == DISK and not recs[keep].read_only
    assert recs[found].virtual_size == 2 * DISK and recs[found].managed
    # In sync now: a second scan changes nothing.
    calls = len(sr.xapi.calls)
    sr.ok("sr_scan")
    new_calls = sr.xapi.calls[calls:]
    assert not [c for c in new_calls if c.startswith("VDI.") and "get" not in c]


def test_no_xapi_at_the_socket_changes_the_sr_and_says_so(sr, sm_log, tmp_path):
    r = sr.run("vdi_create", args=CREATE, env={"SMLIB_XAPI_SOCKET": str(tmp_path / "none")})
    uuid = r.ok()["uuid"]
    assert os.path.exists(sr.path(uuid)) and sr.xapi.vdi(uuid) is None
    with open(sm_log) as f:
        assert "xapi database not synchronised (vdi_create): no xapi socket" in f.read()
    sr.ok("sr_scan")  # xapi back: the scan brings the record in
    assert sr.xapi.vdi(uuid).virtual_size == DISK


def test_xapi_failure_is_a_coded_fault_and_scan_repairs(sr, tmp_path, harness_fns):
    # An SR xapi does not know: db_introduce answers HANDLE_INVALID.
    r = sr.run("vdi_create", args=CREATE, sr_ref="OpaqueRef:unknown")
    assert r.fault is not None and r.fault.faultCode == 78, r.fault  # VDICreate, as sm
    assert "HANDLE_INVALID" in r.fault.faultString
    on_disk = [n[:-4] for n in os.listdir(sr.location) if n.endswith(".vhd")]
    assert len(on_disk) == 1  # the storage change is complete
    assert sr.records() == {}
    sr.ok("sr_scan")
    assert set(sr.records()) == set(on_disk)


def test_a_xapi_that_never_answers_is_a_bounded_coded_fault(sr, tmp_path):
    path = str(tmp_path / "hung")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    held = []
    stop = threading.Event()

    def accept():  # accept and never answer
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    started = time.monotonic()
    try:
        r = sr.run("vdi_create", args=CREATE,
                   env={"SMLIB_XAPI_SOCKET": path, "SMLIB_XAPI_TIMEOUT": "1"})
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        listener.close()
    assert r.fault is not None and r.fault.faultCode == 78 and "timed out" in r.fault.faultString
    assert time.monotonic() - started < 15


def test_dummysr_keeps_its_vdis_in_xapi(run_driver, xapi_params, standin):
    sr_uuid = str(uuidlib.uuid4())
    rec = standin.add_sr("dummy", sr_uuid, {})

    def call(command, **keys):
        params = xapi_params(command, sr_uuid=sr_uuid, sr_ref=rec.ref,
                             session_ref=standin.session, **keys)
        return run_driver("DummySR", params, env=standin.env).ok()

    uuid = call("vdi_create", args=CREATE)["uuid"]
    v = standin.vdi(uuid)
    assert (v.name_label, v.virtual_size, v.location) == ("data", DISK, uuid)
    keys = dict(vdi_uuid=uuid, vdi_ref=v.ref, vdi_location=v.location)
    snap = call("vdi_snapshot", **keys)["uuid"]
    assert standin.vdi(snap).virtual_size == DISK and standin.vdi(snap).read_only
    call("vdi_resize", args=[str(4 * MiB + DISK)], **keys)
    assert standin.vdi(uuid).virtual_size == 4 * MiB + DISK
    call("vdi_delete", **keys)
    assert standin.vdi(uuid) is None and standin.vdi(snap) is not None
