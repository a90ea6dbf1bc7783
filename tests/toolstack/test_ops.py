"""What the toolstack sends for each operation, and smaller pieces of ops/cli."""

from __future__ import annotations

import json
import xmlrpc.client

import pytest

from smlib.toolstack.cli.args import UsageError, parse_size
from smlib.toolstack.db import SRRecord, VDIRecord
from smlib.toolstack.ops import Toolstack
from smlib.toolstack.runner import NULL_REF, DriverFault, Runner

# A protocol probe (a stand-in for a driver, used because no real driver
# reports what it received): it logs each request as JSON lines and answers
# like a driver that can revert in place, introducing what it makes into the
# toolstack's served XenAPI through the module real drivers use.
PROBE = """
import json, os, sys, uuid, xmlrpc.client
(params,), method = xmlrpc.client.loads(sys.argv[1])
with open(os.environ["PROBE_LOG"], "a") as log:
    log.write(json.dumps({"method": method, "params": params,
                          "argc": len(sys.argv), "originator": os.environ.get("ORIGINATOR"),
                          "socket": os.environ.get("SMLIB_XAPI_SOCKET")})
              + "\\n")
answers = {
    "sr_get_driver_info": {"name": "probe", "description": "", "vendor": "", "copyright": "",
                           "driver_version": "1", "required_api_version": "1.0",
                           "capabilities": ["VDI_CREATE", "VDI_SNAPSHOT", "VDI_REVERT"],
                           "configuration": []},
    "vdi_create": {"uuid": str(uuid.uuid4()), "location": "loc-new"},
    "vdi_snapshot": {"uuid": str(uuid.uuid4()), "location": "loc-snap"},
}
if method in ("vdi_create", "vdi_snapshot"):
    from smlib.protocol.sr import Call
    from smlib.xapi import db
    changes = db.Changes()
    changes.introduced = [db.VDIFacts(answers[method]["uuid"], answers[method]["location"])]
    db.tell(Call(params), changes, "ProbeSR")
print(xmlrpc.client.dumps((answers.get(method),), methodresponse=True, allow_none=True))
"""


@pytest.fixture
def probe(db, tmp_path, monkeypatch, write_driver):
    ddir = tmp_path / "probe"
    ddir.mkdir()
    write_driver(str(ddir), "ProbeSR", PROBE)
    log = tmp_path / "probe.log"
    monkeypatch.setenv("PROBE_LOG", str(log))

    def calls() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()]

    return Toolstack(db, Runner(str(ddir))), calls


def test_requests_are_shaped_like_xapis(probe):
    ts, calls = probe
    sr = ts.sr_create("probe", {"location": "/srv"}, "p")
    disk = ts.vdi_create(sr, 10 << 30, "data disk", "desc")
    snap = ts.vdi_snapshot(disk, {"type": "single"})
    assert ts.VDI_revert(snap.ref) == disk.ref  # in place: the target's own ref

    log = calls()
    # As xapi: a snapshot is followed by vdi_update of the new VDI.
    assert [c["method"] for c in log] == [
        "sr_get_driver_info", "sr_create", "sr_attach", "sr_scan",
        "vdi_create", "vdi_snapshot", "vdi_update", "vdi_revert"]
    for call in log:
        params = call["params"]
        assert call["argc"] == 2 and call["originator"] == "SM"
        assert params["command"] == call["method"]
        assert params["host_ref"].startswith("OpaqueRef:")
        if call["method"] == "sr_get_driver_info":
            assert "session_ref" not in params and "sr_uuid" not in params
            continue
        # The session the toolstack's XenAPI server issued, and its socket.
        assert params["session_ref"] in ts.server.sessions
        assert call["socket"] == ts.server.path
        assert params["subtask_of"].startswith("OpaqueRef:")
        assert params["sr_ref"] == sr.ref and params["sr_uuid"] == sr.uuid
        assert params["device_config"] == {"location": "/srv", "SRmaster": "true"}
    create = log[4]["params"]
    assert create["args"] == ["10737418240", "data disk", "desc", NULL_REF, "false",
                              "19700101T00:00:00Z", NULL_REF, "false"]
    assert create["vdi_sm_config"] == {} and create["vdi_type"] == "user"
    snapshot = log[5]["params"]
    assert (snapshot["vdi_ref"], snapshot["vdi_uuid"], snapshot["vdi_location"]) == (
        disk.ref, disk.uuid, "loc-new")
    assert snapshot["driver_params"] == {"type": "single"}
    revert = log[7]["params"]
    # vdi_* describe the snapshot; args[0] is the target's OpaqueRef, as xapi sends.
    assert (revert["vdi_ref"], revert["vdi_uuid"], revert["vdi_location"]) == (
        snap.ref, snap.uuid, "loc-snap")
    assert revert["args"] == [disk.ref]
    assert revert["vdi_on_boot"] == "persist" and revert["vdi_allow_caching"] == "false"


def test_vdi_revert_by_ref_returns_the_clone_on_dummy(ts):
    sr = ts.sr_create("dummy", {}, "d")
    disk = ts.vdi_create(sr, 1 << 20, "d")
    snap = ts.vdi_snapshot(disk)
    ref = ts.VDI_revert(snap.ref)
    assert ref != disk.ref and ts.db.get(VDIRecord, ref).name_label == "d"
    assert ts.db.get(VDIRecord, snap.ref).snapshot_of == ref


def test_sr_create_that_cannot_attach_is_taken_back(ts, flaky):
    with pytest.raises(DriverFault) as caught:
        flaky("sr_attach", code=47).sr_create("dummy", {}, "d")
    assert caught.value.code == 47 and caught.value.name == "SRUnavailable"
    assert ts.db.select(SRRecord) == []


@pytest.mark.parametrize("text, size", [
    ("512", 512), ("64MiB", 64 << 20), ("64mib", 64 << 20), ("1G", 1 << 30),
    ("2TiB", 2 << 40), ("500MB", 500 * 10**6), ("4 KiB", 4096),
])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "-1", "1.3b", "12XB", "0x10"])
def test_bad_sizes(text):
    with pytest.raises(UsageError):
        parse_size(text)


def test_fault_with_an_unknown_code_keeps_the_code():
    from smlib.toolstack.runner import parse_response

    text = xmlrpc.client.dumps(xmlrpc.client.Fault(9999, "odd"), methodresponse=True)
    with pytest.raises(DriverFault) as caught:
        parse_response(text, "sr_scan")
    assert caught.value.code == 9999 and caught.value.xapi_name == "SR_BACKEND_FAILURE_9999"


def test_recovery_of_a_revert_killed_before_its_point_of_no_return(ts):
    from smlib.toolstack.recovery import recover_pending

    sr = ts.sr_create("dummy", {}, "d")
    disk = ts.vdi_create(sr, 1 << 20, "d")
    clone = ts.vdi_clone(ts.vdi_snapshot(disk))
    # What revert_vdi records between its clone and its decision to delete.
    ts.db.pending_add("vdi_revert", {"phase": "prepare", "target": disk.ref,
                                     "clone": clone.ref})
    ts.db.pending_add("from_the_future", {})
    notes = recover_pending(ts)
    assert notes[0] == f"an interrupted vdi-revert of {disk.uuid}: rolled back"
    assert "unknown kind 'from_the_future' left alone" in notes[1]
    assert ts.db.get(VDIRecord, clone.ref) is None and ts.db.get(VDIRecord, disk.ref)
    assert [kind for _id, kind, _body in ts.db.pending()] == ["from_the_future"]
