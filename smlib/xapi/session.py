"""OpaqueRef -> uuid through the caller's XenAPI session.

Real xapi passes vdi_revert's target as an ``OpaqueRef:``; the driver asks
xapi for the VDI's uuid with ``VDI.get_uuid`` over the XenAPI package's
local (Unix socket) connection, reusing the ``session_ref`` xapi handed
over (no login). ``SMLIB_XAPI_SOCKET`` (smlib.config) overrides the socket
path (tests run a real XML-RPC server there).
"""

from typing import Optional

from smlib import config
from smlib.protocol.errors import SRError

OPAQUE_PREFIX = "OpaqueRef:"
DEFAULT_SOCKET = config.DEFAULT_XAPI_SOCKET


def is_ref(text: str) -> bool:
    return text.startswith(OPAQUE_PREFIX)


def socket_path() -> str:
    return config.xapi_socket()


def _session(session_ref: str, path: str):
    import XenAPI  # lazy: heavy, and only real-xapi reverts need it

    if path == DEFAULT_SOCKET:
        session = XenAPI.xapi_local()
        session._session = session_ref  # reuse xapi's session: no login
        return session
    # XenAPI's Unix transport spells the socket path in the URL host with
    # "/" written as "_" (as xapi_local() does for /var/lib/xcp/xapi).
    if "_" in path:
        raise SRError.from_name("SMGeneral", f"xapi socket path {path!r} contains '_'")
    session = XenAPI.Session("http://" + path.replace("/", "_") + "/",
                             transport=XenAPI.UDSTransport())
    session._session = session_ref  # reuse xapi's session: no login
    return session


def vdi_uuid(session_ref: Optional[str], ref: str) -> str:
    """The uuid of VDI ``ref``; SRError when xapi cannot say."""
    if not session_ref:
        raise SRError.from_name("BadRequest", f"{ref} given without a session_ref")
    import xmlrpc.client

    import XenAPI

    session = _session(session_ref, socket_path())
    try:
        return str(session.xenapi.VDI.get_uuid(ref))
    except XenAPI.Failure as e:
        details = list(getattr(e, "details", []) or [])
        if details[:1] == ["HANDLE_INVALID"]:
            raise SRError.from_name("VDIMissing", f"xapi does not know {ref}") from None
        raise SRError.from_name("SMGeneral", f"VDI.get_uuid({ref}): {details}") from None
    except xmlrpc.client.Fault as e:
        raise SRError.from_name("SMGeneral", f"VDI.get_uuid({ref}): {e.faultString}") from None
    except OSError as e:
        raise SRError.from_name("SMGeneral", f"cannot reach xapi at {socket_path()}: {e}") \
            from None
