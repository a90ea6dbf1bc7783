"""The pyfakefs tier: the FileSR lifecycle in process on a fake filesystem.

The same xapi-shaped XML goes through smlib.protocol.smapi.handle; every file the
SR touches lives in pyfakefs. Contents are judged with smlib.vhd (pyvhdi
and qemu are C code that cannot see a fake filesystem). pyfakefs makes
flock a no-op, so locking is covered by the real-process tests.
"""

from __future__ import annotations

import os
import xmlrpc.client

import pytest
from helpers.filesr_helpers import DISK, MiB, pattern, tree_hashes

from smlib import vhd

LOC = "/srv/sr"
SR_UUID = "6d1c6f1f-4d8b-4f0e-8a44-0c1e2a3b4c5d"
P1, P2, P3 = pattern("P1"), pattern("P2"), pattern("P3")


@pytest.fixture
def call(fs, dispatch, monkeypatch):
    from smlib.drivers.file import FileSR
    from smlib.protocol import errors

    # No process starts under pyfakefs: activate serves nothing here.
    monkeypatch.setenv("SMLIB_DATAPATH", "none")

    # The error-code table beside smlib/protocol/errors.py, visible read-only.
    fs.add_real_file(errors.ERRORCODES_FILE, read_only=True)

    def run(command, **keys):
        return dispatch(FileSR, command, device_config={"location": LOC},
                        sr_uuid=SR_UUID, **keys)

    return run


def path(uuid):
    return f"{LOC}/{uuid}.vhd"


def write(call, uuid, offset, data):
    p = call("vdi_attach", vdi_uuid=uuid, args=["true"])["params"]
    with vhd.open_image(p, writable=True) as img:
        img.write(offset, data)
    call("vdi_detach", vdi_uuid=uuid)


def read(uuid, length=64 * 1024, offset=0):
    with vhd.open_image(path(uuid)) as img:
        return img.read(offset, length)


def fault_code(call, command, **keys) -> int:
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(command, **keys)
    return info.value.faultCode


def test_lifecycle(fs, call):
    assert call("sr_create") is None
    assert sorted(os.listdir(LOC)) == [".sm"]
    t = call("vdi_create", args=[str(DISK), "disk", "d", "", "false", "", "", "false"])["uuid"]
    write(call, t, 0, P1)
    s1 = call("vdi_snapshot", vdi_uuid=t)["uuid"]
    write(call, t, 0, P2)
    s2 = call("vdi_snapshot", vdi_uuid=t)["uuid"]
    write(call, t, 0, P3)
    assert call("vdi_revert", vdi_uuid=s1, args=[t]) is None
    assert (read(t), read(s1), read(s2)) == (P1, P1, P2)
    call("vdi_revert", vdi_uuid=s2, args=[t])
    assert read(t) == P2
    before = tree_hashes(LOC)
    call("vdi_revert", vdi_uuid=s2, args=[t])
    assert tree_hashes(LOC) == before

    call("vdi_resize", vdi_uuid=t, args=[str(2 * DISK)])
    write(call, t, DISK, P3)
    call("vdi_revert", vdi_uuid=s1, args=[t])
    with vhd.open_image(path(t)) as img:
        assert img.virtual_size == DISK
    c = call("vdi_clone", vdi_uuid=s2)["uuid"]
    assert read(c) == P2
    listing = {v["uuid"]: v for v in call("vdi_list")}
    assert listing[t]["name_label"] == "disk" and listing[s1]["snapshot_of"] == t
    assert listing[c]["is_a_snapshot"] is False

    call("vdi_activate", vdi_uuid=t, args=["true"])
    assert fault_code(call, "vdi_revert", vdi_uuid=s2, args=[t]) == 24
    call("vdi_deactivate", vdi_uuid=t)

    for uuid in (s1, s2, c):
        call("vdi_delete", vdi_uuid=uuid)
    assert read(t) == P1
    assert fault_code(call, "sr_delete") == 39
    call("sr_scan")
    call("vdi_delete", vdi_uuid=t)
    assert [f for f in os.listdir(LOC) if f.endswith(".vhd")] == []
    assert call("sr_delete") is None
    assert os.listdir(LOC) == []


def test_no_space_changes_nothing(fs, call):
    fs.set_disk_usage(64 * MiB)
    call("sr_create")
    t = call("vdi_create", args=[str(DISK), "disk"])["uuid"]
    write(call, t, 0, P1)
    s = call("vdi_snapshot", vdi_uuid=t)["uuid"]
    write(call, s, 0, P2)  # a written snapshot: revert needs a base too
    used = sum(os.path.getsize(f"{LOC}/{f}") for f in os.listdir(LOC) if f.endswith(".vhd"))
    fs.set_disk_usage(used + 64 * 1024 + 8192)  # full but for a sliver
    before = tree_hashes(LOC)
    assert fault_code(call, "vdi_revert", vdi_uuid=s, args=[t]) == 44
    assert fault_code(call, "vdi_create", args=[str(1 << 40), "huge"]) == 44
    assert tree_hashes(LOC) == before


def test_missing_location_and_unknown_sr(fs, dispatch):
    from smlib.drivers.file import FileSR

    with pytest.raises(xmlrpc.client.Fault) as info:
        dispatch(FileSR, "sr_create", device_config={}, sr_uuid=SR_UUID)
    assert info.value.faultCode == 94
    with pytest.raises(xmlrpc.client.Fault) as info:
        dispatch(FileSR, "vdi_list", device_config={"location": "/nowhere"}, sr_uuid=SR_UUID)
    assert info.value.faultCode == 47
    assert not os.path.exists("/nowhere")
