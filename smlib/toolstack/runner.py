"""Run a storage-manager driver exactly as xapi's sm_exec does.

One process per command: `<driver dir>/<Type>SR '<methodCall XML>'` with
ORIGINATOR=SM in the environment. The driver prints one methodResponse and
exits 0, also on error; a fault becomes a DriverFault carrying the SR code
and its name from XE_SR_ERRORCODES.xml.
"""

import os
import subprocess
import sys
import time
import uuid as uuidlib
import xmlrpc.client
from typing import Any, Optional

from smlib import config
from smlib.toolstack.record import field, record

INSTALLED_DRIVER_DIR = "/opt/xensource/sm"
# drivers/ beside smlib/ when running from a checkout
CHECKOUT_DRIVER_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "drivers"
)
DEFAULT_TIMEOUT = 600.0  # seconds; xapi lets a driver run long, but not forever
NULL_REF = "OpaqueRef:NULL"

# xapi's own names for the codes it maps specially (sm_exec.ml); every other
# code is SR_BACKEND_FAILURE_<code>.
XAPI_ERROR_NAMES = {
    38: "SR_OPERATION_NOT_SUPPORTED",
    39: "SR_NOT_EMPTY",
    24: "VDI_IN_USE",
    16: "SR_DEVICE_IN_USE",
    144: "VDI_MISSING",
}

# Codes used for failures the toolstack detects around the driver call; they
# are the real SM codes with the closest meaning.
CODE_UNKNOWN_TYPE = 48  # SRUnknownType: no driver for this type
CODE_GENERAL = 202  # SMGeneral: the driver broke the protocol

# Driver fault codes the operations act on (XE_SR_ERRORCODES.xml).
CODE_UNIMPLEMENTED = 38  # Unimplemented: fall back (clone for a revert)
CODE_VDI_MISSING = 144  # VDIMissing: already gone


def new_ref() -> str:
    return f"OpaqueRef:{uuidlib.uuid4()}"


