"""The dispatcher in process: request checks, faults, logging, stdout discipline."""

import os
import re
import xmlrpc.client

import pytest

from smlib.drivers.dummy import DummySR
from smlib.protocol import smapi
from smlib.protocol.errors import SRError
from smlib.protocol.sr import SR


def fault_of(text):
    with pytest.raises(xmlrpc.client.Fault) as caught:
        xmlrpc.client.loads(text)
    return caught.value.faultCode, caught.value.faultString


def value_of(text):
    (value,), _ = xmlrpc.client.loads(text, use_builtin_types=True)
    return value


def run(driver_cls, params, xapi_xml, method_name=None):
    return smapi.handle(driver_cls, [xapi_xml(params, method_name)])


@pytest.mark.parametrize("key", smapi.ALWAYS)
def test_missing_always_present_key_is_bad_request(xapi_params, xapi_xml, key):
    params = xapi_params("sr_scan", **{key: None})
    code, message = fault_of(run(DummySR, params, xapi_xml, method_name="sr_scan"))
    assert code == 143 and repr(key) in message


@pytest.mark.parametrize(
    "command,key",
    [(c, k) for c, (keys, _) in sorted(smapi.COMMANDS.items()) for k in keys],
)
def test_missing_command_key_is_bad_request(xapi_params, xapi_xml, command, key):
    params = xapi_params(command, args=["1", "x"], **{key: None})
    code, message = fault_of(run(DummySR, params, xapi_xml))
    assert code == 143
    assert f"{command} needs key {key!r}" in message


@pytest.mark.parametrize(
    "command", [c for c, (_, n) in sorted(smapi.COMMANDS.items()) if n > 0]
)
def test_missing_args_is_bad_request(xapi_params, xapi_xml, command):
    code, message = fault_of(run(DummySR, xapi_params(command, args=[]), xapi_xml))
    assert code == 143 and "args" in message


@pytest.mark.parametrize(
    "key,value",
    [
        ("args", "1024"),
        ("args", ["1024", 5]),
        ("device_config", ["path", "/x"]),
        ("device_config", {"path": 1}),
        ("sr_uuid", 7),
        ("session_ref", {"x": "y"}),
        ("driver_params", "type=single"),
        ("host_ref", True),
    ],
)
def test_mistyped_key_is_bad_request_naming_it(xapi_params, xapi_xml, key, value):
    params = xapi_params("vdi_snapshot", **{key: value})
    code, message = fault_of(run(DummySR, params, xapi_xml))
    assert code == 143 and f"key {key!r} must be" in message


def test_unknown_command_and_mismatched_method_name(xapi_params, xapi_xml):
    code, message = fault_of(run(DummySR, xapi_params("vdi_frobnicate"), xapi_xml))
    assert code == 143 and "unknown command 'vdi_frobnicate'" in message
    params = xapi_params("sr_scan")
    code, message = fault_of(run(DummySR, params, xapi_xml, method_name="sr_delete"))
    assert code == 143 and "differs" in message


def test_huge_command_name_is_cut_in_the_fault_and_log(xapi_params, xapi_xml, sm_log):
    name = "vdi_" + "x" * 100_000
    code, message = fault_of(run(DummySR, xapi_params(name), xapi_xml))
    assert code == 143 and "unknown command 'vdi_xxx" in message and "(100004 chars)" in message
    assert len(message) < 300
    with open(sm_log) as f:
        assert len(f.read()) < 1000


def test_unknown_keys_are_ignored(xapi_params, xapi_xml):
    params = xapi_params("sr_scan", some_future_key={"nested": ["x", 1]})
    assert value_of(run(DummySR, params, xapi_xml)) is None


class Bare(SR):
    pass


# What sm's base classes answer for every driver (SRCommand.py).
BASE_ANSWERS = {"sr_get_driver_info", "vdi_epoch_begin", "vdi_epoch_end", "sr_content_type"}


@pytest.mark.parametrize("command", sorted(set(smapi.COMMANDS) - BASE_ANSWERS))
def test_base_sr_answers_unimplemented_for_every_command(xapi_params, xapi_xml, command):
    params = xapi_params(command, args=["1", "x"])
    code, message = fault_of(run(Bare, params, xapi_xml))
    assert code == 38 and f"Bare does not implement {command}" in message


