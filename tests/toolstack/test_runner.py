"""The runner: xapi-shaped methodCalls, response parsing, faults, failures."""

from __future__ import annotations

import json
import os
import xmlrpc.client

import pytest

from smlib.protocol import xmlrpc as driver_codec
from smlib.toolstack.runner import (
    DriverFault,
    DriverMissing,
    DriverProtocolError,
    Request,
    Runner,
    default_driver_dir,
    driver_path,
    method_call_xml,
    parse_response,
)

# A driver that records what it was given and answers nil.
RECORDER = """
import json, os, sys
with open(os.environ["RECORD_TO"], "w") as f:
    json.dump({"argv": sys.argv[1:], "originator": os.environ.get("ORIGINATOR")}, f)
print('<?xml version="1.0"?><methodResponse><params><param><value><nil/></value>'
      '</param></params></methodResponse>')
"""


def test_method_call_has_xapi_keys_and_decodes_with_the_driver_codec():
    call = Request(
        "vdi_snapshot", device_config={"location": "/srv/sr"}, sr_ref="OpaqueRef:s",
        sr_uuid="u-sr", vdi_ref="OpaqueRef:v", vdi_uuid="u-v", vdi_location="u-v",
        driver_params={"type": "single"}, subtask_of="OpaqueRef:t",
    )
    text = method_call_xml(call, "OpaqueRef:host", "OpaqueRef:session")
    method, (params,) = driver_codec.loads_call(text)
    assert method == "vdi_snapshot"
    assert params == {
        "host_ref": "OpaqueRef:host", "command": "vdi_snapshot", "args": [],
        "device_config": {"location": "/srv/sr"}, "session_ref": "OpaqueRef:session",
        "sr_ref": "OpaqueRef:s", "sr_uuid": "u-sr", "vdi_ref": "OpaqueRef:v",
        "vdi_uuid": "u-v", "vdi_location": "u-v", "driver_params": {"type": "single"},
        "subtask_of": "OpaqueRef:t",
    }


def test_driver_info_call_has_no_session():
    text = method_call_xml(Request("sr_get_driver_info", needs_session=False), "OpaqueRef:h", "x")
    (params,), _ = xmlrpc.client.loads(text)
    assert "session_ref" not in params and params["command"] == "sr_get_driver_info"


def test_driver_gets_one_argument_and_originator(tmp_path, monkeypatch, write_driver):
    write_driver(str(tmp_path), "RecSR", RECORDER)
    record = tmp_path / "record.json"
    monkeypatch.setenv("RECORD_TO", str(record))
    runner = Runner(str(tmp_path))
    assert runner.call("rec", Request("sr_scan", args=["1"], sr_uuid="abc")) is None
    seen = json.loads(record.read_text())
    assert seen["originator"] == "SM"
    assert len(seen["argv"]) == 1
    (params,), method = xmlrpc.client.loads(seen["argv"][0])
    assert method == "sr_scan"
    assert params["args"] == ["1"] and params["sr_uuid"] == "abc"
    assert params["host_ref"].startswith("OpaqueRef:")
    assert params["session_ref"].startswith("OpaqueRef:")


def test_real_dummy_driver_info_and_fault(drivers_dir):
    runner = Runner(drivers_dir)
    info = runner.call("dummy", Request("sr_get_driver_info", needs_session=False))
    assert "VDI_CLONE" in info["capabilities"]
    assert "VDI_REVERT" not in info["capabilities"]
    with pytest.raises(DriverFault) as caught:
        runner.call("dummy", Request("vdi_revert", sr_uuid="s", vdi_uuid="v", vdi_location="v",
                                  vdi_ref="OpaqueRef:v", args=["target"]))
    assert caught.value.code == 38
    assert caught.value.name == "Unimplemented"
    assert caught.value.xapi_name == "SR_OPERATION_NOT_SUPPORTED"


def test_fault_names_come_from_the_code_table():
    fault = xmlrpc.client.dumps(xmlrpc.client.Fault(44, "no space"), methodresponse=True)
    with pytest.raises(DriverFault) as caught:
        parse_response(fault, "vdi_create")
    assert (caught.value.code, caught.value.name) == (44, "SRNoSpace")
    assert caught.value.xapi_name == "SR_BACKEND_FAILURE_44"
    assert "SRNoSpace" in str(caught.value) and "no space" in str(caught.value)


def test_type_maps_to_driver_file_case_insensitively(drivers_dir):
    assert driver_path(drivers_dir, "dummy") == os.path.join(drivers_dir, "DummySR")
    assert driver_path(drivers_dir, "DUMMY") == os.path.join(drivers_dir, "DummySR")


def test_missing_driver_is_reported_clearly(tmp_path):
    with pytest.raises(DriverMissing) as caught:
        Runner(str(tmp_path)).call("nosuch", Request("sr_scan"))
    assert "not found" in str(caught.value) and "nosuch" in str(caught.value)
    assert caught.value.code == 48


def test_non_executable_driver_is_reported_clearly(tmp_path, write_driver):
    path = write_driver(str(tmp_path), "PlainSR", RECORDER)
    os.chmod(path, 0o644)
    with pytest.raises(DriverMissing, match="not an executable"):
        Runner(str(tmp_path)).call("plain", Request("sr_scan"))


def test_timeout(tmp_path, write_driver):
    write_driver(str(tmp_path), "SlowSR", "import time\ntime.sleep(30)\n")
    with pytest.raises(DriverProtocolError, match="timed out"):
        Runner(str(tmp_path), timeout=0.5).call("slow", Request("sr_scan"))


def test_garbage_output_and_nonzero_exit(tmp_path, write_driver):
    write_driver(str(tmp_path), "NoiseSR", "print('hello')\n")
    with pytest.raises(DriverProtocolError, match="methodResponse"):
        Runner(str(tmp_path)).call("noise", Request("sr_scan"))
    write_driver(str(tmp_path), "DeadSR", "import sys\nsys.stderr.write('boom')\nsys.exit(3)\n")
    with pytest.raises(DriverProtocolError, match="status 3.*boom"):
        Runner(str(tmp_path)).call("dead", Request("sr_scan"))


def test_default_driver_dir(monkeypatch, drivers_dir):
    monkeypatch.delenv("SMCTL_DRIVER_DIR", raising=False)
    assert default_driver_dir() == drivers_dir
    monkeypatch.setenv("SMCTL_DRIVER_DIR", "/somewhere")
    assert default_driver_dir() == "/somewhere"


def test_default_driver_dir_outside_a_checkout(monkeypatch, tmp_path):
    """A host's /opt/xensource/sm wins where it exists; else the package's own drivers."""
    import smlib.drivers_bin
    from smlib.toolstack import runner

    for name in ("SMLIB_DRIVER_DIR", "SMCTL_DRIVER_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runner, "CHECKOUT_DRIVER_DIR", str(tmp_path / "no-checkout" / "drivers"))
    host = tmp_path / "opt-xensource-sm"
    monkeypatch.setattr(runner, "INSTALLED_DRIVER_DIR", str(host))
    packaged = default_driver_dir()
    assert packaged == smlib.drivers_bin.DIR
    assert sorted(runner.Runner(packaged).available_types()) == ["dummy", "file", "lvm"]
    host.mkdir()
    assert default_driver_dir() == str(host)
