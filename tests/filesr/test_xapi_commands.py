"""Every command xapi's SMAPIv1 client sends gets an answer, never 143.

The commands are those of xen-api's ocaml/xapi/sm.ml and sm_exec.ml
(XAPI-CONTRACT section 3), sent to the real drivers/FileSR and DummySR
executables with the keys sm_exec builds. And the uuids xapi chooses:
vdi_create's ``vdi_uuid``, vdi_introduce's ``new_uuid``.
"""

from __future__ import annotations

import os
import uuid as uuidlib

import pytest
from helpers.filesr_helpers import DISK

# command -> args xapi sends (refs where sm.ml sends Ref.string_of).
XAPI_COMMANDS = {
    "sr_get_driver_info": [], "sr_create": ["0"], "sr_attach": [], "sr_detach": [],
    "sr_probe": [], "sr_scan": [], "sr_update": [], "sr_content_type": [],
    "vdi_create": [str(DISK), "d", "", "OpaqueRef:NULL", "false", "19700101T00:00:00Z",
                   "OpaqueRef:NULL", "false"],
    "vdi_update": [], "vdi_introduce": [], "vdi_attach": ["true"], "vdi_detach": [],
    "vdi_activate": ["true"], "vdi_deactivate": [], "vdi_snapshot": [], "vdi_clone": [],
    "vdi_resize": [str(2 * DISK)], "vdi_generate_config": [], "vdi_compose": ["OpaqueRef:x"],
    "vdi_epoch_begin": [], "vdi_epoch_end": [], "vdi_enable_cbt": [], "vdi_disable_cbt": [],
    "vdi_data_destroy": [], "vdi_list_changed_blocks": ["OpaqueRef:y"],
    "vdi_attach_from_config": [], "vdi_detach_from_config": [], "vdi_resize_online":
    [str(2 * DISK)], "vdi_revert": ["OpaqueRef:z"], "vdi_delete": [],
}
# What sm answers with nothing to implement behind it.
NIL_FOR_EVERY_DRIVER = {"vdi_epoch_begin", "vdi_epoch_end"}


def _keys(command: str, vdi: str) -> dict:
    if command in ("vdi_create", "vdi_introduce"):
        return {}  # xapi names no existing VDI (a chosen vdi_uuid: tested below)
    return {"vdi_uuid": vdi, "vdi_location": vdi}


@pytest.mark.parametrize("command", sorted(XAPI_COMMANDS))
def test_filesr_answers_every_command_xapi_sends(filesr, command):
    vdi = filesr.create()
    r = filesr.run(command, args=XAPI_COMMANDS[command], **_keys(command, vdi))
    assert r.returncode == 0, r.stderr
    if r.fault is not None:
        # 143: "cannot parse", which fails the xapi operation; 1200: a crash.
        assert r.fault.faultCode not in (143, 1200), r.fault.faultString
    if command in NIL_FOR_EVERY_DRIVER:
        assert r.ok() is None


@pytest.mark.parametrize("command", sorted(XAPI_COMMANDS))
def test_dummysr_answers_every_command_xapi_sends(run_driver, xapi_params, command):
    r = run_driver("DummySR", xapi_params(command, args=XAPI_COMMANDS[command]))
    assert r.returncode == 0, r.stderr
    assert r.fault is None or r.fault.faultCode == 38, r.fault.faultString


def test_epoch_begin_with_reset_on_boot_is_unimplemented(filesr):
    # sm: only a driver advertising VDI_RESET_ON_BOOT/2 resets a leaf on boot.
    vdi = filesr.create()
    assert filesr.run("vdi_epoch_begin", vdi_uuid=vdi, vdi_on_boot="reset").fault.faultCode == 38
    assert filesr.ok("vdi_epoch_begin", vdi_uuid=vdi, vdi_on_boot="persist") is None


def test_content_type(filesr, run_driver, xapi_params):
    assert filesr.ok("sr_content_type") == "vhd"
    assert run_driver("DummySR", xapi_params("sr_content_type")).ok() == "phy"


def test_capabilities_are_what_is_served(filesr, run_driver, xapi_params):
    caps = filesr.ok("sr_get_driver_info")["capabilities"]
    for unserved in ("VDI_GENERATE_CONFIG", "VDI_CONFIG_CBT", "VDI_RESIZE_ONLINE", "VDI_MIRROR",
                     "VDI_RESET_ON_BOOT/2", "ATOMIC_PAUSE", "SR_TRIM"):
        assert unserved not in caps
    assert {"VDI_CREATE", "VDI_DELETE", "VDI_SNAPSHOT", "VDI_CLONE", "VDI_RESIZE",
            "VDI_REVERT", "VDI_INTRODUCE", "SR_PROBE", "SR_UPDATE",
            "THIN_PROVISIONING"} <= set(caps)


def test_vdi_create_uses_the_uuid_xapi_chose(filesr):
    chosen = str(uuidlib.uuid4())
    got = filesr.ok("vdi_create", vdi_uuid=chosen, args=XAPI_COMMANDS["vdi_create"])
    assert got["uuid"] == chosen and got["location"] == chosen
    assert os.path.exists(filesr.path(chosen))
    assert chosen in filesr.vdis()
    # The same uuid again: VDIExists, nothing changed.
    again = filesr.run("vdi_create", vdi_uuid=chosen, args=XAPI_COMMANDS["vdi_create"])
    assert again.fault.faultCode == 43
    bad = filesr.run("vdi_create", vdi_uuid="../../x", args=XAPI_COMMANDS["vdi_create"])
    assert bad.fault.faultCode == 143


def test_dummysr_create_uses_the_uuid_xapi_chose(run_driver, xapi_params):
    chosen = str(uuidlib.uuid4())
    params = xapi_params("vdi_create", vdi_uuid=chosen, args=XAPI_COMMANDS["vdi_create"])
    assert run_driver("DummySR", params).ok()["uuid"] == chosen


def _orphan(filesr) -> str:
    """A VHD on the SR that the SR's metadata does not know."""
    vdi = filesr.create()
    with open(filesr.path(vdi), "rb") as f:
        data = f.read()
    filesr.ok("vdi_delete", vdi_uuid=vdi)
    with open(filesr.path(vdi), "wb") as f:
        f.write(data)
    return vdi


def test_vdi_introduce_with_new_uuid_at_location(filesr):
    loc = _orphan(filesr)
    same = filesr.ok("vdi_introduce", new_uuid=loc, vdi_location=loc)
    assert same == {"uuid": loc, "location": loc, "virtual_size": str(DISK)}
    other = _orphan(filesr)
    new = str(uuidlib.uuid4())
    got = filesr.ok("vdi_introduce", new_uuid=new, vdi_location=other)
    assert got["uuid"] == new
    assert os.path.exists(filesr.path(new)) and not os.path.exists(filesr.path(other))
    assert set(filesr.vdis()) == {loc, new}
    # Nothing at the location, or a uuid in use: refused, nothing changed.
    assert filesr.run("vdi_introduce", new_uuid=str(uuidlib.uuid4()),
                      vdi_location=str(uuidlib.uuid4())).fault.faultCode == 144
    assert filesr.run("vdi_introduce", new_uuid=loc, vdi_location=loc).fault.faultCode == 43
    assert set(filesr.vdis()) == {loc, new}
