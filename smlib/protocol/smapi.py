"""The SMAPIv1 calling convention: argv[1] methodCall -> driver method -> methodResponse.

xapi runs a driver with exactly one argument, an XML-RPC methodCall whose
methodName is the command and whose only param is a struct (DESIGN section 3).
The driver prints one methodResponse and exits 0, also on error: an SRError
becomes a fault with its code, anything else a fault 1200 whose traceback
goes to the log only.
"""

import os
import sys
import time

from smlib.protocol import log, xmlrpc
from smlib.protocol.errors import SRError
from smlib.protocol.sr import SR, Call
from smlib.uuids import is_uuid_text

# A request larger than this is refused before parsing (the kernel caps one
# argument at 128 KiB anyway; this bounds in-process callers too).
MAX_REQUEST_BYTES = 1 << 20

ALWAYS = ("host_ref", "command", "args", "device_config")
_SR = ("sr_uuid",)
_VDI = ("sr_uuid", "vdi_uuid", "vdi_location")

# command -> (keys it needs besides ALWAYS, minimum number of args).
# The method called is the driver's attribute named like the command.
COMMANDS: "dict[str, tuple[tuple[str, ...], int]]" = {
    "sr_get_driver_info": ((), 0),
    "sr_probe": ((), 0),
    "sr_create": (_SR, 0),
    "sr_delete": (_SR, 0),
    "sr_attach": (_SR, 0),
    "sr_detach": (_SR, 0),
    "sr_scan": (_SR, 0),
    "sr_update": (_SR, 0),
    "vdi_create": (_SR, 1),  # args[0]: virtual size in bytes
    "vdi_introduce": (("sr_uuid", "new_uuid", "vdi_location"), 0),
    "vdi_delete": (_VDI, 0),
    "vdi_attach": (_VDI, 1),  # args[0]: "true" when attached writable
    "vdi_detach": (_VDI, 0),
    "vdi_activate": (_VDI, 0),
    "vdi_deactivate": (_VDI, 0),
    "vdi_clone": (_VDI, 0),
    "vdi_snapshot": (_VDI, 0),
    "vdi_resize": (_VDI, 1),  # args[0]: new virtual size in bytes
    "vdi_update": (_VDI, 0),
    "vdi_revert": (_VDI, 1),  # vdi_* name the snapshot; args[0]: the target
    "vdi_epoch_begin": (_VDI, 0),  # on every VM start
    "vdi_epoch_end": (_VDI, 0),
    "vdi_generate_config": (_VDI, 0),
    "vdi_attach_from_config": (("sr_uuid", "vdi_uuid"), 0),  # generate_config's struct
    "vdi_detach_from_config": (("sr_uuid", "vdi_uuid"), 0),
    "vdi_compose": (_VDI, 1),  # args[0]: the VDI whose updates go under this one
    "vdi_resize_online": (_VDI, 1),
    "vdi_enable_cbt": (_VDI, 0),
    "vdi_disable_cbt": (_VDI, 0),
    "vdi_data_destroy": (_VDI, 0),
    "vdi_list_changed_blocks": (_VDI, 1),  # args[0]: the later VDI
    "sr_content_type": (_SR, 0),
    "vdi_list": (_SR, 0),
}
# Commands run from a struct vdi_generate_config made, with no xapi behind
# it: sm's generated struct has no host_ref and no args.
FROM_CONFIG = ("vdi_attach_from_config", "vdi_detach_from_config")


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


_STRING = (_is_str, "a string")
_STR_LIST = (_is_str_list, "an array of strings")
_STR_MAP = (_is_str_map, "a struct of strings")

# key -> (predicate, what it must be). Unknown keys pass: newer xapis add some.
KEY_TYPES = {
    "host_ref": _STRING,
    "command": _STRING,
    "args": _STR_LIST,
    "device_config": _STR_MAP,
    "session_ref": _STRING,
    "sr_ref": _STRING,
    "sr_uuid": _STRING,
    "vdi_ref": _STRING,
    "vdi_uuid": _STRING,
    "vdi_location": _STRING,
    "vdi_type": _STRING,
    "new_uuid": _STRING,
    "subtask_of": _STRING,
    "vdi_on_boot": _STRING,
    "vdi_allow_caching": _STRING,
    "local_cache_sr": _STRING,
    "sr_sm_config": _STR_MAP,
    "vdi_sm_config": _STR_MAP,
    "driver_params": _STR_MAP,
}


