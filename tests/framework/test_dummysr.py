"""DummySR answers every command, in process (pyfakefs) and as a real program."""

import os
import re
import uuid
import xmlrpc.client

import pytest

from smlib.drivers.dummy import DummySR
from smlib.protocol import errors, smapi

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
CREATE_ARGS = ["1073741824", "disk", "a disk", "", "false", "", "", "false"]

@pytest.fixture
def fs(fs):
    """pyfakefs's fake filesystem, holding the real error table (read with
    Python's open(), which pyfakefs fakes)."""
    fs.add_real_file(errors.ERRORCODES_FILE, read_only=True)
    return fs


# command -> (extra call keys, check of the decoded result)
NIL = None


def _fresh_vdi(result, params):
    assert set(result) == {"uuid", "location"}
    assert UUID_RE.match(result["uuid"]) and result["location"] == result["uuid"]
    assert result["uuid"] != params.get("vdi_uuid")


def _same_vdi(result, params):
    assert result == {"uuid": params["vdi_uuid"], "location": params["vdi_location"]}


def _introduced(result, params):
    assert result == {"uuid": params["new_uuid"], "location": params["vdi_location"]}


def _attached(result, params):
    assert result["params"] == "/dev/null" and result["xenstore_data"] == {}


def _probe(result, params):
    assert isinstance(result, str) and "<SRlist/>" in result


COMMANDS = {
    "sr_create": ({"args": ["0"]}, NIL),
    "sr_delete": ({}, NIL),
    "sr_attach": ({}, NIL),
    "sr_detach": ({}, NIL),
    "sr_scan": ({}, NIL),
    "sr_probe": ({}, _probe),
    "sr_update": ({}, NIL),
    "vdi_create": ({"args": CREATE_ARGS}, _fresh_vdi),
    "vdi_delete": ({}, NIL),
    "vdi_attach": ({"args": ["true"]}, _attached),
    "vdi_detach": ({}, NIL),
    "vdi_activate": ({"args": ["true"]}, NIL),
    "vdi_deactivate": ({}, NIL),
    "vdi_clone": ({}, _fresh_vdi),
    "vdi_snapshot": ({}, _fresh_vdi),
    "vdi_resize": ({"args": ["2147483648"]}, _same_vdi),
    "vdi_introduce": ({}, _introduced),
    "vdi_update": ({}, NIL),
}

EXPECTED_CAPABILITIES = [
    "SR_PROBE", "SR_UPDATE", "VDI_CREATE", "VDI_DELETE", "VDI_ATTACH", "VDI_DETACH",
    "VDI_ACTIVATE", "VDI_DEACTIVATE", "VDI_CLONE", "VDI_SNAPSHOT", "VDI_RESIZE",
    "VDI_INTRODUCE", "VDI_UPDATE",
]


def _check(command, result, params):
    extra, check = COMMANDS[command]
    if check is NIL:
        assert result is None
    else:
        check(result, params)


def _fake_tree():
    found = []
    for dirpath, dirnames, filenames in os.walk("/"):
        found += [os.path.join(dirpath, n) for n in dirnames + filenames]
    return sorted(found)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_in_process_stores_nothing(fs, xapi_params, xapi_xml, command):
    """Under pyfakefs: the dispatcher with argv exactly as xapi builds it."""
    params = xapi_params(command, **COMMANDS[command][0])
    before = _fake_tree()
    text = smapi.handle(DummySR, [xapi_xml(params)])
    (result,), _ = xmlrpc.client.loads(text, use_builtin_types=True)
    _check(command, result, params)
    assert _fake_tree() == before  # stateless: not one file or directory


def test_revert_is_unimplemented_in_process(fs, dispatch):
    with pytest.raises(xmlrpc.client.Fault) as caught:
        dispatch(DummySR, "vdi_revert", args=[f"OpaqueRef:{uuid.uuid4()}"])
    assert caught.value.faultCode == 38
    assert caught.value.faultString.startswith("The requested method is not supported")