class ToolstackError(Exception):
    """An error the toolstack reports: a name, a message, and an SR code if any."""

    def __init__(self, name: str, message: str, code: Optional[int] = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.code = code

    @property
    def xapi_name(self) -> str:
        """The error code xe would print."""
        return self.name

    def annotate(self, note: str) -> None:
        """Add what went wrong while cleaning up after this error."""
        self.message = f"{self.message}; {note}"

    def __str__(self) -> str:
        return self.message


class DriverFault(ToolstackError):
    """The driver answered with an XML-RPC fault."""

    def __init__(self, code: int, description: str, command: str, stderr: str = "") -> None:
        super().__init__(sm_error_name(code), description, code)
        self.description = description
        self.command = command
        self.stderr = stderr

    @property
    def xapi_name(self) -> str:
        return XAPI_ERROR_NAMES.get(self.code, f"SR_BACKEND_FAILURE_{self.code}")

    def annotate(self, note: str) -> None:
        self.description = f"{self.description}; {note}"

    def __str__(self) -> str:
        return f"{self.command}: SR error {self.code} {self.name}: {self.description}"


class DriverMissing(ToolstackError):
    def __init__(self, path: str, why: str) -> None:
        super().__init__("SRUnknownType", f"driver {path} {why}", CODE_UNKNOWN_TYPE)
        self.path = path

    @property
    def xapi_name(self) -> str:
        return "SR_UNKNOWN_DRIVER"


class DriverProtocolError(ToolstackError):
    """The driver timed out, crashed, or printed something that is not a methodResponse."""

    def __init__(self, message: str) -> None:
        super().__init__("SMGeneral", message, CODE_GENERAL)

    @property
    def xapi_name(self) -> str:
        return "SR_BACKEND_FAILURE"


_names_by_code: "Optional[dict[int, str]]" = None


def sm_error_name(code: int) -> str:
    """The XE_SR_ERRORCODES.xml name for a code ("Unimplemented" for 38)."""
    global _names_by_code
    if _names_by_code is None:
        from smlib.protocol.errors import codes

        table: dict[int, str] = {}
        for name, (value, _desc) in codes().items():
            table.setdefault(value, name)
        _names_by_code = table
    return _names_by_code.get(code, f"SR_BACKEND_FAILURE_{code}")


def default_driver_dir() -> str:
    """$SMLIB_DRIVER_DIR (or $SMCTL_DRIVER_DIR); else the checkout's drivers/ when
    run from one; else a host's /opt/xensource/sm where it exists; else the
    drivers shipped in the package (smlib/drivers_bin: a pip-installed smctl's)."""
    env = config.driver_dir()
    if env:
        return env
    checkout = CHECKOUT_DRIVER_DIR
    if os.path.isdir(checkout) and os.path.exists(os.path.join(checkout, "..", "setup.cfg")):
        return checkout
    if os.path.isdir(INSTALLED_DRIVER_DIR):
        return INSTALLED_DRIVER_DIR
    from smlib.drivers_bin import DIR

    return DIR


@record
class Request:
    """One SMAPIv1 request; optional keys are sent only when set, as xapi does."""

    command: str
    args: "list[str]" = field(default_factory=list)
    device_config: "dict[str, str]" = field(default_factory=dict)
    sr_ref: Optional[str] = None
    sr_uuid: Optional[str] = None
    vdi_ref: Optional[str] = None
    vdi_uuid: Optional[str] = None
    vdi_location: Optional[str] = None
    vdi_type: Optional[str] = None
    sr_sm_config: "Optional[dict[str, str]]" = None
    vdi_sm_config: "Optional[dict[str, str]]" = None
    driver_params: "Optional[dict[str, str]]" = None
    new_uuid: Optional[str] = None
    subtask_of: Optional[str] = None
    vdi_on_boot: Optional[str] = None
    vdi_allow_caching: Optional[str] = None
    local_cache_sr: Optional[str] = None
    needs_session: bool = True

    OPTIONAL_KEYS = (
        "sr_ref", "sr_uuid", "vdi_ref", "vdi_uuid", "vdi_location", "vdi_type",
        "sr_sm_config", "vdi_sm_config", "driver_params", "new_uuid", "subtask_of",
        "vdi_on_boot", "vdi_allow_caching", "local_cache_sr",
    )

    def struct(self, host_ref: str, session_ref: Optional[str]) -> "dict[str, Any]":
        params: dict[str, Any] = {
            "host_ref": host_ref,
            "command": self.command,
            "args": [str(a) for a in self.args],
            "device_config": {str(k): str(v) for k, v in self.device_config.items()},
        }
        if session_ref is not None and self.needs_session:
            params["session_ref"] = session_ref
        for key in self.OPTIONAL_KEYS:
            value = getattr(self, key)
            if value is not None:
                params[key] = dict(value) if isinstance(value, dict) else value
        return params


def method_call_xml(call: Request, host_ref: str, session_ref: Optional[str]) -> str:
    return xmlrpc.client.dumps((call.struct(host_ref, session_ref),), methodname=call.command)


def driver_path(driver_dir: str, sr_type: str) -> str:
    """`file` -> <dir>/FileSR: the type matches the executable's name case-insensitively."""
    wanted = sr_type.lower() + "sr"
    try:
        for entry in sorted(os.listdir(driver_dir)):
            if entry.lower() == wanted:
                return os.path.join(driver_dir, entry)
    except OSError:
        pass
    return os.path.join(driver_dir, sr_type[:1].upper() + sr_type[1:] + "SR")


class Runner:
    """Runs driver commands; one instance plays one host with one session."""

    def __init__(
        self,
        driver_dir: Optional[str] = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        host_ref: Optional[str] = None,
        session_ref: Optional[str] = None,
    ) -> None:
        self.driver_dir = driver_dir or default_driver_dir()
        self.timeout = timeout
        self.host_ref = host_ref or new_ref()
        self.session_ref = session_ref or new_ref()
        self.env: dict[str, str] = {}  # added to each driver's environment

    def available_types(self) -> "list[str]":
        try:
            entries = sorted(os.listdir(self.driver_dir))
        except OSError:
            return []
        return [
            e[:-2].lower()
            for e in entries
            if e.endswith("SR") and os.access(os.path.join(self.driver_dir, e), os.X_OK)
        ]

    def _environment(self) -> "dict[str, str]":
        env = dict(os.environ)
        env["ORIGINATOR"] = "SM"
        # The drivers start with `#!/usr/bin/env python3`: let that find this
        # interpreter, which has the project's dependencies, unless
        # $SMLIB_DRIVER_BIN names another (the dom0 test tier: CPython 3.6).
        here = config.driver_bin() or os.path.dirname(sys.executable)
        env["PATH"] = here + os.pathsep + env.get("PATH", "")
        env.update(self.env)
        return env

    def call(self, sr_type: str, call: Request) -> Any:
        """Run one command; the decoded result, or DriverFault / DriverMissing / ..."""
        if not config.trace():
            return self._call(sr_type, call)
        # One line per driver run on stderr: what ran, how long, how it ended.
        started = time.monotonic()
        outcome = "ok"
        try:
            return self._call(sr_type, call)
        except ToolstackError as exc:
            outcome = f"{exc.name} ({exc.code})" if exc.code is not None else exc.name
            raise
        finally:
            ms = (time.monotonic() - started) * 1000
            target = call.vdi_uuid or call.sr_uuid or "-"
            sys.stderr.write(f"smctl: {sr_type} {call.command} {target} {ms:.0f} ms {outcome}\n")

    def _call(self, sr_type: str, call: Request) -> Any:
        path = driver_path(self.driver_dir, sr_type)
        if not os.path.exists(path):
            raise DriverMissing(path, f"not found (no driver for SR type {sr_type!r})")
        if not os.path.isfile(path) or not os.access(path, os.X_OK):
            raise DriverMissing(path, "is not an executable file")
        request = method_call_xml(call, self.host_ref, self.session_ref)
        try:
            proc = subprocess.run(
                [path, request],
                stdout=subprocess.PIPE,  # capture_output= is 3.7; dom0 runs 3.6
                stderr=subprocess.PIPE,
                env=self._environment(),
                timeout=self.timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise DriverProtocolError(
                f"{os.path.basename(path)} {call.command} timed out after {exc.timeout:g} s"
            ) from None
        except OSError as exc:
            raise DriverMissing(path, f"could not be run: {exc.strerror}") from None
        stdout = proc.stdout.decode("utf-8", "replace")
        stderr = proc.stderr.decode("utf-8", "replace")
        if proc.returncode != 0:
            raise DriverProtocolError(
                f"{os.path.basename(path)} {call.command} exited with status {proc.returncode}"
                + (f": {stderr.strip()[-500:]}" if stderr.strip() else "")
            )
        return parse_response(stdout, call.command, stderr)


def parse_response(text: str, command: str, stderr: str = "") -> Any:
    """Decode one methodResponse; a fault becomes DriverFault."""
    try:
        (result,), _method = xmlrpc.client.loads(text)
    except xmlrpc.client.Fault as fault:
        code = fault.faultCode
        if not isinstance(code, int):
            try:
                code = int(code)
            except (TypeError, ValueError):
                raise DriverProtocolError(
                    f"{command}: fault with a non-integer code {fault.faultCode!r}"
                ) from None
        raise DriverFault(code, str(fault.faultString), command, stderr) from None
    except Exception as exc:  # noqa: BLE001 - any parse failure is a protocol error
        snippet = text.strip()[:200] or "(nothing)"
        raise DriverProtocolError(
            f"{command}: the driver did not print a methodResponse ({exc.__class__.__name__}): "
            f"{snippet}"
        ) from None
    return result