def _short(text: str, limit: int = 64) -> str:
    """repr of caller-supplied text, cut: a 120 KiB name must not fill the log."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} chars)"


def _bad_request(detail: str) -> SRError:
    return SRError.from_name("BadRequest", opterr=detail)


def parse_request(argv: "list[str]", uuid_keys: "tuple[str, ...]" = ()) -> dict:
    """argv (without argv[0]) -> the checked params struct; BadRequest otherwise."""
    if len(argv) != 1:
        raise _bad_request(
            f"expected exactly one argument (an XML-RPC methodCall), got {len(argv)}"
        )
    raw = argv[0]
    try:
        # Back to the bytes the kernel gave us (argv is decoded with
        # surrogateescape); expat judges their encoding itself.
        data = os.fsencode(raw) if isinstance(raw, str) else bytes(raw)
    except UnicodeError:
        raise _bad_request("the argument is not valid text") from None
    if not data.strip():
        raise _bad_request("the argument is empty")
    if len(data) > MAX_REQUEST_BYTES:
        raise _bad_request(f"the request is {len(data)} bytes, over {MAX_REQUEST_BYTES}")
    try:
        method_name, params = xmlrpc.loads_call(data)
    except xmlrpc.XMLRPCError as e:
        raise _bad_request(str(e)) from None
    if len(params) != 1 or not isinstance(params[0], dict):
        raise _bad_request("the methodCall must carry exactly one struct param")
    request = params[0]
    check_request(method_name, request, uuid_keys)
    return request


def check_request(method_name: str, request: dict, uuid_keys: "tuple[str, ...]" = ()) -> None:
    """The keys the command needs are there and every known key has its type;
    each of ``uuid_keys`` present is a uuid (the driver's ``SR.UUID_KEYS``)."""
    always = ALWAYS
    if request.get("command") in FROM_CONFIG and request.get("command") == method_name:
        always = ("command", "device_config")
    for key in always:
        if key not in request:
            raise _bad_request(f"missing key {key!r}")
    for key, value in request.items():
        expected = KEY_TYPES.get(key)
        if expected is not None and not expected[0](value):
            raise _bad_request(f"key {key!r} must be {expected[1]}")
    for key in uuid_keys:
        # Where the driver puts these into paths and lvm2 command lines (VG
        # names, lock files), anything but a uuid is refused here, before
        # any store is built.
        value = request.get(key)
        if value is not None and not is_uuid_text(value):
            raise _bad_request(f"key {key!r} must be a uuid, not {_short(value)}")
    command = request["command"]
    if command != method_name:
        raise _bad_request(
            f"methodName {_short(method_name)} differs from command {_short(command)}"
        )
    if command not in COMMANDS:
        raise _bad_request(f"unknown command {_short(command)}")
    keys, min_args = COMMANDS[command]
    for key in keys:
        if key not in request:
            raise _bad_request(f"{command} needs key {key!r}")
    if len(request.get("args") or []) < min_args:
        raise _bad_request(f"{command} needs at least {min_args} args")


def handle(driver_cls: "type[SR]", argv: "list[str]") -> str:
    """Run one request; the methodResponse text (a result or a fault)."""
    started = time.monotonic()
    ident = driver_cls.__name__
    call: Call | None = None
    try:
        call = Call(parse_request(argv, driver_cls.UUID_KEYS))
        result = getattr(driver_cls(call), call.command)()
        response = xmlrpc.dumps_response(result)
        outcome = "ok"
    except SRError as e:
        response = xmlrpc.dumps_fault(e.code, str(e))
        outcome = f"fault {e.code} {e.name}: {e}"
    except Exception as e:
        import traceback  # only paid for on the unexpected path

        message = str(e) or type(e).__name__
        response = xmlrpc.dumps_fault(1200, message)
        outcome = f"fault 1200 {type(e).__name__}: {message}"
        log.write(ident, traceback.format_exc())
    elapsed_ms = (time.monotonic() - started) * 1000
    command = call.command if call else "-"
    sr = (call.sr_uuid if call else None) or "-"
    vdi = (call.vdi_uuid if call else None) or "-"
    outcome = " ".join(outcome.split())  # one line per call, whatever the message
    log.write(ident, f"command={command} sr={sr} vdi={vdi} outcome={outcome} ms={elapsed_ms:.1f}")
    return response


def main(driver_cls: "type[SR]", argv: "list[str] | None" = None) -> int:
    """Entry point of a driver executable; the process exit status."""
    if argv is None:
        argv = sys.argv[1:]
    response = handle(driver_cls, argv).encode("utf-8")
    try:
        out = getattr(sys.stdout, "buffer", None)
        if out is not None:
            out.write(response)
        else:
            sys.stdout.write(response.decode("utf-8"))
        sys.stdout.flush()
    except OSError as e:
        # Nobody reads the answer (the caller died or closed the pipe): say so
        # once, and keep the interpreter's exit flush from failing again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass  # stdout is no real file (in-process callers)
        sys.stderr.write(f"{driver_cls.__name__}: cannot write the response: {e}\n")
        return 1
    return 0