def test_driver_info_in_process(fs, dispatch):
    info = dispatch(DummySR, "sr_get_driver_info")
    assert info["capabilities"] == EXPECTED_CAPABILITIES
    assert "VDI_REVERT" not in info["capabilities"]
    assert {"name", "description", "vendor", "copyright", "driver_version",
            "required_api_version", "configuration"} <= set(info)


def test_bad_sizes_are_vdisize_faults(fs, dispatch):
    for command, args in (("vdi_create", ["-1", "x"]), ("vdi_resize", ["12G"]),
                          ("vdi_create", ["\u0661\u0662"])):  # Arabic-Indic digits
        with pytest.raises(xmlrpc.client.Fault) as caught:
            dispatch(DummySR, command, args=args)
        assert caught.value.faultCode == 79, command
        assert "opterr=size" in caught.value.faultString


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_as_a_program(run_driver, xapi_params, sm_log, command):
    params = xapi_params(command, **COMMANDS[command][0])
    run = run_driver("DummySR", params)
    assert run.returncode == 0 and run.stderr == ""
    _check(command, run.ok(), params)
    with open(sm_log) as f:
        lines = f.read().splitlines()
    # With no xapi at the socket, a command that changes VDIs says so first.
    if command in ("vdi_create", "vdi_delete", "vdi_clone", "vdi_snapshot", "vdi_resize",
                   "vdi_introduce"):
        assert "xapi database not synchronised" in lines.pop(0)
    assert len(lines) == 1 and f"command={command} " in lines[0] and "outcome=ok" in lines[0]


def test_issue_example_revert_faults_38_as_a_program(run_driver):
    """The exact command line of the issue: xmlrpc.client's own printing."""
    text = xmlrpc.client.dumps(({
        "host_ref": "OpaqueRef:h", "command": "vdi_revert", "args": ["OpaqueRef:t"],
        "device_config": {}, "sr_uuid": "<uuid>", "vdi_uuid": "<uuid>",
        "vdi_location": "<uuid>", "session_ref": "OpaqueRef:s",
    },), "vdi_revert")
    run = run_driver("DummySR", text)
    assert run.returncode == 0
    assert run.fault is not None and run.fault.faultCode == 38
    assert run.stdout.lstrip().startswith("<?xml") and "<fault>" in run.stdout


def test_driver_info_as_a_program(run_driver, xapi_params):
    run = run_driver("DummySR", xapi_params("sr_get_driver_info"))
    assert run.ok()["capabilities"] == EXPECTED_CAPABILITIES
    assert run.ok()["name"] == "Dummy"


DESIGN_KEYS = {
    "host_ref", "command", "args", "device_config", "session_ref", "sr_ref", "sr_uuid",
    "vdi_ref", "vdi_uuid", "vdi_location", "vdi_type", "sr_sm_config", "vdi_sm_config",
    "driver_params", "new_uuid", "subtask_of", "vdi_on_boot", "vdi_allow_caching",
    "local_cache_sr",
}


@pytest.mark.parametrize("key", sorted(DESIGN_KEYS))
def test_every_design_key_is_type_checked(xapi_params, xapi_xml, key):
    """Each key of DESIGN section 3, sent with the wrong type in a call that
    carries it (the calls above, together, carry every key), is a
    BadRequest fault naming it: the driver never runs on a mistyped key."""
    command = next(c for c in sorted(COMMANDS) if key in xapi_params(c, **COMMANDS[c][0]))
    params = xapi_params(command, **COMMANDS[command][0])
    params[key] = [["nested"]] if isinstance(params[key], str) else "a string"
    text = smapi.handle(DummySR, [xapi_xml(params, command)])
    with pytest.raises(xmlrpc.client.Fault) as caught:
        xmlrpc.client.loads(text)
    assert caught.value.faultCode == 143
    assert f"key {key!r} must be" in caught.value.faultString
