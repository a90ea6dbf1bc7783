"""Test helpers shared by every area: xapi-shaped calls, running driver executables.

Every area's tests use these to drive their driver exactly as xapi does:
one argv argument holding a methodCall built the way xapi's OCaml XML-RPC
printer builds it (strings as bare <value>text</value>, no whitespace,
OpaqueRef values), and stdout parsed by the independent xmlrpc.client.

tests/conftest.py exposes them as fixtures; import them directly with
`from xapi_harness import ...` (never `from conftest import`: every area has
a conftest module and the name is ambiguous).

Fixtures (all return these plain functions):
  xapi_params(command, **keys) -> dict      the call struct
  xapi_call(command, **keys) -> str         the methodCall text
  xapi_xml(params, method_name=None) -> str  a params struct printed like xapi
  run_driver(driver, call=None, *, argv=None, env=None, timeout=60) -> DriverRun
  dispatch(driver_cls, command, **keys) -> value   in process; raises Fault
  sm_log -> path of the SM_LOG file every test gets (never /var/log/SMlog)

Drivers run on the interpreter found as `python3` in driver_bin():
$SMLIB_DRIVER_BIN (make test-dom0: a CPython 3.6 environment with only what
dom0 has) or, by default, the one running the tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import xmlrpc.client
from typing import NamedTuple, Optional, Union

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVERS_DIR = os.path.join(REPO_ROOT, "drivers")

# Commands about one VDI (xapi passes vdi_ref / vdi_uuid / vdi_location).
VDI_COMMANDS = {
    "vdi_delete", "vdi_attach", "vdi_detach", "vdi_activate", "vdi_deactivate",
    "vdi_clone", "vdi_snapshot", "vdi_resize", "vdi_update", "vdi_revert",
    "vdi_epoch_begin", "vdi_epoch_end", "vdi_generate_config", "vdi_compose",
    "vdi_resize_online", "vdi_enable_cbt", "vdi_disable_cbt", "vdi_data_destroy",
    "vdi_list_changed_blocks",
}
# Commands run from vdi_generate_config's struct, with no xapi behind them.
FROM_CONFIG_COMMANDS = {"vdi_attach_from_config", "vdi_detach_from_config"}
# Commands with no SR yet (xapi passes no sr_ref / sr_uuid).
NO_SR_COMMANDS = {"sr_probe", "sr_get_driver_info"}


def opaque_ref() -> str:
    return f"OpaqueRef:{uuid.uuid4()}"


def xapi_params(
    command: str,
    /,
    *,
    args: object = (),
    device_config: object = ...,
    **keys: object,
) -> dict:
    """The struct xapi's sm_exec builds for `command` (DESIGN section 3).

    Keys the command gets are filled in with fresh uuids and OpaqueRefs
    (vdi_location defaults to the given vdi_uuid); `keys` override them, and
    a key given as None is left out (to build requests with a key missing).
    `args` and `device_config` are sent as given (a list of strings and a
    struct of strings, unless a test means to send something else).
    """
    params: dict = {
        "host_ref": opaque_ref(),
        "command": command,
        "args": list(args) if isinstance(args, (list, tuple)) else args,
        "device_config": {} if device_config is ... else device_config,
        "session_ref": opaque_ref(),
        "subtask_of": opaque_ref(),
    }
    if command not in NO_SR_COMMANDS:
        params["sr_ref"] = opaque_ref()
        params["sr_uuid"] = str(uuid.uuid4())
    if command in VDI_COMMANDS:
        vdi = keys.get("vdi_uuid") or str(uuid.uuid4())
        params.update(
            vdi_ref=opaque_ref(),
            vdi_uuid=vdi,
            vdi_location=vdi,
            vdi_type="user",
            vdi_on_boot="persist",
            vdi_allow_caching="false",
            local_cache_sr="OpaqueRef:NULL",
        )
    if command in FROM_CONFIG_COMMANDS:
        # Not sent by sm_exec: the struct vdi_generate_config wrote (sm's
        # shape: no host_ref, no args, no session).
        params = {"command": command, "device_config": params["device_config"],
                  "sr_uuid": params["sr_uuid"], "vdi_uuid": keys.get("vdi_uuid")
                  or str(uuid.uuid4())}
    if command == "sr_probe":
        params["sr_sm_config"] = {}
    if command in ("vdi_create", "vdi_introduce"):
        params["vdi_sm_config"] = {}
    if command == "vdi_introduce":
        params["new_uuid"] = str(uuid.uuid4())
        params["vdi_location"] = params["new_uuid"]
    if command in ("vdi_snapshot", "vdi_clone"):
        params["driver_params"] = {}
    if command in FROM_CONFIG_COMMANDS:
        keys.pop("args", None)  # a test may pass args=[] for every command alike
        keys["device_config"] = params["device_config"]
    else:
        keys.update(args=params["args"], device_config=params["device_config"])
    keys.setdefault("command", command)
    for key, value in keys.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return params


def _xapi_value(value: object) -> str:
    # xapi's printer (ocaml-rpc, non-strict): strings are bare <value>s.
    if isinstance(value, str):
        return f"<value>{_xapi_escape(value)}</value>"
    if isinstance(value, bool):
        return f"<value><boolean>{int(value)}</boolean></value>"
    if isinstance(value, int):
        return f"<value><int>{value}</int></value>"
    if isinstance(value, dict):
        members = "".join(
            f"<member><name>{_xapi_escape(k)}</name>{_xapi_value(v)}</member>"
            for k, v in value.items()
        )
        return f"<value><struct>{members}</struct></value>"
    if isinstance(value, (list, tuple)):
        items = "".join(_xapi_value(v) for v in value)
        return f"<value><array><data>{items}</data></array></value>"
    raise TypeError(f"xapi never sends {type(value).__name__}")


def _xapi_escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        .replace('"', "&quot;").replace("'", "&apos;")
    )


def xapi_xml(params: dict, method_name: Optional[str] = None) -> str:
    """A methodCall with `params` as its one param, printed as xapi prints it."""
    name = method_name if method_name is not None else params["command"]
    return (
        f'<?xml version="1.0"?><methodCall><methodName>{_xapi_escape(name)}</methodName>'
        f"<params><param>{_xapi_value(params)}</param></params></methodCall>"
    )


def xapi_call(command: str, /, **keys: object) -> str:
    """The methodCall text xapi would pass as argv[1] for `command`."""
    return xapi_xml(xapi_params(command, **keys))


class DriverRun(NamedTuple):
    returncode: int
    stdout: str
    stderr: str
    result: object  # the decoded value (None for nil or a fault)
    fault: Optional[xmlrpc.client.Fault]

    def ok(self) -> object:
        """The result, failing the test with the fault if there was one."""
        assert self.fault is None, f"driver fault {self.fault.faultCode}: {self.fault.faultString}"
        return self.result


def driver_bin() -> str:
    """The directory whose `python3` runs the drivers (their shebang is
    `/usr/bin/env python3`): $SMLIB_DRIVER_BIN when set (the dom0 tier points
    it at a CPython 3.6 environment), else this interpreter's."""
    return os.environ.get("SMLIB_DRIVER_BIN") or os.path.dirname(sys.executable)


