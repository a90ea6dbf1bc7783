"""Where a served disk is found: the NBD link xapi is given, and our records.

``$SMLIB_NBD_DIR`` (default ``/run/blktap-control/nbd``, where sm links
it): ``<dir>/<sr uuid>/<vdi uuid>`` is the link ``params_nbd`` names; it
points at the serving socket. ``$SMLIB_DATAPATH_DIR`` (default
``/run/smlib/datapath``): ``<dir>/<sr uuid>/<vdi uuid>.{state,sock,pid,log}``
hold what a later command needs to find, replace or stop the server.
Both are host-local run-time state: a reboot clears them with the servers.
"""

import os

from smlib import config


def nbd_dir() -> str:
    return config.nbd_dir()


def nbd_link(sr_uuid: str, vdi_uuid: str) -> str:
    """The path params_nbd names (a symlink to the serving socket)."""
    return os.path.join(nbd_dir(), sr_uuid, vdi_uuid)


def params_nbd(sr_uuid: str, vdi_uuid: str) -> str:
    """sm's value: ``nbd:unix:<link>:exportname=<vdi uuid>``."""
    return f"nbd:unix:{nbd_link(sr_uuid, vdi_uuid)}:exportname={vdi_uuid}"


def state_base(sr_uuid: str, vdi_uuid: str) -> str:
    """Prefix of this VDI's record files (append .state, .sock, .pid, .log)."""
    return os.path.join(config.datapath_dir(), sr_uuid, vdi_uuid)


def blktap_dir() -> str:
    """Where tapdisk puts its sockets (``nbd<pid>.<minor>``): beside the nbd dir."""
    return os.path.dirname(nbd_dir().rstrip("/"))


def make_link(link: str, target: str) -> None:
    """Point ``link`` at ``target``, replacing a link that points elsewhere."""
    os.makedirs(os.path.dirname(link), exist_ok=True)
    try:
        if os.readlink(link) == target:
            return
        os.unlink(link)
    except FileNotFoundError:
        pass
    except OSError:
        os.unlink(link)        # not a link (a stale socket, a file): replace it
    os.symlink(target, link)


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
