"""vdi_revert through the real drivers/FileSR executable, as xapi calls it.

Contents are judged by pyvhdi. The OpaqueRef form of the target is
resolved by the driver through the XenAPI package against a real XML-RPC
server on a Unix socket that answers session.* and VDI.get_uuid the way
xapi does (status/value envelopes, HANDLE_INVALID, SESSION_INVALID).
"""

from __future__ import annotations

import os
import shutil
import socketserver
import threading
import uuid as uuidlib
from xmlrpc.server import SimpleXMLRPCDispatcher, SimpleXMLRPCRequestHandler

import pytest
from helpers.filesr_helpers import DISK, pyvhdi_read, tree_hashes
from helpers.revert_scenarios import (
    P1,
    P2,
    P3,
    assert_holds,
    assert_repeat_changes_nothing,
    assert_reverted_disk_is_ordinary,
    first_revert,
    revert_across_resize,
    revert_to_empty_single_and_written,
)
from helpers.xapi_standin import StandIn

from smlib import vhd


class _Handler(SimpleXMLRPCRequestHandler):
    disable_nagle_algorithm = False  # a TCP option: Unix sockets refuse it

    def address_string(self) -> str:  # Unix sockets have no peer address
        return "unix"

    def log_message(self, *args) -> None:
        return None


class FakeXapi(socketserver.ThreadingMixIn, socketserver.UnixStreamServer,
               SimpleXMLRPCDispatcher):
    """The part of xapi's XML-RPC API the driver uses, over a Unix socket."""

    daemon_threads = True
    logRequests = False

    def __init__(self, path: str) -> None:
        SimpleXMLRPCDispatcher.__init__(self, allow_none=True, encoding=None)
        socketserver.UnixStreamServer.__init__(self, path, _Handler)
        self.sessions: set[str] = set()
        self.vdis: dict[str, str] = {}  # OpaqueRef -> uuid
        self.calls: list[str] = []
        self.register_function(self.login, "session.login_with_password")
        self.register_function(self.logout, "session.logout")
        self.register_function(self.vdi_get_uuid, "VDI.get_uuid")

    @staticmethod
    def success(value):
        return {"Status": "Success", "Value": value}

    @staticmethod
    def failure(*desc):
        return {"Status": "Failure", "ErrorDescription": list(desc)}

    def login(self, user, password, version="1.0", originator=""):
        ref = f"OpaqueRef:{uuidlib.uuid4()}"
        self.sessions.add(ref)
        return self.success(ref)

    def logout(self, session):
        self.sessions.discard(session)
        return self.success("")

    def vdi_get_uuid(self, session, ref):
        self.calls.append(ref)
        if session not in self.sessions:
            return self.failure("SESSION_INVALID", session)
        if ref not in self.vdis:
            return self.failure("HANDLE_INVALID", "VDI", ref)
        return self.success(self.vdis[ref])