def driver_env(extra: Optional[dict] = None) -> dict:
    """The environment a driver runs in: driver_bin() first on PATH and
    ORIGINATOR=SM as xapi sets."""
    env = dict(os.environ)
    env["PATH"] = driver_bin() + os.pathsep + env.get("PATH", "")
    env["ORIGINATOR"] = "SM"
    env.update(extra or {})
    return env


def run_driver(
    driver: str,
    call: Union[str, dict, None] = None,
    *,
    argv: Optional[list] = None,
    env: Optional[dict] = None,
    timeout: float = 60,
) -> DriverRun:
    """Execute drivers/<driver> (or a path) as a program with one methodCall.

    `call` is the XML text, or a params dict (printed like xapi); `argv`
    replaces the whole argument list (for malformed invocations). A zero
    exit must come with exactly one methodResponse on stdout.
    """
    path = driver if os.sep in driver else os.path.join(DRIVERS_DIR, driver)
    if argv is None:
        argv = [call if isinstance(call, str) else xapi_xml(call)]
    proc = subprocess.run(
        [path, *argv], capture_output=True, text=True, env=driver_env(env),
        timeout=timeout, stdin=subprocess.DEVNULL,
    )
    result, fault = None, None
    if proc.returncode == 0:
        try:
            (result,), _ = xmlrpc.client.loads(proc.stdout, use_builtin_types=True)
        except xmlrpc.client.Fault as f:
            fault = f
    return DriverRun(proc.returncode, proc.stdout, proc.stderr, result, fault)


def dispatch(driver_cls: type, command: str, **keys: object) -> object:
    """Run one xapi-shaped call in process through smlib.protocol.smapi.handle.

    The response is decoded by xmlrpc.client: a fault raises
    xmlrpc.client.Fault, as the caller of a driver would see it."""
    from smlib.protocol import smapi

    text = smapi.handle(driver_cls, [xapi_call(command, **keys)])
    (result,), _ = xmlrpc.client.loads(text, use_builtin_types=True)
    return result