def test_capabilities_follow_overridden_methods():
    class Reverting(SR):
        EXTRA_CAPABILITIES = ("VDI_RESET_ON_BOOT/2",)

        def vdi_revert(self):
            return None

        def vdi_create(self):
            return None

    assert Bare.capabilities() == []
    assert Reverting.capabilities() == ["VDI_CREATE", "VDI_REVERT", "VDI_RESET_ON_BOOT/2"]
    assert "VDI_REVERT" not in DummySR.capabilities()


class Failing(SR):
    def sr_scan(self):
        raise SRError.from_name("SRScan", opterr="directory /x vanished")

    def sr_attach(self):
        raise RuntimeError("disk on fire")

    def sr_detach(self):
        raise ValueError()

    def vdi_create(self):
        return {"uuid": "u", "location": "l", "size": 2**40}  # must be a string


def test_srerror_becomes_fault_with_code_and_opterr(xapi_params, xapi_xml):
    code, message = fault_of(run(Failing, xapi_params("sr_scan"), xapi_xml))
    assert (code, message) == (40, "The SR scan failed [opterr=directory /x vanished]")


def test_unexpected_exception_is_1200_with_traceback_only_in_log(xapi_params, xapi_xml, sm_log):
    text = run(Failing, xapi_params("sr_attach"), xapi_xml)
    assert fault_of(text) == (1200, "disk on fire")
    assert "Traceback" not in text
    with open(sm_log) as f:
        log = f.read()
    assert "Traceback (most recent call last)" in log and "RuntimeError: disk on fire" in log
    assert fault_of(run(Failing, xapi_params("sr_detach"), xapi_xml)) == (1200, "ValueError")


def test_unencodable_result_is_1200_not_a_broken_response(xapi_params, xapi_xml):
    code, message = fault_of(run(Failing, xapi_params("vdi_create", args=["1"]), xapi_xml))
    assert code == 1200 and "XML-RPC limits" in message


LOG_LINE = re.compile(
    r"^\w{3} [ \d]\d \d\d:\d\d:\d\d (\w+)\[\d+\] command=(\S+) sr=(\S+) vdi=(\S+) "
    r"outcome=(.*) ms=\d+\.\d$"
)


def test_one_log_line_per_call(xapi_params, xapi_xml, sm_log):
    ok = xapi_params("vdi_detach")
    run(DummySR, ok, xapi_xml)
    run(Failing, xapi_params("sr_scan", sr_uuid="sr-2"), xapi_xml)
    smapi.handle(DummySR, [])
    with open(sm_log) as f:
        lines = f.read().splitlines()
    assert len(lines) == 3
    parsed = [LOG_LINE.match(line).groups() for line in lines]
    assert parsed[0] == ("DummySR", "vdi_detach", ok["sr_uuid"], ok["vdi_uuid"], "ok")
    assert parsed[1][:4] == ("Failing", "sr_scan", "sr-2", "-")
    assert parsed[1][4].startswith("fault 40 SRScan")
    assert parsed[2][1:3] == ("-", "-") and parsed[2][4].startswith("fault 143 BadRequest")


def test_log_falls_back_to_stderr_and_stdout_holds_only_the_response(
    xapi_params, xapi_xml, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("SM_LOG", str(tmp_path / "no" / "such" / "dir" / "SMlog"))
    status = smapi.main(DummySR, [xapi_xml(xapi_params("sr_scan"))])
    out, err = capsys.readouterr()
    assert status == 0
    assert value_of(out) is None and out.startswith("<?xml") and out.endswith("</methodResponse>\n")
    assert len(err.splitlines()) == 1 and "command=sr_scan" in err


def test_main_exits_zero_on_faults(capsys):
    assert smapi.main(DummySR, ["a", "b"]) == 0
    code, message = fault_of(capsys.readouterr().out)
    assert code == 143 and "exactly one argument" in message


def test_default_log_path(monkeypatch):
    from smlib.protocol import log

    monkeypatch.delenv("SM_LOG")
    assert log.log_path() == "/var/log/SMlog"
    monkeypatch.setenv("SM_LOG", "")
    assert log.log_path() == "/var/log/SMlog"
    monkeypatch.setenv("SM_LOG", "/tmp/x")
    assert log.log_path() == "/tmp/x"


def test_non_utf8_argument_is_bad_request():
    # argv as Python sees undecodable bytes (surrogateescape).
    raw = os.fsdecode(b"<methodCall><methodName>\xff\xfe</methodName></methodCall>")
    code, message = fault_of(smapi.handle(DummySR, [raw]))
    assert code == 143 and "not well-formed" in message