@pytest.fixture
def fake_xapi():
    # XenAPI's Unix transport spells the path with "/" as "_": no "_" allowed.
    d = f"/tmp/smx{os.getpid()}{uuidlib.uuid4().hex[:8]}"
    os.makedirs(d)
    server = FakeXapi(os.path.join(d, "xapi"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(d, ignore_errors=True)


def xapi_session(server: FakeXapi) -> str:
    """Log in as a client would (the driver then reuses this session)."""
    import XenAPI

    s = XenAPI.Session("http://" + server.server_address.replace("/", "_") + "/",
                       transport=XenAPI.UDSTransport())
    s.xenapi.login_with_password("root", "", "1.0", "filesr-test")
    return s._session


def test_revert_semantics(filesr, tmp_path):
    sr = filesr
    t, s1, s2, _before, after = first_revert(sr)
    assert after[s1]["snapshot_of"] == t and after[s2]["snapshot_of"] == t
    assert os.path.exists(sr.path(t))

    # The target as real xapi names it: an OpaqueRef resolved over XenAPI,
    # from the records of a stand-in xapi (the toolstack's XenAPI server).
    xapi = StandIn(str(tmp_path))
    try:
        sr_ref = xapi.add_sr("file", sr.sr_uuid, sr.dc).ref
        keys = dict(sr_ref=sr_ref, session_ref=xapi.session, env=xapi.env)
        sr.run("sr_scan", **keys).ok()
        t_ref = xapi.vdi(t).ref
        r = sr.run("vdi_revert", vdi_uuid=s2, vdi_location=s2, vdi_ref=xapi.vdi(s2).ref,
                   args=[t_ref], **keys)
        assert r.ok() is None
        assert xapi.calls.count("VDI.get_uuid") == 1
    finally:
        xapi.close()
    assert_holds(sr, t, P2)
    assert_holds(sr, s1, P1)
    assert_holds(sr, s2, P2)

    sr.ok("vdi_revert", vdi_uuid=s1, args=[t])
    assert_holds(sr, t, P1)
    assert_holds(sr, s2, P2)

    assert_repeat_changes_nothing(sr, s1, t)
    assert_reverted_disk_is_ordinary(sr, t, s1)


def test_opaque_ref_unknown_to_xapi_is_vdi_missing(filesr, fake_xapi):
    sr = filesr
    t = sr.create()
    s = sr.ok("vdi_snapshot", vdi_uuid=t)["uuid"]
    hashes = tree_hashes(sr.location)
    r = sr.run("vdi_revert", vdi_uuid=s, args=["OpaqueRef:nope"],
               session_ref=xapi_session(fake_xapi),
               env={"SM_XAPI_SOCKET": fake_xapi.server_address})
    assert r.fault is not None and r.fault.faultCode == 144
    assert tree_hashes(sr.location) == hashes


def test_revert_restores_virtual_size(filesr):
    sr = filesr
    t, s = revert_across_resize(sr)
    with vhd.open_image(sr.path(t)) as img:
        assert img.virtual_size == DISK
    import pyvhdi

    f = pyvhdi.file()
    f.open(sr.path(t))
    assert f.get_media_size() == DISK
    f.close()
    # And forward again to a snapshot taken at the larger size.
    sr.ok("vdi_resize", vdi_uuid=t, args=[str(2 * DISK)])
    sr.write(t, DISK, P2)
    big = sr.ok("vdi_snapshot", vdi_uuid=t)["uuid"]
    sr.ok("vdi_revert", vdi_uuid=s, args=[t])
    sr.ok("vdi_revert", vdi_uuid=big, args=[t])
    assert sr.vdis()[t]["virtual_size"] == str(2 * DISK)
    # pyvhdi cannot read a chain whose sizes differ (it stops at the
    # parent's size), so smlib.vhd judges beyond the first DISK bytes.
    with vhd.open_image(sr.path(t)) as img:
        assert img.read(DISK, len(P2)) == P2
    assert pyvhdi_read(sr.path(t), 0, len(P1)) == P1
    sr.check_all()


def test_revert_to_root_snapshot_and_single_snapshot(filesr):
    sr = filesr
    t, s0, _single = revert_to_empty_single_and_written(sr)
    assert_repeat_changes_nothing(sr, s0, t)
    sr.check_all()


def test_clone_is_independent(filesr):
    sr = filesr
    t = sr.create()
    sr.write(t, 0, P1)
    c = sr.ok("vdi_clone", vdi_uuid=t)["uuid"]
    sr.write(c, 0, P2)
    sr.write(t, 0, P3)
    assert sr.read(c, 0, len(P2)) == P2
    assert sr.read(t, 0, len(P3)) == P3
    listing = sr.vdis()
    assert listing[c]["is_a_snapshot"] is False
    sr.ok("vdi_delete", vdi_uuid=t)
    assert sr.read(c, 0, len(P2)) == P2
    sr.check_all()
