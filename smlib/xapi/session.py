"""The session back to xapi: the local XenAPI connection a driver reuses.

xapi passes ``session_ref``; like sm, the driver opens the local XenAPI
connection (HTTP over the Unix socket ``/var/lib/xcp/xapi``) and sets that
session on it, with no login. ``SMLIB_XAPI_SOCKET`` (smlib.config) names
another socket: the toolstack's own XenAPI server (smlib/toolstack/server.py)
or a test's.

"No xapi" is a normal state, not an error: no ``session_ref``, no socket
file, or nobody listening there. Callers then do
without (smlib/xapi/db.py logs that nothing was synchronised). A xapi that
is there but fails, answers garbage or does not answer within ``TIMEOUT``
seconds (``SMLIB_XAPI_TIMEOUT``) is an SRError with a code, never 1200.
"""

import os
from typing import Optional

from smlib import config
from smlib.protocol.errors import SRError

OPAQUE_PREFIX = "OpaqueRef:"
NULL_REF = "OpaqueRef:NULL"
DEFAULT_SOCKET = config.DEFAULT_XAPI_SOCKET


class NoXapi(Exception):
    """Nobody to talk to: the reason is the message."""


def is_ref(text: str) -> bool:
    return text.startswith(OPAQUE_PREFIX)


def socket_path() -> str:
    return config.xapi_socket()


def _transport(path: str, timeout: float):
    """An XML-RPC transport to the HTTP server on Unix socket ``path``.

    XenAPI's own UDSTransport spells the path in the URL with "/" as "_"
    and has no timeout; this one takes the path as it is."""
    import http.client
    import socket
    import xmlrpc.client

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                raise
            self.sock = sock

    class Transport(xmlrpc.client.Transport):
        def make_connection(self, host):
            if self._connection and host == self._connection[0]:
                return self._connection[1]
            self._connection = host, Connection("localhost", timeout=timeout)
            return self._connection[1]

    return Transport()


class Failure(Exception):
    """xapi said no: ``details`` is its ErrorDescription (as XenAPI.Failure)."""

    def __init__(self, details: list) -> None:
        super().__init__(details)
        self.details = details


class Session:
    """XenAPI calls over the caller's session, each bounded in time.

    XenAPI's wire protocol spoken with the standard library: XML-RPC with the
    session first, every answer a ``Status`` struct with ``Value`` or
    ``ErrorDescription``. What the XenAPI package adds on top (login, retry
    on SESSION_INVALID) a driver must not do, and a host need not have it
    for us (nor the 3.6 venv, nor a wheel installed without extras)."""

    def __init__(self, session_ref: str, path: str) -> None:
        import xmlrpc.client  # lazy: with http.client ~30 ms of start-up

        self.path = path
        self.session_ref = session_ref  # xapi's session, reused: no login
        self._proxy = xmlrpc.client.ServerProxy(
            "http://localhost/", transport=_transport(path, config.xapi_timeout()),
            allow_none=True)

    def call(self, method: str, *args: object) -> object:
        """``method`` (e.g. ``VDI.get_uuid``) with the session first; its Value."""
        answer = getattr(self._proxy, method)(self.session_ref, *args)
        if not isinstance(answer, dict) or answer.get("Status") not in ("Success", "Failure"):
            raise ValueError(f"not a XenAPI answer: {answer!r:.200}")
        if answer["Status"] == "Success":
            if "Value" not in answer:
                raise ValueError("a XenAPI success without a Value")
            return answer["Value"]
        details = answer.get("ErrorDescription")
        raise Failure([str(d) for d in details] if isinstance(details, list) else [str(details)])


def connect(session_ref: Optional[str]) -> Session:
    """The caller's session on the local xapi; NoXapi when there is none."""
    path = socket_path()
    if not session_ref or session_ref == NULL_REF:
        raise NoXapi("no session_ref in the call")
    if not os.path.exists(path):
        raise NoXapi(f"no xapi socket at {path}")
    return Session(session_ref, path)


def failure(what: str, exc: BaseException, name: str = "SMGeneral") -> SRError:
    """The SRError for a failed XenAPI call (``name``'s code; the details kept)."""
    import xmlrpc.client

    details = getattr(exc, "details", None)
    if isinstance(details, list):  # Failure: xapi said no
        text = f"xapi refused {what}: {details}"
        if details[:1] in (["HANDLE_INVALID"], ["UUID_INVALID"]) and name == "SMGeneral":
            return SRError.from_name("VDIMissing", text)
        return SRError.from_name(name, text)
    if isinstance(exc, xmlrpc.client.Fault):
        return SRError.from_name(name, f"{what}: xapi fault {exc.faultCode}: {exc.faultString}")
    if isinstance(exc, OSError):  # includes socket.timeout
        return SRError.from_name(name, f"{what}: cannot talk to xapi at {socket_path()}: {exc}")
    return SRError.from_name(name, f"{what}: unreadable answer from xapi: {exc!r}")


def is_unreachable(exc: BaseException) -> bool:
    """Nobody listens at the socket (as opposed to a xapi that fails)."""
    return isinstance(exc, (ConnectionRefusedError, FileNotFoundError))


def call_errors() -> tuple:
    """What a XenAPI call can raise: the exceptions ``failure`` turns into codes."""
    import http.client
    import xml.parsers.expat
    import xmlrpc.client

    # ExpatError: an HTTP answer whose body is not XML (no ValueError subclass).
    return (Failure, xmlrpc.client.Error, http.client.HTTPException, OSError,
            xml.parsers.expat.ExpatError, ValueError, TypeError, KeyError, IndexError)


def vdi_uuid(session_ref: Optional[str], ref: str) -> str:
    """The uuid of VDI ``ref``; SRError when xapi cannot say."""
    if not session_ref:
        raise SRError.from_name("BadRequest", f"{ref} given without a session_ref")
    try:
        session = connect(session_ref)
    except NoXapi as e:
        raise SRError.from_name("SMGeneral", f"cannot reach xapi to resolve {ref}: {e}") \
            from None
    try:
        uuid = session.call("VDI.get_uuid", ref)
    except call_errors() as e:
        raise failure(f"VDI.get_uuid({ref})", e) from None
    if not isinstance(uuid, str):
        raise SRError.from_name("SMGeneral", f"VDI.get_uuid({ref}) answered {uuid!r}")
    return uuid
