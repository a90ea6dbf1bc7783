"""Hostile input to a real DummySR process: a fault with a code, fast, small.

Each case runs the driver as a program and measures that one child's CPU
time and peak RSS with os.wait4 (the kernel's own accounting), RSS against
a well-formed call. CPU time, not wall time: a loaded CI machine stretches
the wall clock of a process that is merely waiting for a core.
"""

import os
import subprocess
import tempfile
import threading
import xmlrpc.client

import pytest
from helpers.xapi_harness import driver_env, xapi_call

from smlib.drivers.dummy import DummySR
from smlib.protocol import smapi

DRIVER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "drivers",
                      "DummySR")
CPU_LIMIT_S = 2.0
MEMORY_LIMIT_KIB = 100 * 1024

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{i} "{("&lol%s;" % ("" if i == 1 else i - 1)) * 10}">\n'
        for i in range(1, 10)
    )
    + "]>\n<methodCall><methodName>&lol9;</methodName><params/></methodCall>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    "<methodCall><methodName>&e;</methodName><params/></methodCall>"
)


def measured_run(argv, env):
    """Run the driver; (returncode, stdout, stderr, CPU seconds (user +
    system), peak RSS KiB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([DRIVER, *argv], stdout=out, stderr=err, env=env,
                                stdin=subprocess.DEVNULL)
        killer = threading.Timer(30, proc.kill)  # a hung driver must not hang the suite
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        cpu = usage.ru_utime + usage.ru_stime
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (proc.returncode, out.read().decode(), err.read().decode(), cpu,
                usage.ru_maxrss)


@pytest.fixture(scope="module")
def baseline_rss():
    code, out, _, _, rss = measured_run([xapi_call("sr_scan")], driver_env())
    assert code == 0 and xmlrpc.client.loads(out)[0] == (None,)
    return rss


def big_call(xapi_params, xapi_xml, room=0):
    """A well-formed sr_scan call of 120 KiB less `room` bytes."""
    params = xapi_params("sr_scan", device_config={"filler": ""})
    filler = 120 * 1024 - room - len(xapi_xml(params).encode())
    params["device_config"] = {"filler": "x" * filler}
    text = xapi_xml(params)
    assert len(text.encode()) == 120 * 1024 - room
    return text


def deep_call(xapi_params, xapi_xml):
    # ~120 KiB of nested arrays: a recursive decoder would blow its stack.
    empty_args = "<member><name>args</name><value><array><data></data></array></value>"
    text = xapi_xml(xapi_params("sr_scan"))
    assert empty_args in text
    level = len("<value><array><data>") + len("</data></array></value>")
    nest = (120 * 1024 - len(text)) // level
    deep = "<value><array><data>" * nest + "</data></array></value>" * nest
    text = text.replace(empty_args, f"<member><name>args</name>{deep}")
    assert 119 * 1024 < len(text.encode()) <= 120 * 1024
    return [text]


CASES = {
    "no argument": lambda p, x: [],
    "two arguments": lambda p, x: [x(p("sr_scan")), x(p("sr_scan"))],
    "empty string": lambda p, x: [""],
    "blank string": lambda p, x: ["  \n "],
    "not XML": lambda p, x: ["vdi_revert please"],
    "truncated XML": lambda p, x: [x(p("sr_scan"))[:-20]],
    "methodResponse": lambda p, x: [xmlrpc.client.dumps(({"a": "b"},), methodresponse=True)],
    "missing command": lambda p, x: [x(p("sr_scan", command=None), "sr_scan")],
    "missing device_config": lambda p, x: [x(p("sr_scan", device_config=None))],
    "args not an array": lambda p, x: [x(p("vdi_create", args="1024"))],
    "param not a struct": lambda p, x: [xmlrpc.client.dumps(("sr_scan",), "sr_scan")],
    "two params": lambda p, x: [xmlrpc.client.dumps((p("sr_scan"), {}), "sr_scan")],
    "unknown command": lambda p, x: [x(p("vdi_explode"))],
    "billion laughs": lambda p, x: [BILLION_LAUGHS],
    "external entity": lambda p, x: [EXTERNAL_ENTITY],
    "120 KiB of garbage": lambda p, x: ["<" * (120 * 1024)],
    "120 KiB well-formed, then junk": lambda p, x: [big_call(p, x, room=7) + "<junk/>"],
    "120 KiB nested arrays": deep_call,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_is_a_bad_request_fault(case, baseline_rss, xapi_params, xapi_xml):
    argv = CASES[case](xapi_params, xapi_xml)
    code, out, err, cpu_seconds, rss = measured_run(argv, driver_env())
    assert code == 0, err
    with pytest.raises(xmlrpc.client.Fault) as caught:
        xmlrpc.client.loads(out)
    assert caught.value.faultCode == 143, caught.value.faultString
    assert caught.value.faultString.startswith("Failed to parse the request [opterr=")
    assert err == ""  # the log went to SM_LOG; stdout held only the response
    assert cpu_seconds < CPU_LIMIT_S
    assert rss - baseline_rss < MEMORY_LIMIT_KIB


def test_120_kib_well_formed_call_is_answered(baseline_rss, xapi_params, xapi_xml):
    """Near the kernel's 128 KiB per-argument limit, a real call still works."""
    code, out, err, cpu_seconds, rss = measured_run([big_call(xapi_params, xapi_xml)], driver_env())
    assert code == 0, err
    assert xmlrpc.client.loads(out)[0] == (None,)
    assert cpu_seconds < CPU_LIMIT_S and rss - baseline_rss < MEMORY_LIMIT_KIB


def test_argument_over_the_kernel_limit_never_reaches_the_driver():
    """What cannot reach the parser fails at exec, in the caller: say so clearly."""
    with pytest.raises(OSError) as caught:
        subprocess.run([DRIVER, "x" * (129 * 1024)], capture_output=True)
    assert caught.value.errno == 7  # E2BIG


def test_in_process_oversized_request_refused_before_parsing():
    text = smapi.handle(DummySR, ["<" * (smapi.MAX_REQUEST_BYTES + 1)])
    with pytest.raises(xmlrpc.client.Fault) as caught:
        xmlrpc.client.loads(text)
    assert caught.value.faultCode == 143 and "over" in caught.value.faultString


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_in_process(case, xapi_params, xapi_xml):
    text = smapi.handle(DummySR, CASES[case](xapi_params, xapi_xml))
    with pytest.raises(xmlrpc.client.Fault) as caught:
        xmlrpc.client.loads(text)
    assert caught.value.faultCode == 143


def test_unwritable_stdout_is_one_line_on_stderr_and_nonzero(xapi_params, xapi_xml):
    """The one failure that cannot be a fault: nobody reads stdout."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the caller is gone before the answer comes
    try:
        proc = subprocess.run([DRIVER, xapi_xml(xapi_params("sr_scan"))], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=driver_env(), timeout=30)
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "DummySR: cannot write the response: [Errno 32] Broken pipe"
    ]
